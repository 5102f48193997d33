//! Waiting for a lock another connection holds is bounded: every session
//! sets `lock_wait_timeout` from `DB_LOCK_WAIT_TIMEOUT` (the server's
//! default is a day), and a restore that runs out names the connections
//! on the database, one of which holds the lock, and what to do.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::support::tool;
use crate::support::TestDb;

#[tokio::test(flavor = "multi_thread")]
async fn a_restore_behind_an_open_transaction_fails_in_time_naming_the_holder() {
    let db = TestDb::new("lw_restore");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1),(2);");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(&db.name, dir.path(), &[("DB_LOCK_WAIT_TIMEOUT", "2")]);
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{stderr}");

    // An application's open transaction that read `t` holds its metadata
    // lock: DROP TABLE waits for it.
    let mut holder = mysql_async::Conn::new(db.opts()).await.unwrap();
    holder.query_drop("START TRANSACTION").await.unwrap();
    holder.query_drop("SELECT * FROM t").await.unwrap();
    let holder_id = holder.id();

    let mut child = tool::spawn(&vars, &["restore", "latest", "--yes"]);
    let began = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if began.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the restore still waits for the lock after 60 s: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, _, stderr) = tool::outcome(&child.wait_with_output().unwrap());
    holder.query_drop("ROLLBACK").await.unwrap();
    holder.disconnect().await.unwrap();
    assert_eq!(code, 1, "{stderr}");
    for needle in [
        "Lock wait timeout".to_owned(),
        format!("connection {holder_id} "),
        "DB_LOCK_WAIT_TIMEOUT".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "no {needle:?} in: {stderr}");
    }
}

/// Run the tool with `args`, calling `on_line` with each line it logs to
/// stderr while it runs; returns the exit code and the whole stderr.
fn run_watching(
    vars: &[(String, String)],
    args: &[&str],
    mut on_line: impl FnMut(&str) + Send + 'static,
) -> (i32, String) {
    use std::io::BufRead;
    let mut child = tool::spawn(vars, args);
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let line = line.unwrap();
            on_line(&line);
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let began = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if began.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("{args:?} still runs after 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (status.code().unwrap_or(-1), reader.join().unwrap())
}

/// A connection that holds a lock on `t` until told to let go.
fn hold(
    db: &TestDb,
    lock: &'static str,
    release: &'static str,
) -> (u32, std::sync::mpsc::Sender<()>) {
    let opts = db.opts();
    let (id_tx, id_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(async move {
                let mut holder = mysql_async::Conn::new(opts).await.unwrap();
                for sql in lock.split(';') {
                    holder.query_drop(sql).await.unwrap();
                }
                id_tx.send(holder.id()).unwrap();
                let _ = tokio::task::spawn_blocking(move || go_rx.recv()).await;
                holder.query_drop(release).await.unwrap();
                holder.disconnect().await.unwrap();
            })
    });
    (id_rx.recv().unwrap(), go_tx)
}

#[test]
fn a_backup_waiting_behind_lock_tables_says_who_holds_the_lock_while_it_waits() {
    let db = TestDb::new("lw_dump_wait");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1),(2);");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(&db.name, dir.path(), &[("DB_LOCK_WAIT_TIMEOUT", "90")]);
    let (holder_id, release) = hold(&db, "LOCK TABLES t WRITE", "UNLOCK TABLES");

    // The holder lets go once the backup has said, while waiting, who it is.
    let needle = format!("connection {holder_id} ");
    let (code, stderr) = run_watching(&vars, &["backup"], move |line| {
        if line.contains("has waited") && line.contains(&needle) {
            let _ = release.send(());
        }
    });
    assert_eq!(code, 0, "{stderr}");
    let warning = stderr
        .lines()
        .find(|l| l.contains("has waited"))
        .unwrap_or_else(|| panic!("no warning while waiting: {stderr}"));
    for needle in [
        "the backup has waited".to_owned(),
        format!("lock on database `{}`", db.name),
        format!("held by connection {holder_id} "),
        "DB_LOCK_WAIT_TIMEOUT=90".to_owned(),
        "KILL".to_owned(),
    ] {
        assert!(warning.contains(&needle), "no {needle:?} in: {warning}");
    }
}

#[test]
fn a_restore_waiting_behind_an_open_transaction_says_who_holds_the_lock_while_it_waits() {
    let db = TestDb::new("lw_restore_wait");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1),(2);");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(&db.name, dir.path(), &[("DB_LOCK_WAIT_TIMEOUT", "90")]);
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{stderr}");
    let (holder_id, release) = hold(&db, "START TRANSACTION;SELECT * FROM t", "ROLLBACK");

    let needle = format!("connection {holder_id} ");
    let (code, stderr) = run_watching(&vars, &["restore", "latest", "--yes"], move |line| {
        if line.contains("has waited") && line.contains(&needle) {
            let _ = release.send(());
        }
    });
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.lines().any(|l| l.contains("the restore has waited")
            && l.contains(&format!("connection {holder_id} "))),
        "no warning naming connection {holder_id} while waiting: {stderr}"
    );
    assert_eq!(db.exec("SELECT COUNT(*) FROM t").trim(), "2");
}

#[test]
fn a_backup_behind_a_lock_fails_in_time_naming_the_holder_and_publishes_nothing() {
    let db = TestDb::new("lw_dump_timeout");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1),(2);");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(&db.name, dir.path(), &[("DB_LOCK_WAIT_TIMEOUT", "4")]);
    let (holder_id, release) = hold(&db, "LOCK TABLES t WRITE", "UNLOCK TABLES");
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["backup"]));
    let _ = release.send(());
    assert_ne!(code, 0, "{stderr}");
    for needle in [
        "Lock wait timeout".to_owned(),
        format!("connection {holder_id} "),
        "DB_LOCK_WAIT_TIMEOUT ran out".to_owned(),
    ] {
        assert!(stderr.contains(&needle), "no {needle:?} in: {stderr}");
    }
    let published: Vec<String> = tool::files(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".sql.gz") || n.ends_with(".enc"))
        .collect();
    assert!(
        published.is_empty(),
        "a backup was published: {published:?}"
    );
}
