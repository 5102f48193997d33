//! Retention after a successful backup, on every target and only on our files; `prune` and `prune --dry-run`.

use super::*;

/// A target whose deletes are refused (a bucket key that may put but not delete).
#[derive(Debug)]
struct NoDelete(LocalTarget);

#[async_trait]
impl Target for NoDelete {
    fn label(&self) -> &'static str {
        "bucket"
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        self.0.list(prefix).await
    }
    async fn metadata(&self, name: &str) -> Result<Option<ObjectInfo>, TargetError> {
        self.0.metadata(name).await
    }
    async fn create(&self, name: &str) -> Result<Box<dyn Upload>, TargetError> {
        self.0.create(name).await
    }
    async fn open(&self, name: &str) -> Result<ObjectReader, TargetError> {
        self.0.open(name).await
    }
    async fn delete(&self, name: &str) -> Result<(), TargetError> {
        Err(TargetError::Denied {
            target: "bucket",
            name: name.to_owned(),
            detail: "AccessDenied: s3:DeleteObject".into(),
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_runs_after_a_success_on_every_target_and_only_on_our_files() {
    let db = small_db("d_retention");
    let vol = tempfile::tempdir().unwrap();
    let bucket = tempfile::tempdir().unwrap();
    let old = (1..=10).map(|d| (2024, 1, d));
    fake_backups(vol.path(), old.clone());
    fake_backups(bucket.path(), old);
    let foreign = [
        "other_20240101_020000.sql.gz",
        "selmai_backup_notes.txt",
        "selmai_backup_20240101_020000.tar.gz",
    ];
    for f in foreign {
        std::fs::write(vol.path().join(f), b"not ours").unwrap();
    }
    let hook = HttpSink::start(200);
    let s = tool::settings(
        &db.name,
        vol.path(),
        &[
            ("RETENTION_DAILY", "2"),
            ("RETENTION_WEEKLY", "0"),
            ("RETENTION_MONTHLY", "0"),
            ("NOTIFY_WEBHOOK_URL", &hook.url),
        ],
    );

    // A failed backup deletes nothing.
    let bad = tool::settings("d_no_such_db", vol.path(), &[("RETENTION_DAILY", "1")]);
    let before = tool::file_digests(vol.path());
    let run = jobs(&bad, tool::volume(vol.path()))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    assert_eq!(run.outcome, Outcome::Failed);
    assert_eq!(
        tool::file_digests(vol.path()),
        before,
        "a failed backup must not rotate"
    );

    let targets: Vec<Arc<dyn Target>> = vec![
        Arc::new(LocalTarget::new(vol.path())),
        Arc::new(NoDelete(LocalTarget::new(bucket.path()))),
    ];
    let run = jobs(&s, targets)
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    let new = run.file.clone().unwrap();
    // Volume: the new backup and the newest old day; manifests went with
    // their backups; foreign files untouched.
    let mut want = vec![
        "selmai_backup_20240110_020000.sql.gz".to_owned(),
        "selmai_backup_20240110_020000.sql.gz.manifest.json".to_owned(),
        new.clone(),
        format!("{new}.manifest.json"),
    ];
    want.extend(foreign.iter().map(|f| f.to_string()));
    want.sort();
    assert_eq!(tool::files(vol.path()), want);
    // Bucket: its deletes are refused; reported, not fatal, alerted.
    assert_eq!(backups(bucket.path()).len(), 11);
    assert_eq!(run.warnings.len(), 9, "{:?}", run.warnings);
    assert!(
        run.warnings[0].contains("retention could not delete selmai_backup_2024010")
            && run.warnings[0].contains("from the bucket")
            && run.warnings[0].contains("AccessDenied"),
        "{:?}",
        run.warnings
    );
    let ev = hook.expect(Duration::from_secs(5), "warning alert").json();
    assert_eq!(ev["event"], "backup_warning", "{ev}");
    assert_eq!(ev["warnings"].as_array().unwrap().len(), 9);
}

/// A delete interrupted between a backup and its manifest (data goes
/// first) leaves the manifest alone; `prune` deletes such manifests of ours,
/// and nothing else.
#[test]
fn prune_deletes_manifests_whose_backup_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    fake_backups(dir.path(), [(2025, 1, 19), (2025, 1, 20)]);
    let orphans = [
        "selmai_backup_20250101_020000.sql.gz.manifest.json",
        "selmai_config_20250101_020000.tar.gz.manifest.json",
    ];
    let foreign = [
        "other_20250101_020000.sql.gz.manifest.json",
        "selmai_backup_notes.manifest.json",
    ];
    for name in orphans.iter().chain(&foreign) {
        std::fs::write(dir.path().join(name), b"{}").unwrap();
    }
    let vars = tool::vars("nodb", dir.path());
    let before = tool::file_digests(dir.path());

    let (code, out, err) = tool::outcome(&tool::run(&vars, &["prune", "--dry-run"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        tool::file_digests(dir.path()),
        before,
        "a dry run changes nothing"
    );
    for name in orphans {
        assert!(
            out.contains(&format!("{name}  delete (a manifest whose backup is gone)")),
            "{name} not planned:\n{out}"
        );
    }
    for name in foreign {
        assert!(!out.contains(name), "{name} is not ours:\n{out}");
    }

    let (code, _, err) = tool::outcome(&tool::run(&vars, &["prune"]));
    assert_eq!(code, 0, "{err}");
    let left = tool::files(dir.path());
    for name in orphans {
        assert!(
            !left.contains(&name.to_owned()),
            "{name} survived: {left:?}"
        );
    }
    for name in foreign {
        assert!(
            left.contains(&name.to_owned()),
            "{name} was deleted: {left:?}"
        );
    }
    // The two backups and their manifests stay.
    assert_eq!(left.len(), 2 * 2 + foreign.len(), "{left:?}");
}

#[test]
fn prune_dry_run_prints_every_file_with_its_verdict_then_prune_deletes_exactly_those() {
    let dir = tempfile::tempdir().unwrap();
    // Daily backups from 2025-01-20 back to 2024-12-12 (40 days), and foreign files.
    let days: Vec<_> = (0..40)
        .map(|i| {
            let d =
                chrono::NaiveDate::from_ymd_opt(2025, 1, 20).unwrap() - chrono::Duration::days(i);
            use chrono::Datelike;
            (d.year(), d.month(), d.day())
        })
        .collect();
    fake_backups(dir.path(), days);
    std::fs::write(dir.path().join("other_20250101_020000.sql.gz"), b"x").unwrap();
    let vars = tool::vars("nodb", dir.path());
    let before = tool::file_digests(dir.path());

    let (code, out, err) = tool::outcome(&tool::run(&vars, &["prune", "--dry-run"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        tool::file_digests(dir.path()),
        before,
        "a dry run changes nothing"
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("volume: 40 backups, 10 kept, 30 to delete; dry run, nothing deleted"),
        "{out}"
    );
    assert_eq!(lines.len(), 41, "{out}");
    let verdict = |name: &str| -> String {
        let l = lines
            .iter()
            .find(|l| l.trim_start().starts_with(name))
            .unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
        l.trim_start()[name.len()..].trim().to_owned()
    };
    assert_eq!(
        verdict("selmai_backup_20250120_020000.sql.gz"),
        "keep (newest, daily 1/7, weekly 1/4, monthly 1/3)"
    );
    assert_eq!(
        verdict("selmai_backup_20250118_020000.sql.gz"),
        "keep (daily 3/7)"
    );
    // Sunday 2025-01-19 closes ISO week 3.
    assert_eq!(
        verdict("selmai_backup_20250119_020000.sql.gz"),
        "keep (daily 2/7, weekly 2/4)"
    );
    assert_eq!(
        verdict("selmai_backup_20250112_020000.sql.gz"),
        "keep (weekly 3/4)"
    );
    assert_eq!(
        verdict("selmai_backup_20250105_020000.sql.gz"),
        "keep (weekly 4/4)"
    );
    // December's last; November has no backup, so the third monthly slot stays free.
    assert_eq!(
        verdict("selmai_backup_20241231_020000.sql.gz"),
        "keep (monthly 2/3)"
    );
    assert_eq!(verdict("selmai_backup_20241212_020000.sql.gz"), "delete (not the newest of any of the last 7 days, 4 ISO weeks or 3 months that have backups)");
    assert!(
        !out.contains("other_"),
        "foreign files are not ours to judge:\n{out}"
    );
    let condemned: Vec<String> = lines[1..]
        .iter()
        .filter(|l| l.contains(" delete ("))
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect();
    assert_eq!(condemned.len(), 30);

    let (code, out, err) = tool::outcome(&tool::run(&vars, &["prune"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("volume: 40 backups, 10 kept, 30 to delete ("),
        "{out}"
    );
    let left = tool::files(dir.path());
    for c in &condemned {
        assert!(!left.contains(c), "{c} survived");
        assert!(
            !left.contains(&format!("{c}.manifest.json")),
            "manifest of {c} survived"
        );
    }
    assert_eq!(left.len(), 10 * 2 + 1, "{left:?}");
    assert!(left.contains(&"other_20250101_020000.sql.gz".to_owned()));
}
