//! A restore that fails midway, or is interrupted, puts the database back
//! as it was by itself (from the safety snapshot; a database that was
//! missing or empty goes back to that), and says so in the line that names
//! the failure. Without a safety snapshot it says what state the database
//! is in and what to do. Compared with `mariadb-dump` and `CHECKSUM TABLE`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::tool;
use crate::support::{checksums, db_env, mariadb_dump, TestDb};

/// Tables `a` < `orders` < `z` (dump order), a view, a trigger and a
/// routine, with rows.
fn shop(tag: &str, rows: u32) -> TestDb {
    let db = TestDb::new(tag);
    db.exec(&format!(
        "CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO a VALUES (1, 'x'), (2, 'y');
         CREATE TABLE orders (id INT PRIMARY KEY, note VARCHAR(200));
         INSERT INTO orders SELECT seq, REPEAT('order ', 30) FROM seq_1_to_{rows};
         CREATE TABLE z (id INT PRIMARY KEY); INSERT INTO z VALUES (1), (2), (3);
         CREATE VIEW big_orders AS SELECT id FROM orders WHERE id > 1;
         CREATE TRIGGER z_bi BEFORE INSERT ON z FOR EACH ROW SET NEW.id = NEW.id;
         CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN 2 * x;"
    ));
    db
}

/// Work done after the backup, which the restore replaces or leaves alone:
/// changed rows, a table, a view and a procedure the backup does not know.
fn work_since_the_backup(db: &TestDb) {
    db.exec(
        "UPDATE a SET v = 'changed' WHERE id = 1; DELETE FROM z WHERE id = 3;
         CREATE TABLE since (x INT); INSERT INTO since VALUES (42);
         CREATE VIEW since_v AS SELECT x FROM since;
         CREATE PROCEDURE since_p() SELECT 1;",
    );
}

/// Break the `INSERT INTO orders` lines of the gzip backup `file` in `dir`
/// (as `sed 's/^INSERT INTO .orders./INSERTT INTO `orders`/'` would), then
/// refresh size and SHA-256 in its manifest: the file verifies, and fails
/// on the server at the first of them.
fn break_orders(dir: &Path, file: &str) {
    let path = dir.join(file);
    let sql = String::from_utf8(tool::gunzip(&path)).unwrap();
    assert!(sql.contains("\nINSERT INTO `orders`"), "orders has rows");
    let broken = sql.replace("\nINSERT INTO `orders`", "\nINSERTT INTO `orders`");
    let gz = tool::gzip(broken.as_bytes());
    std::fs::write(&path, &gz).unwrap();
    let mpath = dir.join(selmai_backup::format::manifest::name_for(file));
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    m["size"] = gz.len().into();
    m["sha256"] = hex::encode(Sha256::digest(&gz)).into();
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

fn schema_exists(name: &str) -> bool {
    !db_env()
        .exec(
            None,
            &format!(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{name}'"
            ),
        )
        .trim()
        .is_empty()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_that_fails_midway_puts_the_database_back_by_itself() {
    let db = shop("rb_fail", 50);
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&db.name, dir.path()).await;
    break_orders(dir.path(), &out.file);
    work_since_the_backup(&db);
    let before = mariadb_dump(&db);
    let sums = checksums(&db);

    let vars = tool::vars(&db.name, dir.path());
    let (code, _, err) = tool::outcome(&tool::run(
        &vars,
        &["restore", &out.file, "--into", &db.name, "--yes"],
    ));
    assert_eq!(code, 1, "{err}");
    // One line says what failed and that the database is as before.
    let line = err
        .lines()
        .find(|l| l.starts_with("selmai-backup: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains("ERROR 1064") && line.contains(&format!("`{}` is as it was before", db.name)),
        "{err}"
    );
    assert!(!err.contains("to undo this restore"), "{err}");
    assert_eq!(mariadb_dump(&db), before, "the database is as before");
    assert_eq!(checksums(&db), sums);

    // Into a database that did not exist: afterwards it does not.
    let fresh = TestDb::new("rb_fail_fresh");
    db_env().exec(None, &format!("DROP DATABASE `{}`", fresh.name));
    let (code, _, err) = tool::outcome(&tool::run(
        &vars,
        &["restore", &out.file, "--into", &fresh.name, "--yes"],
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("ERROR 1064"), "{err}");
    assert!(!schema_exists(&fresh.name), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_safety_snapshot_the_message_says_what_state_the_database_is_in() {
    let db = shop("rb_nosnap", 50);
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&db.name, dir.path()).await;
    break_orders(dir.path(), &out.file);
    work_since_the_backup(&db);

    let vars = tool::vars(&db.name, dir.path());
    let (code, _, err) = tool::outcome(&tool::run(
        &vars,
        &[
            "restore",
            &out.file,
            "--into",
            &db.name,
            "--yes",
            "--no-safety-snapshot",
        ],
    ));
    assert_eq!(code, 1, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("selmai-backup: error:"))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains("ERROR 1064")
            && line.contains(&format!("`{}` is partly restored", db.name))
            && line.contains("--no-safety-snapshot")
            && line.contains("restore a backup"),
        "{err}"
    );
}

#[test]
fn an_interrupted_restore_puts_the_database_back_by_itself() {
    // Enough rows that the restore is still running when the signal comes.
    let db = shop("rb_sigterm", 200_000);
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars(&db.name, dir.path());
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{err}");
    let file = out.trim().to_owned();
    work_since_the_backup(&db);
    let before = mariadb_dump(&db);
    let sums = checksums(&db);

    let mut child = tool::spawn(&vars, &["restore", &file, "--yes"]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let snapshot_done = line.starts_with("safety snapshot of");
        log.push(line);
        if snapshot_done {
            break;
        }
    }
    // The restore proper has started: interrupt it.
    std::thread::sleep(Duration::from_millis(300));
    let st = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    log.extend(lines.map(|l| l.unwrap()));
    let status = child.wait().unwrap();
    let log = log.join("\n");
    assert_ne!(status.code(), Some(0), "{log}");
    let line = log
        .lines()
        .find(|l| l.starts_with("selmai-backup: error:"))
        .unwrap_or_else(|| panic!("no error line: {log}"));
    assert!(
        line.contains("interrupted by SIGTERM")
            && line.contains(&format!("`{}` is as it was before", db.name)),
        "{log}"
    );
    assert_eq!(mariadb_dump(&db), before, "the database is as before");
    assert_eq!(checksums(&db), sums);
}
