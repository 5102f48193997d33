//! The binary as operators meet it: exit codes and one-line messages for
//! bad input, refusals that leave the database untouched (a missing
//! confirmation, a corrupt or truncated file), `list`, and snapshots of
//! every `--help` (update with SELMAI_UPDATE_SNAPSHOTS=1).

use std::path::Path;

use crate::support::tool;
use crate::support::{mariadb_dump, TestDb};

fn small_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.exec(
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1,'one'),(2,'two');",
    );
    db
}

#[test]
fn misspelt_variable_exits_2_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with("x", dir.path(), &[("DB_PASWORD", "x")]);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["list"]));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("DB_PASWORD") && err.contains("did you mean DB_PASSWORD"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
}

#[test]
fn bad_value_exits_2_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("DB_PORT", "abc"),
        ("BACKUP_COMPRESSION", "rar"),
        ("DB_CONNECT_TIMEOUT", "-1"),
    ] {
        let vars = tool::vars_with("x", dir.path(), &[(var, value)]);
        let (code, _, err) = tool::outcome(&tool::run(&vars, &["backup"]));
        assert_eq!(code, 2, "{var}={value}: {err}");
        assert!(err.contains(var), "{var}: {err}");
    }
}

#[test]
fn wrong_password_exits_3_and_never_prints_the_secret() {
    let db = small_db("cli_pw");
    let dir = tempfile::tempdir().unwrap();
    let canary = "canary-Zq81-secret";
    let vars = tool::vars_with(&db.name, dir.path(), &[("DB_PASSWORD", canary)]);
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("DB_PASSWORD"), "{err}");
    assert!(!err.contains(canary) && !out.contains(canary));
    assert!(tool::files(dir.path()).is_empty());
}

#[test]
fn unreachable_server_exits_3_naming_host_and_port() {
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(
        "x",
        dir.path(),
        &[
            ("DB_HOST", "127.0.0.1"),
            ("DB_PORT", "1"),
            ("DB_CONNECT_TIMEOUT", "1"),
        ],
    );
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("127.0.0.1:1") && err.contains("DB_HOST"),
        "{err}"
    );
}

#[test]
fn backup_prints_the_file_and_list_shows_it() {
    let db = small_db("cli_list");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars(&db.name, dir.path());
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{err}");
    let path = out.trim();
    assert!(Path::new(path).is_file(), "{out}");
    let name = Path::new(path)
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["list", "--json"]));
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["name"], name.as_str());
    assert_eq!(rows[0]["locations"][0], "volume");
    assert_eq!(rows[0]["manifest"], true);
    let (_, table, _) = tool::outcome(&tool::run(&vars, &["list"]));
    assert!(table.contains(&name), "{table}");
}

#[test]
fn restore_of_an_unknown_name_exits_4_and_lists_the_newest() {
    let db = small_db("cli_unknown");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars(&db.name, dir.path());
    let (_, out, _) = tool::outcome(&tool::run(&vars, &["backup"]));
    let name = Path::new(out.trim())
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let (code, _, err) = tool::outcome(&tool::run(
        &vars,
        &["restore", "selmai_backup_19990101_000000.sql.gz", "--yes"],
    ));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains(&name), "lists the newest backups: {err}");
}

#[test]
fn restore_without_a_terminal_needs_yes_and_touches_nothing() {
    let db = small_db("cli_confirm");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars(&db.name, dir.path());
    assert_eq!(tool::outcome(&tool::run(&vars, &["backup"])).0, 0);
    db.exec("INSERT INTO t VALUES (3, 'three')");
    let before = mariadb_dump(&db);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["restore", "latest"]));
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(mariadb_dump(&db), before);
    // With --yes it restores (row 3 is gone again).
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["restore", "latest", "--yes"]));
    assert_eq!(code, 0, "{err}");
    assert_eq!(db.exec("SELECT COUNT(*) FROM t").trim(), "2");
}

/// Damage the newest backup with `damage`, then check restore refuses it
/// with exit code 5 and leaves the database exactly as it was.
fn corrupt_restore_is_refused(tag: &str, keep_manifest: bool, damage: fn(&mut Vec<u8>)) {
    let db = small_db(tag);
    db.exec("INSERT INTO t SELECT seq, REPEAT('payload', 50) FROM seq_10_to_5000");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars(&db.name, dir.path());
    let (_, out, _) = tool::outcome(&tool::run(&vars, &["backup"]));
    let file = std::path::PathBuf::from(out.trim());
    if !keep_manifest {
        let m = selmai_backup::format::manifest::name_for(&file.display().to_string());
        std::fs::remove_file(m).unwrap();
    }
    let mut bytes = std::fs::read(&file).unwrap();
    damage(&mut bytes);
    std::fs::write(&file, bytes).unwrap();
    // The database moves on after the backup; a refused restore must not touch it.
    db.exec("DELETE FROM t WHERE id = 1; CREATE TABLE later (x INT)");
    let before = mariadb_dump(&db);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["restore", "latest", "--yes"]));
    assert_eq!(code, 5, "{tag}: {err}");
    assert!(
        err.contains(file.file_name().unwrap().to_str().unwrap()),
        "names the file: {err}"
    );
    assert_eq!(mariadb_dump(&db), before, "{tag}: the database was touched");
}

#[test]
fn flipped_byte_with_manifest_exits_5_before_touching_the_database() {
    corrupt_restore_is_refused("cli_flip", true, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x01;
    });
}

#[test]
fn flipped_byte_without_manifest_is_caught_by_the_gzip_checksum() {
    corrupt_restore_is_refused("cli_flip_legacy", false, |b| {
        let mid = b.len() / 2;
        b[mid] ^= 0x40;
    });
}

#[test]
fn truncated_file_exits_5_before_touching_the_database() {
    corrupt_restore_is_refused("cli_trunc", false, |b| {
        let half = b.len() / 2;
        b.truncate(half);
    });
}

/// Mode bits of `p`.
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// Backups hold the whole database: whatever the umask (here 000, the
/// worst), every file the tool writes into BACKUP_DIR (dumps, manifests,
/// archives, safety snapshots, the lock and the run history) and the
/// output of `decrypt` is 0600.
#[test]
fn every_file_written_is_0600_even_under_umask_000() {
    let db = small_db("cli_umask");
    let dir = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("app.conf"), "x = 1\n").unwrap();
    let config_paths = config.path().display().to_string();
    for pass in [None, Some("umask test passphrase")] {
        let mut extra = vec![("CONFIG_PATHS", config_paths.as_str())];
        if let Some(p) = pass {
            extra.push(("BACKUP_PASSPHRASE", p));
        }
        let vars = tool::vars_with(&db.name, dir.path(), &extra);
        // --no-prune: the plain and the encrypted backups of the same day
        // must both stay for the checks below.
        for args in [
            &["backup", "--no-prune"][..],
            &["backup", "--kind", "config", "--no-prune"],
            // A restore over a database with tables takes a safety snapshot first.
            &["restore", "latest", "--yes"],
        ] {
            let (code, _, err) = tool::outcome(&tool::run_with_umask(&vars, "000", args));
            assert_eq!(code, 0, "{args:?}: {err}");
        }
    }
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for want in [
        selmai_backup::format::catalog::LOCK_FILE,
        selmai_backup::daemon::state::STATE_FILE,
    ] {
        assert!(names.iter().any(|n| n == want), "{want} in {names:?}");
    }
    for prefix in ["selmai_backup_", "selmai_config_", "selmai_prerestore_"] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(prefix) && n.ends_with(".manifest.json")),
            "{prefix}* in {names:?}"
        );
    }
    for n in &names {
        assert_eq!(mode(&dir.path().join(n)), 0o600, "{n} in {names:?}");
    }

    let enc = names
        .iter()
        .find(|n| n.starts_with("selmai_backup_") && n.ends_with(".sql.gz.enc"))
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let plain = out.path().join("plain.sql.gz");
    let vars = tool::vars_with(
        &db.name,
        dir.path(),
        &[("BACKUP_PASSPHRASE", "umask test passphrase")],
    );
    let (code, _, err) = tool::outcome(&tool::run_with_umask(
        &vars,
        "000",
        &["decrypt", enc, plain.to_str().unwrap()],
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(mode(&plain), 0o600);
}

#[test]
fn help_texts_match_their_snapshots() {
    let dir = tool::vars("x", Path::new("/nonexistent"));
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/help");
    let update = std::env::var_os("SELMAI_UPDATE_SNAPSHOTS").is_some();
    for cmd in [
        "", "backup", "restore", "list", "verify", "decrypt", "run", "health", "prune", "check",
    ] {
        let mut args: Vec<&str> = cmd.split_whitespace().collect();
        args.push("--help");
        let (code, out, err) = tool::outcome(&tool::run(&dir, &args));
        assert_eq!(code, 0, "{err}");
        let file = snapshots.join(format!("{}.txt", if cmd.is_empty() { "main" } else { cmd }));
        if update {
            std::fs::create_dir_all(&snapshots).unwrap();
            std::fs::write(&file, &out).unwrap();
        }
        let want = std::fs::read_to_string(&file).unwrap_or_else(|_| {
            panic!(
                "missing snapshot {} (run with SELMAI_UPDATE_SNAPSHOTS=1)",
                file.display()
            )
        });
        assert_eq!(
            out, want,
            "--help of `{cmd}` changed; review and update the snapshot"
        );
    }
}
