//! The calendar values the configuration parses: the kinds of backup, their
//! cron schedules (`*_SCHEDULE`) and `BACKUP_CATCH_UP`.
//!
//! They live here, below everything, because both the configuration and the
//! daemon's scheduler ([`crate::daemon::schedule`], which re-exports them)
//! use them; the scheduler loop and catch-up decisions are not here.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{Deserialize, Serialize};

/// The kinds of backup the daemon schedules. Adding one is one variant
/// here and one match arm in the job runner (`cmd::run`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The database dump (`BACKUP_SCHEDULE`).
    Db,
    /// The application's configuration files (`CONFIG_SCHEDULE`).
    Config,
    /// The users' uploads (`UPLOADS_SCHEDULE`).
    Uploads,
    /// Everything: database, configuration and uploads (`FULL_SCHEDULE`).
    Full,
    /// A restore drill of the newest backup (`DRILL_SCHEDULE`): makes no
    /// backup, proves the newest one restores (see [`crate::restore::drill`]).
    Drill,
}

impl Kind {
    /// Every kind, in the order they are listed in logs.
    pub const ALL: [Kind; 5] = [
        Kind::Db,
        Kind::Config,
        Kind::Uploads,
        Kind::Full,
        Kind::Drill,
    ];

    /// Short name used in logs, the state file, metrics labels and alerts.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Db => "db",
            Kind::Config => "config",
            Kind::Uploads => "uploads",
            Kind::Full => "full",
            Kind::Drill => "drill",
        }
    }

    /// The variable holding this kind's schedule.
    pub fn schedule_var(self) -> &'static str {
        match self {
            Kind::Db => "BACKUP_SCHEDULE",
            Kind::Config => "CONFIG_SCHEDULE",
            Kind::Uploads => "UPLOADS_SCHEDULE",
            Kind::Full => "FULL_SCHEDULE",
            Kind::Drill => "DRILL_SCHEDULE",
        }
    }

    /// The default schedule (the runbook's table: daily, weekly, monthly).
    pub fn default_schedule(self) -> &'static str {
        match self {
            Kind::Db => "0 2 * * *",
            Kind::Config => "0 3 * * 0",
            // Daily, after the database: uploads change as the data does.
            Kind::Uploads => "30 3 * * *",
            Kind::Full => "0 4 1 * *",
            // Monthly, the day after the full backup, as the runbook's manual test.
            Kind::Drill => "0 5 2 * *",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed 5-field cron expression (minute hour day-of-month month day-of-week).
#[derive(Clone)]
pub struct Schedule {
    cron: Cron,
    text: String,
}

impl std::fmt::Debug for Schedule {
    // The expression as written: the parsed form is pages of bit tables.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl Schedule {
    /// Parse a 5-field expression (`@daily`-style aliases allowed); the
    /// error says what is accepted.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let text = expr.trim();
        if !text.starts_with('@') && text.split_whitespace().count() != 5 {
            return Err(format!(
                "{expr:?} has {} fields: use 5 (minute hour day-of-month month day-of-week), e.g. \"0 2 * * *\", or \"off\"",
                text.split_whitespace().count()
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(text)
            .map_err(|e| {
                format!(
                    "{expr:?} is not a cron expression ({e}): 5 fields, minute 0-59, hour 0-23, day of month 1-31, month 1-12, day of week 0-6 (Sunday 0), e.g. \"0 2 * * *\" (daily at 02:00) or \"30 3 * * 0\" (Sundays at 03:30), or \"off\""
                )
            })?;
        let s = Schedule {
            cron,
            text: text.to_owned(),
        };
        // "0 0 30 2 *" parses but never fires: refuse it now rather than
        // discover it at the first run.
        if s.next_after(Utc::now(), Tz::UTC).is_none() {
            return Err(format!("{expr:?} never matches a date"));
        }
        Ok(s)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first occurrence strictly after `after`, read as wall-clock time
    /// in `tz`. A time skipped by a spring-forward change runs at the first
    /// instant after the gap; a time repeated by a fall-back change runs once
    /// (the first time): croner's fixed-time rules.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The last occurrence at or before `at`.
    pub fn previous_at_or_before(&self, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&at.with_timezone(&tz), true)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

impl FromStr for Schedule {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Schedule::parse(s)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// `BACKUP_CATCH_UP`: whether to run a backup at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CatchUp {
    /// When a scheduled run was missed (see `daemon::schedule::catch_up`).
    #[default]
    Auto,
    /// Always, once per scheduled kind.
    Always,
    /// Never: wait for the schedule.
    Never,
}

impl FromStr for CatchUp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(CatchUp::Auto),
            "always" => Ok(CatchUp::Always),
            "never" => Ok(CatchUp::Never),
            _ => Err(format!("{s:?}: use auto, always or never")),
        }
    }
}
