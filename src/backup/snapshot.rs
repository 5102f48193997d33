//! Pre-restore safety snapshots: before a restore replaces a database that
//! holds anything, it is dumped to the volume as
//! `selmai_prerestore_YYYYMMDD_HHMMSS.sql.gz` (same compression and
//! encryption as backups), so a wrong restore is undone by restoring that
//! file, and a restore that fails midway is rolled back from it
//! ([`crate::restore::run`]).
//!
//! The snapshots have their own prefix, which `BACKUP_PREFIX` may not take:
//! retention, `latest` and health, which list by the backup prefix, never
//! see them. They are kept `RESTORE_SNAPSHOT_KEEP_DAYS` days by [`prune`],
//! which only ever deletes names with this prefix. This module does not
//! decide when to snapshot; `cmd::restore` does.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::backup::pipeline::{self, BackupError, BackupOutcome, Encoding};
use crate::config::DbSettings;
pub use crate::config::SNAPSHOT_PREFIX as PREFIX;
use crate::db::{self, literal, query_strings, DbError};
use crate::dump::{DumpOptions, NoHooks};
use crate::format::catalog;
use crate::format::manifest;
use crate::target::{Target, TargetError};

/// What a database holds, as far as a restore's roll-back is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contents {
    /// There is no such database.
    Missing,
    /// It exists without a table, view, routine or event.
    Empty,
    /// It holds something: worth a snapshot.
    Held,
}

/// Whether `database` exists and holds a table, view, routine or event.
pub async fn contents(db: &DbSettings, database: &str) -> Result<Contents, DbError> {
    let mut conn = db::connect(db, None).await?;
    let lit = literal(database);
    let rows = query_strings(
        &mut conn,
        &format!(
            "SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {lit}), \
             EXISTS (SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit}) \
             OR EXISTS (SELECT 1 FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {lit}) \
             OR EXISTS (SELECT 1 FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {lit})"
        ),
    )
    .await;
    let _ = conn.disconnect().await;
    let row = rows?.into_iter().next().unwrap_or_default();
    let yes = |i: usize| row.get(i).cloned().flatten().is_some_and(|v| v != "0");
    Ok(match (yes(0), yes(1)) {
        (false, _) => Contents::Missing,
        (true, false) => Contents::Empty,
        (true, true) => Contents::Held,
    })
}

/// Whether `database` exists and holds anything (an empty or missing
/// database has nothing worth a snapshot).
pub async fn worth_taking(db: &DbSettings, database: &str) -> Result<bool, DbError> {
    Ok(contents(db, database).await? == Contents::Held)
}

/// Dump `database` (on the server of `db`) into the volume only (an undo
/// is local and short-lived) under the snapshot prefix.
pub async fn take(
    db: &DbSettings,
    enc: &Encoding,
    volume: &Arc<dyn Target>,
    database: &str,
) -> Result<BackupOutcome, BackupError> {
    let db = DbSettings {
        name: database.to_owned(),
        ..db.clone()
    };
    pipeline::backup_db(
        &db,
        enc,
        PREFIX,
        std::slice::from_ref(volume),
        &DumpOptions::default(),
        &NoHooks,
    )
    .await
}

/// Delete snapshots (and their manifests) taken more than `keep_days` days
/// before `now`; returns the names deleted.
pub async fn prune(
    volume: &dyn Target,
    keep_days: u32,
    now: DateTime<Utc>,
) -> Result<Vec<String>, TargetError> {
    let cutoff = now - chrono::Duration::days(i64::from(keep_days));
    let mut deleted = Vec::new();
    for e in catalog::list_db(volume, PREFIX).await? {
        if e.parsed.taken >= cutoff {
            continue;
        }
        volume.delete(&e.name).await?;
        volume.delete(&manifest::name_for(&e.name)).await?;
        tracing::info!(file = %e.name, keep_days, "deleted an expired pre-restore snapshot");
        deleted.push(e.name);
    }
    Ok(deleted)
}
