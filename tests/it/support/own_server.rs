//! A private MariaDB server for tests that restart, kill or purge a server:
//! its own port and data directory under a temporary directory, started
//! with the flags of `scripts/services.sh` (`--log-bin --server-id=1
//! --binlog-format=ROW`, 64 MiB packets; or without `--log-bin`). The data directory is initialised
//! once per test process and copied for each server, which keeps a start
//! under a second or two. The user is the shared server's test user, with
//! every privilege.
//!
//! Panics with the server's error log when it does not come up: a test
//! precondition, not code under test.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use selmai_backup::config::{DbSettings, Secret};

use crate::support::{db_env, DbEnv};

/// One private server.
pub struct OwnServer {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    /// Its data directory (the binlog files are `binlog.NNNNNN` in it).
    pub datadir: PathBuf,
    /// Started with `--log-bin` (the default) or without.
    log_bin: bool,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn template() -> &'static Path {
    static T: OnceLock<PathBuf> = OnceLock::new();
    T.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("selmai-own-server-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        chown_mysql(&dir);
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--user=mysql",
                &format!("--datadir={}", dir.display()),
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ])
            .output()
            .expect("running mariadb-install-db (scripts/services.sh installs mariadb-server)");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn chown_mysql(path: &Path) {
    let st = Command::new("chown")
        .args(["-R", "mysql:mysql"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success(), "chown mysql {}", path.display());
}

impl OwnServer {
    /// Start a fresh server with the test user created.
    pub fn start() -> OwnServer {
        OwnServer::start_with(true)
    }

    /// [`OwnServer::start`] without `--log-bin`: binary logging off.
    pub fn start_without_log_bin() -> OwnServer {
        OwnServer::start_with(false)
    }

    fn start_with(log_bin: bool) -> OwnServer {
        let dir = tempfile::tempdir().unwrap();
        let datadir = dir.path().join("data");
        let st = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(&datadir)
            .status()
            .unwrap();
        assert!(st.success());
        chown_mysql(dir.path());
        let mut s = OwnServer {
            port: crate::support::sinks::free_port(),
            datadir,
            log_bin,
            child: None,
            _dir: dir,
        };
        s.launch();
        let env = db_env();
        s.root_sql(&format!(
            "CREATE USER '{u}'@'%' IDENTIFIED BY '{p}'; GRANT ALL PRIVILEGES ON *.* TO '{u}'@'%' WITH GRANT OPTION; \
             CREATE USER '{u}'@'localhost' IDENTIFIED BY '{p}'; GRANT ALL PRIVILEGES ON *.* TO '{u}'@'localhost' WITH GRANT OPTION;",
            u = env.user,
            p = env.password
        ));
        s
    }

    fn socket(&self) -> PathBuf {
        self.datadir.join("mariadb.sock")
    }

    fn launch(&mut self) {
        let log = self.datadir.join("error.log");
        let binlog: &[&str] = if self.log_bin {
            &["--log-bin=binlog", "--binlog-format=ROW"]
        } else {
            &[]
        };
        // --no-defaults must come first.
        let child = Command::new("/usr/sbin/mariadbd")
            .args([
                "--no-defaults",
                "--user=mysql",
                &format!("--datadir={}", self.datadir.display()),
                &format!("--socket={}", self.socket().display()),
                &format!("--port={}", self.port),
                "--bind-address=127.0.0.1",
                "--max-allowed-packet=64M",
                "--server-id=1",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=96M",
                "--innodb-flush-log-at-trx-commit=2",
                "--event-scheduler=OFF",
                "--skip-name-resolve",
                &format!("--log-error={}", log.display()),
            ])
            .args(binlog)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mariadbd");
        self.child = Some(child);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            let ok = Command::new("mariadb")
                .args(["--no-defaults", "-u", "root", "-S"])
                .arg(self.socket())
                .args(["-e", "SELECT 1"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "own MariaDB on port {} did not start: {}",
            self.port,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Run `sql` as root over the socket; returns the rows printed.
    pub fn root_sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args([
                "--no-defaults",
                "--batch",
                "--skip-column-names",
                "-u",
                "root",
                "-S",
            ])
            .arg(self.socket())
            .args(["-e", sql])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "own server: {sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The connection details of this server, for the shared helpers.
    pub fn env(&self) -> DbEnv {
        DbEnv {
            port: self.port,
            ..db_env()
        }
    }

    /// Connection settings as the tool takes them.
    pub fn db_settings(&self, name: &str) -> DbSettings {
        let env = db_env();
        DbSettings {
            host: env.host,
            port: self.port,
            user: env.user,
            password: Secret::new(env.password),
            name: name.to_owned(),
            connect_timeout: Duration::from_secs(5),
            lock_wait_timeout: Duration::from_secs(300),
        }
    }

    /// `(file, position)` of `SHOW MASTER STATUS`.
    pub fn master_position(&self) -> (String, u64) {
        let out = self.root_sql("SHOW MASTER STATUS");
        let mut f = out.split('\t');
        let file = f.next().unwrap().to_owned();
        let pos = f.next().unwrap().trim().parse().unwrap();
        (file, pos)
    }

    /// Stop with SIGTERM (a clean shutdown) and wait for the exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Kill with SIGKILL (a crash).
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same data directory and port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// Start again after [`OwnServer::stop`] or [`OwnServer::crash`].
    pub fn start_again(&mut self) {
        self.launch();
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.crash();
    }
}
