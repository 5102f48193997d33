//! The OpenSSH test server the SFTP target is tested against: where the
//! shared server started by `scripts/services.sh` is and how to log in to
//! it (`TEST_SFTP_*`), a fresh remote directory per test, and a private
//! server a test may kill dead in the middle of a transfer and start again.
//!
//! Not responsible for installing or configuring sshd, its users and keys:
//! `scripts/services.sh` does that. There is no chroot: a remote path is
//! the same absolute path on this machine, so the tests (root) inspect what
//! landed on the server directly through the file system.
//!
//! The helpers panic with a message naming what failed: they are test
//! preconditions, not code under test.

use std::collections::{BTreeSet, HashMap};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use selmai_backup::config::{HostKeyPin, Secret, SftpSettings};

/// Where the shared SFTP server is and how to log in to it.
#[derive(Debug, Clone)]
pub struct SftpEnv {
    /// Host address (loopback).
    pub host: String,
    /// TCP port of the shared server.
    pub port: u16,
    /// The user that logs in with a key only.
    pub user: String,
    /// Its ed25519 private key, no passphrase (OpenSSH format, 0600).
    pub key_file: PathBuf,
    /// Its RSA 3072 private key, no passphrase.
    pub rsa_key_file: PathBuf,
    /// Its ed25519 private key protected by [`SftpEnv::key_passphrase`].
    pub enc_key_file: PathBuf,
    /// The passphrase of [`SftpEnv::enc_key_file`].
    pub key_passphrase: String,
    /// The user that logs in with a password only.
    pub pw_user: String,
    /// That user's password.
    pub password: String,
    /// A known_hosts file with the line for `[host]:port`.
    pub known_hosts: PathBuf,
    /// The server's public key line, `ssh-ed25519 AAAA...`.
    pub host_key: String,
    /// The server key's fingerprint as `ssh-keygen -lf` prints it,
    /// `SHA256:...`.
    pub fingerprint: String,
    /// The key user's home directory (absolute; also its remote path).
    pub home: PathBuf,
    /// The password user's home directory.
    pub pw_home: PathBuf,
    /// A directory on an 8 MiB tmpfs the key user may write to.
    pub full_dir: PathBuf,
    /// The shared server's sshd_config, the template of [`OwnSshd`].
    pub sshd_config: PathBuf,
}

/// The shared server from the `TEST_SFTP_*` variables `scripts/services.sh`
/// prints. Panics naming the first one missing.
pub fn sftp_env() -> SftpEnv {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run the tests with the environment `eval \"$(scripts/services.sh)\"` prints")
        })
    };
    let port = var("TEST_SFTP_PORT");
    SftpEnv {
        host: var("TEST_SFTP_HOST"),
        port: port
            .parse()
            .unwrap_or_else(|_| panic!("TEST_SFTP_PORT={port:?} is not a port number")),
        user: var("TEST_SFTP_USER"),
        key_file: var("TEST_SFTP_KEY_FILE").into(),
        rsa_key_file: var("TEST_SFTP_RSA_KEY_FILE").into(),
        enc_key_file: var("TEST_SFTP_ENC_KEY_FILE").into(),
        key_passphrase: var("TEST_SFTP_KEY_PASSPHRASE"),
        pw_user: var("TEST_SFTP_PW_USER"),
        password: var("TEST_SFTP_PASSWORD"),
        known_hosts: var("TEST_SFTP_KNOWN_HOSTS").into(),
        host_key: var("TEST_SFTP_HOST_KEY"),
        fingerprint: var("TEST_SFTP_FINGERPRINT"),
        home: var("TEST_SFTP_HOME").into(),
        pw_home: var("TEST_SFTP_PW_HOME").into(),
        full_dir: var("TEST_SFTP_FULL_DIR").into(),
        sshd_config: var("TEST_SFTP_SSHD_CONFIG").into(),
    }
}

impl SftpEnv {
    /// The target's settings for `remote` on the shared server: the key
    /// user with the ed25519 key, the host key pinned by its line, short
    /// back-off so retries do not slow the tests.
    pub fn settings(&self, remote: &str) -> SftpSettings {
        self.settings_on(self.port, remote)
    }

    /// [`SftpEnv::settings`] for the server on `port` (an [`OwnSshd`]'s).
    pub fn settings_on(&self, port: u16, remote: &str) -> SftpSettings {
        let key = std::fs::read_to_string(&self.key_file).unwrap();
        SftpSettings {
            host: self.host.clone(),
            port,
            user: self.user.clone(),
            path: remote.to_owned(),
            key: Some(Secret::new(key)),
            key_file: Some(self.key_file.display().to_string()),
            key_passphrase: None,
            password: None,
            host_key: HostKeyPin::Key(self.host_key.clone()),
            concurrency: 16,
            retries: 3,
            timeout: Duration::from_secs(10),
            retry_delay: Duration::from_millis(100),
        }
    }

    /// The `SFTP_*` variables of [`SftpEnv::settings`], for the binary.
    pub fn vars(&self, port: u16, remote: &str) -> Vec<(String, String)> {
        [
            ("SFTP_HOST", self.host.clone()),
            ("SFTP_PORT", port.to_string()),
            ("SFTP_USER", self.user.clone()),
            ("SFTP_PATH", remote.to_owned()),
            ("SFTP_KEY_FILE", self.key_file.display().to_string()),
            ("SFTP_HOST_KEY", self.host_key.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A new empty directory under the key user's home, owned by that user:
    /// `(remote path, local path)`, which are the same path as long as the
    /// server has no chroot. Unique per call, so tests run in parallel;
    /// `tag` names the test (characters other than `[A-Za-z0-9_]` become `_`).
    pub fn fresh_dir(&self, tag: &str) -> (String, PathBuf) {
        fresh_under(&self.home, &self.user, tag)
    }

    /// [`SftpEnv::fresh_dir`] for the password user, under its home.
    pub fn fresh_pw_dir(&self, tag: &str) -> (String, PathBuf) {
        fresh_under(&self.pw_home, &self.pw_user, tag)
    }

    /// [`SftpEnv::fresh_dir`] on the 8 MiB tmpfs, for a full-disk test.
    /// Tests that fill it must not run at the same time: they share the
    /// 8 MiB.
    pub fn fresh_full_dir(&self, tag: &str) -> (String, PathBuf) {
        fresh_under(&self.full_dir, &self.user, tag)
    }

    /// OpenSSH's `sftp` in batch mode reading its commands from standard
    /// input (`-b -`), logged in as the key user with the unencrypted
    /// ed25519 key to `port` (the shared server's or an [`OwnSshd`]'s),
    /// trusting only the host key in `known_hosts`. It exits non-zero when
    /// a command or the connection fails.
    pub fn sftp_batch(&self, port: u16, known_hosts: &Path) -> Command {
        self.sftp_batch_with(port, known_hosts, &self.key_file, &[])
    }

    /// [`SftpEnv::sftp_batch`] with another key without passphrase (the
    /// only one offered) and `extra` options for `sftp` (`-l KBIT/S`...),
    /// which must come before the destination.
    pub fn sftp_batch_with(
        &self,
        port: u16,
        known_hosts: &Path,
        key: &Path,
        extra: &[&str],
    ) -> Command {
        let mut cmd = Command::new("sftp");
        cmd.args(["-b", "-", "-q"])
            .args(extra)
            .arg("-i")
            .arg(key)
            .args(["-P", &port.to_string(), "-o"])
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
            ])
            .arg(format!("{}@{}", self.user, self.host));
        cmd
    }
}

/// Names of the directories [`fresh_under`] makes: `{tag}-p{pid}-{n}`.
fn fresh_under(parent: &Path, owner: &str, tag: &str) -> (String, PathBuf) {
    static SWEPT: Once = Once::new();
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    // Directories of earlier test processes that are gone: removed once
    // per process, so big test files do not pile up run after run.
    SWEPT.call_once(|| {
        let env = sftp_env();
        for dir in [&env.home, &env.pw_home, &env.full_dir] {
            sweep_dead(dir);
        }
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(60)
        .collect();
    let local = parent.join(format!("{tag}-p{}-{n}", std::process::id()));
    // Only a killed test process with the same pid can have left it.
    let _ = std::fs::remove_dir_all(&local);
    std::fs::create_dir(&local).unwrap_or_else(|e| panic!("creating {}: {e}", local.display()));
    let st = Command::new("chown")
        .arg(format!("{owner}:{owner}"))
        .arg(&local)
        .status()
        .expect("running chown");
    assert!(st.success(), "chown {owner} {}", local.display());
    let remote = local
        .to_str()
        .unwrap_or_else(|| panic!("{} is not UTF-8", local.display()))
        .to_owned();
    (remote, local)
}

/// Removes the `*-p{pid}-{n}` directories in `dir` whose process is gone.
fn sweep_dead(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let mut parts = name.rsplitn(3, '-');
        let (Some(n), Some(pid), Some(_tag)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let Some(pid) = pid.strip_prefix('p') else {
            continue;
        };
        if n.parse::<u64>().is_err() || pid.parse::<u32>().is_err() {
            continue;
        }
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A private sshd with the shared server's host key, users and settings on
/// its own port, for tests that kill the server mid-transfer.
pub struct OwnSshd {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// A known_hosts file with the line for `[127.0.0.1]:port`.
    pub known_hosts: PathBuf,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl OwnSshd {
    /// Starts a server on a free port and waits until it accepts TCP
    /// connections.
    pub fn start() -> OwnSshd {
        let env = sftp_env();
        let dir = tempfile::tempdir().unwrap();
        let port = crate::support::sinks::free_port();
        let pid_file = dir.path().join("sshd.pid");
        let template = std::fs::read_to_string(&env.sshd_config)
            .unwrap_or_else(|e| panic!("reading {}: {e}", env.sshd_config.display()));
        let mut config = String::new();
        for line in template.lines() {
            if line.starts_with("Port ") {
                config.push_str(&format!("Port {port}\n"));
            } else if line.starts_with("PidFile ") {
                config.push_str(&format!("PidFile {}\n", pid_file.display()));
            } else {
                config.push_str(line);
                config.push('\n');
            }
        }
        assert!(
            config.contains(&format!("Port {port}\n")) && config.contains("PidFile "),
            "{} has no Port or PidFile line to replace",
            env.sshd_config.display()
        );
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).unwrap();
        let known_hosts = dir.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[{}]:{port} {}\n", env.host, env.host_key),
        )
        .unwrap();
        let mut s = OwnSshd {
            port,
            known_hosts,
            config: config_path,
            log: dir.path().join("sshd.log"),
            child: None,
            _dir: dir,
        };
        s.launch();
        s
    }

    fn launch(&mut self) {
        // sshd re-executes itself for every connection: it needs its
        // absolute path.
        let mut child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&self.config)
            .arg("-E")
            .arg(&self.log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting /usr/sbin/sshd (scripts/services.sh installs openssh-server)");
        let started = Instant::now();
        loop {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                break;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "own sshd on port {} exited ({status}): {}",
                    self.port,
                    self.log()
                );
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "own sshd on port {} did not listen within 30 s: {}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child = Some(child);
    }

    /// Its log (`LogLevel VERBOSE`: connections, logins, sftp requests).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The listening sshd and every process it forked that is still alive
    /// (one pre-authentication or session sshd per connection; they start
    /// sessions of their own, so they are not in its process group).
    /// Empty when it is not running.
    pub fn pids(&self) -> Vec<u32> {
        match &self.child {
            Some(c) => with_descendants(c.id()).into_iter().collect(),
            None => Vec::new(),
        }
    }

    /// Kills with SIGKILL the listening sshd and every process it forked,
    /// so that a transfer through it is cut dead (no orderly close), and
    /// waits until they are all gone. Returns their pids. Does nothing
    /// when it is not running.
    pub fn kill_all(&mut self) -> Vec<u32> {
        self.kill_tree().unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`OwnSshd::kill_all`], saying which processes survived instead of
    /// panicking (a panic in `Drop` while unwinding would abort).
    fn kill_tree(&mut self) -> Result<Vec<u32>, String> {
        let Some(mut listener) = self.child.take() else {
            return Ok(Vec::new());
        };
        // Stopped processes cannot fork: stop the tree until it stops
        // growing, so that nothing escapes, then kill it all at once.
        let mut stopped = BTreeSet::new();
        loop {
            let found = with_descendants(listener.id());
            let new: Vec<u32> = found.difference(&stopped).copied().collect();
            if new.is_empty() {
                break;
            }
            signal("-STOP", &new);
            stopped.extend(new);
        }
        let pids: Vec<u32> = stopped.into_iter().collect();
        signal("-KILL", &pids);
        let _ = listener.wait();
        // The others are no children of ours: once dead they are reaped by
        // init, possibly late, so a zombie counts as gone.
        let started = Instant::now();
        loop {
            let alive: Vec<u32> = pids.iter().copied().filter(|&p| is_alive(p)).collect();
            if alive.is_empty() {
                return Ok(pids);
            }
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!(
                    "sshd processes {alive:?} of port {} survived SIGKILL",
                    self.port
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Listens again on the same port with the same configuration (after
    /// [`OwnSshd::kill_all`]; kills everything first when still running).
    pub fn restart(&mut self) {
        self.kill_all();
        self.launch();
    }
}

impl Drop for OwnSshd {
    fn drop(&mut self) {
        if let Err(e) = self.kill_tree() {
            eprintln!("{e}");
        }
    }
}

/// `root` and all its living descendants, from the parent pids in
/// `/proc/*/stat`.
fn with_descendants(root: u32) -> BTreeSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Some((ppid, state)) = stat(pid) {
            if state != 'Z' {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = BTreeSet::new();
    if !is_alive(root) {
        return out;
    }
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if out.insert(p) {
            todo.extend(children.get(&p).into_iter().flatten().copied());
        }
    }
    out
}

/// `(parent pid, state)` of a process, or `None` when it is gone.
fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces and
    // parentheses: the fields after it start at the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Whether process `pid` is running or stopped (not gone, not a zombie).
pub fn is_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(_, state)| state != 'Z' && state != 'X')
}

/// Send `sig` (`-STOP`, `-CONT`, `-KILL`) to `pids`, ignoring those gone.
pub fn signal(sig: &str, pids: &[u32]) {
    // A process may exit between the look-up and the signal: kill's
    // failure for it is expected, the caller checks who is still alive.
    let _ = Command::new("kill")
        .arg(sig)
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}
