//! Encrypted backups end to end (RELIABILITY.md 8-12 at the level of the
//! tool; the format's own tamper cases are unit tests in `crypto`): exact
//! round trips, `decrypt` output that the stock client restores, wrong and
//! missing passphrases, a damaged file refused before the database is
//! touched, old `.gpg` backups, and `verify` working without a database.

use std::path::Path;
use std::process::Command;

use selmai_backup::dump::NoHooks;

use crate::support::tool;
use crate::support::{assert_same_database, mariadb_dump, TestDb};

const PASS: &str = "correct horse battery staple";

fn with_pass(db: &str, dir: &Path) -> Vec<(String, String)> {
    tool::vars_with(db, dir, &[("BACKUP_PASSPHRASE", PASS)])
}

#[tokio::test(flavor = "multi_thread")]
async fn encrypted_round_trip_is_exact_and_never_stores_plaintext() {
    for (tag, load) in [("enc_sakila", true), ("enc_corner", false)] {
        let src = TestDb::new(tag);
        if load {
            src.load_sakila();
        } else {
            src.load_corner_cases();
        }
        let dir = tempfile::tempdir().unwrap();
        let s = tool::settings(&src.name, dir.path(), &[("BACKUP_PASSPHRASE", PASS)]);
        let out = tool::try_backup(&s, &NoHooks).await.unwrap();
        assert!(out.file.ends_with(".sql.gz.enc"), "{}", out.file);
        let enc = out
            .manifest
            .encryption
            .as_ref()
            .expect("the manifest records the encryption");
        assert_eq!(
            (enc.memory_kib, enc.iterations, enc.parallelism),
            (47104, 4, 4)
        );
        let bytes = std::fs::read(dir.path().join(&out.file)).unwrap();
        assert!(selmai_backup::format::crypto::is_encrypted(&bytes));
        assert!(
            !bytes.windows(11).any(|w| w == b"INSERT INTO"),
            "plaintext in the file"
        );
        let manifest = std::fs::read_to_string(
            dir.path()
                .join(selmai_backup::format::manifest::name_for(&out.file)),
        )
        .unwrap();
        assert!(!manifest.contains(PASS));

        let dst = TestDb::new(&format!("{tag}_dst"));
        tool::try_restore_with(
            dir.path(),
            "latest",
            &dst.name,
            &[("BACKUP_PASSPHRASE", PASS)],
        )
        .await
        .unwrap();
        assert_same_database(&src, &dst);
    }
}

#[test]
fn the_same_database_encrypted_twice_differs_everywhere() {
    let db = TestDb::new("enc_twice");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut files = Vec::new();
    for dir in [&a, &b] {
        let (code, out, err) =
            tool::outcome(&tool::run(&with_pass(&db.name, dir.path()), &["backup"]));
        assert_eq!(code, 0, "{err}");
        files.push(std::fs::read(out.trim()).unwrap());
    }
    let header = selmai_backup::format::crypto::HEADER_LEN;
    // Salt and nonce prefix live in the header; every ciphertext byte after it differs too.
    assert_ne!(files[0][..header], files[1][..header]);
    assert_ne!(files[0][header..header + 64], files[1][header..header + 64]);
}

#[test]
fn decrypt_gives_a_sql_gz_that_gunzip_and_mariadb_restore() {
    let src = TestDb::new("enc_decrypt");
    src.load_corner_cases();
    let dir = tempfile::tempdir().unwrap();
    let vars = with_pass(&src.name, dir.path());
    let (_, out, _) = tool::outcome(&tool::run(&vars, &["backup"]));
    let enc = out.trim().to_owned();
    // On a laptop: only the file and the passphrase, no database.
    let laptop = tempfile::tempdir().unwrap();
    let plain = laptop.path().join("backup.sql.gz");
    let lvars = vec![
        ("BACKUP_PASSPHRASE".to_string(), PASS.to_string()),
        (
            "BACKUP_DIR".to_string(),
            laptop.path().display().to_string(),
        ),
    ];
    let (code, _, err) = tool::outcome(&tool::run(
        &lvars,
        &["decrypt", &enc, plain.to_str().unwrap()],
    ));
    assert_eq!(code, 0, "{err}");
    let sql = tool::gunzip(&plain);
    let dst = TestDb::new("enc_decrypt_dst");
    dst.load_sql(sql);
    assert_same_database(&src, &dst);
}

/// Temporary files (`*.partial`) left in `dir`.
fn partials(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".partial"))
        .collect()
}

/// `decrypt` never destroys what it reads nor what is in its way: OUT = IN
/// is refused by any path (the same path, another spelling, a hard link,
/// the name in BACKUP_DIR); an existing OUT is replaced only with
/// `--force`; a missing OUT directory is named in the error; nothing is
/// left under a temporary name.
#[test]
fn decrypt_refuses_to_overwrite_its_input_or_an_existing_file_without_force() {
    let db = TestDb::new("enc_decrypt_out");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1,'row')");
    let dir = tempfile::tempdir().unwrap();
    let vars = with_pass(&db.name, dir.path());
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{err}");
    let enc = std::path::PathBuf::from(out.trim());
    let name = enc.file_name().unwrap().to_str().unwrap().to_owned();
    let original = std::fs::read(&enc).unwrap();

    let other = tempfile::tempdir().unwrap();
    let linked = other.path().join("linked.enc");
    std::fs::hard_link(&enc, &linked).unwrap();
    let dir_name = dir.path().file_name().unwrap().to_str().unwrap();
    let respelled = dir
        .path()
        .join(format!("../{dir_name}/./{name}"))
        .display()
        .to_string();
    let enc_s = enc.display().to_string();
    let linked_s = linked.display().to_string();
    for (input, output) in [
        (enc_s.as_str(), enc_s.as_str()),
        (enc_s.as_str(), respelled.as_str()),
        (enc_s.as_str(), linked_s.as_str()),
        (name.as_str(), enc_s.as_str()),
    ] {
        for force in [false, true] {
            let mut args = vec!["decrypt", input, output];
            if force {
                args.push("--force");
            }
            let (code, _, err) = tool::outcome(&tool::run(&vars, &args));
            assert_eq!(code, 7, "{args:?}: {err}");
            assert!(
                err.contains(output) && err.contains("input"),
                "{args:?}: {err}"
            );
            assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
            assert_eq!(std::fs::read(&enc).unwrap(), original, "{args:?}");
        }
    }

    // An existing OUT stays as it is without --force, is replaced with it.
    let plain = other.path().join("plain.sql.gz");
    std::fs::write(&plain, "keep me").unwrap();
    let plain_s = plain.display().to_string();
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["decrypt", &enc_s, &plain_s]));
    assert_eq!(code, 7, "{err}");
    assert!(err.contains(&plain_s) && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
    let (code, _, err) =
        tool::outcome(&tool::run(&vars, &["decrypt", &enc_s, &plain_s, "--force"]));
    assert_eq!(code, 0, "{err}");
    assert!(tool::gunzip(&plain).starts_with(b"-- selmai-backup"));

    // A missing directory is named.
    let missing = other.path().join("no/such/dir/out.sql.gz");
    let missing_s = missing.display().to_string();
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["decrypt", &enc_s, &missing_s]));
    assert_ne!(code, 0);
    assert!(
        err.contains(&missing_s)
            && err.contains(&other.path().join("no/such/dir").display().to_string()),
        "{err}"
    );
    assert!(!missing.exists());
    assert!(partials(other.path()).is_empty() && partials(dir.path()).is_empty());
}

#[test]
fn wrong_or_missing_passphrase_exits_6_writes_no_plaintext_and_touches_nothing() {
    let db = TestDb::new("enc_wrong");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1,'secret row')");
    let dir = tempfile::tempdir().unwrap();
    let (_, out, _) = tool::outcome(&tool::run(&with_pass(&db.name, dir.path()), &["backup"]));
    let enc = out.trim().to_owned();
    db.exec("INSERT INTO t VALUES (2,'after')");
    let before = mariadb_dump(&db);
    for (label, vars) in [
        (
            "wrong",
            tool::vars_with(&db.name, dir.path(), &[("BACKUP_PASSPHRASE", "not it")]),
        ),
        ("missing", tool::vars(&db.name, dir.path())),
    ] {
        let (code, _, err) = tool::outcome(&tool::run(&vars, &["restore", "latest", "--yes"]));
        assert_eq!(code, 6, "{label}: {err}");
        assert!(err.to_lowercase().contains("passphrase"), "{label}: {err}");
        assert!(!err.contains(PASS));
        let out = dir.path().join(format!("out-{label}.sql.gz"));
        let (code, stdout, err) =
            tool::outcome(&tool::run(&vars, &["decrypt", &enc, out.to_str().unwrap()]));
        assert_eq!(code, 6, "{label}: {err}");
        assert!(!out.exists());
        assert!(
            partials(dir.path()).is_empty(),
            "{:?}",
            partials(dir.path())
        );
        assert!(!stdout.contains("secret row"));
    }
    assert_eq!(mariadb_dump(&db), before);
}

#[test]
fn a_damaged_encrypted_file_is_refused_before_the_database_is_touched() {
    let db = TestDb::new("enc_damaged");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY, v TEXT); INSERT INTO t SELECT seq, REPEAT('x', 300) FROM seq_1_to_3000");
    let dir = tempfile::tempdir().unwrap();
    let vars = with_pass(&db.name, dir.path());
    let (_, out, _) = tool::outcome(&tool::run(&vars, &["backup"]));
    let file = std::path::PathBuf::from(out.trim());
    // No manifest, so only the encryption can notice: flip a byte in the last segment.
    std::fs::remove_file(selmai_backup::format::manifest::name_for(out.trim())).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    let n = bytes.len();
    bytes[n - 20] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    db.exec("DROP TABLE t; CREATE TABLE after_backup (x INT)");
    let before = mariadb_dump(&db);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["restore", "latest", "--yes"]));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("segment"), "names the spot: {err}");
    assert_eq!(mariadb_dump(&db), before, "the database was touched");
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["verify", "latest"]));
    assert_eq!(code, 5, "{err}");
}

#[test]
fn old_gpg_backups_restore() {
    let src = TestDb::new("enc_gpg");
    src.load_corner_cases();
    let dir = tempfile::tempdir().unwrap();
    // The old runbook: mariadb-dump | gzip, then gpg --symmetric --cipher-algo AES256.
    let gz = dir.path().join("plain.sql.gz");
    let (_, out, _) = tool::outcome(&tool::run(&tool::vars(&src.name, dir.path()), &["backup"]));
    std::fs::rename(out.trim(), &gz).unwrap();
    for f in tool::files(dir.path()) {
        if f.ends_with(".manifest.json") {
            std::fs::remove_file(dir.path().join(f)).unwrap();
        }
    }
    let gpg_file = dir.path().join("selmai_backup_20250120_020000.sql.gz.gpg");
    let home = tempfile::tempdir().unwrap();
    let st = Command::new("gpg")
        .args([
            "--batch",
            "--yes",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            PASS,
            "--symmetric",
            "--cipher-algo",
            "AES256",
            "-o",
        ])
        .arg(&gpg_file)
        .arg(&gz)
        .env("GNUPGHOME", home.path())
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::remove_file(&gz).unwrap();
    let dst = TestDb::new("enc_gpg_dst");
    let vars = tool::vars_with(&dst.name, dir.path(), &[("BACKUP_PASSPHRASE", PASS)]);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["restore", "latest", "--yes"]));
    assert_eq!(code, 0, "{err}");
    assert_same_database(&src, &dst);
    let wrong = tool::vars_with(&dst.name, dir.path(), &[("BACKUP_PASSPHRASE", "nope")]);
    assert_eq!(
        tool::outcome(&tool::run(&wrong, &["verify", "latest"])).0,
        6
    );
}

#[test]
fn verify_needs_no_database() {
    let db = TestDb::new("enc_verify");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)");
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = tool::outcome(&tool::run(&with_pass(&db.name, dir.path()), &["backup"]));
    assert_eq!(code, 0, "{err}");
    let offline = tool::vars_with(
        "x",
        dir.path(),
        &[
            ("BACKUP_PASSPHRASE", PASS),
            ("DB_HOST", "127.0.0.1"),
            ("DB_PORT", "1"),
        ],
    );
    let (code, out, err) = tool::outcome(&tool::run(&offline, &["verify", "latest"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ok: ") && out.contains("matches the manifest"),
        "{out}"
    );
}
