//! The archive's state as other processes see it: `BACKUP_DIR/.binlog/status.json`
//! (rewritten every second by the running archiver; `health`, `list` and
//! `/metrics` read it) and `gaps.json` (every gap found, kept until the
//! operator's retention passes it). This module computes nothing about the
//! server or the targets; it records what the archiver saw.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// File name of the status inside the archive's work directory.
pub const STATUS_FILE: &str = "status.json";
/// File name of the gap record.
pub const GAPS_FILE: &str = "gaps.json";

/// A place in the server's binlog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Binlog file.
    pub file: String,
    /// Byte position in it.
    pub position: u64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.position)
    }
}

/// Binlogs the server purged before the archive read them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// When it was found.
    pub detected_at: DateTime<Utc>,
    /// Where the archive needed to continue from.
    pub after: Position,
    /// The oldest binlog file the server still had.
    pub server_oldest: String,
    /// Where the archive started again.
    pub resumed_at: Position,
}

impl std::fmt::Display for Gap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "binlog gap from {} to {} (found {}; the server's oldest binlog is {})",
            self.after,
            self.resumed_at,
            self.detected_at.format("%Y-%m-%d %H:%M:%S UTC"),
            self.server_oldest
        )
    }
}

/// Stored segments an off-site target does not hold yet (it was down or
/// refused them); they stay on the volume and are copied once it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsitePending {
    /// Which target (`bucket`).
    pub target: String,
    /// How many segments it lacks.
    pub segments: usize,
    /// When the oldest of them was stored on the volume.
    pub oldest: DateTime<Utc>,
    /// Why the last copy or listing failed.
    pub error: String,
}

impl OffsitePending {
    /// What `target` lacks of `missing` (in chain order), or `None` when
    /// it lacks nothing.
    pub fn of(
        target: &str,
        missing: &[&super::segment::SegmentManifest],
        error: &str,
    ) -> Option<OffsitePending> {
        Some(OffsitePending {
            target: target.to_owned(),
            segments: missing.len(),
            oldest: missing.iter().map(|m| m.closed_at).min()?,
            error: error.to_owned(),
        })
    }
}

impl std::fmt::Display for OffsitePending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} binlog segment(s) stored since {} are not in {} yet: {}",
            self.segments,
            self.oldest.format("%Y-%m-%d %H:%M:%S UTC"),
            crate::target::the(&self.target),
            self.error
        )
    }
}

/// What the archiver last reported.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// When this was written.
    pub updated_at: Option<DateTime<Utc>>,
    /// Our replica server id.
    pub server_id: u32,
    /// The replication stream is up.
    pub connected: bool,
    /// Why the stream was last cut, when it was.
    pub last_error: Option<String>,
    /// End of the last complete transaction fsynced to the volume.
    pub archived: Option<Position>,
    /// End of the newest stored segment.
    pub uploaded: Option<Position>,
    /// Time stamp of the newest archived event.
    pub last_event_time: Option<DateTime<Utc>>,
    /// When the archive last had everything the server had (a heartbeat
    /// after silence, or an event written within the same second).
    pub caught_up_at: Option<DateTime<Utc>>,
    /// When the archiver started.
    pub started_at: Option<DateTime<Utc>>,
    /// Plain bytes archived since start.
    pub bytes: u64,
    /// Segments stored since start.
    pub segments: u64,
    /// Every gap found.
    #[serde(default)]
    pub gaps: Vec<Gap>,
    /// Off-site targets that lack stored segments (empty: all level).
    #[serde(default)]
    pub offsite_pending: Vec<OffsitePending>,
}

impl Status {
    /// Seconds the archive is behind the server at `now`: since it last
    /// had everything (or since it started, if it never did).
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> Option<i64> {
        let since = self.caught_up_at.or(self.started_at)?;
        Some((now - since).num_seconds().max(0))
    }

    /// Read the gaps recorded in `dir`.
    pub fn load_gaps(&mut self, dir: &Path) {
        if let Ok(bytes) = std::fs::read(dir.join(GAPS_FILE)) {
            if let Ok(g) = serde_json::from_slice::<Vec<Gap>>(&bytes) {
                self.gaps = g;
            }
        }
    }

    /// Record a gap, in memory and in `dir` (atomically).
    pub fn add_gap(&mut self, dir: &Path, gap: Gap) {
        self.gaps.push(gap);
        let json = serde_json::to_vec_pretty(&self.gaps).unwrap_or_default();
        if let Err(e) = write_atomic(dir, GAPS_FILE, &json) {
            tracing::warn!(error = %e, "cannot record the binlog gap on the volume");
        }
    }

    /// Write the status into `dir` (atomically).
    pub fn save(&mut self, dir: &Path) {
        self.updated_at = Some(Utc::now());
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        if let Err(e) = write_atomic(dir, STATUS_FILE, &json) {
            tracing::warn!(error = %e, "cannot write the binlog archive status");
        }
    }

    /// The status last written into `dir`, if any.
    pub fn read(dir: &Path) -> Option<Status> {
        let bytes = std::fs::read(dir.join(STATUS_FILE)).ok()?;
        let mut s: Status = serde_json::from_slice(&bytes).ok()?;
        s.load_gaps(dir);
        Some(s)
    }
}

fn write_atomic(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, dir.join(name))
}
