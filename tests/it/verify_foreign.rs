//! `verify` and `restore` of files that are not our backups: without a
//! manifest, a file is taken only when it starts like a dump (the
//! `mariadb-dump`/`mysqldump` header, or ours), and `verify` says what it
//! checked and what it could not; anything else (`/etc/passwd`, a text
//! file) is refused with exit 5 before a database is touched.

use crate::roundtrip::legacy_file;
use crate::support::tool;
use crate::support::TestDb;

#[test]
fn a_file_that_is_not_a_dump_is_refused_by_verify_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let passwd = dir.path().join("passwd");
    std::fs::copy("/etc/passwd", &passwd).unwrap();
    let db = TestDb::new("vf_target");
    db.exec("CREATE TABLE keep (id INT PRIMARY KEY); INSERT INTO keep VALUES (1);");
    let vars = tool::vars(&db.name, dir.path());

    let (code, out, stderr) =
        tool::outcome(&tool::run(&vars, &["verify", passwd.to_str().unwrap()]));
    assert_eq!(code, 5, "verify /etc/passwd: {out}{stderr}");
    assert!(stderr.contains("not a backup"), "{stderr}");

    // The same under a backup's name, compressed: restore refuses it too.
    let name = "selmai_backup_20250101_000000.sql.gz";
    std::fs::write(
        dir.path().join(name),
        tool::gzip(b"hello world\nnot SQL at all\n"),
    )
    .unwrap();
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["restore", name, "--yes"]));
    assert_eq!(code, 5, "{stderr}");
    assert!(stderr.contains("not a backup"), "{stderr}");
    assert_eq!(
        db.exec("SHOW TABLES").trim(),
        "keep",
        "the database was touched"
    );
    let snapshots: Vec<String> = tool::files(dir.path())
        .into_iter()
        .filter(|n| n.starts_with("selmai_prerestore"))
        .collect();
    assert!(snapshots.is_empty(), "{snapshots:?}");
}

#[test]
fn a_mariadb_dump_file_verifies_and_says_what_was_not_checked() {
    let src = TestDb::new("vf_source");
    src.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1),(2);");
    let dir = tempfile::tempdir().unwrap();
    // What the old script wrote, mariadb-dump's header included.
    let file = legacy_file(dir.path(), &src.name, &[]);
    let name = file.file_name().unwrap().to_str().unwrap();
    let (code, out, stderr) = tool::outcome(&tool::run(
        &tool::vars(&src.name, dir.path()),
        &["verify", name],
    ));
    assert_eq!(code, 0, "{stderr}");
    for needle in ["no manifest", "a mariadb-dump dump", "could not be checked"] {
        assert!(out.contains(needle), "no {needle:?} in: {out}");
    }
}
