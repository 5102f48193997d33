//! Restoring a backup of another database: the manifest knows the database
//! a backup was taken of, and `restore latest --yes` with a `DB_NAME` that
//! differs is refused, naming both databases and the `--into` that says
//! the merge is meant, before anything is touched; with `--into` it goes
//! ahead. At a terminal, the question starts with a note naming the
//! backup's database, and only `yes` goes ahead.

use crate::support::tool;
use crate::support::TestDb;

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

/// `restore latest` at a terminal (a pseudo-terminal from `script`),
/// answering `answer`: exit code and everything the terminal showed.
fn restore_at_a_terminal(vars: &[(String, String)], answer: &str) -> (i32, String) {
    use std::io::Write;
    let bin = env!("CARGO_BIN_EXE_selmai-backup");
    let mut child = std::process::Command::new("script");
    child.env_clear();
    if let Ok(p) = std::env::var("PATH") {
        child.env("PATH", p);
    }
    let mut child = child
        .envs(vars.iter().map(|(k, v)| (k, v)))
        .args(["-qfec", &format!("{bin} restore latest"), "/dev/null"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{answer}\n").as_bytes()).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn at_a_terminal_the_question_names_the_backups_database_and_only_yes_goes_ahead() {
    let source = TestDb::new("rs_tty_source");
    source.exec("CREATE TABLE orders (id INT PRIMARY KEY); INSERT INTO orders VALUES (1),(2);");
    let dir = tempfile::tempdir().unwrap();
    tool::backup(&source.name, dir.path()).await;
    let target = TestDb::new("rs_tty_target");
    target.exec("CREATE TABLE keep (id INT PRIMARY KEY); INSERT INTO keep VALUES (7);");
    let vars = tool::vars(&target.name, dir.path());

    let (code, shown) = restore_at_a_terminal(&vars, "no");
    assert_eq!(code, 7, "{shown}");
    for needle in [
        format!(
            "is a backup of database `{}`, not of `{}`",
            source.name, target.name
        ),
        "Type 'yes' to continue".to_owned(),
        "restore cancelled; the database was not touched".to_owned(),
    ] {
        assert!(shown.contains(&needle), "no {needle:?} in: {shown}");
    }
    assert_eq!(tables(&target), ["keep"], "the target was touched");

    let (code, shown) = restore_at_a_terminal(&vars, "yes");
    assert_eq!(code, 0, "{shown}");
    assert_eq!(tables(&target), ["keep", "orders"]);
}
