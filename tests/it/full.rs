//! Full backups (`backup --kind full`, `restore SET --to DIR`): one
//! timestamp and one set manifest for the dump and both archives; a full
//! restore gives back the database and the files (with their modes)
//! together; a corrupt part makes the whole restore refuse with nothing
//! touched; a failing part leaves no part behind; retention deletes whole
//! sets, and the database kind's retention never deletes a part.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use selmai_backup::backup::full::{self, FullError};
use selmai_backup::config::Settings;
use selmai_backup::daemon::jobs::Jobs;
use selmai_backup::daemon::metrics::Metrics;
use selmai_backup::daemon::notify::Notifier;
use selmai_backup::daemon::retention;
use selmai_backup::daemon::schedule::{Kind, Trigger};
use selmai_backup::daemon::state::Outcome;
use selmai_backup::dump::{DumpOptions, NoHooks};
use selmai_backup::format::catalog::{self, Part};

use crate::support::tool::{self, volume};
use crate::support::tree::tree;
use crate::support::{assert_same_database, copy_with_mariadb_dump, mariadb_dump, TestDb};

/// A configuration tree and an uploads tree under `root`, with a 0600
/// secret and a 0750 directory.
fn sample_files(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let config = root.join("config");
    let uploads = root.join("uploads");
    fs::create_dir_all(config.join("nginx")).unwrap();
    fs::write(config.join(".env"), "APP_KEY=base64:secret\n").unwrap();
    fs::set_permissions(config.join(".env"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(config.join("nginx/nginx.conf"), "events {}\n").unwrap();
    fs::create_dir_all(uploads.join("2025/03")).unwrap();
    fs::write(uploads.join("2025/03/photo.jpg"), vec![0xffu8; 70_000]).unwrap();
    fs::set_permissions(uploads.join("2025"), fs::Permissions::from_mode(0o750)).unwrap();
    (config, uploads)
}

fn sample_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.exec(
        "CREATE TABLE invoices (id INT PRIMARY KEY, amount DECIMAL(10,2), note VARCHAR(40));
         INSERT INTO invoices VALUES (1, 100.00, 'paid'), (2, 42.50, 'café ☕');
         CREATE VIEW big AS SELECT id FROM invoices WHERE amount > 50;",
    );
    db
}

fn full_vars(db: &str, dir: &Path, config: &Path, uploads: &Path) -> Vec<(String, String)> {
    tool::vars_with(
        db,
        dir,
        &[
            ("CONFIG_PATHS", &config.display().to_string()),
            ("UPLOADS_PATHS", &uploads.display().to_string()),
        ],
    )
}

/// `restore SPEC --to TO --yes`, then the `extra` arguments: the exit code
/// and stderr.
fn restore_to(vars: &[(String, String)], spec: &str, to: &Path, extra: &[&str]) -> (i32, String) {
    let to = to.display().to_string();
    let mut args = vec!["restore", spec, "--to", &to, "--yes"];
    args.extend_from_slice(extra);
    let (code, _, err) = tool::outcome(&tool::run(vars, &args));
    (code, err)
}

/// `restore latest-full --to TO --yes`, which must succeed; its stderr.
fn restore_latest_full(vars: &[(String, String)], to: &Path) -> String {
    let (code, err) = restore_to(vars, "latest-full", to, &[]);
    assert_eq!(code, 0, "{err}");
    err
}

/// The file of the `kind` part of the set `o` stored.
fn part_file(o: &full::FullOutcome, kind: Part) -> String {
    o.manifest
        .parts
        .iter()
        .find(|p| p.kind == kind)
        .unwrap()
        .file
        .clone()
}

/// Names in `dir` that belong to full backups.
fn full_files(dir: &Path) -> Vec<String> {
    tool::files(dir)
        .into_iter()
        .filter(|n| n.starts_with("selmai_full_"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn full_backup_restores_database_and_files_together() {
    let db = sample_db("full_roundtrip");
    let reference = TestDb::new("full_roundtrip_ref");
    copy_with_mariadb_dump(&db, &reference);
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, uploads) = sample_files(src.path());
    let config_tree = tree(&config);
    let uploads_tree = tree(&uploads);
    let vars = full_vars(&db.name, dir.path(), &config, &uploads);

    let (code, out, err) = tool::outcome(&tool::run(&vars, &["backup", "--kind", "full"]));
    assert_eq!(code, 0, "{err}");
    let printed: Vec<String> = out
        .lines()
        .map(|l| {
            Path::new(l)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    // One timestamp for every part and the set manifest, printed last.
    assert_eq!(printed.len(), 4, "{out}");
    let set = printed[3].clone();
    assert!(set.ends_with(".full.json"), "{out}");
    let stamp = set.trim_end_matches(".full.json");
    assert_eq!(printed[0], format!("{stamp}.sql.gz"));
    assert_eq!(printed[1], format!("{stamp}.config.tar.gz"));
    assert_eq!(printed[2], format!("{stamp}.uploads.tar.gz"));
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(dir.path().join(&set)).unwrap()).unwrap();
    let kinds: Vec<&str> = manifest["parts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["db", "config", "uploads"]);
    let taken = manifest["taken"].as_str().unwrap();
    let stamp_time =
        chrono::NaiveDateTime::parse_from_str(&stamp["selmai_full_".len()..], "%Y%m%d_%H%M%S")
            .unwrap();
    assert_eq!(
        taken,
        stamp_time
            .and_utc()
            .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    );
    for p in manifest["parts"].as_array().unwrap() {
        let file = p["file"].as_str().unwrap();
        assert_eq!(
            p["size"].as_u64().unwrap(),
            fs::metadata(dir.path().join(file)).unwrap().len()
        );
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
    }

    // `list` shows the set and each part.
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["list", "--json"]));
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mut listed: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                r["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            (printed[1].clone(), "full:config".to_owned()),
            (set.clone(), "full".to_owned()),
            (printed[0].clone(), "full:db".to_owned()),
            (printed[2].clone(), "full:uploads".to_owned()),
        ]
    );

    // `verify` reads every part against the set manifest.
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["verify", "latest-full"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "ok: {set} (3 parts, each matches the set manifest)"
        )),
        "{out}"
    );

    // The server loses everything: tables and files.
    crate::support::db_env().exec(None, &format!("DROP DATABASE `{}`", db.name));
    fs::remove_dir_all(&config).unwrap();
    fs::remove_dir_all(&uploads).unwrap();

    // Without --to, a full restore is refused and nothing is touched.
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["restore", "latest-full", "--yes"]));
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("--to DIR"), "{err}");

    let out_dir = tempfile::tempdir().unwrap();
    let to = out_dir.path().join("restored");
    let err = restore_latest_full(&vars, &to);
    assert!(err.contains("restored full backup"), "{err}");
    assert_same_database(&db, &reference);
    assert_eq!(tree(&to.join("config/config")), config_tree);
    assert_eq!(tree(&to.join("uploads/uploads")), uploads_tree);

    // The set is also restorable by its name, without the suffix; a second
    // extraction into the same directory needs --force.
    let (code, err) = restore_to(&vars, stamp, &to, &[]);
    assert_eq!(code, 7, "not empty without --force: {err}");
    let (code, err) = restore_to(&vars, stamp, &to, &["--force"]);
    assert_eq!(code, 0, "{err}");
    assert_same_database(&db, &reference);

    // A part is an ordinary backup: the configuration part extracts alone.
    let alone = out_dir.path().join("config-only");
    let (code, err) = restore_to(&vars, &printed[1], &alone, &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tree(&alone.join("config")), config_tree);
}

#[tokio::test(flavor = "multi_thread")]
async fn full_restore_with_a_corrupt_part_refuses_and_touches_nothing() {
    let db = sample_db("full_corrupt");
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, uploads) = sample_files(src.path());
    let vars = full_vars(&db.name, dir.path(), &config, &uploads);
    let s = Settings::from_vars(vars.clone()).unwrap();
    let o = full::backup(
        &full::FullSpec::of(&s).unwrap(),
        &volume(dir.path()),
        &DumpOptions::default(),
        &NoHooks,
    )
    .await
    .unwrap();
    assert!(o.warnings.is_empty(), "{:?}", o.warnings);
    let uploads_part = part_file(&o, Part::Uploads);
    // One flipped byte in the last part: the database part is intact.
    let path = dir.path().join(&uploads_part);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&path, bytes).unwrap();
    db.exec("INSERT INTO invoices VALUES (3, 7.00, 'after the backup');");
    let before = mariadb_dump(&db);
    let files_before = tool::files(dir.path());

    let (code, _, err) = tool::outcome(&tool::run(&vars, &["verify", &o.set]));
    assert_eq!(code, 5, "{err}");

    let out_dir = tempfile::tempdir().unwrap();
    let to = out_dir.path().join("restored");
    let (code, err) = restore_to(&vars, &o.set, &to, &[]);
    assert_eq!(code, 5, "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with("selmai-backup: "))
        .unwrap_or_else(|| panic!("no error line: {err}"));
    assert!(
        line.contains("uploads part") && line.contains("nothing was restored"),
        "{err}"
    );
    assert_eq!(mariadb_dump(&db), before, "the database was not touched");
    assert!(!to.exists(), "nothing was extracted");
    assert_eq!(
        tool::files(dir.path()),
        files_before,
        "no safety snapshot was taken"
    );

    // A part the set manifest names but the volume lost: refused the same way.
    let config_part = part_file(&o, Part::Config);
    fs::remove_file(dir.path().join(&config_part)).unwrap();
    let (code, err) = restore_to(&vars, &o.set, &to, &[]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains(config_part.as_str()), "{err}");
    assert_eq!(mariadb_dump(&db), before, "the database was not touched");
    assert!(!to.exists(), "nothing was extracted");
}

#[tokio::test(flavor = "multi_thread")]
async fn full_backup_with_a_failing_part_leaves_no_part() {
    let db = sample_db("full_failing_part");
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, uploads) = sample_files(src.path());
    // One uploads path exists, the other does not: the uploads part fails
    // after the database and config parts were stored.
    let missing = src.path().join("missing");
    let s = tool::settings(
        &db.name,
        dir.path(),
        &[
            ("CONFIG_PATHS", &config.display().to_string()),
            (
                "UPLOADS_PATHS",
                &format!("{},{}", uploads.display(), missing.display()),
            ),
        ],
    );
    let err = full::backup(
        &full::FullSpec::of(&s).unwrap(),
        &volume(dir.path()),
        &DumpOptions::default(),
        &NoHooks,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            FullError::Part {
                part: Part::Uploads,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
    assert_eq!(full_files(dir.path()), Vec::<String>::new());

    // Through the binary: exit 1, one error line naming the part.
    let vars = tool::vars_with(
        &db.name,
        dir.path(),
        &[
            ("CONFIG_PATHS", &config.display().to_string()),
            (
                "UPLOADS_PATHS",
                &format!("{},{}", uploads.display(), missing.display()),
            ),
        ],
    );
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["backup", "--kind", "full"]));
    assert_eq!(code, 1, "{err}");
    assert_eq!(out, "", "nothing is announced as written");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("selmai-backup: "))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].contains("the uploads part of full backup")
            && lines[0].contains("no part of it was kept"),
        "{err}"
    );
    assert_eq!(full_files(dir.path()), Vec::<String>::new());

    // An archive none of whose paths exists is left out with a warning.
    let s = tool::settings(
        &db.name,
        dir.path(),
        &[
            ("CONFIG_PATHS", &config.display().to_string()),
            ("UPLOADS_PATHS", &missing.display().to_string()),
        ],
    );
    let o = full::backup(
        &full::FullSpec::of(&s).unwrap(),
        &volume(dir.path()),
        &DumpOptions::default(),
        &NoHooks,
    )
    .await
    .unwrap();
    let kinds: Vec<Part> = o.manifest.parts.iter().map(|p| p.kind).collect();
    assert_eq!(kinds, [Part::Db, Part::Config]);
    assert!(
        o.warnings.iter().any(|w| w.contains("no uploads part")),
        "{:?}",
        o.warnings
    );
}

/// Write a fake complete (or not) full set taken at `stamp` into `dir`.
fn fake_set(dir: &Path, stamp: &str, complete: bool) {
    for n in [
        format!("selmai_full_{stamp}.sql.gz"),
        format!("selmai_full_{stamp}.config.tar.gz"),
        format!("selmai_full_{stamp}.uploads.tar.gz"),
    ] {
        fs::write(dir.join(&n), b"old").unwrap();
        fs::write(dir.join(format!("{n}.manifest.json")), b"{}").unwrap();
    }
    if complete {
        fs::write(dir.join(format!("selmai_full_{stamp}.full.json")), b"{}").unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn full_retention_deletes_whole_sets_and_db_retention_never_a_part() {
    let db = sample_db("full_retention");
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, uploads) = sample_files(src.path());
    for (stamp, complete) in [
        ("20240101_040000", true),
        ("20240201_040000", true),
        ("20240301_040000", true),
        ("20240315_040000", false),
    ] {
        fake_set(dir.path(), stamp, complete);
    }
    let old_db = "selmai_backup_20240101_020000.sql.gz";
    fs::write(dir.path().join(old_db), b"old").unwrap();
    fs::write(dir.path().join(format!("{old_db}.manifest.json")), b"{}").unwrap();

    // A dry run plans whole sets: the incomplete one goes whatever the counts.
    let s = tool::settings(&db.name, dir.path(), &[("RETENTION_FULL_MONTHLY", "2")]);
    let plan = retention::plan_full(
        volume(dir.path())[0].as_ref(),
        &s.full_prefix,
        &s.full_retention,
        s.schedule.tz,
    )
    .await
    .unwrap();
    let verdicts: Vec<(String, bool)> = plan
        .verdicts
        .iter()
        .map(|(e, v)| (e.name.clone(), v.keeps()))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("selmai_full_20240315_040000.full.json".to_owned(), false),
            ("selmai_full_20240301_040000.full.json".to_owned(), true),
            ("selmai_full_20240201_040000.full.json".to_owned(), true),
            ("selmai_full_20240101_040000.full.json".to_owned(), false),
        ]
    );

    // `prune --dry-run` prints the same plan, one line per set.
    let cli_vars = tool::vars_with(&db.name, dir.path(), &[("RETENTION_FULL_MONTHLY", "2")]);
    let (code, out, err) = tool::outcome(&tool::run(&cli_vars, &["prune", "--dry-run"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("volume: 4 full backups, 2 kept, 2 to delete; dry run, nothing deleted"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("selmai_full_20240315_040000.full.json")
                && l.contains("did not finish")),
        "{out}"
    );

    // The daemon's full job makes a set, then keeps the newest set of each
    // of the last 2 months: the new one and March 2024, whole.
    let vars = full_vars(&db.name, dir.path(), &config, &uploads);
    let mut vars = vars;
    vars.push(("RETENTION_FULL_MONTHLY".into(), "2".into()));
    vars.push(("RETENTION_DAILY".into(), "1".into()));
    vars.push(("RETENTION_WEEKLY".into(), "0".into()));
    vars.push(("RETENTION_MONTHLY".into(), "0".into()));
    let s = Settings::from_vars(vars).unwrap();
    let jobs = Jobs::new(
        Arc::new(s.clone()),
        volume(dir.path()),
        Notifier::new(s.notify.clone()),
        Metrics::default(),
    );
    let run = jobs.run_once(Kind::Full, Trigger::Cli).await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    let set = run.file.unwrap();
    assert!(set.ends_with(".full.json"), "{set}");
    let left = full_files(dir.path());
    let stamps: std::collections::BTreeSet<String> = left
        .iter()
        .map(|n| n["selmai_full_".len().."selmai_full_".len() + 15].to_owned())
        .collect();
    let new_stamp = set["selmai_full_".len()..].trim_end_matches(".full.json");
    assert_eq!(
        stamps.into_iter().collect::<Vec<_>>(),
        ["20240301_040000", new_stamp]
    );
    // March 2024 is still whole: 3 parts, 3 part manifests, the set manifest.
    assert_eq!(
        left.iter()
            .filter(|n| n.contains("20240301_040000"))
            .count(),
        7
    );
    // The full job does not rotate database backups.
    assert!(dir.path().join(old_db).exists());

    // The database job rotates database backups only, never a full part,
    // not even the database part of a full set.
    let run = jobs.run_once(Kind::Db, Trigger::Cli).await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    assert!(!dir.path().join(old_db).exists());
    assert_eq!(full_files(dir.path()), left);
    let listed = catalog::list_db(volume(dir.path())[0].as_ref(), &s.prefix)
        .await
        .unwrap();
    assert!(listed.iter().all(|e| !e.name.starts_with("selmai_full_")));
}

#[tokio::test(flavor = "multi_thread")]
async fn full_backup_lost_with_the_volume_is_restored_from_the_bucket() {
    use crate::support::bucket::{create_bucket, raw_bucket, s3_endpoint, unique_bucket};
    let db = sample_db("full_s3");
    let reference = TestDb::new("full_s3_ref");
    copy_with_mariadb_dump(&db, &reference);
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, uploads) = sample_files(src.path());
    let config_tree = tree(&config);
    let uploads_tree = tree(&uploads);
    let bucket = unique_bucket("full");
    create_bucket(&bucket).await;
    let (config_s, uploads_s) = (config.display().to_string(), uploads.display().to_string());
    let vars = crate::support::bucket::bucket_vars(
        &db.name,
        dir.path(),
        &s3_endpoint(),
        &bucket,
        &[
            ("BACKUP_PASSPHRASE", "off-site"),
            ("CONFIG_PATHS", &config_s),
            ("UPLOADS_PATHS", &uploads_s),
        ],
    );
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["backup", "--kind", "full"]));
    assert_eq!(code, 0, "{err}");
    let set = Path::new(out.lines().last().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(out.contains(".uploads.tar.gz.enc"), "{out}");
    let remote = raw_bucket(&bucket)
        .get_object(format!("selmai/prod/{set}"))
        .await
        .unwrap();
    assert_eq!(
        remote.bytes().as_ref(),
        &fs::read(dir.path().join(&set)).unwrap()[..]
    );

    // The server is lost with its volume, its database and its files.
    for f in tool::files(dir.path()) {
        fs::remove_file(dir.path().join(f)).unwrap();
    }
    crate::support::db_env().exec(None, &format!("DROP DATABASE `{}`", db.name));
    fs::remove_dir_all(src.path()).unwrap();

    let out_dir = tempfile::tempdir().unwrap();
    let to = out_dir.path().join("restored");
    restore_latest_full(&vars, &to);
    assert_same_database(&db, &reference);
    assert_eq!(tree(&to.join("config/config")), config_tree);
    assert_eq!(tree(&to.join("uploads/uploads")), uploads_tree);
    // The volume now holds the complete set, fetched in its stored form.
    assert_eq!(
        full_files(dir.path()).len(),
        7,
        "{:?}",
        full_files(dir.path())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn full_backup_with_the_bucket_down_keeps_the_local_set_and_exits_8() {
    let db = sample_db("full_s3_down");
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (config, uploads) = sample_files(src.path());
    let (config_s, uploads_s) = (config.display().to_string(), uploads.display().to_string());
    // Nothing listens on port 9 of the loopback address.
    let vars = crate::support::bucket::bucket_vars(
        &db.name,
        dir.path(),
        "http://127.0.0.1:9",
        "nowhere",
        &[("CONFIG_PATHS", &config_s), ("UPLOADS_PATHS", &uploads_s)],
    );
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["backup", "--kind", "full"]));
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("bucket"), "{err}");
    let set = Path::new(out.lines().last().unwrap())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(dir.path().join(&set).is_file(), "{out}");
    assert_eq!(
        full_files(dir.path()).len(),
        7,
        "{:?}",
        full_files(dir.path())
    );
}
