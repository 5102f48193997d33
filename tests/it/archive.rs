//! File archives (`backup --kind config|uploads`, `restore ARCHIVE --to DIR`):
//! a round trip keeps names, types, modes, mtimes, contents and symlink
//! targets; `CONFIG_EXCLUDE` keeps `nginx/ssl` out; encryption applies; a
//! damaged archive writes nothing; crafted archives (`../`, absolute paths,
//! escaping symlinks, writes through a symlink) are refused without
//! writing anything inside or outside the target. No database involved.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use selmai_backup::backup::pipeline::{self, BackupOutcome};
use selmai_backup::config::Settings;
use selmai_backup::format::archive::{ArchiveError, ArchiveKind};
use selmai_backup::restore::{open, RestoreError};

use crate::support::tool::volume;
use crate::support::tree::tree;

/// Settings archiving `paths` into `dir`, with extra variables.
fn settings(dir: &Path, paths: &[&Path], extra: &[(&str, &str)]) -> Settings {
    let joined: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let mut v: Vec<(String, String)> = vec![
        ("BACKUP_DIR".into(), dir.display().to_string()),
        ("CONFIG_PATHS".into(), joined.join(",")),
        ("UPLOADS_PATHS".into(), joined.join(",")),
    ];
    v.extend(extra.iter().map(|(k, x)| (k.to_string(), x.to_string())));
    Settings::from_vars(v).expect("test settings are valid")
}

async fn backup(s: &Settings, kind: ArchiveKind) -> BackupOutcome {
    let enc = pipeline::Encoding::of(s);
    pipeline::backup_archive(kind.settings(s), &enc, &volume(&s.backup_dir), kind)
        .await
        .unwrap_or_else(|e| panic!("archive failed: {e}"))
}

async fn extract(s: &Settings, name: &str, to: &Path) -> Result<(), RestoreError> {
    let source = open::locate(name, &s.prefix, &volume(&s.backup_dir))
        .await
        .unwrap_or_else(|e| panic!("locating {name}: {e}"));
    selmai_backup::restore::archive::extract(&source, s.passphrase.as_ref(), to, false)
        .await
        .map(|_| ())
}

fn set_mtime(p: &Path, secs: i64) {
    let t = filetime::FileTime::from_unix_time(secs, 0);
    filetime::set_symlink_file_times(p, t, t).unwrap();
}

/// A configuration tree with unicode names, an empty directory, symlinks,
/// a 0600 file and a 50 MB file, all with past mtimes.
fn sample_tree(root: &Path) {
    let config = root.join("config");
    fs::create_dir_all(config.join("café/日本語")).unwrap();
    fs::create_dir_all(config.join("empty")).unwrap();
    fs::create_dir_all(config.join("nginx/conf.d")).unwrap();
    fs::write(config.join("café/日本語/ünïcode 📦.txt"), "bonjour\n").unwrap();
    fs::write(config.join(".env"), "APP_KEY=base64:secret\n").unwrap();
    fs::set_permissions(config.join(".env"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(config.join("nginx/conf.d/app.conf"), "server {}\n").unwrap();
    fs::set_permissions(
        config.join("nginx/conf.d"),
        fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    let mut big = fs::File::create(config.join("big.bin")).unwrap();
    let mut block = vec![0u8; 1 << 20];
    for i in 0..50u32 {
        for (j, b) in block.iter_mut().enumerate() {
            *b = (j as u32)
                .wrapping_mul(2_654_435_761)
                .wrapping_add(i)
                .to_le_bytes()[1];
        }
        big.write_all(&block).unwrap();
    }
    drop(big);
    std::os::unix::fs::symlink("café/日本語/ünïcode 📦.txt", config.join("link")).unwrap();
    std::os::unix::fs::symlink("../.env", config.join("nginx/env-link")).unwrap();
    std::os::unix::fs::symlink("does-not-exist", config.join("dangling")).unwrap();
    // Children first, so setting a directory's time is not undone.
    let mut all: Vec<PathBuf> = tree(&config)
        .into_iter()
        .map(|e| config.join(e.0))
        .collect();
    all.reverse();
    for (i, p) in all.iter().enumerate() {
        set_mtime(p, 1_600_000_000 + i as i64 * 3600);
    }
    set_mtime(&config, 1_500_000_000);
}

#[tokio::test]
async fn archive_round_trip_keeps_names_types_modes_times_and_contents() {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    sample_tree(src.path());
    let s = settings(dir.path(), &[&src.path().join("config")], &[]);
    let o = backup(&s, ArchiveKind::Config).await;
    assert!(
        o.file.starts_with("selmai_config_") && o.file.ends_with(".tar.gz"),
        "{}",
        o.file
    );
    assert_eq!(o.manifest.kind, "config");
    let env = o
        .manifest
        .files
        .iter()
        .find(|f| f.path == "config/.env")
        .expect(".env is in the manifest");
    assert_eq!((env.kind.as_str(), env.mode, env.size), ("file", 0o600, 22));
    assert!(env.sha256.is_some() && !env.changed);
    let link = o
        .manifest
        .files
        .iter()
        .find(|f| f.path == "config/link")
        .unwrap();
    assert_eq!(link.target.as_deref(), Some("café/日本語/ünïcode 📦.txt"));
    assert!(dir
        .path()
        .join(format!("{}.manifest.json", o.file))
        .exists());

    let to = out.path().join("restored");
    extract(&s, &o.file, &to).await.unwrap();
    assert_eq!(tree(&to.join("config")), tree(&src.path().join("config")));
    let root = |p: &Path| fs::metadata(p).unwrap().mtime();
    assert_eq!(root(&to.join("config")), root(&src.path().join("config")));

    // Extracting again into the now non-empty directory needs --force.
    let again = extract(&s, &o.file, &to).await.unwrap_err();
    assert!(
        matches!(again, RestoreError::Archive(ArchiveError::NotEmpty(_))),
        "{again}"
    );
}

#[tokio::test]
async fn archive_leaves_nginx_ssl_out_unless_the_operator_opts_in() {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = src.path().join("config");
    fs::create_dir_all(config.join("nginx/ssl")).unwrap();
    fs::write(config.join("nginx/ssl/privkey.pem"), "PRIVATE KEY").unwrap();
    fs::write(config.join("nginx/ssl.conf"), "ssl_protocols TLSv1.3;").unwrap();
    fs::write(config.join("nginx/nginx.conf"), "events {}").unwrap();

    let s = settings(dir.path(), &[&config], &[]);
    let o = backup(&s, ArchiveKind::Config).await;
    let paths: Vec<&str> = o.manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "config",
            "config/nginx",
            "config/nginx/nginx.conf",
            "config/nginx/ssl.conf"
        ]
    );
    let to = tempfile::tempdir().unwrap();
    extract(&s, &o.file, to.path()).await.unwrap();
    assert!(!to.path().join("config/nginx/ssl").exists());
    assert!(to.path().join("config/nginx/nginx.conf").exists());

    // CONFIG_EXCLUDE=none opts in: the keys are archived too.
    let s = settings(dir.path(), &[&config], &[("CONFIG_EXCLUDE", "none")]);
    let o = backup(&s, ArchiveKind::Config).await;
    assert!(o
        .manifest
        .files
        .iter()
        .any(|f| f.path == "config/nginx/ssl/privkey.pem"));
}

/// The runbook's layout, each item listed on its own
/// (`CONFIG_PATHS=/opt/selmai/.env,/opt/selmai/docker-compose.prod.yml,/opt/selmai/nginx`):
/// the archive path of the keys is `nginx/ssl/...`, and the default
/// exclusion matches it as `tar --exclude nginx/ssl` would. Listing the key
/// directory itself leaves it out too.
#[tokio::test]
async fn archive_leaves_nginx_ssl_out_when_the_items_are_listed_one_by_one() {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let app = src.path().join("selmai");
    fs::create_dir_all(app.join("nginx/ssl")).unwrap();
    fs::write(app.join(".env"), "APP_KEY=x").unwrap();
    fs::write(app.join("docker-compose.prod.yml"), "services: {}").unwrap();
    fs::write(app.join("nginx/ssl/privkey.pem"), "PRIVATE KEY").unwrap();
    fs::write(app.join("nginx/ssl.conf"), "ssl_protocols TLSv1.3;").unwrap();
    fs::write(app.join("nginx/nginx.conf"), "events {}").unwrap();

    let listed = [
        app.join(".env"),
        app.join("docker-compose.prod.yml"),
        app.join("nginx"),
    ];
    let refs: Vec<&Path> = listed.iter().map(PathBuf::as_path).collect();
    let s = settings(dir.path(), &refs, &[]);
    let o = backup(&s, ArchiveKind::Config).await;
    let paths: Vec<&str> = o.manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".env",
            "docker-compose.prod.yml",
            "nginx",
            "nginx/nginx.conf",
            "nginx/ssl.conf"
        ]
    );
    let to = tempfile::tempdir().unwrap();
    extract(&s, &o.file, to.path()).await.unwrap();
    assert!(!to.path().join("nginx/ssl").exists());

    // The key directory (or the key) listed by name stays out as well.
    let keys = app.join("nginx/ssl");
    let key = app.join("nginx/ssl/privkey.pem");
    let env = app.join(".env");
    let s = settings(dir.path(), &[&env, &keys, &key], &[]);
    let o = backup(&s, ArchiveKind::Config).await;
    let paths: Vec<&str> = o.manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, [".env"]);
}

#[tokio::test]
async fn archive_encrypted_round_trip_needs_the_passphrase() {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uploads = src.path().join("uploads");
    fs::create_dir_all(uploads.join("avatars")).unwrap();
    fs::write(uploads.join("avatars/1.jpg"), vec![0xffu8; 100_000]).unwrap();
    let pass = [("BACKUP_PASSPHRASE", "archive test passphrase")];
    let s = settings(dir.path(), &[&uploads], &pass);
    let o = backup(&s, ArchiveKind::Uploads).await;
    assert!(
        o.file.starts_with("selmai_uploads_") && o.file.ends_with(".tar.gz.enc"),
        "{}",
        o.file
    );
    assert!(o.manifest.encryption.is_some());
    assert_eq!(o.manifest.kind, "uploads");

    let to = tempfile::tempdir().unwrap();
    let no_pass = settings(dir.path(), &[&uploads], &[]);
    assert!(extract(&no_pass, &o.file, &to.path().join("x"))
        .await
        .is_err());
    assert!(
        !to.path().join("x").exists(),
        "nothing written without the passphrase"
    );
    extract(&s, &o.file, &to.path().join("y")).await.unwrap();
    assert_eq!(
        fs::read(to.path().join("y/uploads/avatars/1.jpg")).unwrap(),
        vec![0xffu8; 100_000]
    );
}

#[tokio::test]
async fn archive_damaged_is_refused_before_writing() {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = src.path().join("config");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join("a.txt"), "a".repeat(10_000)).unwrap();
    let s = settings(dir.path(), &[&config], &[]);
    let o = backup(&s, ArchiveKind::Config).await;
    let path = dir.path().join(&o.file);
    let mut bytes = fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&path, bytes).unwrap();
    let to = tempfile::tempdir().unwrap();
    let err = extract(&s, &o.file, &to.path().join("out"))
        .await
        .unwrap_err();
    assert!(
        // Damaged: the tar inside, or the compression or encryption around it.
        matches!(err, RestoreError::Archive(ArchiveError::Corrupt { .. }))
            || !matches!(err, RestoreError::Archive(_)),
        "{err}"
    );
    assert!(!to.path().join("out").exists());
}

/// One entry of a crafted archive: raw name bytes, no checks by the tar crate.
enum Raw<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn crafted(entries: &[Raw]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let (name, link, data, kind): (&str, &str, &[u8], _) = match e {
            Raw::File(n, d) => (n, "", d, tar::EntryType::Regular),
            Raw::Symlink(n, t) => (n, t, b"", tar::EntryType::Symlink),
            Raw::Hardlink(n, t) => (n, t, b"", tar::EntryType::Link),
        };
        let g = h.as_gnu_mut().unwrap();
        g.name[..name.len()].copy_from_slice(name.as_bytes());
        g.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

#[tokio::test]
async fn archive_crafted_escapes_are_refused_and_nothing_is_written() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("backups");
    let sentinel = base.path().join("sentinel");
    fs::create_dir_all(&dir).unwrap();
    fs::create_dir_all(&sentinel).unwrap();
    let abs_file = format!("{}/x", sentinel.display());
    let abs_dir = sentinel.display().to_string();
    let cases: Vec<(&str, Vec<Raw>)> = vec![
        (
            "dot-dot",
            vec![
                Raw::File("ok.txt", b"ok"),
                Raw::File("../sentinel/x", b"pwned"),
            ],
        ),
        (
            "nested dot-dot",
            vec![Raw::File("a/../../sentinel/x", b"pwned")],
        ),
        ("absolute", vec![Raw::File(&abs_file, b"pwned")]),
        (
            "absolute symlink then a file through it",
            vec![
                Raw::Symlink("evil", &abs_dir),
                Raw::File("evil/x", b"pwned"),
            ],
        ),
        (
            "relative symlink out then a file through it",
            vec![
                Raw::Symlink("up", "../../sentinel"),
                Raw::File("up/x", b"pwned"),
            ],
        ),
        (
            "inside symlink, then a file through it",
            vec![
                Raw::File("d/keep", b"ok"),
                Raw::Symlink("in", "d"),
                Raw::File("in/x", b"through a link"),
            ],
        ),
        ("hard link out", vec![Raw::Hardlink("h", &abs_file)]),
    ];
    let s = settings(&dir, &[], &[]);
    for (i, (what, entries)) in cases.iter().enumerate() {
        let name = format!("selmai_config_20250101_0000{i:02}.tar.gz");
        fs::write(dir.join(&name), crafted(entries)).unwrap();
        let to = base.path().join(format!("target{i}"));
        let path = dir.join(&name).display().to_string();
        let err = extract(&s, &path, &to)
            .await
            .expect_err(&format!("{what}: the archive must be refused"));
        assert!(
            matches!(err, RestoreError::Archive(ArchiveError::Unsafe { .. })),
            "{what}: {err}"
        );
        assert!(!to.exists(), "{what}: nothing may be written in the target");
        assert_eq!(
            fs::read_dir(&sentinel).unwrap().count(),
            0,
            "{what}: something was written outside the target"
        );
    }
}

#[tokio::test]
async fn archive_config_job_in_the_daemon_rotates_only_config_archives() {
    use selmai_backup::daemon::jobs::Jobs;
    use selmai_backup::daemon::metrics::Metrics;
    use selmai_backup::daemon::notify::Notifier;
    use selmai_backup::daemon::schedule::{Kind, Trigger};
    use selmai_backup::daemon::state::Outcome;
    use std::sync::Arc;

    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = src.path().join("config");
    fs::create_dir_all(&config).unwrap();
    fs::write(config.join(".env"), "APP_ENV=production\n").unwrap();
    // Old archives of both kinds, and an old database backup: retention of
    // the config job (its own 1 week; the database's rules do not apply)
    // may delete only config archives.
    let old = [
        "selmai_config_20240101_030000.tar.gz",
        "selmai_config_20240108_030000.tar.gz",
        "selmai_uploads_20240101_030000.tar.gz",
        "selmai_backup_20240101_020000.sql.gz",
    ];
    for n in old {
        fs::write(dir.path().join(n), b"old").unwrap();
        fs::write(dir.path().join(format!("{n}.manifest.json")), b"{}").unwrap();
    }
    let s = settings(
        dir.path(),
        &[&config],
        &[
            ("RETENTION_CONFIG_WEEKLY", "1"),
            ("RETENTION_DAILY", "30"),
            ("RETENTION_MONTHLY", "30"),
        ],
    );
    let jobs = Jobs::new(
        Arc::new(s.clone()),
        volume(dir.path()),
        Notifier::new(s.notify.clone()),
        Metrics::default(),
    );
    let run = jobs.run_once(Kind::Config, Trigger::Cli).await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    let file = run.file.unwrap();
    assert!(file.starts_with("selmai_config_"), "{file}");
    let left = crate::support::tool::files(dir.path());
    assert!(left.contains(&file), "{left:?}");
    assert!(
        !left.iter().any(|n| n.starts_with("selmai_config_2024")),
        "{left:?}"
    );
    for n in &old[2..] {
        assert!(left.contains(&n.to_string()), "{n} must stay: {left:?}");
    }
}

#[tokio::test]
async fn archive_uploads_job_in_the_daemon_rotates_only_uploads_archives() {
    use selmai_backup::daemon::jobs::Jobs;
    use selmai_backup::daemon::metrics::Metrics;
    use selmai_backup::daemon::notify::Notifier;
    use selmai_backup::daemon::schedule::{Kind, Trigger};
    use selmai_backup::daemon::state::{Outcome, State};
    use std::sync::Arc;

    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let uploads = src.path().join("uploads");
    fs::create_dir_all(&uploads).unwrap();
    fs::write(uploads.join("avatar.png"), [0x89u8, b'P', b'N', b'G']).unwrap();
    let old = [
        "selmai_uploads_20240101_033000.tar.gz",
        "selmai_config_20240101_030000.tar.gz",
        "selmai_full_20240101_040000.uploads.tar.gz",
    ];
    for n in old {
        fs::write(dir.path().join(n), b"old").unwrap();
        fs::write(dir.path().join(format!("{n}.manifest.json")), b"{}").unwrap();
    }
    let s = settings(
        dir.path(),
        &[&uploads],
        &[
            ("RETENTION_DAILY", "1"),
            ("RETENTION_WEEKLY", "0"),
            ("RETENTION_MONTHLY", "0"),
        ],
    );
    assert_eq!(s.schedule.of(Kind::Uploads).unwrap().as_str(), "30 3 * * *");
    let jobs = Jobs::new(
        Arc::new(s.clone()),
        volume(dir.path()),
        Notifier::new(s.notify.clone()),
        Metrics::default(),
    );
    let run = jobs.run_once(Kind::Uploads, Trigger::Cli).await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    let file = run.file.unwrap();
    assert!(file.starts_with("selmai_uploads_"), "{file}");
    let left = crate::support::tool::files(dir.path());
    assert!(left.contains(&file), "{left:?}");
    assert!(!left.contains(&old[0].to_string()), "{left:?}");
    for n in &old[1..] {
        assert!(left.contains(&n.to_string()), "{n} must stay: {left:?}");
    }
    let st = State::load(dir.path()).unwrap();
    assert_eq!(
        st.last_success(Kind::Uploads).unwrap().file.as_deref(),
        Some(file.as_str())
    );
}

#[test]
fn archive_cli_backup_verify_and_restore_to() {
    let src = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = src.path().join("config");
    fs::create_dir_all(config.join("nginx")).unwrap();
    fs::write(config.join("nginx/nginx.conf"), "events {}\n").unwrap();
    let vars: Vec<(String, String)> = vec![
        ("BACKUP_DIR".into(), dir.path().display().to_string()),
        ("CONFIG_PATHS".into(), config.display().to_string()),
    ];
    let (code, out, err) = crate::support::tool::outcome(&crate::support::tool::run(
        &vars,
        &["backup", "--kind", "config"],
    ));
    assert_eq!(code, 0, "{err}");
    let name = Path::new(out.trim())
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(name.starts_with("selmai_config_"), "{out}");

    let (code, out, err) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["list", "--json"]));
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows[0]["name"], name.as_str());
    assert_eq!(rows[0]["kind"], "config");

    let (code, out, err) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["verify", &name]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with("ok: ") && out.contains("3 entries"),
        "{out}"
    );

    let (code, _, err) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["restore", &name]));
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("--to"), "{err}");

    let to = tempfile::tempdir().unwrap();
    let target = to.path().join("new").display().to_string();
    let (code, _, err) = crate::support::tool::outcome(&crate::support::tool::run(
        &vars,
        &["restore", &name, "--to", &target],
    ));
    assert_eq!(code, 7, "no terminal and no --yes: {err}");
    let (code, _, err) = crate::support::tool::outcome(&crate::support::tool::run(
        &vars,
        &["restore", &name, "--to", &target, "--yes"],
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        fs::read_to_string(to.path().join("new/config/nginx/nginx.conf")).unwrap(),
        "events {}\n"
    );
    let (code, _, err) = crate::support::tool::outcome(&crate::support::tool::run(
        &vars,
        &["restore", &name, "--to", &target, "--yes"],
    ));
    assert_eq!(code, 7, "not empty without --force: {err}");
    let (code, _, err) = crate::support::tool::outcome(&crate::support::tool::run(
        &vars,
        &["restore", &name, "--to", &target, "--yes", "--force"],
    ));
    assert_eq!(code, 0, "{err}");
}
