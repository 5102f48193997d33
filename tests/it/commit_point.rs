//! The commit point of a backup, and its name: whatever instant a `kill -9`
//! lands on, a backup of ours is visible on the volume under its final
//! name only together with its manifest (the manifest is published first
//! there), and the bucket never holds a manifest without its backup (the
//! manifest is published last there: a backup counts once it is); the next start
//! removes what the kill left (partial files, incomplete uploads, manifests
//! whose data never arrived); `list` and `latest` count complete backups
//! only; and back-to-back backups are never named after a time that has
//! not come yet.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::Utc;
use selmai_backup::dump::NoHooks;
use selmai_backup::format::catalog;

use crate::support::bucket::bucket_vars;
use crate::support::bucket::{create_bucket, open_uploads, raw_bucket, s3_endpoint, unique_bucket};
use crate::support::tool;
use crate::support::TestDb;

const PREFIX: &str = "selmai_backup";
const BUCKET_PREFIX: &str = "selmai/prod/";

/// A small database: a backup of it takes a fraction of a second.
fn small_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.exec(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(64));
         INSERT INTO t SELECT seq, SHA2(seq, 256) FROM seq_1_to_2000;",
    );
    db
}

/// The names on the volume, partial files and bookkeeping left out.
fn volume_names(dir: &Path) -> BTreeSet<String> {
    tool::files(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// The names in the bucket under our prefix.
async fn bucket_names(bucket: &str) -> BTreeSet<String> {
    raw_bucket(bucket)
        .list(BUCKET_PREFIX.into(), None)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|page| page.contents)
        .filter_map(|o| o.key.strip_prefix(BUCKET_PREFIX).map(str::to_owned))
        .collect()
}

/// Every backup of ours among `names` has its manifest beside it.
fn assert_every_backup_has_its_manifest(names: &BTreeSet<String>, place: &str, when: &str) {
    for n in names {
        if catalog::parse_db_name(PREFIX, n).is_some() {
            assert!(
                names.contains(&format!("{n}.manifest.json")),
                "{when}: {n} is in the {place} under its final name without its manifest"
            );
        }
    }
}

/// No manifest whose backup is missing.
fn assert_no_orphan_manifest(names: &BTreeSet<String>, place: &str, when: &str) {
    for n in names {
        if let Some(data) = n.strip_suffix(".manifest.json") {
            assert!(
                names.contains(data),
                "{when}: the {place} holds the manifest {n} of a backup that is not stored"
            );
        }
    }
}

/// 100 `kill -9`s of `backup` at random instants (a third anywhere, a third
/// late in the run, a third right as a new name appears on the volume),
/// checking after each that no backup is visible on the volume without its
/// manifest and that the bucket holds no manifest without its backup; then
/// a normal run cleans up and completes what the kills left, and
/// `list`/`latest` see complete backups only.
async fn kill_9_a_hundred_times(tag: &str, bucket: Option<&str>) {
    let db = small_db(tag);
    let dir = tempfile::tempdir().unwrap();
    let vars = match bucket {
        Some(b) => bucket_vars(&db.name, dir.path(), &s3_endpoint(), b, &[]),
        None => tool::vars(&db.name, dir.path()),
    };
    // How long a whole run takes here, process start included.
    let started = Instant::now();
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{stderr}");
    let full = started.elapsed();

    let mut seed: u64 = 0x5eed_c0de ^ tag.len() as u64;
    let mut interrupted = 0;
    for round in 0..100 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let r = (seed >> 33) as f64 / (1u64 << 31) as f64;
        let mut child = tool::bin(&vars)
            .arg("backup")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let how = match round % 3 {
            // Anywhere in the run.
            0 => {
                let delay = full.mul_f64(r * 1.05);
                tokio::time::sleep(delay).await;
                format!("after {delay:?}")
            }
            // Late in the run, where it publishes.
            1 => {
                let delay = full.mul_f64((0.6 + 0.4 * r) * 1.05);
                tokio::time::sleep(delay).await;
                format!("after {delay:?}")
            }
            // The instant a new backup name shows on the volume, plus up
            // to a millisecond: the commit point itself.
            _ => {
                let before = volume_names(dir.path());
                let began = Instant::now();
                while child.try_wait().unwrap().is_none() && began.elapsed() < full * 2 {
                    let now = volume_names(dir.path());
                    if now
                        .iter()
                        .any(|n| !before.contains(n) && catalog::parse_db_name(PREFIX, n).is_some())
                    {
                        std::thread::sleep(Duration::from_micros((r * 1000.0) as u64));
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
                format!("{:?} in, as a new name appeared", began.elapsed())
            }
        };
        if child.try_wait().unwrap().is_none() {
            interrupted += 1;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let when = format!("kill {round} {how}");
        assert_every_backup_has_its_manifest(&volume_names(dir.path()), "volume", &when);
        if let Some(b) = bucket {
            assert_no_orphan_manifest(&bucket_names(b).await, "bucket", &when);
        }
    }
    assert!(
        interrupted >= 50,
        "only {interrupted} of 100 runs were still running when killed: the kills prove little"
    );

    // The next start cleans up on every target, then backs up.
    let (code, out, stderr) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{stderr}");
    let newest = Path::new(out.trim())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let names = volume_names(dir.path());
    assert_every_backup_has_its_manifest(&names, "volume", "after the clean-up");
    assert_no_orphan_manifest(&names, "volume", "after the clean-up");
    let hidden: Vec<String> = tool::files(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".partial"))
        .collect();
    assert!(hidden.is_empty(), "partial files left: {hidden:?}");
    if let Some(b) = bucket {
        let names = bucket_names(b).await;
        assert_every_backup_has_its_manifest(&names, "bucket", "after the clean-up");
        assert_no_orphan_manifest(&names, "bucket", "after the clean-up");
        let open = open_uploads(&raw_bucket(b)).await;
        assert!(
            open.is_empty(),
            "incomplete multipart uploads left: {open:?}"
        );
    }

    // `list` shows complete backups only, each where both halves are.
    let (code, listing, stderr) = tool::outcome(&tool::run(&vars, &["list", "--json"]));
    assert_eq!(code, 0, "{stderr}");
    let rows: serde_json::Value = serde_json::from_str(&listing).unwrap();
    let in_bucket = match bucket {
        Some(b) => bucket_names(b).await,
        None => BTreeSet::new(),
    };
    for row in rows.as_array().unwrap() {
        assert_eq!(
            row["manifest"], true,
            "list shows an incomplete backup: {row}"
        );
        let name = row["name"].as_str().unwrap();
        if row["locations"].to_string().contains("bucket") {
            assert!(
                in_bucket.contains(&format!("{name}.manifest.json")),
                "list counts {name} in the bucket, which has no manifest for it"
            );
        }
    }
    // `latest` is the newest complete backup, and it verifies.
    let (code, out, stderr) = tool::outcome(&tool::run(&vars, &["verify", "latest"]));
    assert_eq!(code, 0, "{stderr}");
    assert!(
        out.contains(&newest) && out.contains("matches the manifest"),
        "verify latest took another file: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_kills_never_show_a_backup_without_its_manifest_on_the_volume() {
    kill_9_a_hundred_times("cp_kill_volume", None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_kills_never_leave_a_manifest_without_its_backup_in_the_bucket() {
    let bucket = unique_bucket("commit-point");
    create_bucket(&bucket).await;
    kill_9_a_hundred_times("cp_kill_bucket", Some(&bucket)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn back_to_back_backups_are_never_named_in_the_future() {
    let db = small_db("cp_names");
    let dir = tempfile::tempdir().unwrap();
    let s = tool::settings(&db.name, dir.path(), &[]);
    let mut names = BTreeSet::new();
    for _ in 0..4 {
        let o = tool::try_backup(&s, &NoHooks).await.unwrap();
        let now = Utc::now();
        let taken = catalog::parse_db_name(PREFIX, &o.file).unwrap().taken;
        assert!(
            taken <= now,
            "{} is named {} ahead of the clock",
            o.file,
            (taken - now).num_milliseconds() as f64 / 1000.0
        );
        assert!(names.insert(o.file.clone()), "{} was reused", o.file);
    }
}
