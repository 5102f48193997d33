//! Restoring a backup of another database: the manifest knows the database
//! a backup was taken of, and `restore latest --yes` with a `DB_NAME` that
//! differs is refused, naming both databases and the `--into` that says
//! the merge is meant, before anything is touched; with `--into` it goes
//! ahead.

use crate::support::TestDb;
use crate::tool;

fn tables(db: &TestDb) -> Vec<String> {
    db.exec("SHOW TABLES").lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_of_another_database_is_refused_without_into() {
    let source = TestDb::new("rs_source");
    source.exec("CREATE TABLE orders (id INT PRIMARY KEY); INSERT INTO orders VALUES (1),(2);");
    let dir = tempfile::tempdir().unwrap();
    tool::backup(&source.name, dir.path()).await;

    let target = TestDb::new("rs_target");
    target.exec("CREATE TABLE keep (id INT PRIMARY KEY); INSERT INTO keep VALUES (7);");
    let vars = tool::vars(&target.name, dir.path());
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["restore", "latest", "--yes"]));
    assert_eq!(code, 7, "{stderr}");
    for needle in [
        format!("backup of database `{}`", source.name),
        format!("--into {}", target.name),
        "nothing was touched".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "no {needle:?} in: {stderr}");
    }
    assert_eq!(tables(&target), ["keep"], "the target was touched");
    let snapshots: Vec<String> = tool::files(dir.path())
        .into_iter()
        .filter(|n| n.starts_with("selmai_prerestore"))
        .collect();
    assert!(
        snapshots.is_empty(),
        "a safety snapshot was taken: {snapshots:?}"
    );

    // Saying so with --into restores it.
    let (code, _, stderr) = tool::outcome(&tool::run(
        &vars,
        &["restore", "latest", "--into", &target.name, "--yes"],
    ));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(tables(&target), ["keep", "orders"]);
}
