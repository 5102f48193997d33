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
//! clock in `src/daemon/schedule.rs`; retention's plan in
//! `src/daemon/retention.rs`.
//!
//! One file per feature under `daemon/`; the helpers they share are here.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;
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

use crate::support::sinks::{free_port, http_get, HttpSink, SmtpSink};
use crate::support::tool::{self, Tmpfs};
use crate::support::{db_env, TestDb};

mod alerts;
mod health;
mod lock_and_space;
mod retention;
mod run;

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

/// A `selmai-backup run` process with its log lines collected.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: Vec<String>,
}

impl Daemon {
    fn start(vars: &[(String, String)]) -> Daemon {
        let mut child = tool::spawn(vars, &["run"]);
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
