//! The state file: a short history of runs, kept in `BACKUP_DIR` as
//! `.selmai-backup-state.json`.
//!
//! `health`, the metrics and catch-up read it; each run appends a record
//! (kind, start, end, file, size, off-site status, error). It is rewritten
//! whole and atomically (temporary file, fsync, rename, fsync of the
//! directory), so a reader never sees half of it, and only while holding
//! the `BACKUP_DIR` lock, so two writers never lose each other's record.
//! The leading dot keeps it out of the volume's listing. This module does
//! not decide what is healthy.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::daemon::schedule::{Kind, Trigger};

/// The state file's name inside `BACKUP_DIR`.
pub const STATE_FILE: &str = ".selmai-backup-state.json";

/// Records kept: the newest 200 runs (months of daily runs of every kind).
const KEEP_RUNS: usize = 200;

/// The format version written.
const VERSION: u32 = 1;

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It could not be read or written.
    #[error("{action} the state file {path}: {source}")]
    Io {
        /// "reading", "writing" ...
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It is not what we write.
    #[error("the state file {path} is not valid ({detail}); it is rewritten by the next run, or delete it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        detail: String,
    },
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A backup was stored on the volume (see `offsite` for the bucket).
    Success,
    /// No backup was made.
    Failed,
    /// Stopped by a shutdown before the end; nothing was kept.
    Abandoned,
}

/// Whether the off-site (bucket) copy of a run exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum Offsite {
    /// No bucket is configured.
    NotConfigured,
    /// The bucket holds the backup and its manifest.
    Stored,
    /// The copy failed, for this reason.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Which kind of backup.
    pub kind: Kind,
    /// Why it ran.
    pub trigger: Trigger,
    /// When it started.
    pub started: DateTime<Utc>,
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
    /// The backup written.
    pub file: Option<String>,
    /// Its size in bytes.
    pub size: Option<u64>,
    /// The off-site copy.
    pub offsite: Offsite,
    /// Why it failed.
    pub error: Option<String>,
    /// Problems that did not fail it (retention deletes that failed ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    #[serde(default)]
    pub version: u32,
    /// Runs, oldest first.
    pub runs: Vec<Run>,
}

impl State {
    /// The state in `dir`; an empty state when there is no file yet.
    pub fn load(dir: &Path) -> Result<State, StateError> {
        let path = dir.join(STATE_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
                path,
                detail: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(State::default()),
            Err(source) => Err(StateError::Io {
                action: "reading",
                path,
                source,
            }),
        }
    }

    /// Write to `dir` atomically. Call only while holding the `BACKUP_DIR` lock.
    pub fn save(&self, dir: &Path) -> Result<(), StateError> {
        let path = dir.join(STATE_FILE);
        let tmp = dir.join(format!("{STATE_FILE}.tmp"));
        let io_err = |action, source| StateError::Io {
            action,
            path: path.clone(),
            source,
        };
        let mut body = serde_json::to_vec_pretty(&State {
            version: VERSION,
            runs: self.runs.clone(),
        })
        .expect("the state serialises");
        body.push(b'\n');
        let write = || -> io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            io_err("writing", e)
        })
    }

    /// Append `run`, dropping the oldest records beyond the limit.
    pub fn push(&mut self, run: Run) {
        self.runs.push(run);
        let extra = self.runs.len().saturating_sub(KEEP_RUNS);
        self.runs.drain(..extra);
    }

    /// The newest successful run of `kind`.
    pub fn last_success(&self, kind: Kind) -> Option<&Run> {
        self.runs
            .iter()
            .filter(|r| r.kind == kind && r.outcome == Outcome::Success)
            .max_by_key(|r| r.started)
    }

    /// The newest run of `kind`, whatever its outcome.
    pub fn last_run(&self, kind: Kind) -> Option<&Run> {
        self.runs
            .iter()
            .filter(|r| r.kind == kind)
            .max_by_key(|r| r.started)
    }
}

/// Load, append `run`, save. Call only while holding the `BACKUP_DIR` lock.
/// A corrupt file is replaced (its runs are lost, the new one is kept).
pub fn record(dir: &Path, run: Run) -> Result<(), StateError> {
    let mut state = match State::load(dir) {
        Ok(s) => s,
        Err(e @ StateError::Corrupt { .. }) => {
            tracing::warn!(error = %e, "starting a new state file");
            State::default()
        }
        Err(e) => return Err(e),
    };
    state.push(run);
    state.save(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    pub(crate) fn run(kind: Kind, hour: u32, outcome: Outcome) -> Run {
        let t = Utc.with_ymd_and_hms(2025, 1, 20, hour, 0, 0).unwrap();
        Run {
            kind,
            trigger: Trigger::Schedule,
            started: t,
            finished: t + chrono::Duration::seconds(30),
            outcome,
            file: Some(format!("selmai_backup_20250120_{hour:02}0000.sql.gz")),
            size: Some(1000),
            offsite: Offsite::NotConfigured,
            error: None,
            warnings: Vec::new(),
        }
    }

    #[test]
    fn missing_file_is_an_empty_state() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(State::load(d.path()).unwrap(), State::default());
    }

    #[test]
    fn records_round_trip_and_leave_no_temporary_file() {
        let d = tempfile::tempdir().unwrap();
        record(d.path(), run(Kind::Db, 2, Outcome::Success)).unwrap();
        record(d.path(), run(Kind::Db, 3, Outcome::Failed)).unwrap();
        let s = State::load(d.path()).unwrap();
        assert_eq!(s.version, VERSION);
        assert_eq!(s.runs.len(), 2);
        assert_eq!(
            s.last_success(Kind::Db).unwrap().started.time().to_string(),
            "02:00:00"
        );
        assert_eq!(s.last_run(Kind::Db).unwrap().outcome, Outcome::Failed);
        assert!(s.last_success(Kind::Config).is_none());
        let names: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [STATE_FILE]);
    }

    #[test]
    fn history_is_bounded() {
        let mut s = State::default();
        for i in 0..(KEEP_RUNS + 5) {
            let mut r = run(Kind::Db, 2, Outcome::Success);
            r.started += chrono::Duration::minutes(i as i64);
            s.push(r);
        }
        assert_eq!(s.runs.len(), KEEP_RUNS);
        assert_eq!(
            s.runs[0].started,
            Utc.with_ymd_and_hms(2025, 1, 20, 2, 5, 0).unwrap()
        );
    }

    #[test]
    fn corrupt_file_is_reported_then_replaced() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(STATE_FILE), "{not json").unwrap();
        let err = State::load(d.path()).unwrap_err().to_string();
        assert!(
            err.contains(STATE_FILE) && err.contains("not valid"),
            "{err}"
        );
        record(d.path(), run(Kind::Db, 2, Outcome::Success)).unwrap();
        assert_eq!(State::load(d.path()).unwrap().runs.len(), 1);
    }

    #[test]
    fn offsite_status_is_tagged_json() {
        let mut r = run(Kind::Db, 2, Outcome::Success);
        r.offsite = Offsite::Failed {
            error: "bucket: access denied".into(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["offsite"]["status"], "failed");
        assert_eq!(v["kind"], "db");
        assert_eq!(v["outcome"], "success");
    }
}
