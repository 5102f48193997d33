//! The daemon (issue 5; RELIABILITY.md 4-7): `run` with catch-up, metrics
//! and alerts; SIGTERM mid-backup leaves nothing behind and exits 0 within
//! Docker's stop timeout; no overlap with a one-off backup; `health` exit
//! codes (fresh, stale, missing off-site copy, low disk); alerts by webhook
//! (json, slack, ntfy), mail (a local SMTP sink) and pings against local
//! listeners; retention after a successful backup only, on our own files
//! only, with failed deletes reported; `prune --dry-run` output; SIGTERM
//! mid full backup deletes the parts it had stored.
//!
//! The scheduler's timing (DST, catch-up, overlap) is tested with a paused
//! clock in `src/schedule.rs`; retention's plan in `src/retention.rs`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{TimeZone, Utc};
use selmai_backup::config::Settings;
use selmai_backup::daemon::jobs::Jobs;
use selmai_backup::daemon::metrics::Metrics;
use selmai_backup::daemon::notify::Notifier;
use selmai_backup::daemon::schedule::{Kind, Trigger};
use selmai_backup::daemon::state::{self, Offsite, Outcome, Run, State};
use selmai_backup::format::catalog;
use selmai_backup::target::local::LocalTarget;
use selmai_backup::target::{ObjectInfo, ObjectReader, Target, TargetError, Upload};

use crate::support::{db_env, TestDb};
use crate::tool::{self, Tmpfs};

// ---------------------------------------------------------------- helpers

/// A small database with one table.
fn small_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.exec(
        "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(20)); INSERT INTO t VALUES (1,'a'),(2,'b');",
    );
    db
}

/// A database whose backup takes seconds (200,000 rows of ~200 bytes).
fn big_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.exec(
        "CREATE TABLE big (id INT PRIMARY KEY, v VARCHAR(200));
         INSERT INTO big SELECT seq, REPEAT(SHA2(seq, 256), 3) FROM seq_1_to_200000;",
    );
    db
}

/// One HTTP request as a listener received it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A local HTTP listener that records every request and answers `status`.
pub(crate) struct HttpSink {
    pub(crate) url: String,
    rx: mpsc::Receiver<Request>,
}

impl HttpSink {
    pub(crate) fn start(status: u16) -> HttpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let Some(req) = read_request(&stream) else {
                    continue;
                };
                let mut s = &stream;
                let _ = write!(
                    s,
                    "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
                if tx.send(req).is_err() {
                    return;
                }
            }
        });
        HttpSink { url, rx }
    }

    pub(crate) fn next(&self, within: Duration) -> Option<Request> {
        self.rx.recv_timeout(within).ok()
    }

    pub(crate) fn expect(&self, within: Duration, what: &str) -> Request {
        self.next(within)
            .unwrap_or_else(|| panic!("no {what} request within {within:?}"))
    }
}

fn read_request(stream: &TcpStream) -> Option<Request> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// One mail as a minimal SMTP sink received it.
#[derive(Debug)]
struct Mail {
    from: String,
    to: Vec<String>,
    /// Headers and body, with folded headers and quoted-printable soft
    /// line breaks undone so that assertions can look for phrases.
    data: String,
}

/// A local SMTP server that accepts every mail (no TLS, no auth).
struct SmtpSink {
    port: u16,
    rx: mpsc::Receiver<Mail>,
}

impl SmtpSink {
    fn start() -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(m) = smtp_session(stream) {
                    if tx.send(m).is_err() {
                        return;
                    }
                }
            }
        });
        SmtpSink { port, rx }
    }
}

fn smtp_session(stream: TcpStream) -> Option<Mail> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut w = stream.try_clone().ok()?;
    let mut r = BufReader::new(stream);
    let mut say = |s: &str| write!(w, "{s}\r\n").ok();
    say("220 sink ESMTP")?;
    let (mut from, mut to, mut data) = (String::new(), Vec::new(), String::new());
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            say("250 sink")?;
        } else if upper.starts_with("MAIL FROM:") {
            from = cmd[10..].trim().to_owned();
            say("250 OK")?;
        } else if upper.starts_with("RCPT TO:") {
            to.push(cmd[8..].trim().to_owned());
            say("250 OK")?;
        } else if upper == "DATA" {
            say("354 go on")?;
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).ok()? == 0 {
                    return None;
                }
                if l.trim_end() == "." {
                    break;
                }
                data.push_str(&l);
            }
            say("250 queued")?;
        } else if upper == "QUIT" {
            say("221 bye");
            let data = data
                .replace("=\r\n", "")
                .replace("\r\n ", " ")
                .replace("=3D", "=");
            return Some(Mail { from, to, data });
        } else {
            say("250 OK")?;
        }
    }
}

/// GET `path` from `addr`: (status code, body).
fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `selmai-backup run` process with its log lines collected.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Daemon {
    fn start(vars: &[(String, String)]) -> Daemon {
        let mut child = tool::bin(vars)
            .arg("run")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting selmai-backup run");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Daemon {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// Wait for a log line containing `needle`; panics with the log so far.
    fn wait_for(&mut self, needle: &str, within: Duration) -> String {
        let end = Instant::now() + within;
        if let Some(l) = self.log.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.log.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "no log line with {needle:?} within {within:?}; log:\n{}",
            self.log.join("\n")
        );
    }

    fn drain(&mut self) -> String {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.log.push(l);
        }
        self.log.join("\n")
    }

    fn signal(&self, sig: &str) {
        let st = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Wait for the exit: (exit code, time taken); panics after `within`.
    fn wait_exit(&mut self, within: Duration) -> (i32, Duration) {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code().unwrap_or(-1), start.elapsed());
            }
            if start.elapsed() > within {
                let _ = self.child.kill();
                panic!(
                    "selmai-backup run did not exit within {within:?}; log:\n{}",
                    self.drain()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Only the process this test started, by its own handle.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn jobs(s: &Settings, targets: Vec<Arc<dyn Target>>) -> Jobs {
    Jobs::new(
        Arc::new(s.clone()),
        targets,
        Notifier::new(s.notify.clone()),
        Metrics::default(),
    )
}

/// Names of our backups in `dir` (manifests excluded), oldest first.
pub(crate) fn backups(dir: &Path) -> Vec<String> {
    tool::files(dir)
        .into_iter()
        .filter(|n| catalog::parse_db_name("selmai_backup", n).is_some())
        .collect()
}

/// Empty files standing for backups taken at 02:00 UTC on each day, with manifests.
pub(crate) fn fake_backups(dir: &Path, days: impl IntoIterator<Item = (i32, u32, u32)>) {
    for (y, m, d) in days {
        let t = Utc.with_ymd_and_hms(y, m, d, 2, 0, 0).unwrap();
        let name = catalog::db_file_name("selmai_backup", t, ".gz", false);
        std::fs::write(dir.join(&name), b"x").unwrap();
        std::fs::write(dir.join(format!("{name}.manifest.json")), b"{}").unwrap();
    }
}

fn record(dir: &Path, hours_ago: i64, size: u64, offsite: Offsite) {
    let started = Utc::now() - chrono::Duration::hours(hours_ago);
    state::record(
        dir,
        Run {
            kind: Kind::Db,
            trigger: Trigger::Schedule,
            started,
            finished: started + chrono::Duration::seconds(20),
            outcome: Outcome::Success,
            file: Some(catalog::db_file_name(
                "selmai_backup",
                started,
                ".gz",
                false,
            )),
            size: Some(size),
            offsite,
            error: None,
            warnings: Vec::new(),
        },
    )
    .unwrap();
}

/// `health` with the test variables plus `extra`: (code, stdout+stderr).
fn health(dir: &Path, extra: &[(&str, &str)]) -> (i32, String) {
    // The database is unreachable on purpose: health must not need it.
    let mut e = vec![("DB_PORT", "1")];
    e.extend_from_slice(extra);
    let vars = tool::vars_with("nodb", dir, &e);
    let started = Instant::now();
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["health"]));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "health took {:?}",
        started.elapsed()
    );
    let text = format!("{out}{err}");
    assert_eq!(text.trim_end().lines().count(), 1, "one line: {text:?}");
    (code, text.trim_end().to_owned())
}

// ------------------------------------------------------------ the daemon

#[test]
fn run_catches_up_at_start_alerts_serves_metrics_and_stops_on_sigterm() {
    let db = small_db("d_run");
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(200);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let vars = tool::vars_with(
        &db.name,
        dir.path(),
        &[
            ("TZ", "Europe/Paris"),
            ("BACKUP_SCHEDULE", "30 2 * * *"),
            ("FULL_SCHEDULE", "off"),
            ("NOTIFY_ON_SUCCESS", "true"),
            ("NOTIFY_WEBHOOK_URL", &format!("{}/hook", hook.url)),
            ("METRICS_LISTEN", &metrics_addr),
        ],
    );
    let mut d = Daemon::start(&vars);
    // No state file yet: auto catch-up runs a backup at once.
    d.wait_for("catching up", Duration::from_secs(10));
    let req = hook.expect(Duration::from_secs(60), "webhook");
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/hook"));
    let ev = req.json();
    assert_eq!(ev["event"], "backup_succeeded", "{ev}");
    assert_eq!(ev["kind"], "db");
    let file = ev["file"].as_str().unwrap().to_owned();
    assert_eq!(backups(dir.path()), std::slice::from_ref(&file));
    let size = std::fs::metadata(dir.path().join(&file)).unwrap().len();
    assert_eq!(ev["size"], size);
    assert!(ev["duration"].as_f64().unwrap() > 0.0);
    assert!(ev["error"].is_null());

    // The next run is logged after the run, in the operator's time zone;
    // config without any of its paths is not scheduled, nor a kind set off.
    d.wait_for("next db backup at", Duration::from_secs(10));
    let log = d.drain();
    assert!(
        log.contains("CEST (Europe/Paris)") || log.contains("CET (Europe/Paris)"),
        "{log}"
    );
    assert!(
        log.contains("config backups are not scheduled")
            && log.contains("uploads backups are not scheduled: none of UPLOADS_PATHS exists")
            && log.contains("full backups are off (FULL_SCHEDULE=off)"),
        "{log}"
    );

    let (code, text) = http_get(&metrics_addr, "/metrics");
    assert_eq!(code, 200);
    for want in [
        format!("selmai_backup_last_size_bytes{{kind=\"db\"}} {size}"),
        format!("selmai_backup_bytes_written_total{{kind=\"db\"}} {size}"),
        "selmai_backup_failures_total{kind=\"db\"} 0".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want:?}:\n{text}");
    }
    assert!(text.contains("selmai_backup_last_success_timestamp_seconds{kind=\"db\"} "));
    assert!(text.contains("\nselmai_backup_free_bytes "), "{text}");
    let (code, body) = http_get(&metrics_addr, "/healthz");
    assert_eq!((code, body.starts_with("healthy")), (200, true), "{body}");
    assert_eq!(http_get(&metrics_addr, "/nope").0, 404);

    // The state file records the run; `health` agrees.
    let st = State::load(dir.path()).unwrap();
    let run = st.last_success(Kind::Db).unwrap();
    assert_eq!(
        (run.trigger, run.file.as_deref()),
        (Trigger::CatchUp, Some(file.as_str()))
    );
    assert_eq!(health(dir.path(), &[]).0, 0);

    // Idle: SIGTERM stops it at once, exit 0.
    d.signal("TERM");
    let (code, took) = d.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 0, "{}", d.drain());
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn sigterm_mid_backup_exits_0_within_10s_and_leaves_nothing_behind() {
    let db = big_db("d_sigterm");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(&db.name, dir.path(), &[("BACKUP_CATCH_UP", "always")]);
    let mut d = Daemon::start(&vars);
    d.wait_for("backup started", Duration::from_secs(20));
    // Mid-dump: the partial file is growing.
    let partial_seen = {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let p = tool::files(dir.path())
                .into_iter()
                .find(|n| n.ends_with(".partial"))
                .map(|n| {
                    std::fs::metadata(dir.path().join(n))
                        .map(|m| m.len())
                        .unwrap_or(0)
                });
            if p.unwrap_or(0) > 0 || Instant::now() > end {
                break p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(
        partial_seen.is_some(),
        "no partial file: {:?}",
        tool::files(dir.path())
    );

    // No overlap: a one-off backup meanwhile is refused with the lock message.
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("another backup or restore is running"),
        "{err}"
    );
    assert!(
        tool::files(dir.path())
            .iter()
            .any(|n| n.ends_with(".partial")),
        "the backup finished before SIGTERM; the test database is too small"
    );

    d.signal("TERM");
    let (code, took) = d.wait_exit(Duration::from_secs(10));
    let log = d.drain();
    assert_eq!(code, 0, "{log}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(log.contains("abandoning the running db backup"), "{log}");
    // Nothing but the lock and the state file.
    assert_eq!(tool::files(dir.path()), Vec::<String>::new(), "{log}");
    let st = State::load(dir.path()).unwrap();
    assert_eq!(st.runs.len(), 1);
    assert_eq!(st.runs[0].outcome, Outcome::Abandoned);

    // The dump connection went with the process.
    let env = db_env();
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let n = env.exec(
            None,
            &format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{}'",
                db.name
            ),
        );
        if n.trim() == "0" {
            break;
        }
        assert!(Instant::now() < end, "dump connection still open: {n}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_mid_full_backup_deletes_the_parts_already_stored() {
    let db = small_db("d_sigterm_full");
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let (config, uploads) = (src.path().join("config"), src.path().join("uploads"));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join(".env"), "APP_ENV=production\n").unwrap();
    std::fs::create_dir_all(&uploads).unwrap();
    // A sparse 2 GiB upload: the last part takes long enough to be interrupted.
    std::fs::File::create(uploads.join("video.bin"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let (config_s, uploads_s) = (config.display().to_string(), uploads.display().to_string());
    let vars = tool::vars_with(
        &db.name,
        dir.path(),
        &[
            ("BACKUP_CATCH_UP", "always"),
            ("BACKUP_SCHEDULE", "off"),
            ("CONFIG_SCHEDULE", "off"),
            ("UPLOADS_SCHEDULE", "off"),
            ("DRILL_SCHEDULE", "off"),
            ("CONFIG_PATHS", &config_s),
            ("UPLOADS_PATHS", &uploads_s),
        ],
    );
    let mut d = Daemon::start(&vars);
    d.wait_for(".uploads.tar.gz", Duration::from_secs(60));
    // The database and config parts are stored under their final names.
    let stored = tool::files(dir.path());
    assert!(
        stored
            .iter()
            .any(|n| n.ends_with(".config.tar.gz.manifest.json"))
            && stored.iter().any(|n| n.ends_with(".sql.gz.manifest.json")),
        "{stored:?}"
    );

    d.signal("TERM");
    let (code, _) = d.wait_exit(Duration::from_secs(10));
    let log = d.drain();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("abandoning the running full backup"), "{log}");
    // No part outlives its unfinished set.
    assert_eq!(tool::files(dir.path()), Vec::<String>::new(), "{log}");
    let st = State::load(dir.path()).unwrap();
    assert_eq!(st.runs.len(), 1);
    assert_eq!(
        (st.runs[0].kind, st.runs[0].outcome),
        (Kind::Full, Outcome::Abandoned)
    );
}

#[test]
fn sigint_while_idle_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with("nodb", dir.path(), &[("BACKUP_CATCH_UP", "never")]);
    let mut d = Daemon::start(&vars);
    let line = d.wait_for("next db backup at", Duration::from_secs(10));
    assert!(line.contains("(UTC)"), "{line}");
    d.signal("INT");
    assert_eq!(d.wait_exit(Duration::from_secs(5)).0, 0);
}

#[test]
fn drill_schedule_turns_the_drill_off_or_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let start = |drill: &str, until: &str| {
        let vars = tool::vars_with(
            "nodb",
            dir.path(),
            &[("BACKUP_CATCH_UP", "never"), ("DRILL_SCHEDULE", drill)],
        );
        let mut d = Daemon::start(&vars);
        d.wait_for(until, Duration::from_secs(10));
        d.signal("TERM");
        assert_eq!(d.wait_exit(Duration::from_secs(5)).0, 0);
        d.drain()
    };
    // Waiting for a scheduler line, not the "off" line logged before the
    // signal handlers are installed.
    let log = start("off", "next db backup at");
    assert!(
        log.contains("drill backups are off (DRILL_SCHEDULE=off)") && !log.contains("next drill"),
        "{log}"
    );
    let log = start("15 6 3 * *", "next drill backup at");
    assert!(
        log.contains("next drill backup at") && log.contains("15 6 3 * *"),
        "{log}"
    );
    assert!(!log.contains("0 5 2 * *"), "{log}");

    let vars = tool::vars_with("nodb", dir.path(), &[("DRILL_SHEDULE", "off")]);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["run"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("did you mean DRILL_SCHEDULE"), "{err}");
}

#[test]
fn bad_schedule_is_a_startup_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("BACKUP_SCHEDULE", "0 2 * *"),
        ("CONFIG_SCHEDULE", "every sunday"),
        ("FULL_SCHEDULE", "0 4 31 2 *"),
        ("DRILL_SCHEDULE", "monthly"),
        ("TZ", "Paris"),
    ] {
        let vars = tool::vars_with("nodb", dir.path(), &[(var, value)]);
        let (code, _, err) = tool::outcome(&tool::run(&vars, &["run"]));
        assert_eq!(code, 2, "{var}={value}: {err}");
        assert!(err.contains(var), "{err}");
    }
    let vars: Vec<_> = tool::vars("nodb", dir.path())
        .into_iter()
        .filter(|(k, _)| k != "DB_USER")
        .collect();
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["run"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DB_USER"), "{err}");
}

// ----------------------------------------------------------------- health

#[test]
fn health_is_0_for_a_fresh_backup_and_1_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = health(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        text.contains("no successful database backup recorded"),
        "{text}"
    );
    record(dir.path(), 2, 1000, Offsite::NotConfigured);
    let (code, text) = health(dir.path(), &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("healthy: newest database backup"),
        "{text}"
    );
}

#[test]
fn health_is_1_for_a_stale_backup() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), 30, 1000, Offsite::NotConfigured);
    let (code, text) = health(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        text.contains("old, more than HEALTH_MAX_AGE_HOURS=26"),
        "{text}"
    );
    assert_eq!(health(dir.path(), &[("HEALTH_MAX_AGE_HOURS", "31")]).0, 0);
}

#[test]
fn health_is_1_when_the_offsite_copy_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = [("S3_BUCKET", "backups")];
    record(
        dir.path(),
        2,
        1000,
        Offsite::Failed {
            error: "bucket: access denied".into(),
        },
    );
    let (code, text) = health(dir.path(), &bucket);
    assert_eq!(code, 1);
    assert!(
        text.contains("no off-site copy: bucket: access denied"),
        "{text}"
    );
    // Without a bucket configured the off-site status does not matter.
    assert_eq!(health(dir.path(), &[]).0, 0);
    record(dir.path(), 1, 1000, Offsite::Stored);
    let (code, text) = health(dir.path(), &bucket);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("copied off-site"), "{text}");
}

#[test]
fn health_is_1_when_free_space_is_low() {
    let fs = Tmpfs::mount(1024, "");
    let dir = fs.dir.path();
    // Twice the last backup (600 kB) does not fit in a 1 MiB tmpfs.
    record(dir, 2, 600_000, Offsite::NotConfigured);
    let (code, text) = health(dir, &[]);
    assert_eq!(code, 1);
    assert!(
        text.contains("free on") && text.contains("twice the last backup's 600.0 kB"),
        "{text}"
    );
    // HEALTH_MIN_FREE_MB replaces the default threshold, both ways.
    assert_eq!(health(dir, &[("HEALTH_MIN_FREE_MB", "0")]).0, 0);
    record(dir, 1, 1000, Offsite::NotConfigured);
    assert_eq!(health(dir, &[]).0, 0);
    let (code, text) = health(dir, &[("HEALTH_MIN_FREE_MB", "2")]);
    assert_eq!(code, 1);
    assert!(text.contains("(HEALTH_MIN_FREE_MB)"), "{text}");
}

#[test]
fn health_never_exits_2_even_on_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = health(dir.path(), &[("BACKUP_SCHEDULE", "nope")]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("BACKUP_SCHEDULE"), "{text}");
}

// ----------------------------------------------------------------- alerts

#[tokio::test(flavor = "multi_thread")]
async fn failure_alerts_by_webhook_mail_and_ping() {
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(200);
    let ping = HttpSink::start(200);
    let smtp = SmtpSink::start();
    let port = smtp.port.to_string();
    let s = tool::settings(
        "d_no_such_database",
        dir.path(),
        &[
            ("NOTIFY_WEBHOOK_URL", &hook.url),
            ("NOTIFY_PING_URL", &format!("{}/ping/abc", ping.url)),
            ("NOTIFY_SMTP_HOST", "127.0.0.1"),
            ("NOTIFY_SMTP_PORT", &port),
            ("NOTIFY_SMTP_TLS", "none"),
            ("NOTIFY_SMTP_FROM", "backup@example.org"),
            ("NOTIFY_SMTP_TO", "admin@example.org"),
        ],
    );
    let run = jobs(&s, tool::volume(dir.path()))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    assert_eq!(run.outcome, Outcome::Failed);
    let error = run.error.clone().unwrap();
    assert!(error.contains("d_no_such_database"), "{error}");

    let ev = hook.expect(Duration::from_secs(5), "webhook").json();
    assert_eq!(ev["event"], "backup_failed");
    assert_eq!(ev["kind"], "db");
    assert_eq!(ev["error"], error.as_str());
    assert!(ev["file"].is_null() && ev["size"].is_null());

    let start = ping.expect(Duration::from_secs(5), "start ping");
    assert_eq!(start.path, "/ping/abc/start");
    let fail = ping.expect(Duration::from_secs(5), "fail ping");
    assert_eq!(fail.path, "/ping/abc/fail");
    assert!(fail.body.contains("d_no_such_database"), "{}", fail.body);

    let mail = smtp
        .rx
        .recv_timeout(Duration::from_secs(5))
        .expect("a mail");
    assert_eq!(mail.from, "<backup@example.org>");
    assert_eq!(mail.to, ["<admin@example.org>"]);
    assert!(
        mail.data.contains("Subject: selmai-backup on") && mail.data.contains("db backup FAILED"),
        "{}",
        mail.data
    );
    assert!(mail.data.contains("d_no_such_database"), "{}", mail.data);
    // Recorded, so `health` explains the failure.
    let st = State::load(dir.path()).unwrap();
    assert_eq!(st.runs[0].outcome, Outcome::Failed);
    assert!(backups(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn success_pings_but_alerts_only_when_asked() {
    let db = small_db("d_quiet");
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(200);
    let ping = HttpSink::start(200);
    let smtp = SmtpSink::start();
    let port = smtp.port.to_string();
    let mut extra = vec![
        ("NOTIFY_WEBHOOK_URL", hook.url.clone()),
        ("NOTIFY_PING_URL", ping.url.clone()),
        ("NOTIFY_SMTP_HOST", "127.0.0.1".into()),
        ("NOTIFY_SMTP_PORT", port),
        ("NOTIFY_SMTP_TLS", "none".into()),
        ("NOTIFY_SMTP_FROM", "backup@example.org".into()),
        ("NOTIFY_SMTP_TO", "admin@example.org".into()),
    ];
    let settings = |v: &[(&str, String)]| {
        let refs: Vec<(&str, &str)> = v.iter().map(|(k, v)| (*k, v.as_str())).collect();
        tool::settings(&db.name, dir.path(), &refs)
    };
    let s = settings(&extra);
    let run = jobs(&s, tool::volume(dir.path()))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    assert_eq!(ping.expect(Duration::from_secs(5), "start").path, "/start");
    assert_eq!(ping.expect(Duration::from_secs(5), "success").path, "/");
    assert!(
        hook.next(Duration::from_millis(500)).is_none(),
        "success alerted without NOTIFY_ON_SUCCESS"
    );
    assert!(smtp.rx.recv_timeout(Duration::from_millis(500)).is_err());

    extra.push(("NOTIFY_ON_SUCCESS", "true".into()));
    let s = settings(&extra);
    let run = jobs(&s, tool::volume(dir.path()))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    let ev = hook.expect(Duration::from_secs(5), "webhook").json();
    assert_eq!(ev["event"], "backup_succeeded");
    assert_eq!(ev["file"].as_str(), run.file.as_deref());
    let mail = smtp.rx.recv_timeout(Duration::from_secs(5)).expect("mail");
    assert!(mail.data.contains("db backup succeeded"), "{}", mail.data);
}

#[tokio::test(flavor = "multi_thread")]
async fn slack_and_ntfy_formats_reach_the_webhook() {
    let db = small_db("d_formats");
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(200);
    for format in ["slack", "ntfy"] {
        let s = tool::settings(
            &db.name,
            dir.path(),
            &[
                ("NOTIFY_WEBHOOK_URL", &hook.url),
                ("NOTIFY_WEBHOOK_FORMAT", format),
                ("NOTIFY_ON_SUCCESS", "true"),
            ],
        );
        jobs(&s, tool::volume(dir.path()))
            .run_once(Kind::Db, Trigger::Schedule)
            .await;
        let req = hook.expect(Duration::from_secs(5), format);
        if format == "slack" {
            assert_eq!(req.header("content-type"), Some("application/json"));
            let text = req.json()["text"].as_str().unwrap().to_owned();
            assert!(
                text.starts_with(":white_check_mark: selmai-backup on "),
                "{text}"
            );
            assert!(text.contains("db backup succeeded"), "{text}");
        } else {
            assert!(req
                .header("content-type")
                .unwrap()
                .starts_with("text/plain"));
            assert!(req
                .header("title")
                .unwrap()
                .ends_with("db backup succeeded"));
            assert_eq!(req.header("priority"), Some("default"));
            assert!(req.body.contains("file: selmai_backup_"), "{}", req.body);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_alert_channel_never_fails_the_backup() {
    let db = small_db("d_alert_fails");
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(500);
    let s = tool::settings(
        &db.name,
        dir.path(),
        &[
            ("NOTIFY_WEBHOOK_URL", &hook.url),
            ("NOTIFY_ON_SUCCESS", "true"),
            // Nothing listens there.
            ("NOTIFY_SMTP_HOST", "127.0.0.1"),
            ("NOTIFY_SMTP_PORT", &free_port().to_string()),
            ("NOTIFY_SMTP_TLS", "none"),
            ("NOTIFY_SMTP_FROM", "backup@example.org"),
            ("NOTIFY_SMTP_TO", "admin@example.org"),
        ],
    );
    let run = jobs(&s, tool::volume(dir.path()))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    hook.expect(Duration::from_secs(5), "webhook");
    assert_eq!(backups(dir.path()).len(), 1);
}

// -------------------------------------------------------- lock and space

#[tokio::test(flavor = "multi_thread")]
async fn a_scheduled_run_waits_for_a_one_off_run_holding_the_lock() {
    let db = small_db("d_lockwait");
    let dir = tempfile::tempdir().unwrap();
    let s = tool::settings(&db.name, dir.path(), &[]);
    let held = catalog::lock_dir(dir.path()).unwrap();
    let j = jobs(&s, tool::volume(dir.path()))
        .with_lock_wait(Duration::from_secs(30), Duration::from_millis(100));
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(800)).await;
        drop(held);
        Instant::now()
    });
    let run = j.run_once(Kind::Db, Trigger::Schedule).await;
    let released = release.await.unwrap();
    assert_eq!(run.outcome, Outcome::Success, "{:?}", run.error);
    assert!(Instant::now() > released);
    assert_eq!(backups(dir.path()).len(), 1);

    // Held for longer than the wait: a failed run saying why.
    let _held = catalog::lock_dir(dir.path()).unwrap();
    let j = j.with_lock_wait(Duration::from_millis(300), Duration::from_millis(100));
    let run = j.run_once(Kind::Db, Trigger::Schedule).await;
    assert_eq!(run.outcome, Outcome::Failed);
    assert!(run
        .error
        .unwrap()
        .contains("another backup or restore is running"),);
    assert_eq!(backups(dir.path()).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_that_cannot_fit_is_refused_before_it_starts() {
    let db = small_db("d_space");
    let fs = Tmpfs::mount(1024, "");
    let dir = fs.dir.path();
    // The last backup took 5 MB: the next one would not fit in 1 MiB.
    record(dir, 2, 5_000_000, Offsite::NotConfigured);
    let hook = HttpSink::start(200);
    let s = tool::settings(&db.name, dir, &[("NOTIFY_WEBHOOK_URL", &hook.url)]);
    let run = jobs(&s, tool::volume(dir))
        .run_once(Kind::Db, Trigger::Schedule)
        .await;
    assert_eq!(run.outcome, Outcome::Failed);
    let err = run.error.unwrap();
    assert!(err.contains("the last backup took 5.0 MB"), "{err}");
    assert_eq!(tool::files(dir), Vec::<String>::new());
    assert_eq!(
        hook.expect(Duration::from_secs(5), "alert").json()["event"],
        "backup_failed"
    );
    // The one-off command checks too (exit 8: storage).
    let vars = tool::vars(&db.name, dir);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("free"), "{err}");
}

// -------------------------------------------------------------- retention

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

// ------------------------------------------------------------------ prune

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
