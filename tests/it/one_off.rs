//! The one-off `backup` (what cron users and `docker compose run --rm backup
//! backup` call) behaves as the daemon's runs do: it refuses to start below
//! `HEALTH_MIN_FREE_MB` (as `run` and `check` do), applies retention after a
//! success (unless `--no-prune`), alerts on failure, and abandons cleanly on
//! SIGINT or SIGTERM: no partial file, no open multipart upload, exit 130
//! or 143 once cleaned up.

use std::time::{Duration, Instant};

use crate::daemon::{backups, fake_backups};
use crate::support::bucket::bucket_vars;
use crate::support::bucket::{create_bucket, open_uploads, raw_bucket, s3_endpoint, unique_bucket};
use crate::support::sinks::HttpSink;
use crate::support::tool;
use crate::support::TestDb;

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

#[test]
fn a_one_off_backup_applies_retention_after_success_unless_told_not_to() {
    let db = small_db("oo_retention");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(
        &db.name,
        dir.path(),
        &[
            ("RETENTION_DAILY", "1"),
            ("RETENTION_WEEKLY", "0"),
            ("RETENTION_MONTHLY", "0"),
        ],
    );
    fake_backups(dir.path(), (1..=3).map(|d| (2020, 1, d)));
    let (code, out, stderr) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{stderr}");
    let newest = std::path::Path::new(out.trim())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        backups(dir.path()),
        std::slice::from_ref(&newest),
        "RETENTION_DAILY=1 keeps only the newest backup after a one-off run"
    );
    assert!(
        tool::files(dir.path()).contains(&format!("{newest}.manifest.json")),
        "the newest backup lost its manifest"
    );

    fake_backups(dir.path(), (1..=3).map(|d| (2020, 1, d)));
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["backup", "--no-prune"]));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(backups(dir.path()).len(), 5, "--no-prune deleted backups");
}

#[test]
fn a_failed_one_off_backup_alerts_as_the_daemon_does() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(200);
    let vars = tool::vars_with(
        "oo_no_such_database",
        dir.path(),
        &[("NOTIFY_WEBHOOK_URL", &hook.url)],
    );
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 3, "a missing database is exit 3: {stderr}");
    let ev = hook
        .expect(Duration::from_secs(5), "failure webhook")
        .json();
    assert_eq!(ev["event"], "backup_failed", "{ev}");
    assert_eq!(ev["kind"], "db", "{ev}");
    assert!(
        ev["error"]
            .as_str()
            .is_some_and(|e| e.contains("oo_no_such_database")),
        "the alert names the database: {ev}"
    );
    // And `health` sees the failed attempt.
    let state =
        std::fs::read_to_string(dir.path().join(selmai_backup::daemon::state::STATE_FILE)).unwrap();
    assert!(state.contains("oo_no_such_database"), "{state}");
}

/// A database whose backup takes a few seconds and several 5 MiB parts.
fn big_db(tag: &str) -> TestDb {
    TestDb::with_hex_rows(tag, 100_000)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_and_sigint_abandon_a_one_off_backup_cleanly() {
    let db = big_db("oo_signals");
    let bucket = unique_bucket("oo-signals");
    create_bucket(&bucket).await;
    for (signal, want) in [("TERM", 143), ("INT", 130)] {
        let dir = tempfile::tempdir().unwrap();
        let vars = bucket_vars(
            &db.name,
            dir.path(),
            &s3_endpoint(),
            &bucket,
            &[("S3_PART_SIZE_MB", "5")],
        );
        let mut child = tool::spawn(&vars, &["backup"]);
        // Interrupt it mid-upload: once its multipart upload is open.
        let began = Instant::now();
        while open_uploads(&raw_bucket(&bucket)).await.is_empty() {
            if child.try_wait().unwrap().is_some() {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "the backup ended before it could be interrupted: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            assert!(
                began.elapsed() < Duration::from_secs(120),
                "no upload started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(sent.success());
        let began = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(
                began.elapsed() < Duration::from_secs(20),
                "SIG{signal}: still running 20 s later"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let out = child.wait_with_output().unwrap();
        let (code, _, stderr) = tool::outcome(&out);
        assert_eq!(code, want, "SIG{signal}: {stderr}");
        assert!(
            stderr.contains(&format!("interrupted by SIG{signal}")),
            "SIG{signal}: {stderr}"
        );
        // The bucket copy starts once the backup is complete on the volume
        // (it counts there from then on): what the volume may keep is that
        // whole backup with its manifest, never a part of one.
        let left: Vec<String> = tool::files(dir.path());
        assert!(
            left.is_empty()
                || (left.len() == 2
                    && left.iter().any(|n| n.ends_with(".sql.gz"))
                    && left.iter().any(|n| n.ends_with(".sql.gz.manifest.json"))),
            "SIG{signal} left {left:?} on the volume"
        );
        let open = open_uploads(&raw_bucket(&bucket)).await;
        assert!(open.is_empty(), "SIG{signal} left open uploads {open:?}");
        let objects: Vec<String> = raw_bucket(&bucket)
            .list(String::new(), None)
            .await
            .unwrap()
            .into_iter()
            .flat_map(|p| p.contents)
            .map(|o| o.key)
            .collect();
        assert!(
            objects.is_empty(),
            "SIG{signal} left {objects:?} in the bucket"
        );
    }
}
