//! Off-site copies under faults (RELIABILITY.md item 24), through the
//! binary: a backup on the volume is restored, verified and listed without
//! waiting on a bucket that is down; a backup made during an outage is
//! copied to the bucket by the next run (manifest last), `list` marks it
//! local only until then and `health` names it once it is overdue; and a
//! bucket that accepts connections but never answers costs a backup one
//! run-wide budget, after the local backup is complete, however big.

use std::time::{Duration, SystemTime};

use selmai_backup::config::Settings;

use crate::support::bucket::bucket_vars;
use crate::support::bucket::{create_bucket, raw_bucket, raw_exists, s3_endpoint, unique_bucket};
use crate::support::tool::{self, file_name, run_async as run};
use crate::support::TestDb;

fn small_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.exec("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10)); INSERT INTO t VALUES (1, 'a'), (2, 'b')");
    db
}

// The issue: with the S3 server stopped, a restore of a file on the volume
// exited 8 after 62 s, `verify latest` and `list` after 31 s.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_on_the_volume_is_used_without_waiting_on_a_bucket_that_is_down() {
    let db = small_db("offsite_down");
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("down");
    create_bucket(&bucket).await;
    let up = bucket_vars(&db.name, dir.path(), &s3_endpoint(), &bucket, &[]);
    let (code, out, err, _) = run(&up, &["backup"]).await;
    assert_eq!(code, 0, "{err}");
    let path = out.trim().to_owned();
    let name = file_name(&path);

    // Now the bucket is down: nothing listens there, and the requests are
    // retried as shipped.
    let down = bucket_vars(
        &db.name,
        dir.path(),
        "http://127.0.0.1:9",
        &bucket,
        &[("S3_RETRIES", "5")],
    );
    let into = TestDb::new("offsite_down_into");
    for args in [
        vec![
            "restore",
            path.as_str(),
            "--into",
            into.name.as_str(),
            "--yes",
        ],
        vec![
            "restore",
            name.as_str(),
            "--into",
            into.name.as_str(),
            "--yes",
        ],
        vec!["restore", "latest", "--into", into.name.as_str(), "--yes"],
        vec!["verify", "latest"],
        vec!["list"],
    ] {
        let (code, out, err, took) = run(&down, &args).await;
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(
            took < Duration::from_secs(2),
            "{args:?} waited {took:?} on the bucket: {err}"
        );
        match args[0] {
            "list" => {
                assert!(out.contains(&name), "{out}");
                let lines: Vec<&str> = err
                    .lines()
                    .filter(|l| l.contains("bucket could not be read"))
                    .collect();
                assert_eq!(lines.len(), 1, "one line names the bucket: {err}");
            }
            _ if args[1] == "latest" => assert!(
                err.contains("might hold a backup newer than") && err.contains(&name),
                "{args:?}: {err}"
            ),
            _ => {}
        }
    }
    assert_eq!(into.exec("SELECT COUNT(*) FROM t").trim(), "2");
}

// The issue: after the S3 server came back, the next backup was copied,
// but the one made during the outage stayed local only.
#[tokio::test(flavor = "multi_thread")]
async fn a_backup_made_during_an_outage_reaches_the_bucket_on_the_next_run() {
    let db = small_db("offsite_outage");
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("outage");
    create_bucket(&bucket).await;
    let extra = [("HEALTH_MAX_AGE_HOURS", "100")];
    let down = bucket_vars(&db.name, dir.path(), "http://127.0.0.1:9", &bucket, &extra);
    let up = bucket_vars(&db.name, dir.path(), &s3_endpoint(), &bucket, &extra);
    let settings = Settings::from_vars(up.clone()).unwrap();

    let (code, out, err, _) = run(&down, &["backup"]).await;
    assert_eq!(code, 8, "the copy failed: {err}");
    let missed = file_name(&out);
    let key = |n: &str| format!("selmai/prod/{n}");
    assert!(!raw_exists(&raw_bucket(&bucket), &key(&missed)).await);

    // The bucket is back: `list` reads it and says what is local only.
    let (code, listing, err, _) = run(&up, &["list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == missed.as_str())
        .unwrap();
    assert_eq!(row["local_only"], true, "{row}");
    let (_, text, _, _) = run(&up, &["list"]).await;
    assert!(
        text.lines()
            .any(|l| l.contains(&missed) && l.contains("local only")),
        "{text}"
    );
    // The state file records it as missing from the bucket (the health
    // rule on it is in `health`'s unit tests), and `health` names it.
    let state = selmai_backup::daemon::state::State::load(dir.path()).unwrap();
    let missing: Vec<_> = state.offsite.iter().flat_map(|c| &c.missing).collect();
    assert_eq!(missing.len(), 1, "{state:?}");
    assert_eq!(
        (state.offsite[0].target.as_str(), missing[0].name.as_str()),
        ("bucket", missed.as_str())
    );
    let later = chrono::Utc::now() + chrono::Duration::hours(27);
    let why = selmai_backup::daemon::health::check(&settings, later).unwrap_err();
    assert!(why.contains(&missed), "{why}");

    // The next daily run, a day later (the backup is moved back a day:
    // retention keeps one backup a day, and only what it keeps is copied).
    let taken = chrono::NaiveDateTime::parse_from_str(
        missed
            .trim_start_matches("selmai_backup_")
            .trim_end_matches(".sql.gz"),
        "%Y%m%d_%H%M%S",
    )
    .unwrap();
    let missed = format!(
        "selmai_backup_{}.sql.gz",
        (taken - chrono::Duration::days(1)).format("%Y%m%d_%H%M%S")
    );
    for suffix in ["", ".manifest.json"] {
        std::fs::rename(
            dir.path().join(format!("{}{suffix}", file_name(&out))),
            dir.path().join(format!("{missed}{suffix}")),
        )
        .unwrap();
    }
    let (code, out, err, _) = run(&up, &["backup"]).await;
    assert_eq!(code, 0, "{err}");
    let next = file_name(&out);
    assert_ne!(next, missed);
    let raw = raw_bucket(&bucket);
    for n in [&missed, &next] {
        let remote = raw.get_object(key(n)).await.unwrap();
        assert_eq!(
            remote.bytes().as_ref(),
            &std::fs::read(dir.path().join(n)).unwrap()[..],
            "{n}: the bucket's copy differs from the volume's"
        );
        assert!(raw_exists(&raw, &key(&format!("{n}.manifest.json"))).await);
    }
    let (_, listing, _, _) = run(&up, &["list", "--json"]).await;
    let rows: serde_json::Value = serde_json::from_str(&listing).unwrap();
    for r in rows.as_array().unwrap() {
        assert_eq!(
            r["locations"],
            serde_json::json!(["volume", "bucket"]),
            "{r}"
        );
        assert_eq!(r["local_only"], false, "{r}");
    }
    selmai_backup::daemon::health::check(&settings, later).unwrap();
    let state = selmai_backup::daemon::state::State::load(dir.path()).unwrap();
    assert!(
        state.offsite.iter().all(|c| c.missing.is_empty()),
        "{state:?}"
    );
}

/// An endpoint that accepts connections and never answers.
async fn silent_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    format!("http://{addr}")
}

// The issue: an unreachable bucket cost two minutes per backup (every
// step retried on its own) before the local backup was reported.
#[tokio::test(flavor = "multi_thread")]
async fn an_unanswering_bucket_costs_a_backup_one_budget_after_the_local_backup() {
    let db = small_db("offsite_budget");
    let dir = tempfile::tempdir().unwrap();
    let vars = bucket_vars(
        &db.name,
        dir.path(),
        &silent_endpoint().await,
        "nowhere",
        &[
            ("S3_RETRIES", "5"),
            ("S3_REQUEST_TIMEOUT", "5"),
            ("BACKUP_OFFSITE_TIMEOUT", "3"),
        ],
    );
    let before = SystemTime::now();
    let (code, out, err, took) = run(&vars, &["backup"]).await;
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("BACKUP_OFFSITE_TIMEOUT"), "{err}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(8),
        "took {took:?}: {err}"
    );
    // The local backup was complete before the budget ran out.
    let manifest = dir
        .path()
        .join(format!("{}.manifest.json", file_name(&out)));
    let written = std::fs::metadata(&manifest).unwrap().modified().unwrap();
    assert!(
        written.duration_since(before).unwrap() < Duration::from_millis(2500),
        "the local backup waited on the bucket"
    );
}

// The daemon catches up at start, before its first scheduled run.
#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_copies_what_is_missing_off_site_at_start() {
    use selmai_backup::daemon::{jobs::Jobs, metrics::Metrics, notify::Notifier};

    let db = small_db("offsite_start");
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("start");
    create_bucket(&bucket).await;
    let down = bucket_vars(&db.name, dir.path(), "http://127.0.0.1:9", &bucket, &[]);
    let (code, out, err, _) = run(&down, &["backup"]).await;
    assert_eq!(code, 8, "{err}");
    let missed = file_name(&out);

    let up = bucket_vars(&db.name, dir.path(), &s3_endpoint(), &bucket, &[]);
    let settings = Settings::from_vars(up).unwrap();
    let jobs = Jobs::new(
        std::sync::Arc::new(settings.clone()),
        selmai_backup::cmd::targets(&settings).unwrap(),
        Notifier::new(settings.notify.clone()),
        Metrics::default(),
    );
    jobs.catch_up_at_start().await;
    let raw = raw_bucket(&bucket);
    for key in [missed.clone(), format!("{missed}.manifest.json")] {
        assert!(
            raw_exists(&raw, &format!("selmai/prod/{key}")).await,
            "{key}"
        );
    }
    let state = selmai_backup::daemon::state::State::load(dir.path()).unwrap();
    assert!(
        state.offsite.iter().all(|c| c.missing.is_empty()),
        "{state:?}"
    );
}

// The same for a full backup: `verify latest-full` reads the set on the
// volume without waiting on the bucket.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_backup_on_the_volume_is_verified_without_waiting_on_a_bucket_that_is_down() {
    let db = small_db("offsite_full_down");
    let dir = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let (config, uploads) = (files.path().join("config"), files.path().join("uploads"));
    for d in [&config, &uploads] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("a.txt"), b"some content").unwrap();
    }
    let (config, uploads) = (config.display().to_string(), uploads.display().to_string());
    let paths = [
        ("CONFIG_PATHS", config.as_str()),
        ("UPLOADS_PATHS", uploads.as_str()),
    ];
    let vars = tool::vars_with(&db.name, dir.path(), &paths);
    let (code, _, err, _) = run(&vars, &["backup", "--kind", "full"]).await;
    assert_eq!(code, 0, "{err}");
    let mut down = paths.to_vec();
    down.extend([("S3_RETRIES", "5")]);
    let down = bucket_vars(&db.name, dir.path(), "http://127.0.0.1:9", "nowhere", &down);
    let (code, _, err, took) = run(&down, &["verify", "latest-full"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(took < Duration::from_secs(2), "waited {took:?}: {err}");
    assert!(err.contains("might hold a full backup newer than"), "{err}");
}

// The same pass: a bucket that accepts connections and never answers
// does not hold up a backup bigger than its upload buffers (one 5 MiB part
// in flight, 15 MiB in all): the dump never waits for it to start, and it
// is copied from the volume afterwards, which fails within one budget.
#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_that_never_answers_does_not_hold_up_a_big_backup() {
    // About 28 MB once compressed.
    let db = TestDb::with_hex_rows("offsite_stall", 200_000);
    let dir = tempfile::tempdir().unwrap();
    let vars = bucket_vars(
        &db.name,
        dir.path(),
        &silent_endpoint().await,
        "nowhere",
        &[
            ("S3_PART_SIZE_MB", "5"),
            ("S3_CONCURRENCY", "1"),
            ("S3_REQUEST_TIMEOUT", "60"),
            ("BACKUP_OFFSITE_TIMEOUT", "3"),
        ],
    );
    let (code, out, err, took) = run(&vars, &["backup"]).await;
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("BACKUP_OFFSITE_TIMEOUT"), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}: {err}");
    let name = file_name(&out);
    let size = std::fs::metadata(dir.path().join(&name)).unwrap().len();
    assert!(
        size > 20_000_000,
        "{size} bytes: too small to fill the buffers"
    );
    // Complete and sound on the volume.
    let local = tool::vars(&db.name, dir.path());
    let (code, out, err, _) = run(&local, &["verify", &name]).await;
    assert_eq!(code, 0, "{out}{err}");
}
