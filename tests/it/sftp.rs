//! The SFTP server as an off-site target, end to end through the binary
//! against the real OpenSSH server `scripts/services.sh` starts (issue 16):
//! a backup (encrypted and not) and a full set land there under their final
//! names and restore from it alone; a bucket and the SFTP server together
//! both get the copy and `health` wants both; every failure (host key,
//! login, key file, permission, full disk, sshd killed mid-upload) has its
//! exit code and one line saying what to do, keeps the local backup, turns
//! `health` unhealthy and leaves nothing under a final name; a connection
//! cut and back within the retries resumes the upload; retention on the
//! server deletes only our files. (Target-level behaviour is in
//! `target_conformance::sftp`.)
//!
//! There is no chroot on the test server: a remote path is the same path
//! on this machine, so the tests look at what landed through the file
//! system.

use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::support::bucket::{
    bucket_vars, create_bucket, raw_bucket, raw_exists, s3_endpoint, unique_bucket,
};
use crate::support::sshd::{sftp_env, signal, OwnSshd};
use crate::support::tool::{self, file_name, run_async as run};
use crate::support::tree::tree;
use crate::support::{assert_same_database, copy_with_mariadb_dump, TestDb};

/// A valid ed25519 host key line that is not the test server's.
const OTHER_HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHfbylHnLe+4uxW5oVE4Tgu97fRjgX56brzpqqVvxD/L";
/// Its fingerprint, as `ssh-keygen -lf` prints it.
const OTHER_FINGERPRINT: &str = "SHA256:BW5luV9m6tqbUGMlelfWtLhhTFvkbUs5d8MDVa56fD8";

/// The tool's variables for `db` with its volume in `dir` and copies in
/// `remote` on the SFTP server at `port`, with `extra` replacing or adding.
fn sftp_vars(
    db: &str,
    dir: &Path,
    port: u16,
    remote: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut v = tool::vars(db, dir);
    v.extend(sftp_env().vars(port, remote));
    with(v, extra)
}

/// `vars` with `extra` replacing or adding.
fn with(mut vars: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, val) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k.to_string(), val.to_string()));
    }
    vars
}

/// `vars` without the variables `names`.
fn without(mut vars: Vec<(String, String)>, names: &[&str]) -> Vec<(String, String)> {
    vars.retain(|(k, _)| !names.contains(&k.as_str()));
    vars
}

/// Every entry of a remote directory (hidden ones too), sorted.
fn remote_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Our temporaries in a remote directory.
fn partials(dir: &Path) -> Vec<String> {
    remote_files(dir)
        .into_iter()
        .filter(|n| n.starts_with('.') && n.ends_with(".partial"))
        .collect()
}

/// Name -> SHA-256 of every file in a remote directory.
fn remote_digests(dir: &Path) -> Vec<(String, String)> {
    remote_files(dir)
        .into_iter()
        .map(|n| {
            let d = hex::encode(Sha256::digest(std::fs::read(dir.join(&n)).unwrap()));
            (n, d)
        })
        .collect()
}

fn sha256_of(path: &Path) -> String {
    hex::encode(Sha256::digest(
        std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
    ))
}

/// The one line the binary ends a failure with (`selmai-backup: ...`).
fn error_line(err: &str) -> String {
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("selmai-backup: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    lines[0].to_owned()
}

#[track_caller]
fn assert_says(line: &str, words: &[&str]) {
    let lower = line.to_lowercase();
    for w in words {
        assert!(lower.contains(&w.to_lowercase()), "{w:?} missing: {line}");
    }
}

/// `backup` must succeed: the name of the database backup it wrote.
async fn backup_ok(vars: &[(String, String)], args: &[&str]) -> String {
    let (code, out, err, _) = run(vars, args).await;
    assert_eq!(code, 0, "{err}");
    file_name(out.lines().next().unwrap_or_default())
}

/// The backup `name` and its manifest are on the server in `remote`, byte
/// for byte as on the volume `dir`, and no temporary is left.
#[track_caller]
fn assert_landed(dir: &Path, remote: &Path, name: &str) {
    for n in [name.to_owned(), format!("{name}.manifest.json")] {
        assert_eq!(
            sha256_of(&remote.join(&n)),
            sha256_of(&dir.join(&n)),
            "{n}: the server's copy differs from the volume's"
        );
    }
    assert_eq!(partials(remote), Vec::<String>::new());
}

/// A database with text in 4-byte UTF-8, binary bytes, NULL against '',
/// microseconds, a view and a trigger.
fn sample_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.exec(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(40), b BLOB, d DATETIME(6), n VARCHAR(4));
         INSERT INTO t VALUES (1, 'café ☕ 𝄞', X'00FF7F80', '2026-01-02 03:04:05.123456', NULL),
                              (2, '', X'', '1970-01-01 00:00:01.000001', ''),
                              (3, 'NULL', NULL, NULL, 'NULL');
         CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, t_id INT);
         CREATE TRIGGER t_ai AFTER INSERT ON t FOR EACH ROW INSERT INTO audit (t_id) VALUES (NEW.id);
         CREATE VIEW w AS SELECT id, v FROM t WHERE id > 1;",
    );
    db
}

/// Remove every backup from the volume `dir` (the server is lost with it).
fn empty_volume(dir: &Path) {
    for f in tool::files(dir) {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
}

/// `list --json`: the locations of `name`, or None when it is not listed.
async fn locations(vars: &[(String, String)], name: &str) -> Option<serde_json::Value> {
    let (code, out, err, _) = run(vars, &["list", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .map(|r| r["locations"].clone())
}

/// `health` with `vars`: must be unhealthy (exit 1); its line.
async fn assert_unhealthy(vars: &[(String, String)]) -> String {
    let (code, out, err, _) = run(vars, &["health"]).await;
    assert_eq!(code, 1, "health must be unhealthy: {out}{err}");
    error_line(&err)
}

async fn lands_and_restores_from_sftp_alone(tag: &str, extra: &[(&str, &str)]) {
    let env = sftp_env();
    let src = sample_db(tag);
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_dir(tag);
    let vars = sftp_vars(&src.name, dir.path(), env.port, &remote, extra);
    let name = backup_ok(&vars, &["backup"]).await;
    assert_eq!(
        name.ends_with(".enc"),
        !extra.is_empty(),
        "encrypted exactly when BACKUP_PASSPHRASE is set: {name}"
    );
    assert_landed(dir.path(), &remote_dir, &name);
    assert_eq!(
        locations(&vars, &name).await,
        Some(serde_json::json!(["volume", "sftp"]))
    );

    // The server is lost with its volume: the SFTP server alone is left.
    empty_volume(dir.path());
    assert_eq!(
        locations(&vars, &name).await,
        Some(serde_json::json!(["sftp"]))
    );
    let dst = TestDb::new(&format!("{tag}_dst"));
    let (code, _, err, _) = run(&vars, &["restore", "latest", "--into", &dst.name, "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&name), "restored {name}: {err}");
    assert_same_database(&src, &dst);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_lands_on_sftp_and_a_lost_volume_is_restored_from_it_alone() {
    lands_and_restores_from_sftp_alone("sftp_plain", &[]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_encrypted_backup_lands_on_sftp_and_a_lost_volume_is_restored_from_it_alone() {
    lands_and_restores_from_sftp_alone("sftp_enc", &[("BACKUP_PASSPHRASE", "off-site pass")]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_set_is_restored_from_sftp_alone() {
    let env = sftp_env();
    let db = sample_db("sftp_full");
    let reference = TestDb::new("sftp_full_ref");
    copy_with_mariadb_dump(&db, &reference);
    let files = tempfile::tempdir().unwrap();
    let (config, uploads) = (files.path().join("config"), files.path().join("uploads"));
    std::fs::create_dir_all(config.join("nginx")).unwrap();
    std::fs::write(config.join("nginx/nginx.conf"), "events {}\n").unwrap();
    std::fs::create_dir_all(uploads.join("2025")).unwrap();
    std::fs::write(uploads.join("2025/photo.jpg"), vec![0xa5u8; 70_000]).unwrap();
    let (config_tree, uploads_tree) = (tree(&config), tree(&uploads));
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_dir("sftp_full");
    let vars = sftp_vars(
        &db.name,
        dir.path(),
        env.port,
        &remote,
        &[
            ("CONFIG_PATHS", config.to_str().unwrap()),
            ("UPLOADS_PATHS", uploads.to_str().unwrap()),
        ],
    );
    let (code, out, err, _) = run(&vars, &["backup", "--kind", "full"]).await;
    assert_eq!(code, 0, "{err}");
    let written: Vec<String> = out.lines().map(file_name).collect();
    assert_eq!(written.len(), 4, "three parts and the set manifest: {out}");
    for n in &written {
        assert_eq!(
            sha256_of(&remote_dir.join(n)),
            sha256_of(&dir.path().join(n)),
            "{n}"
        );
    }
    assert_eq!(partials(&remote_dir), Vec::<String>::new());

    empty_volume(dir.path());
    crate::support::db_env().exec(None, &format!("DROP DATABASE `{}`", db.name));
    std::fs::remove_dir_all(&config).unwrap();
    std::fs::remove_dir_all(&uploads).unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let to = out_dir.path().join("restored");
    let (code, _, err, _) = run(
        &vars,
        &[
            "restore",
            "latest-full",
            "--to",
            to.to_str().unwrap(),
            "--yes",
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&written[3]), "restored {}: {err}", written[3]);
    assert_same_database(&db, &reference);
    assert_eq!(tree(&to.join("config/config")), config_tree);
    assert_eq!(tree(&to.join("uploads/uploads")), uploads_tree);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_and_sftp_both_get_the_copy_and_health_wants_both() {
    let env = sftp_env();
    let db = sample_db("sftp_and_s3");
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("sftp-and-s3");
    create_bucket(&bucket).await;
    let (remote, remote_dir) = env.fresh_dir("sftp_and_s3");
    let both = |endpoint: &str, port: u16| {
        let mut v = bucket_vars(&db.name, dir.path(), endpoint, &bucket, &[]);
        v.extend(env.vars(port, &remote));
        with(v, &[("SFTP_RETRIES", "0"), ("SFTP_TIMEOUT", "5")])
    };
    let up = both(&s3_endpoint(), env.port);
    let key = |n: &str| format!("selmai/prod/{n}");

    let name = backup_ok(&up, &["backup"]).await;
    assert_landed(dir.path(), &remote_dir, &name);
    assert!(raw_exists(&raw_bucket(&bucket), &key(&name)).await);
    assert!(raw_exists(&raw_bucket(&bucket), &key(&format!("{name}.manifest.json"))).await);
    assert_eq!(
        locations(&up, &name).await,
        Some(serde_json::json!(["volume", "bucket", "sftp"]))
    );
    let (code, out, err, _) = run(&up, &["health"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("copied off-site"), "{out}");

    // The SFTP server is down (nothing listens on its port): the bucket
    // gets the next backup, the server does not, and health says so.
    let closed = crate::support::sinks::free_port();
    let (code, out, err, _) = run(&both(&s3_endpoint(), closed), &["backup"]).await;
    assert_eq!(code, 8, "{err}");
    assert_says(&error_line(&err), &["sftp"]);
    let missed = file_name(&out);
    assert!(raw_exists(&raw_bucket(&bucket), &key(&missed)).await);
    assert!(!remote_dir.join(&missed).exists());
    let why = assert_unhealthy(&up).await;
    assert_says(&why, &["off-site", "sftp"]);

    // And the other way round: the bucket is down, the server gets it.
    let (code, out, err, _) = run(&both("http://127.0.0.1:9", env.port), &["backup"]).await;
    assert_eq!(code, 8, "{err}");
    assert_says(&error_line(&err), &["bucket"]);
    let missed = file_name(&out);
    assert_landed(dir.path(), &remote_dir, &missed);
    assert!(!raw_exists(&raw_bucket(&bucket), &key(&missed)).await);
    let why = assert_unhealthy(&up).await;
    assert_says(&why, &["off-site", "bucket"]);

    // Both up again: the next backup reaches both, and health is content.
    let name = backup_ok(&up, &["backup"]).await;
    assert_landed(dir.path(), &remote_dir, &name);
    assert!(raw_exists(&raw_bucket(&bucket), &key(&name)).await);
    let (code, out, err, _) = run(&up, &["health"]).await;
    assert_eq!(code, 0, "{out}{err}");
}

/// A backup whose copy to the SFTP server fails: exit 8 with one line
/// holding `words`; the local backup and its manifest kept, nothing of it
/// on the server, `health` unhealthy. Returns the error line.
async fn assert_copy_fails(
    vars: &[(String, String)],
    dir: &Path,
    remote_dir: &Path,
    words: &[&str],
) -> String {
    let before = remote_digests(remote_dir);
    let (code, out, err, _) = run(vars, &["backup"]).await;
    assert_eq!(code, 8, "{err}");
    let line = error_line(&err);
    assert_says(&line, words);
    let name = file_name(&out);
    assert!(dir.join(&name).is_file(), "the local backup is kept");
    assert!(dir.join(format!("{name}.manifest.json")).is_file());
    assert_eq!(
        remote_digests(remote_dir),
        before,
        "the server is left as it was"
    );
    let why = assert_unhealthy(vars).await;
    assert_says(&why, &["off-site"]);
    line
}

/// A backup refused at start (exit 2) with one line holding `words`, after
/// a good volume-only backup: the volume is left as it was, and `health`
/// with the new configuration is unhealthy.
async fn assert_refused_at_start(dir: &Path, vars: &[(String, String)], words: &[&str]) -> String {
    let before = tool::file_digests(dir);
    let (code, _, err, _) = run(vars, &["backup"]).await;
    assert_eq!(code, 2, "{err}");
    let line = error_line(&err);
    assert_says(&line, words);
    assert_eq!(tool::file_digests(dir), before, "the volume is untouched");
    assert_unhealthy(vars).await;
    line
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_key_that_does_not_match_fails_loudly() {
    let env = sftp_env();
    let db = sample_db("sftp_wrong_key");
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_dir("sftp_wrong_key");
    for (var, pin) in [
        ("SFTP_HOST_KEY", OTHER_HOST_KEY),
        ("SFTP_HOST_KEY", OTHER_FINGERPRINT),
    ] {
        let vars = sftp_vars(&db.name, dir.path(), env.port, &remote, &[(var, pin)]);
        let line = assert_copy_fails(&vars, dir.path(), &remote_dir, &["man in the middle"]).await;
        assert!(
            line.contains(&env.fingerprint),
            "names the key seen: {line}"
        );
    }
    assert_eq!(remote_files(&remote_dir), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unpinned_host_key_is_refused_at_start_and_an_unknown_one_fails() {
    let env = sftp_env();
    let db = sample_db("sftp_unpinned");
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_dir("sftp_unpinned");
    backup_ok(&tool::vars(&db.name, dir.path()), &["backup"]).await;

    // No pin at all: never connect; say how to get the fingerprint.
    let vars = without(
        sftp_vars(&db.name, dir.path(), env.port, &remote, &[]),
        &["SFTP_HOST_KEY"],
    );
    assert_refused_at_start(dir.path(), &vars, &["ssh-keyscan", "SFTP_HOST_KEY"]).await;

    // A known_hosts file that knows other hosts but not this one.
    let known = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        known.path(),
        format!(
            "backup.example.org {OTHER_HOST_KEY}\n[{}]:{} {OTHER_HOST_KEY}\n",
            env.host,
            env.port + 1
        ),
    )
    .unwrap();
    let vars = with(
        without(
            sftp_vars(&db.name, dir.path(), env.port, &remote, &[]),
            &["SFTP_HOST_KEY"],
        ),
        &[("SFTP_KNOWN_HOSTS", known.path().to_str().unwrap())],
    );
    assert_copy_fails(
        &vars,
        dir.path(),
        &remote_dir,
        &["ssh-keyscan", "no key for"],
    )
    .await;
    assert_eq!(remote_files(&remote_dir), Vec::<String>::new());

    // The shared known_hosts file has the line: the copy is made.
    let vars = with(
        vars,
        &[("SFTP_KNOWN_HOSTS", env.known_hosts.to_str().unwrap())],
    );
    let name = backup_ok(&vars, &["backup"]).await;
    assert_landed(dir.path(), &remote_dir, &name);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_password_fails_and_the_right_one_works() {
    let env = sftp_env();
    let db = sample_db("sftp_password");
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_pw_dir("sftp_password");
    let vars = |password: &str| {
        with(
            without(
                sftp_vars(&db.name, dir.path(), env.port, &remote, &[]),
                &["SFTP_KEY_FILE"],
            ),
            &[("SFTP_USER", &env.pw_user), ("SFTP_PASSWORD", password)],
        )
    };
    let line = assert_copy_fails(
        &vars("not-the-password"),
        dir.path(),
        &remote_dir,
        &["refused", "SFTP_PASSWORD", "check"],
    )
    .await;
    assert!(
        !line.contains("not-the-password"),
        "the password is not shown"
    );
    assert_eq!(remote_files(&remote_dir), Vec::<String>::new());

    let name = backup_ok(&vars(&env.password), &["backup"]).await;
    assert_landed(dir.path(), &remote_dir, &name);
}

#[tokio::test(flavor = "multi_thread")]
async fn key_files_unreadable_or_locked_are_refused_at_start_and_good_ones_work() {
    let env = sftp_env();
    let db = sample_db("sftp_key_files");
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_dir("sftp_key_files");
    backup_ok(&tool::vars(&db.name, dir.path()), &["backup"]).await;
    let vars = |extra: &[(&str, &str)]| sftp_vars(&db.name, dir.path(), env.port, &remote, extra);

    let missing = dir.path().join("no-such-key");
    let a_dir = tempfile::tempdir().unwrap();
    for path in [&missing, &a_dir.path().to_path_buf()] {
        let line = assert_refused_at_start(
            dir.path(),
            &vars(&[("SFTP_KEY_FILE", path.to_str().unwrap())]),
            &["SFTP_KEY_FILE", "cannot read", "mount the private key"],
        )
        .await;
        assert!(line.contains(path.to_str().unwrap()), "{line}");
    }
    let enc = env.enc_key_file.to_str().unwrap();
    assert_refused_at_start(
        dir.path(),
        &vars(&[("SFTP_KEY_FILE", enc)]),
        &["encrypted", "SFTP_KEY_PASSPHRASE"],
    )
    .await;
    assert_refused_at_start(
        dir.path(),
        &vars(&[
            ("SFTP_KEY_FILE", enc),
            ("SFTP_KEY_PASSPHRASE", "not-the-passphrase"),
        ]),
        &["SFTP_KEY_PASSPHRASE", "check"],
    )
    .await;
    assert_eq!(remote_files(&remote_dir), Vec::<String>::new());

    for extra in [
        vec![
            ("SFTP_KEY_FILE", enc),
            ("SFTP_KEY_PASSPHRASE", env.key_passphrase.as_str()),
        ],
        vec![("SFTP_KEY_FILE", env.rsa_key_file.to_str().unwrap())],
    ] {
        let name = backup_ok(&vars(&extra), &["backup", "--no-prune"]).await;
        assert_landed(dir.path(), &remote_dir, &name);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_directory_without_permission_fails_saying_what_to_do() {
    let env = sftp_env();
    let db = sample_db("sftp_denied");
    let dir = tempfile::tempdir().unwrap();
    let (_, parent) = env.fresh_dir("sftp_denied");
    // Owned by root, 0755: the SFTP user can read it, not write in it.
    let locked = parent.join("root-owned");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    // SFTP_PATH below it cannot be created.
    let sub = locked.join("sub");
    let vars = sftp_vars(&db.name, dir.path(), env.port, sub.to_str().unwrap(), &[]);
    assert_copy_fails(
        &vars,
        dir.path(),
        &locked,
        &["permission denied", "SFTP_PATH", "create it on the server"],
    )
    .await;
    assert!(!sub.exists());

    // SFTP_PATH itself exists but cannot be written to.
    let vars = sftp_vars(
        &db.name,
        dir.path(),
        env.port,
        locked.to_str().unwrap(),
        &[],
    );
    assert_copy_fails(
        &vars,
        dir.path(),
        &locked,
        &["permission denied", "let the SFTP user write SFTP_PATH"],
    )
    .await;
    assert_eq!(remote_files(&locked), Vec::<String>::new());
}

/// Move the backup `name` (and its manifest) in `dir` `days` back, so
/// that retention, which keeps the newest backup of each day, keeps it
/// next to a newer one of today. Returns its new name.
fn days_earlier(dir: &Path, name: &str, days: i64) -> String {
    let stamp = &name["selmai_backup_".len().."selmai_backup_".len() + 15];
    let taken = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d_%H%M%S").unwrap();
    let earlier = name.replace(
        stamp,
        &(taken - chrono::Duration::days(days))
            .format("%Y%m%d_%H%M%S")
            .to_string(),
    );
    for suffix in ["", ".manifest.json"] {
        std::fs::rename(
            dir.join(format!("{name}{suffix}")),
            dir.join(format!("{earlier}{suffix}")),
        )
        .unwrap();
    }
    earlier
}

/// Run `backup` on `vars`; as soon as the data's partial file on the
/// server holds `at_least` bytes, call `cut` (off the runtime). Returns
/// the run's exit code, stdout and stderr.
async fn backup_cut_mid_upload(
    vars: &[(String, String)],
    remote_dir: &Path,
    at_least: u64,
    cut: impl FnOnce(),
) -> (i32, String, String) {
    let running = tokio::spawn({
        let vars = vars.to_vec();
        async move { run(&vars, &["backup", "--no-prune"]).await }
    });
    let mut cut = Some(cut);
    loop {
        if running.is_finished() {
            let (code, _, err, _) = running.await.unwrap();
            panic!("the backup ended (exit {code}) before its upload could be cut; make the database bigger: {err}");
        }
        let data_partial = partials(remote_dir)
            .into_iter()
            .find(|n| !n.contains(".manifest.json"));
        if let Some(p) = data_partial {
            let size = std::fs::metadata(remote_dir.join(&p)).map_or(0, |m| m.len());
            if size >= at_least {
                (cut.take().unwrap())();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (code, out, err, _) = running.await.unwrap();
    (code, out, err)
}

/// Bytes the server received on the connections it closed in order, as
/// its log says (`Transferred: sent N, received M bytes`), once the last
/// one has closed.
fn received_after_restart(sshd: &OwnSshd) -> u64 {
    let started = std::time::Instant::now();
    loop {
        let log = sshd.log();
        let received: Vec<u64> = log
            .lines()
            .filter_map(|l| {
                l.split_once("Transferred: sent ")?
                    .1
                    .split_once(", received ")
            })
            .map(|(_, r)| r.trim_end_matches(" bytes").parse().unwrap())
            .collect();
        if !received.is_empty() {
            return received.iter().sum();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "sshd never logged the end of the connection: {log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A database whose backup is about 48 MB of incompressible data, so that
/// its upload takes long enough to be cut.
fn big_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.insert_big_blob(48);
    db
}

#[tokio::test(flavor = "multi_thread")]
async fn sshd_killed_mid_upload_leaves_nothing_under_a_final_name_and_the_next_run_catches_up() {
    let env = sftp_env();
    let mut sshd = OwnSshd::start();
    let db = big_db("sftp_killed");
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_dir("sftp_killed");
    let vars = sftp_vars(
        &db.name,
        dir.path(),
        sshd.port,
        &remote,
        &[("SFTP_RETRIES", "1"), ("SFTP_TIMEOUT", "5")],
    );
    // An older backup, complete on the server.
    let older = backup_ok(&vars, &["backup", "--no-prune"]).await;
    days_earlier(dir.path(), &older, 2);
    let older = days_earlier(&remote_dir, &older, 2);
    let older_files = remote_digests(&remote_dir);

    let (code, out, err) = backup_cut_mid_upload(&vars, &remote_dir, 4 << 20, || {
        sshd.kill_all();
    })
    .await;
    assert_eq!(code, 8, "{err}");
    assert_says(&error_line(&err), &["sftp", "connect", "check"]);
    let missed = file_name(&out);
    assert!(
        dir.path().join(&missed).is_file(),
        "the local backup is kept"
    );
    assert!(
        !remote_dir.join(&missed).exists(),
        "no data under its final name"
    );
    for (n, digest) in &older_files {
        assert_eq!(
            &sha256_of(&remote_dir.join(n)),
            digest,
            "{n}: the older backup on the server is untouched"
        );
    }
    assert_unhealthy(&vars).await;

    // The server is back. The data was cut before its final name, and the
    // manifest goes after it: the backup is not there for `list`.
    sshd.restart();
    assert_eq!(
        locations(&vars, &missed).await,
        Some(serde_json::json!(["volume"]))
    );
    // The next daily run cleans up and catches up.
    let missed = days_earlier(dir.path(), &missed, 1);
    let next = backup_ok(&vars, &["backup"]).await;
    assert_eq!(
        partials(&remote_dir),
        Vec::<String>::new(),
        "temporaries removed"
    );
    for n in [&missed, &next] {
        assert_landed(dir.path(), &remote_dir, n);
    }
    let mut want: Vec<String> = [&older, &missed, &next]
        .iter()
        .flat_map(|n| [n.to_string(), format!("{n}.manifest.json")])
        .collect();
    want.sort();
    assert_eq!(
        remote_files(&remote_dir),
        want,
        "the older backup kept, the missed one and the new one copied, nothing else left"
    );
    let (code, out, err, _) = run(&vars, &["health"]).await;
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_connection_cut_and_back_within_the_retries_resumes_the_upload() {
    let env = sftp_env();
    let mut sshd = OwnSshd::start();
    let db = big_db("sftp_resumed");
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_dir("sftp_resumed");
    let vars = sftp_vars(
        &db.name,
        dir.path(),
        sshd.port,
        &remote,
        &[("SFTP_RETRIES", "5"), ("SFTP_TIMEOUT", "10")],
    );
    let (code, out, err) = backup_cut_mid_upload(&vars, &remote_dir, 4 << 20, || {
        sshd.kill_all();
        sshd.restart();
    })
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("the connection dropped during an upload, reconnecting"),
        "the upload was cut: {err}"
    );
    let name = file_name(&out);
    assert_landed(dir.path(), &remote_dir, &name);
    // The connection that was cut is not in the server's log (killed, it
    // wrote nothing); the one after it received only what was missing.
    let size = std::fs::metadata(remote_dir.join(&name)).unwrap().len();
    let received = received_after_restart(&sshd);
    assert!(
        received < size,
        "the server received {received} bytes after the cut for a {size}-byte backup: the upload started over"
    );
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(remote_dir.join(format!("{name}.manifest.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["sha256"], sha256_of(&remote_dir.join(&name)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_remote_file_system_fails_and_leaves_the_older_backup() {
    let env = sftp_env();
    let (remote, remote_dir) = env.fresh_full_dir("sftp_full_fs");
    // An older, small backup on the server.
    let small = sample_db("sftp_full_fs_small");
    let small_dir = tempfile::tempdir().unwrap();
    let older = backup_ok(
        &sftp_vars(&small.name, small_dir.path(), env.port, &remote, &[]),
        &["backup"],
    )
    .await;
    let older_files = remote_digests(&remote_dir);
    assert_eq!(older_files.len(), 2, "{older_files:?}");

    // A backup bigger than the 8 MiB file system.
    let big = TestDb::new("sftp_full_fs_big");
    big.insert_big_blob(12);
    let dir = tempfile::tempdir().unwrap();
    let vars = sftp_vars(&big.name, dir.path(), env.port, &remote, &[]);
    assert_copy_fails(
        &vars,
        dir.path(),
        &remote_dir,
        &["no space left", "free space"],
    )
    .await;
    assert_eq!(remote_digests(&remote_dir), older_files);
    assert!(older_files.iter().any(|(n, _)| *n == older));
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_on_sftp_deletes_only_our_old_backups() {
    let env = sftp_env();
    let db = sample_db("sftp_retention");
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_dir("sftp_retention");
    crate::daemon::fake_backups(&remote_dir, (1..=10).map(|d| (2024, 1, d)));
    let foreign = [
        "other_20240101_020000.sql.gz",
        "selmai_backup_notes.txt",
        "selmai_backup_20240101_020000.tar.gz",
    ];
    for f in foreign {
        std::fs::write(remote_dir.join(f), b"not ours").unwrap();
    }
    let foreign_dir = remote_dir.join("selmai_backup_20240102_020000.sql.gz.d");
    std::fs::create_dir(&foreign_dir).unwrap();
    let vars = sftp_vars(
        &db.name,
        dir.path(),
        env.port,
        &remote,
        &[
            ("RETENTION_DAILY", "2"),
            ("RETENTION_WEEKLY", "0"),
            ("RETENTION_MONTHLY", "0"),
        ],
    );
    let name = backup_ok(&vars, &["backup"]).await;
    let mut want = vec![
        "selmai_backup_20240110_020000.sql.gz".to_owned(),
        "selmai_backup_20240110_020000.sql.gz.manifest.json".to_owned(),
        "selmai_backup_20240102_020000.sql.gz.d".to_owned(),
        name.clone(),
        format!("{name}.manifest.json"),
    ];
    want.extend(foreign.iter().map(|f| f.to_string()));
    want.sort();
    assert_eq!(remote_files(&remote_dir), want);
    for f in foreign {
        assert_eq!(std::fs::read(remote_dir.join(f)).unwrap(), b"not ours");
    }
}

// The manifest goes last off-site: a copy cut between the data and its
// manifest leaves data that is not a backup there (not listed, not
// restored from), and the next run completes it without sending the data
// again.
#[tokio::test(flavor = "multi_thread")]
async fn data_without_its_manifest_on_the_server_is_not_a_backup_until_the_next_run_completes_it() {
    let env = sftp_env();
    let src = TestDb::new("sftp_manifest_last");
    src.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1)");
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_dir("sftp_manifest_last");
    let vars = sftp_vars(&src.name, dir.path(), env.port, &remote, &[]);
    let first = backup_ok(&vars, &["backup", "--no-prune"]).await;
    src.exec("INSERT INTO t VALUES (2)");
    let second = backup_ok(&vars, &["backup", "--no-prune"]).await;
    assert_ne!(first, second);
    // Two days apart, so that retention keeps both next to a backup of today.
    let first = [dir.path(), &remote_dir]
        .map(|d| days_earlier(d, &first, 2))
        .into_iter()
        .next()
        .unwrap();
    let second = [dir.path(), &remote_dir]
        .map(|d| days_earlier(d, &second, 1))
        .into_iter()
        .next()
        .unwrap();

    // As a connection cut after the data's rename leaves it.
    let cut_manifest = remote_dir.join(format!("{second}.manifest.json"));
    std::fs::remove_file(&cut_manifest).unwrap();
    let data_before = std::fs::metadata(remote_dir.join(&second)).unwrap();
    assert_eq!(
        locations(&vars, &second).await,
        Some(serde_json::json!(["volume"])),
        "listed on the server without its manifest"
    );

    // The server alone: `latest` there is the first backup.
    let saved = tempfile::tempdir().unwrap();
    for f in tool::files(dir.path()) {
        std::fs::rename(dir.path().join(&f), saved.path().join(&f)).unwrap();
    }
    assert_eq!(locations(&vars, &second).await, None);
    let dst = TestDb::new("sftp_manifest_last_dst");
    let (code, _, err, _) = run(&vars, &["restore", "latest", "--into", &dst.name, "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&first), "restored {first}: {err}");
    assert_eq!(dst.exec("SELECT GROUP_CONCAT(id) FROM t").trim(), "1");
    for f in tool::files(saved.path()) {
        std::fs::rename(saved.path().join(&f), dir.path().join(&f)).unwrap();
    }

    // The next run completes the copy: the manifest arrives, the data is
    // the file that was there (not sent again).
    backup_ok(&vars, &["backup", "--no-prune"]).await;
    assert_landed(dir.path(), &remote_dir, &second);
    let data_after = std::fs::metadata(remote_dir.join(&second)).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        (
            data_after.ino(),
            data_after.mtime_nsec(),
            data_after.mtime()
        ),
        (
            data_before.ino(),
            data_before.mtime_nsec(),
            data_before.mtime()
        ),
        "the data was sent again"
    );
    assert_eq!(
        locations(&vars, &second).await,
        Some(serde_json::json!(["volume", "sftp"]))
    );
}

// The same pass: a server that stops answering in the middle of a backup
// holds the dump up for one budget at most; it is then dropped from the
// pass, the local backup goes on and is complete, and nothing is left
// under a final name there.
#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_stalls_during_the_pass_is_dropped_after_one_budget_and_the_local_backup_completes(
) {
    let env = sftp_env();
    let sshd = OwnSshd::start();
    let db = big_db("sftp_stalled");
    let dir = tempfile::tempdir().unwrap();
    let (remote, remote_dir) = env.fresh_dir("sftp_stalled");
    let vars = sftp_vars(
        &db.name,
        dir.path(),
        sshd.port,
        &remote,
        &[("BACKUP_OFFSITE_TIMEOUT", "3"), ("SFTP_TIMEOUT", "60")],
    );
    let mut stopped = Vec::new();
    let (code, out, err) = backup_cut_mid_upload(&vars, &remote_dir, 4 << 20, || {
        stopped = sshd.pids();
        signal("-STOP", &stopped);
    })
    .await;
    signal("-CONT", &stopped);
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("BACKUP_OFFSITE_TIMEOUT"), "{err}");
    let name = file_name(&out);
    assert!(
        !remote_dir.join(&name).exists(),
        "no data under its final name"
    );
    let (code, out, err, _) = run(&tool::vars(&db.name, dir.path()), &["verify", &name]).await;
    assert_eq!(code, 0, "{out}{err}");
}
