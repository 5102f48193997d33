//! The one-off `backup` (what cron users and `docker compose run --rm backup
//! backup` call) behaves as the daemon's runs do: it refuses to start below
//! `HEALTH_MIN_FREE_MB` (as `run` and `check` do), applies retention after a
//! success (unless `--no-prune`), alerts on failure, and abandons cleanly on
//! SIGINT or SIGTERM: no partial file, no open multipart upload, exit 130
//! or 143 once cleaned up.

use std::time::{Duration, Instant};

use crate::support::TestDb;
use crate::tool;

/// A small database.
fn small_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1),(2),(3);");
    db
}

/// Run the binary, killing it if it has not exited after `limit`.
fn run_for(vars: &[(String, String)], args: &[&str], limit: Duration) -> (i32, String) {
    let mut child = tool::bin(vars)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "`{}` still running after {limit:?}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let (code, stdout, stderr) = tool::outcome(&out);
    (code, format!("{stdout}{stderr}"))
}

#[test]
fn below_health_min_free_mb_backup_run_and_check_refuse_to_start() {
    let db = small_db("oo_minfree");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(
        &db.name,
        dir.path(),
        &[
            ("HEALTH_MIN_FREE_MB", "999999999"),
            ("BACKUP_CATCH_UP", "never"),
        ],
    );
    for args in [&["backup"][..], &["run"], &["check"]] {
        let (code, out) = run_for(&vars, args, Duration::from_secs(30));
        assert_eq!(
            code,
            8,
            "`{}` must refuse with exit 8: {out}",
            args.join(" ")
        );
        assert!(
            out.contains("HEALTH_MIN_FREE_MB"),
            "`{}` must name HEALTH_MIN_FREE_MB: {out}",
            args.join(" ")
        );
    }
    assert!(
        tool::files(dir.path()).is_empty(),
        "nothing may be written: {:?}",
        tool::files(dir.path())
    );
}
