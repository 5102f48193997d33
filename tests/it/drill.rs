//! Restore drills (`verify --restore-test`, `selmai_backup::drill`): a drill
//! passes on Sakila and on the corner-case database; a backup whose data was
//! altered after the dump, with its SHA-256 and size refreshed so that only
//! the fingerprints can tell, fails naming the table (library and binary,
//! exit code 5); the scratch database is gone afterwards in every case.

use std::path::Path;
use std::process::{Command, Stdio};

use selmai_backup::drill::{self, DrillReport};
use selmai_backup::pipeline;
use sha2::{Digest, Sha256};

use crate::support::{db_env, TestDb};
use crate::tool;

/// Locate `file` in `dir`, verify it and drill it against the test server.
async fn drill(db: &str, dir: &Path, file: &str) -> DrillReport {
    let s = tool::settings(db, dir, &[]);
    let source = pipeline::locate(file, &s.prefix, &tool::volume(dir))
        .await
        .unwrap();
    pipeline::verify(&source, None).await.unwrap();
    let report = drill::run(&source, None, &s.db().unwrap(), &drill::scratch_name())
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
    let out = Command::new("gzip")
        .arg("-dc")
        .arg(&path)
        .output()
        .expect("running gzip -dc");
    assert!(out.status.success());
    let sql = String::from_utf8(out.stdout).unwrap();
    assert_eq!(sql.matches(from).count(), 1, "{from:?} must occur once");
    let sql = sql.replace(from, to);
    let mut gz = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = gz.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        stdin.write_all(sql.as_bytes()).unwrap();
    });
    let out = gz.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    std::fs::write(&path, &out.stdout).unwrap();

    let mpath = dir.join(selmai_backup::manifest::name_for(file));
    let mut m: serde_json::Value = serde_json::from_slice(&std::fs::read(&mpath).unwrap()).unwrap();
    m["size"] = out.stdout.len().into();
    m["sha256"] = hex::encode(Sha256::digest(&out.stdout)).into();
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
