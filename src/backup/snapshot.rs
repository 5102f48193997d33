//! Pre-restore safety snapshots: before a restore replaces a database that
//! has tables, it is dumped to the volume as
//! `selmai_prerestore_YYYYMMDD_HHMMSS.sql.gz` (same compression and
//! encryption as backups), so a wrong restore is undone by restoring that
//! file.
//!
//! The snapshots have their own prefix, which `BACKUP_PREFIX` may not take:
//! retention, `latest` and health, which list by the backup prefix, never
//! see them. They are kept `RESTORE_SNAPSHOT_KEEP_DAYS` days by [`prune`],
//! which only ever deletes names with this prefix. This module does not
//! decide when to snapshot; `cmd::restore` does.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::backup::pipeline::{self, BackupError, BackupOutcome};
pub use crate::config::SNAPSHOT_PREFIX as PREFIX;
use crate::config::{DbSettings, Settings};
use crate::db::{self, literal, query_strings, DbError};
use crate::dump::{DumpOptions, NoHooks};
use crate::format::catalog;
use crate::format::manifest;
use crate::target::{Target, TargetError};

/// Whether `database` exists and holds at least one table or view (an
/// empty or missing database has nothing worth a snapshot).
pub async fn worth_taking(db: &DbSettings, database: &str) -> Result<bool, DbError> {
    let mut conn = db::connect(db, None).await?;
    let rows = query_strings(
        &mut conn,
        &format!(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} LIMIT 1",
            literal(database)
        ),
    )
    .await;
    let _ = conn.disconnect().await;
    Ok(!rows?.is_empty())
}

/// Dump `database` into the volume (only: an undo is local and short-lived)
/// under the snapshot prefix.
pub async fn take(
    settings: &Settings,
    volume: &Arc<dyn Target>,
    database: &str,
) -> Result<BackupOutcome, BackupError> {
    let mut s = settings.for_database(database);
    s.prefix = PREFIX.to_owned();
    pipeline::backup_db(
        &s,
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
