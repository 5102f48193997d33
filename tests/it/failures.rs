//! Failure is loud and nothing is lost (RELIABILITY.md 4, 5): for each way a
//! backup can fail, the run returns an error that says what to do, no file
//! appears under a final name, no partial file is left behind, and the
//! backups already in the directory are byte-for-byte untouched.

use std::path::Path;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use selmai_backup::backup::pipeline::BackupError;
use selmai_backup::db::DbError;
use selmai_backup::dump::{DumpError, DumpHooks, NoHooks};
use selmai_backup::target::TargetError;

use crate::support::tool::{self, Tmpfs};
use crate::support::{db_env, TestDb};

/// A small database of three tables, `a` < `b` < `c` in dump order.
fn small_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.exec(
        "CREATE TABLE a (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO a VALUES (1,'x'),(2,'y');
         CREATE TABLE b (id INT PRIMARY KEY); INSERT INTO b VALUES (1),(2),(3);
         CREATE TABLE c (id INT PRIMARY KEY); INSERT INTO c VALUES (1);",
    );
    db
}

/// A directory with one good backup in it; returns its digests.
async fn with_older_backup(db: &TestDb, dir: &Path) -> Vec<(String, String)> {
    tool::backup(&db.name, dir).await;
    let d = tool::file_digests(dir);
    assert_eq!(d.len(), 2, "a backup and its manifest: {d:?}");
    d
}

/// After a failed run: the same files, the same bytes, no partial file.
fn assert_untouched(dir: &Path, before: &[(String, String)]) {
    assert_eq!(
        tool::file_digests(dir),
        before,
        "the backup directory changed after a failed run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_password_fails_at_once_and_says_which_variables_to_check() {
    let db = small_db("f_password");
    let dir = tempfile::tempdir().unwrap();
    let before = with_older_backup(&db, dir.path()).await;
    let s = tool::settings(&db.name, dir.path(), &[("DB_PASSWORD", "not-the-password")]);
    let started = Instant::now();
    let err = tool::try_backup(&s, &NoHooks).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a refused login is not retried"
    );
    assert!(
        matches!(
            err,
            BackupError::Dump(DumpError::Db(DbError::AccessDenied { .. }))
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("DB_USER") && msg.contains("DB_PASSWORD"),
        "{msg}"
    );
    assert!(!msg.contains("not-the-password"), "{msg}");
    assert_untouched(dir.path(), &before);
}

#[tokio::test(flavor = "multi_thread")]
async fn unreachable_server_is_retried_then_named() {
    let db = small_db("f_unreachable");
    let dir = tempfile::tempdir().unwrap();
    let before = with_older_backup(&db, dir.path()).await;
    let s = tool::settings(
        &db.name,
        dir.path(),
        &[("DB_PORT", "1"), ("DB_CONNECT_TIMEOUT", "2")],
    );
    let started = Instant::now();
    let err = tool::try_backup(&s, &NoHooks).await.unwrap_err();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1000),
        "gave up after {waited:?} without retrying"
    );
    assert!(
        matches!(
            err,
            BackupError::Dump(DumpError::Db(DbError::Unreachable { .. }))
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&format!("{}:1", db_env().host)),
        "{err}"
    );
    assert_untouched(dir.path(), &before);
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_database_is_named() {
    let db = small_db("f_missing");
    let dir = tempfile::tempdir().unwrap();
    let before = with_older_backup(&db, dir.path()).await;
    let s = tool::settings("no_such_database_here", dir.path(), &[]);
    let err = tool::try_backup(&s, &NoHooks).await.unwrap_err();
    assert!(
        matches!(err, BackupError::Dump(DumpError::NoDatabase(_))),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("no_such_database_here") && err.to_string().contains("DB_NAME"),
        "{err}"
    );
    assert_untouched(dir.path(), &before);
}

#[tokio::test(flavor = "multi_thread")]
async fn full_disk_fails_cleanly_and_keeps_older_backups() {
    let small = small_db("f_full_small");
    let big = TestDb::new("f_full_big");
    big.insert_big_blob(4); // incompressible: cannot fit in 1 MiB
    let fs = Tmpfs::mount(1024, "");
    let dir = fs.dir.path();
    let before = with_older_backup(&small, dir).await;
    let s = tool::settings(&big.name, dir, &[]);
    let err = tool::try_backup(&s, &NoHooks).await.unwrap_err();
    assert!(
        matches!(err, BackupError::Target(TargetError::NoSpace { .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_untouched(dir, &before);
}

#[tokio::test(flavor = "multi_thread")]
async fn read_only_backup_dir_is_refused_with_a_hint() {
    let db = small_db("f_readonly");
    let fs = Tmpfs::mount(1024, "");
    let before = with_older_backup(&db, fs.dir.path()).await;
    fs.remount("remount,ro");
    let s = tool::settings(&db.name, fs.dir.path(), &[]);
    let err = tool::try_backup(&s, &NoHooks).await.unwrap_err();
    assert!(
        matches!(err, BackupError::Target(TargetError::Denied { .. })),
        "{err:?}"
    );
    // And through the binary: the lock cannot be taken, exit code 8.
    let (code, _, stderr) = tool::outcome(&tool::run(
        &tool::vars(&db.name, fs.dir.path()),
        &["backup"],
    ));
    assert_eq!(code, 8, "{stderr}");
    assert!(stderr.contains("BACKUP_DIR"), "{stderr}");
    assert_untouched(fs.dir.path(), &before);
}

/// Runs `action` on another connection just before the rows of `at` are read.
struct Before<F> {
    at: &'static str,
    db: String,
    action: F,
}

#[async_trait]
impl<F> DumpHooks for Before<F>
where
    F: Fn(String) -> String + Send + Sync,
{
    async fn before_table_data(&self, table: &str) {
        if table != self.at {
            return;
        }
        let mut c = mysql_async::Conn::new(db_env().mysql_opts(None))
            .await
            .unwrap();
        for sql in (self.action)(self.db.clone()).split(";\n") {
            if !sql.trim().is_empty() {
                c.query_drop(sql).await.unwrap();
            }
        }
        c.disconnect().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_lost_mid_dump_publishes_nothing() {
    let db = small_db("f_killed");
    let dir = tempfile::tempdir().unwrap();
    let before = with_older_backup(&db, dir.path()).await;
    // The server side of our dump connection goes away between two tables,
    // as when the server is killed: the dump must fail, not end early.
    let kill = Before {
        at: "b",
        db: db.name.clone(),
        action: |db: String| {
            format!(
                "SET @x = (SELECT MIN(ID) FROM information_schema.PROCESSLIST WHERE DB = '{db}' AND ID <> CONNECTION_ID());\n\
                 EXECUTE IMMEDIATE CONCAT('KILL CONNECTION ', @x)"
            )
        },
    };
    let s = tool::settings(&db.name, dir.path(), &[]);
    let err = tool::try_backup(&s, &kill).await.unwrap_err();
    assert!(matches!(err, BackupError::Dump(_)), "{err:?}");
    // Not the driver's bare "bytes remaining on stream": what happened and
    // what to do.
    let text = err.to_string();
    for needle in [
        "connection to the server was lost mid-query",
        "run it again",
    ] {
        assert!(text.contains(needle), "no {needle:?} in: {text}");
    }
    assert_untouched(dir.path(), &before);
}

#[test]
fn a_dump_connection_killed_while_rows_stream_says_what_happened_and_what_to_do() {
    let db = TestDb::new("f_killed_rows");
    // Enough rows that the dump is still reading them when it is killed.
    db.exec(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200));
         INSERT INTO t SELECT seq, REPEAT(SHA2(seq, 256), 3) FROM seq_1_to_300000;",
    );
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars(&db.name, dir.path());
    let mut child = tool::spawn(&vars, &["backup"]);
    // Kill the dump's connection once it is reading rows of `t`.
    let began = Instant::now();
    let killed = loop {
        let id = db.exec(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = '{}' AND INFO LIKE 'SELECT%FROM `t`%' AND ID <> CONNECTION_ID()",
            db.name
        ));
        if let Some(id) = id.lines().next() {
            db.exec(&format!("KILL CONNECTION {id}"));
            break true;
        }
        if child.try_wait().unwrap().is_some() || began.elapsed() > Duration::from_secs(60) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (code, _, stderr) = tool::outcome(&child.wait_with_output().unwrap());
    assert!(
        killed,
        "the dump finished before its connection could be killed: {stderr}"
    );
    assert_ne!(code, 0, "{stderr}");
    for needle in [
        "reading rows of table `t`",
        "connection to the server was lost mid-query",
        "run it again",
    ] {
        assert!(stderr.contains(needle), "no {needle:?} in: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn table_dropped_mid_dump_fails_the_backup() {
    let db = small_db("f_dropped");
    let dir = tempfile::tempdir().unwrap();
    let before = with_older_backup(&db, dir.path()).await;
    let hooks = Before {
        at: "a",
        db: db.name.clone(),
        action: |db: String| format!("DROP TABLE `{db}`.`c`"),
    };
    let s = tool::settings(&db.name, dir.path(), &[]);
    let err = tool::try_backup(&s, &hooks).await.unwrap_err();
    assert!(
        err.to_string().contains("`c`"),
        "the error names the table: {err}"
    );
    assert_untouched(dir.path(), &before);
}

#[test]
fn kill_9_at_twenty_random_points_never_leaves_a_partial_file_under_a_final_name() {
    let db = TestDb::new("f_kill9");
    // ~25 MB of SQL, so a backup takes long enough to be interrupted anywhere.
    db.exec(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(200));
         INSERT INTO t SELECT seq, REPEAT(SHA2(seq, 256), 3) FROM seq_1_to_120000;",
    );
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars(&db.name, dir.path());
    let started = Instant::now();
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{stderr}");
    let full = started.elapsed();
    let older = tool::file_digests(dir.path());

    let mut seed: u64 = 0x5eed_0009;
    for round in 0..20 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let delay = Duration::from_micros((seed >> 33) % (full.as_micros() as u64 + 1));
        let mut child = tool::bin(&vars)
            .args(["backup", "--no-prune"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for name in tool::files(dir.path()) {
            if name.ends_with(".partial") {
                continue;
            }
            if let Some(old) = older.iter().find(|(n, _)| *n == name) {
                let now = tool::file_digests(dir.path())
                    .into_iter()
                    .find(|(n, _)| *n == name)
                    .unwrap();
                assert_eq!(&now, old, "round {round}: {name} changed");
                continue;
            }
            // A name we did not have before: it must be a complete backup.
            if name.ends_with(".sql.gz") {
                let ok = std::process::Command::new("gzip")
                    .arg("-t")
                    .arg(dir.path().join(&name))
                    .status()
                    .unwrap();
                assert!(
                    ok.success(),
                    "round {round} (killed after {delay:?}): {name} is incomplete"
                );
            }
        }
    }
    // The next run cleans the partial files and works (without retention,
    // which would rotate the older backups of today this test watches).
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["backup", "--no-prune"]));
    assert_eq!(code, 0, "{stderr}");
    let after = tool::files(dir.path());
    assert!(after.iter().all(|n| !n.ends_with(".partial")), "{after:?}");
    for (name, digest) in &older {
        assert!(
            tool::file_digests(dir.path()).contains(&(name.clone(), digest.clone())),
            "{name} was lost"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_run_is_refused_while_the_lock_is_held() {
    let db = small_db("f_lock");
    let dir = tempfile::tempdir().unwrap();
    let _held = selmai_backup::format::catalog::lock_dir(dir.path()).unwrap();
    let (code, _, stderr) =
        tool::outcome(&tool::run(&tool::vars(&db.name, dir.path()), &["backup"]));
    assert_eq!(code, 7, "{stderr}");
    assert!(
        stderr.contains("another backup or restore is running"),
        "{stderr}"
    );
    assert!(tool::files(dir.path()).is_empty());
}
