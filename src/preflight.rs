//! Preflight: can this database user, on this server, with this much disk,
//! actually do the backup (at `run` start) or the restore (before anything
//! is touched)? The answer is a [`Report`] of one-line findings, each
//! saying what a problem costs and what to do about it.
//!
//! What is checked, and why exactly that:
//!
//! 1. **Privileges**, from `SHOW GRANTS` (the user's grants, its active role's
//!    and `PUBLIC`'s), compared with what [`crate::dump`] and
//!    [`crate::restore`] really run. For a backup: `SELECT` (without it
//!    nothing can be read: fatal); `SHOW VIEW` (`SHOW CREATE VIEW` fails
//!    without it, so every backup of a database with views fails: fatal
//!    when there are views); `TRIGGER` and `EVENT` (without them the server
//!    hides triggers and events from `information_schema`, so backups
//!    silently leave them out); `SELECT` on `mysql.proc` or `SHOW CREATE
//!    ROUTINE` (without either, routines defined by another account are
//!    hidden, or listed with no body, which fails the backup). The binlog
//!    position comes from session status variables that need no privilege,
//!    and the dumper takes no lock, so `RELOAD`, `LOCK TABLES` and `BINLOG
//!    MONITOR` are not needed. For a restore into a database: `CREATE`,
//!    `DROP` and `INSERT` (fatal without), `CREATE VIEW`, `CREATE ROUTINE`
//!    and `ALTER ROUTINE`, `TRIGGER`, `EVENT` for the objects the manifest
//!    lists (fatal: the restore would stop half way), `ALTER` for the
//!    `ALTER TABLE ... DISABLE KEYS` of `mariadb-dump` files, and `SUPER` or
//!    `SET USER` when `RESTORE_DEFINER=keep` (needed to create an object
//!    whose `DEFINER` is another account). With binary logging on and
//!    `log_bin_trust_function_creators` off, the server also wants `SUPER`
//!    for every trigger and stored function (error 1419), whatever the
//!    `DEFINER`. Database-level patterns (`sel%`,
//!    `sel\_db`) are matched, and all grants that match are combined, which
//!    is what the server does in the usual case of one matching grant.
//!    Table-level grants count only to explain what is missing.
//! 2. **`max_allowed_packet`**, as the server reports it to this session.
//!    Statements of our dumps stay near 1 MiB, but a value larger than that
//!    is assembled in a user variable with `CONCAT`, and the server returns
//!    NULL (with a mere warning) for a `CONCAT` longer than
//!    `max_allowed_packet`: such a value would restore as NULL. So what is
//!    compared is the largest single BLOB/TEXT value with the packet size.
//!    Finding it costs a scan, so only tables with BLOB/TEXT columns are
//!    read, smallest first, within [`SCAN_BUDGET`] bytes of table data and
//!    a few seconds per table; the others are named as not checked. The
//!    dumper records the exact largest value in the manifest
//!    (`largest_value`), and a restore compares that with the target
//!    server's `max_allowed_packet` (fatal when larger: the value would be
//!    lost).
//! 3. **Free space** on `BACKUP_DIR`: for a backup, at least the size of
//!    the last one ([`crate::daemon::health::space_for_backup`]; a warning)
//!    and at least `HEALTH_MIN_FREE_MB` when set (fatal); before a restore,
//!    room for the safety snapshot, which is about the size of the backup
//!    being restored (and at most about the database's data size).
//! 4. **Server version**: MariaDB older than [`TESTED_SINCE`], or MySQL,
//!    which selmai-backup is not tested against.
//! 5. **Views whose DEFINER is gone** (backups): MariaDB's `SHOW CREATE
//!    VIEW` then names the view's own database in its columns, so the
//!    dumped view restores only into a database of that name, and drills
//!    fail on it (1054).
//! 6. **History of system-versioned tables** (restores): the backup's
//!    history rows go in with their ROW START and ROW END under
//!    `system_versioning_insert_history`, which exists from MariaDB 10.11
//!    and which `secure_timestamp` governs (`NO`: anyone; `SUPER` and
//!    `REPLICATION`: SUPER or BINLOG REPLAY; `YES`: nobody). Fatal when the
//!    server or the user cannot, since the restore would stop at the first
//!    such table.
//! 7. **`BACKUP_DIR` is writable**, first and before the database is waited
//!    for, by creating and removing a probe file: free space said nothing
//!    about it, and a bind mount Docker created is root's while the image
//!    runs as uid 10001. Fatal, with the `chown` that fixes it.
//! 8. **The restore drill's privileges** (backups, while `DRILL_SCHEDULE`
//!    is on): the drill creates and drops a scratch database named
//!    [`crate::restore::drill::SCRATCH_PREFIX`]`...`, which a user granted only on `DB_NAME` may
//!    not (ERROR 1044). A warning with the GRANT: backups work without it.
//!
//! Gathering the facts talks to the server (`preflight/facts.rs`);
//! judging them is pure ([`judge_backup`], [`judge_restore`] in
//! `preflight/judge.rs`), so the rules are unit tested. The grants parser
//! is `preflight/grants.rs`; what the binlog archive needs,
//! `preflight/binlog.rs`. This file holds the report and the entry points.
//! This module neither backs up nor restores.

use std::fmt;
use std::path::Path;

use crate::config::{ConfigError, DbSettings, Settings};
use crate::daemon::health::{self, SpaceError};
use crate::daemon::schedule::Kind;
use crate::daemon::state::State;
use crate::db::{self, DbError};

mod binlog;
mod facts;
mod grants;
mod judge;

pub use binlog::*;
pub use facts::*;
pub use grants::*;
pub use judge::*;

/// Oldest MariaDB release (major, minor) the test suite runs against.
pub const TESTED_SINCE: (u32, u32) = (10, 5);

/// Bytes of table data (`DATA_LENGTH`) the largest-value scan may read.
pub const SCAN_BUDGET: u64 = 256 << 20;

/// Seconds one table's largest-value scan may take before it is abandoned.
const SCAN_SECONDS: u32 = 5;

/// Statements of our dumps reach about 1 MiB plus one row whose values are
/// each at most 1 MiB (2 MiB as hex): below this, restores may fail.
const STATEMENT_NEED: u64 = 4 << 20;

/// Errors of the preflight.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The facts could not be gathered (connection, query).
    #[error(transparent)]
    Db(#[from] DbError),
    /// The database settings are incomplete (no `DB_USER` ...).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A database problem makes the job impossible (privileges ...).
    #[error("preflight: {0}")]
    Database(String),
    /// There is not enough room on `BACKUP_DIR`.
    #[error("preflight: {0}")]
    Space(String),
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// All good; said for the record.
    Ok,
    /// The job runs, but something is lost or at risk.
    Warning,
    /// The job cannot succeed: it is refused.
    Fatal,
}

/// What a finding is about (decides the exit code of a fatal one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Grants.
    Privileges,
    /// `max_allowed_packet` and value sizes.
    Packet,
    /// Free space on `BACKUP_DIR`.
    Space,
    /// Server brand and version.
    Version,
    /// Definitions that will not restore as expected.
    Objects,
    /// The server settings and grants the binlog archive needs.
    Binlog,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// About what.
    pub area: Area,
    /// What was found, what it costs, what to do.
    pub message: String,
}

impl Finding {
    fn new(severity: Severity, area: Area, message: impl Into<String>) -> Self {
        Finding {
            severity,
            area,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Fatal => "FATAL",
        };
        write!(f, "{tag}: {}", self.message)
    }
}

/// Everything the preflight found, in check order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The findings of at least `severity`.
    pub fn at_least(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity >= severity)
    }

    /// Log every finding: ok as info, warnings as warn, fatal as error.
    pub fn log(&self, job: &str) {
        for f in &self.findings {
            match f.severity {
                Severity::Ok => tracing::info!("preflight for {job}: {}", f.message),
                Severity::Warning => tracing::warn!("preflight for {job}: {}", f.message),
                Severity::Fatal => tracing::error!("preflight for {job}: {}", f.message),
            }
        }
    }

    /// `Err` with the first fatal finding (and how many more there are).
    pub fn into_result(self) -> Result<Report, PreflightError> {
        let fatal: Vec<&Finding> = self.at_least(Severity::Fatal).collect();
        let Some(first) = fatal.first() else {
            return Ok(self);
        };
        let mut msg = first.message.clone();
        if fatal.len() > 1 {
            msg.push_str(&format!(" (and {} more fatal findings)", fatal.len() - 1));
        }
        Err(match first.area {
            Area::Space => PreflightError::Space(msg),
            _ => PreflightError::Database(msg),
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- entry points

/// The preflight of a daemon start: connect, gather, judge for a backup of
/// `DB_NAME`. An unwritable `BACKUP_DIR` is the whole report: it is fatal
/// whatever the database says, so the database is not waited for.
pub async fn for_backup(settings: &Settings) -> Result<Report, PreflightError> {
    let db = settings.db()?;
    let dir = dir_finding(&settings.backup_dir);
    if dir.severity == Severity::Fatal {
        return Ok(Report {
            findings: vec![dir],
        });
    }
    let facts = connect_and_gather(&db, &db.name, true).await?;
    let state = State::load(&settings.backup_dir).unwrap_or_default();
    let (space, unusable) = match health::space_for_backup(
        &settings.backup_dir,
        &state,
        Kind::Db,
        settings.health.min_free_bytes,
    ) {
        Ok(free) => (Ok(free), false),
        // Below HEALTH_MIN_FREE_MB every backup refuses to start: as fatal
        // as a directory that cannot be used.
        Err(e @ (SpaceError::Io { .. } | SpaceError::BelowMinimum { .. })) => {
            (Err(e.to_string()), true)
        }
        Err(e) => (Err(e.to_string()), false),
    };
    let mut report = judge_backup(
        &facts,
        &BackupContext {
            database: db.name.clone(),
            space,
            space_unusable: unusable,
            drill: settings.schedule.of(Kind::Drill).is_some(),
        },
    );
    report.findings.insert(0, dir);
    Ok(report)
}

/// The preflight of a restore of `source` into `into`.
pub async fn for_restore(
    settings: &Settings,
    db: &DbSettings,
    into: &str,
    source: &crate::restore::open::Source,
    snapshot: bool,
) -> Result<Report, PreflightError> {
    let dir = dir_finding(&settings.backup_dir);
    if dir.severity == Severity::Fatal {
        return Ok(Report {
            findings: vec![dir],
        });
    }
    let facts = connect_and_gather(db, into, false).await?;
    let objects = source.manifest.as_ref().map(Objects::of);
    let mut report = judge_restore(
        &facts,
        &RestoreContext {
            database: into.to_owned(),
            definer: settings.restore_definer,
            objects,
            backup_bytes: source.size.or(source.manifest.as_ref().map(|m| m.size)),
            largest_value: source.manifest.as_ref().and_then(|m| m.largest_value),
            snapshot,
            free: free(&settings.backup_dir),
        },
    );
    report.findings.insert(0, dir);
    Ok(report)
}

/// The preflight of a point-in-time restore's replay into `into`: the
/// `BINLOG REPLAY` privilege (MariaDB 10.5.2+; `SUPER` before) that
/// `BINLOG` statements and the replayed session settings need, and
/// `UPDATE` and `DELETE` on the database for the replayed rows. Run after
/// [`for_restore`], which checks what restoring the dump needs.
pub async fn for_replay(db: &DbSettings, into: &str) -> Result<Report, PreflightError> {
    let facts = connect_and_gather(db, into, false).await?;
    Ok(judge_replay(&facts, into))
}

fn dir_finding(dir: &Path) -> Finding {
    judge_writable(dir, &probe_writable(dir), process_owner())
}

fn free(dir: &Path) -> Result<u64, String> {
    health::free_bytes(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

async fn connect_and_gather(db: &DbSettings, database: &str, scan: bool) -> Result<Facts, DbError> {
    // Without a default database: a restore target may not exist yet.
    let mut conn = db::connect(db, None).await?;
    let facts = gather(&mut conn, database, scan).await;
    let _ = conn.disconnect().await;
    facts
}

/// The messages of `r`'s findings of severity `s`, for the judges' tests.
#[cfg(test)]
pub(crate) fn messages(r: &Report, s: Severity) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.severity == s)
        .map(|f| f.message.clone())
        .collect()
}

/// A `SHOW GRANTS` line granting nothing, for the tests.
#[cfg(test)]
pub(crate) const USAGE: &str = "GRANT USAGE ON *.* TO `backup`@`%` IDENTIFIED BY PASSWORD '*D821809F681A40A6E379B50D0463EFAE20BDD122'";
