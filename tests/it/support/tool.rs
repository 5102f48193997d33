//! How the tests drive selmai-backup: settings built from a map (never the
//! process environment), the library's backup/verify/restore, and the real
//! binary for exit codes and signals.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use selmai_backup::backup::pipeline::{self, BackupError, BackupOutcome, Encoding};
use selmai_backup::config::Settings;
use selmai_backup::dump::{DumpHooks, DumpOptions, NoHooks};
use selmai_backup::restore::definer::Definer;
use selmai_backup::restore::{self, open, ExecSummary, RestoreError, RunError};
use selmai_backup::target::local::LocalTarget;
use selmai_backup::target::Target;

use crate::support::db_env;

/// The variables a test backup of database `db` into `dir` needs.
pub fn vars(db: &str, dir: &Path) -> Vec<(String, String)> {
    let env = db_env();
    [
        ("DB_HOST", env.host),
        ("DB_PORT", env.port.to_string()),
        ("DB_USER", env.user),
        ("DB_PASSWORD", env.password),
        ("DB_NAME", db.to_owned()),
        ("DB_CONNECT_TIMEOUT", "5".to_owned()),
        ("BACKUP_DIR", dir.display().to_string()),
        // The shared test server has --log-bin: with the default `auto`
        // every daemon would also archive its binlog. Tests of the archive
        // set it on.
        ("BINLOG_ARCHIVE", "off".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `vars` with some entries replaced or added.
pub fn vars_with(db: &str, dir: &Path, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = vars(db, dir);
    for (k, val) in extra {
        v.retain(|(name, _)| name != k);
        v.push((k.to_string(), val.to_string()));
    }
    v
}

/// Settings for `db` and `dir`, with overrides.
pub fn settings(db: &str, dir: &Path, extra: &[(&str, &str)]) -> Settings {
    Settings::from_vars(vars_with(db, dir, extra)).expect("test settings are valid")
}

/// The volume target of `dir`.
pub fn volume(dir: &Path) -> Vec<Arc<dyn Target>> {
    vec![Arc::new(LocalTarget::new(dir))]
}

/// Back up with these settings through the library.
pub async fn try_backup(s: &Settings, hooks: &dyn DumpHooks) -> Result<BackupOutcome, BackupError> {
    pipeline::backup_db(
        &s.db()?,
        &Encoding::of(s),
        &s.prefix,
        &volume(&s.backup_dir),
        &DumpOptions::default(),
        hooks,
    )
    .await
}

/// Back up `db` into `dir`; panics on failure.
pub async fn backup(db: &str, dir: &Path) -> BackupOutcome {
    try_backup(&settings(db, dir, &[]), &NoHooks)
        .await
        .unwrap_or_else(|e| panic!("backup of {db} failed: {e}"))
}

/// Locate, verify and apply `spec` from `dir` into database `into`.
pub async fn try_restore(dir: &Path, spec: &str, into: &str) -> Result<ExecSummary, RestoreError> {
    try_restore_with(dir, spec, into, &[]).await
}

/// [`try_restore`] with extra variables (a passphrase ...).
pub async fn try_restore_with(
    dir: &Path,
    spec: &str,
    into: &str,
    extra: &[(&str, &str)],
) -> Result<ExecSummary, RestoreError> {
    let s = settings(into, dir, extra);
    let (source, _) =
        match open::prepare(spec, &s.prefix, &volume(dir), None, s.passphrase.as_ref()).await {
            Ok(prepared) => prepared,
            Err(open::PrepareError::Read(e)) => return Err(e),
            Err(e) => panic!("locating {spec}: {e}"),
        };
    let db = s.db().unwrap();
    let plan = restore::Plan {
        source: &source,
        passphrase: s.passphrase.as_ref(),
        db: &db,
        into,
        definer: Definer::Keep,
        apps: None,
        snapshot: None,
        replay: None,
    };
    match restore::run(plan, std::future::pending(), |_| {}).await {
        Ok(outcome) => Ok(outcome.summary),
        Err(RunError::Apply(e)) => Err(e),
        Err(e) => panic!("restore of {spec} into {into}: {e}"),
    }
}

/// [`try_restore`] that panics on failure.
pub async fn restore(dir: &Path, spec: &str, into: &str) -> ExecSummary {
    try_restore(dir, spec, into)
        .await
        .unwrap_or_else(|e| panic!("restore of {spec} into {into} failed: {e}"))
}

/// The binary with exactly these variables (nothing inherited but PATH).
pub fn bin(vars: &[(String, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_selmai-backup"));
    c.env_clear();
    if let Ok(p) = std::env::var("PATH") {
        c.env("PATH", p);
    }
    c.envs(vars.iter().map(|(k, v)| (k, v)));
    c.stdin(Stdio::null());
    c
}

/// Start the binary with `args`, its log (stderr) piped for the test to
/// read, its output dropped.
pub fn spawn(vars: &[(String, String)], args: &[&str]) -> std::process::Child {
    bin(vars)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting selmai-backup {args:?}: {e}"))
}

/// Run the binary to completion.
pub fn run(vars: &[(String, String)], args: &[&str]) -> Output {
    bin(vars)
        .args(args)
        .output()
        .expect("running selmai-backup")
}

/// [`run`] off the test's runtime threads (the test may serve an endpoint
/// or watch a server meanwhile): exit code, stdout, stderr and how long it
/// took.
pub async fn run_async(
    vars: &[(String, String)],
    args: &[&str],
) -> (i32, String, String, std::time::Duration) {
    let (vars, args): (Vec<_>, Vec<String>) =
        (vars.to_vec(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = outcome(&run(&vars, &args));
        (code, out, err, started.elapsed())
    })
    .await
    .unwrap()
}

/// The file name of a path the binary printed.
pub fn file_name(path: &str) -> String {
    Path::new(path.trim())
        .file_name()
        .unwrap_or_else(|| panic!("{path:?} names no file"))
        .to_string_lossy()
        .into_owned()
}

/// Run the binary to completion under `umask` (through `sh`, which sets
/// it for the process it then becomes).
pub fn run_with_umask(vars: &[(String, String)], umask: &str, args: &[&str]) -> Output {
    let mut c = Command::new("sh");
    c.env_clear();
    if let Ok(p) = std::env::var("PATH") {
        c.env("PATH", p);
    }
    c.envs(vars.iter().map(|(k, v)| (k, v)));
    c.stdin(Stdio::null());
    c.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_selmai-backup"))
        .args(args);
    c.output().expect("running selmai-backup")
}

/// Exit code, stdout and stderr of a finished run, for assertions.
pub fn outcome(o: &Output) -> (i32, String, String) {
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// The names in `dir`, sorted, without the bookkeeping files (the lock
/// and the run history, which every run rewrites).
pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n != selmai_backup::format::catalog::LOCK_FILE
                && !n.starts_with(selmai_backup::daemon::state::STATE_FILE)
        })
        .collect();
    v.sort();
    v
}

/// Name -> SHA-256 of every file in `dir` (bookkeeping files excluded).
pub fn file_digests(dir: &Path) -> Vec<(String, String)> {
    use sha2::{Digest, Sha256};
    files(dir)
        .into_iter()
        .map(|n| {
            let d = Sha256::digest(std::fs::read(dir.join(&n)).unwrap());
            (n, hex::encode(d))
        })
        .collect()
}

/// A tmpfs of `kib` KiB mounted on a fresh directory, unmounted on drop.
pub struct Tmpfs {
    /// The mount point.
    pub dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mount a tmpfs with extra mount options (e.g. "ro").
    pub fn mount(kib: u64, opts: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let o = if opts.is_empty() {
            format!("size={kib}k")
        } else {
            format!("size={kib}k,{opts}")
        };
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &o, "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(
            st.success(),
            "mounting a tmpfs needs root (the test suite runs as root in CI)"
        );
        Tmpfs { dir }
    }

    /// Remount with other options (e.g. "remount,ro").
    pub fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", opts])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// `bytes` compressed by the stock `gzip -c`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running gzip");
    let mut stdin = gz.stdin.take().unwrap();
    let data = bytes.to_vec();
    // Feed stdin from a thread: gzip's output fills the pipe meanwhile.
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = gz.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "gzip -c failed");
    out.stdout
}

/// The content of `path` as the stock `gunzip -c` reads it.
pub fn gunzip(path: &Path) -> Vec<u8> {
    let out = Command::new("gunzip")
        .arg("-c")
        .arg(path)
        .output()
        .expect("running gunzip");
    assert!(out.status.success(), "gunzip -c {} failed", path.display());
    out.stdout
}
