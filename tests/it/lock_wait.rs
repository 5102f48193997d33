//! Waiting for a lock another connection holds is bounded: every session
//! sets `lock_wait_timeout` from `DB_LOCK_WAIT_TIMEOUT` (the server's
//! default is a day), and a restore that runs out names the connections
//! on the database, one of which holds the lock, and what to do.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;

use crate::support::TestDb;
use crate::tool;

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

    let mut child = tool::bin(&vars)
        .args(["restore", "latest", "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
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
