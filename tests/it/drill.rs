//! Restore drills (`verify --restore-test`, `selmai_backup::restore::drill`): a drill
//! passes on Sakila and on the corner-case database; a backup whose data was
//! altered after the dump, with its SHA-256 and size refreshed so that only
//! the fingerprints can tell, fails naming the table (library and binary,
//! exit code 5); the scratch database is gone afterwards in every case.
//! Also the pre-restore safety snapshot: the printed undo command gives back
//! the replaced state, expired snapshots go, retention never sees them.
//! And the daemon's drill (`Kind::Drill`): recorded in the state file,
//! reported by `health` without making it fail.

use std::path::Path;
use std::sync::Arc;

use selmai_backup::backup::snapshot;
use selmai_backup::daemon::health;
use selmai_backup::daemon::jobs::Jobs;
use selmai_backup::daemon::metrics::Metrics;
use selmai_backup::daemon::notify::Notifier;
use selmai_backup::daemon::schedule::{Kind, Trigger};
use selmai_backup::daemon::state::{Outcome, State};
use selmai_backup::format::catalog;
use selmai_backup::restore::definer::Definer;
use selmai_backup::restore::drill::{self, DrillReport};
use selmai_backup::restore::open;
use sha2::{Digest, Sha256};

use crate::support::tool;
use crate::support::{db_env, mariadb_dump, TestDb};

/// Locate `file` in `dir`, verify it and drill it against the test server.
async fn drill(db: &str, dir: &Path, file: &str) -> DrillReport {
    let s = tool::settings(db, dir, &[]);
    let source = open::locate(file, &s.prefix, &tool::volume(dir))
        .await
        .unwrap();
    open::verify(&source, None).await.unwrap();
    let report = drill::run(
        &source,
        None,
        &s.db().unwrap(),
        &drill::scratch_name(),
        Definer::Keep,
    )
    .await
    .unwrap_or_else(|e| panic!("drill of {file} could not run: {e}"));
    assert_scratch_gone(&report.scratch);
    report
}

fn assert_scratch_gone(scratch: &str) {
    assert!(scratch.starts_with(drill::SCRATCH_PREFIX), "{scratch}");
    let found = db_env().exec(
        None,
        &format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{scratch}'"
        ),
    );
    assert_eq!(
        found.trim(),
        "",
        "scratch database {scratch} was left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn drill_passes_on_sakila() {
    let src = TestDb::new("drill_sakila");
    src.load_sakila();
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    let report = drill(&src.name, dir.path(), &out.file).await;
    assert!(report.passed(), "{report}");
    assert_eq!(report.tables.len(), out.manifest.tables.len());
    let rental = report.tables.iter().find(|t| t.name == "rental").unwrap();
    assert_eq!(rental.found_rows, Some(16044));
    assert!(rental.found_fingerprint.is_some());
    let count = |kind: &str| {
        report
            .objects
            .iter()
            .find(|o| o.kind == kind)
            .unwrap()
            .expected
    };
    assert_eq!(
        (count("view"), count("trigger"), count("routine")),
        (7, 6, 6)
    );
    assert!(report.to_string().contains("PASSED"), "{report}");
}

#[tokio::test(flavor = "multi_thread")]
async fn drill_passes_on_the_corner_cases() {
    let src = TestDb::new("drill_corner");
    src.load_corner_cases();
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    let report = drill(&src.name, dir.path(), &out.file).await;
    assert!(report.passed(), "{report}");
}

/// Rewrite the gzip backup `file` in `dir` with `from` replaced by `to` in
/// its SQL, then refresh size and SHA-256 in its manifest.
fn tamper(dir: &Path, file: &str, from: &str, to: &str) {
    let path = dir.join(file);
    let sql = String::from_utf8(tool::gunzip(&path)).unwrap();
    assert_eq!(sql.matches(from).count(), 1, "{from:?} must occur once");
    let gz = tool::gzip(sql.replace(from, to).as_bytes());
    std::fs::write(&path, &gz).unwrap();

    let mpath = dir.join(selmai_backup::format::manifest::name_for(file));
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    m["size"] = gz.len().into();
    m["sha256"] = hex::encode(Sha256::digest(&gz)).into();
    std::fs::write(&mpath, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn drill_of_altered_data_fails_naming_the_table() {
    let src = TestDb::new("drill_altered");
    src.exec(
        "CREATE TABLE untouched (id INT PRIMARY KEY, v VARCHAR(40));
         INSERT INTO untouched VALUES (1, 'left alone'), (2, 'also left alone');
         CREATE TABLE ledger (id INT PRIMARY KEY, note VARCHAR(40));
         INSERT INTO ledger VALUES (1, 'paid 100 euros'), (2, 'refunded');",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    tamper(dir.path(), &out.file, "paid 100 euros", "paid 900 euros");

    // verify alone cannot see it: the manifest was refreshed.
    let report = drill(&src.name, dir.path(), &out.file).await;
    assert!(!report.passed(), "{report}");
    let problems = report.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("`ledger` has different content"),
        "{problems:?}"
    );

    // The binary: exit 5, the report names the table, no scratch left.
    let vars = tool::vars(&src.name, dir.path());
    let o = tool::run(&vars, &["verify", &out.file, "--restore-test"]);
    let (code, stdout, stderr) = tool::outcome(&o);
    assert_eq!(code, 5, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stderr.contains("`ledger` has different content"),
        "{stderr}"
    );
    assert!(stdout.contains("FAILED"), "{stdout}");
    let scratch = stdout
        .split_whitespace()
        .find(|w| w.starts_with(drill::SCRATCH_PREFIX))
        .expect("the report names its scratch database")
        .trim_end_matches(',');
    assert_scratch_gone(scratch);
}

/// A drill covers the history of system-versioned tables: a backup with
/// history passes; a file that restores the same current rows but none of
/// the history the manifest recorded fails, naming the table.
#[tokio::test(flavor = "multi_thread")]
async fn drill_fails_when_the_history_of_a_versioned_table_is_missing() {
    let src = TestDb::new("drill_history");
    src.exec(
        "CREATE TABLE audit (id INT PRIMARY KEY, v VARCHAR(20)) WITH SYSTEM VERSIONING;
         INSERT INTO audit VALUES (1, 'a'), (2, 'b');
         CREATE TABLE plain (id INT PRIMARY KEY); INSERT INTO plain VALUES (1);",
    );
    src.exec("UPDATE audit SET v = 'a2' WHERE id = 1");
    src.exec("DELETE FROM audit WHERE id = 2");
    let dir = tempfile::tempdir().unwrap();
    let with_history = tool::backup(&src.name, dir.path()).await;
    let report = drill(&src.name, dir.path(), &with_history.file).await;
    assert!(report.passed(), "{report}");

    // The same current rows without their history, under the first
    // backup's record of the tables.
    src.exec("DELETE HISTORY FROM audit");
    let without = tool::backup(&src.name, dir.path()).await;
    let manifest = |file: &str| {
        dir.path()
            .join(selmai_backup::format::manifest::name_for(file))
    };
    let first: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest(&with_history.file)).unwrap()).unwrap();
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manifest(&without.file)).unwrap()).unwrap();
    m["tables"] = first["tables"].clone();
    std::fs::write(
        manifest(&without.file),
        serde_json::to_vec_pretty(&m).unwrap(),
    )
    .unwrap();

    let report = drill(&src.name, dir.path(), &without.file).await;
    assert!(!report.passed(), "{report}");
    let problems = report.problems();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("`audit`"), "{problems:?}");
}

/// Names in `dir` with the safety snapshot prefix (data files only).
fn snapshots(dir: &Path) -> Vec<String> {
    tool::files(dir)
        .into_iter()
        .filter(|n| n.starts_with(snapshot::PREFIX) && !n.ends_with(".json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn safety_snapshot_undoes_a_restore() {
    let db = TestDb::new("drill_snapshot");
    db.exec(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20));
         INSERT INTO t VALUES (1, 'one'), (2, 'two');",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&db.name, dir.path()).await;
    // Work done since the backup, which a restore of it would lose.
    db.exec(
        "INSERT INTO t VALUES (3, 'three'); UPDATE t SET v = 'uno' WHERE id = 1;
         CREATE TABLE since (x INT); INSERT INTO since VALUES (42);",
    );
    let before = mariadb_dump(&db);
    // An expired snapshot goes after the restore; a backup of the same age stays.
    for name in [
        "selmai_prerestore_20000101_000000.sql.gz",
        "selmai_backup_20000101_000000.sql.gz",
    ] {
        std::fs::write(dir.path().join(name), b"old").unwrap();
    }

    let vars = tool::vars(&db.name, dir.path());
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["restore", &out.file, "--yes"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("restored") && err.contains("s\n"),
        "elapsed time: {err}"
    );
    let undo = err
        .lines()
        .find_map(|l| l.strip_prefix("to undo this restore: "))
        .unwrap_or_else(|| panic!("no undo command printed: {err}"));
    let words: Vec<&str> = undo.split_whitespace().collect();
    assert_eq!(words[..2], ["selmai-backup", "restore"], "{undo}");
    assert_eq!(words[3..], ["--yes"], "{undo}");
    let snap = words[2];
    assert_eq!(snapshots(dir.path()), vec![snap.to_owned()]);
    assert!(dir
        .path()
        .join("selmai_backup_20000101_000000.sql.gz")
        .exists());
    assert_ne!(mariadb_dump(&db), before, "the restore replaced the data");
    // Retention and `latest` only see backups, never snapshots.
    let listed = catalog::list_db(tool::volume(dir.path())[0].as_ref(), "selmai_backup")
        .await
        .unwrap();
    assert!(listed.iter().all(|e| !e.name.starts_with(snapshot::PREFIX)));

    // The printed command gives back the state before the restore.
    let (code, _, err) = tool::outcome(&tool::run(&vars, &words[1..]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(mariadb_dump(&db), before);

    // --no-safety-snapshot takes none.
    let count = snapshots(dir.path()).len();
    let (code, _, err) = tool::outcome(&tool::run(
        &vars,
        &["restore", &out.file, "--yes", "--no-safety-snapshot"],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("to undo"), "{err}");
    assert_eq!(snapshots(dir.path()).len(), count);
}

#[tokio::test(flavor = "multi_thread")]
async fn scheduled_drill_is_recorded_and_reported_by_health() {
    let src = TestDb::new("drill_daemon");
    src.exec(
        "CREATE TABLE ledger (id INT PRIMARY KEY, note VARCHAR(40));
         INSERT INTO ledger VALUES (1, 'paid 100 euros');",
    );
    let dir = tempfile::tempdir().unwrap();
    let s = tool::settings(&src.name, dir.path(), &[]);
    assert_eq!(s.schedule.of(Kind::Drill).unwrap().as_str(), "0 5 2 * *");
    let jobs = Jobs::new(
        Arc::new(s.clone()),
        tool::volume(dir.path()),
        Notifier::new(s.notify.clone()),
        Metrics::default(),
    );
    let backup = jobs.run_once(Kind::Db, Trigger::Schedule).await;
    assert_eq!(backup.outcome, Outcome::Success, "{:?}", backup.error);
    let file = backup.file.unwrap();

    let run = jobs.run_once(Kind::Drill, Trigger::Schedule).await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    assert_eq!(run.file.as_deref(), Some(file.as_str()));
    let healthy = health::check(&s, chrono::Utc::now()).unwrap();
    assert!(healthy.contains("last restore drill passed"), "{healthy}");

    tamper(dir.path(), &file, "paid 100 euros", "paid 900 euros");
    let run = jobs.run_once(Kind::Drill, Trigger::Schedule).await;
    assert_eq!(run.outcome, Outcome::Failed);
    let error = run.error.unwrap();
    assert!(error.contains("`ledger` has different content"), "{error}");
    let recorded = State::load(dir.path()).unwrap();
    assert_eq!(
        recorded.last_run(Kind::Drill).unwrap().error.as_deref(),
        Some(error.as_str())
    );
    // Reported, but backups are still made: the container stays healthy.
    let healthy = health::check(&s, chrono::Utc::now()).unwrap();
    assert!(healthy.contains("last restore drill FAILED"), "{healthy}");
}

#[tokio::test(flavor = "multi_thread")]
async fn definers_of_missing_users_are_stripped_or_rewritten() {
    let src = TestDb::new("drill_definer");
    src.exec(
        "CREATE TABLE t (id INT PRIMARY KEY);
         CREATE DEFINER=`selmai_ghost_user`@`%` SQL SECURITY INVOKER VIEW v AS SELECT id FROM t;
         CREATE DEFINER=`selmai_ghost_user`@`%` PROCEDURE p() SELECT 1;",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    let s = tool::settings(&src.name, dir.path(), &[]);
    let source = open::locate(&out.file, &s.prefix, &tool::volume(dir.path()))
        .await
        .unwrap();
    let me = db_env().exec(None, "SELECT CURRENT_USER()");
    for (mode, want) in [
        (Definer::Keep, "selmai_ghost_user@%".to_owned()),
        (Definer::Strip, me.trim().to_owned()),
        (Definer::Rewrite, me.trim().to_owned()),
    ] {
        let dst = TestDb::new("drill_definer_dst");
        open::apply_with(&source, None, &s.db().unwrap(), &dst.name, mode)
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let got = dst.exec(&format!(
            "SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{0}'
             UNION ALL
             SELECT DEFINER FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{0}'",
            dst.name
        ));
        let got: Vec<&str> = got.lines().collect();
        assert_eq!(got, [want.as_str(), want.as_str()], "{mode:?}");
    }
    // RESTORE_DEFINER is a checked setting.
    let s = tool::settings(&src.name, dir.path(), &[("RESTORE_DEFINER", "strip")]);
    assert_eq!(s.restore_definer, Definer::Strip);
}
