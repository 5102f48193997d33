//! The retention policy the configuration parses (`RETENTION_*`). The plan
//! and its application are [`crate::daemon::retention`], which re-exports it.

use std::fmt;

/// How many backups of each period to keep (`RETENTION_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Newest of each of the last N days (`RETENTION_DAILY`, default 7).
    pub daily: u32,
    /// Newest of each of the last N ISO weeks (`RETENTION_WEEKLY`, default 4).
    pub weekly: u32,
    /// Newest of each of the last N months (`RETENTION_MONTHLY`, default 3).
    pub monthly: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            daily: 7,
            weekly: 4,
            monthly: 3,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} daily, {} weekly, {} monthly",
            self.daily, self.weekly, self.monthly
        )
    }
}
