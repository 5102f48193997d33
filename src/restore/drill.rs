//! Restore drills: prove that a backup restores to what was dumped.
//!
//! A drill restores a verified backup into a scratch database on the same
//! server (a fresh name, `selmai_drill_<UTC time>_<random>`, refused if it
//! exists), reads every table back with the dump's own SELECT
//! ([`dump::table_fingerprint`], history rows of system-versioned tables
//! included) and compares row counts and fingerprints
//! with those the manifest recorded inside the dump's snapshot, then
//! compares the names of views, triggers, routines and events. The scratch
//! database is always dropped, whatever happened.
//!
//! This module only checks and reports; deciding that a failed drill is an
//! error (exit code, alert, state file) is the caller's business. It does
//! not verify the stored bytes: call [`crate::restore::open::verify`] first.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, Instant};

use chrono::Utc;
use mysql_async::prelude::Queryable;
use mysql_async::Conn;

use crate::config::{DbSettings, Secret};
use crate::db::{self, ident, literal, query_strings, DbError};
use crate::dump;
use crate::format::manifest::Manifest;
use crate::restore::definer::Definer;
use crate::restore::open::Source;
use crate::restore::replay::Replay;

/// Prefix of every scratch database a drill creates.
pub const SCRATCH_PREFIX: &str = "selmai_drill_";

/// Errors that stop a drill before it can compare anything.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The backup has no manifest, so there is nothing to compare with.
    #[error("{0} has no manifest (a file of the old script?): a restore test needs the row counts and fingerprints recorded at dump time; take a new backup and drill that")]
    NoManifest(String),
    /// The scratch name is taken (never by chance: a leftover or a bug).
    #[error("scratch database `{0}` already exists; not touching it: drop it by hand if it is a leftover drill")]
    ScratchExists(String),
    /// Restoring into the scratch database failed.
    #[error(
        "restore test of {file}: restoring into scratch database `{scratch}` failed: {source}"
    )]
    Restore {
        /// The backup.
        file: String,
        /// The scratch database.
        scratch: String,
        /// Why.
        #[source]
        source: Box<super::RunError>,
    },
    /// Creating, reading or dropping the scratch database failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The restored database differs from the manifest.
    #[error("backup does not restore to what was dumped: {file}: {}", .problems.join("; "))]
    Mismatch {
        /// The backup.
        file: String,
        /// One line per difference, naming the table or object.
        problems: Vec<String>,
    },
}

/// The check of one table or sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    /// Table name.
    pub name: String,
    /// `table` or `sequence`.
    pub kind: String,
    /// Rows the manifest recorded.
    pub expected_rows: u64,
    /// Rows found after the restore (`None`: the table is missing).
    pub found_rows: Option<u64>,
    /// History rows of a system-versioned table the manifest recorded
    /// (absent for other tables and in old manifests).
    pub expected_history: Option<u64>,
    /// History rows found after the restore (read only when expected).
    pub found_history: Option<u64>,
    /// Fingerprint the manifest recorded (absent in old manifests).
    pub expected_fingerprint: Option<String>,
    /// Fingerprint of the restored table.
    pub found_fingerprint: Option<String>,
}

impl TableCheck {
    /// What is wrong with this table, if anything.
    pub fn problem(&self) -> Option<String> {
        let Some(found) = self.found_rows else {
            return Some(format!(
                "{} `{}` is missing after the restore",
                self.kind, self.name
            ));
        };
        if self.kind != "table" {
            return None;
        }
        if found != self.expected_rows {
            return Some(format!(
                "table `{}` has {found} rows, the dump had {}",
                self.name, self.expected_rows
            ));
        }
        if let Some(e) = self.expected_history {
            match self.found_history {
                Some(f) if f == e => {}
                Some(f) => {
                    return Some(format!(
                        "system-versioned table `{}` has {f} history rows, the dump had {e}",
                        self.name
                    ))
                }
                None => {
                    return Some(format!(
                        "table `{}` lost its system versioning and its {e} history rows",
                        self.name
                    ))
                }
            }
        }
        match (&self.expected_fingerprint, &self.found_fingerprint) {
            (Some(e), Some(f)) if e != f => Some(format!(
                "table `{}` has different content (fingerprint {f}, the dump had {e})",
                self.name
            )),
            _ => None,
        }
    }

    fn verdict(&self) -> &'static str {
        match (self.problem(), &self.expected_fingerprint) {
            (Some(_), _) => "FAILED",
            (None, None) if self.kind == "table" => "ok (rows only)",
            (None, _) => "ok",
        }
    }
}

/// The comparison of one kind of object by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectCheck {
    /// `view`, `trigger`, `routine` or `event`.
    pub kind: &'static str,
    /// How many the manifest lists.
    pub expected: usize,
    /// In the manifest, not in the restored database.
    pub missing: Vec<String>,
    /// In the restored database, not in the manifest.
    pub extra: Vec<String>,
}

/// What a drill found.
#[derive(Debug, Clone)]
pub struct DrillReport {
    /// The backup drilled.
    pub file: String,
    /// The scratch database it was restored into (dropped since).
    pub scratch: String,
    /// Tables and sequences, in manifest order.
    pub tables: Vec<TableCheck>,
    /// Tables found in the restored database that the manifest does not list.
    pub extra_tables: Vec<String>,
    /// Views, triggers, routines and events.
    pub objects: Vec<ObjectCheck>,
    /// Statements executed by the restore.
    pub statements: u64,
    /// Wall time of restore and comparison.
    pub elapsed: Duration,
}

impl DrillReport {
    /// Every difference, one line each, naming the table or object.
    pub fn problems(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tables.iter().filter_map(TableCheck::problem).collect();
        for t in &self.extra_tables {
            v.push(format!(
                "table `{t}` is in the restored database but not in the manifest"
            ));
        }
        for o in &self.objects {
            for m in &o.missing {
                v.push(format!("{} `{m}` is missing after the restore", o.kind));
            }
            for x in &o.extra {
                v.push(format!(
                    "{} `{x}` appeared but is not in the manifest",
                    o.kind
                ));
            }
        }
        v
    }

    /// True when the restored database matches the manifest.
    pub fn passed(&self) -> bool {
        self.problems().is_empty()
    }

    /// Turn a failed drill into [`DrillError::Mismatch`].
    pub fn into_result(self) -> Result<DrillReport, DrillError> {
        let problems = self.problems();
        if problems.is_empty() {
            Ok(self)
        } else {
            Err(DrillError::Mismatch {
                file: self.file,
                problems,
            })
        }
    }
}

impl fmt::Display for DrillReport {
    /// The table-by-table report printed by `verify --restore-test`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "restore test of {} (scratch database {}, dropped): {} statements in {:.1}s",
            self.file,
            self.scratch,
            self.statements,
            self.elapsed.as_secs_f64()
        )?;
        let width = self
            .tables
            .iter()
            .map(|t| t.name.len())
            .max()
            .unwrap_or(5)
            .max(5);
        writeln!(
            f,
            "  {:<width$}  {:>10}  {:>10}  result",
            "table", "dumped", "restored"
        )?;
        for t in &self.tables {
            let found = t.found_rows.map_or("-".to_owned(), |r| r.to_string());
            writeln!(
                f,
                "  {:<width$}  {:>10}  {:>10}  {}",
                t.name,
                t.expected_rows,
                found,
                t.verdict()
            )?;
        }
        for t in &self.extra_tables {
            writeln!(
                f,
                "  {t:<width$}  {:>10}  {:>10}  FAILED (not in the manifest)",
                "-", "?"
            )?;
        }
        for o in &self.objects {
            let verdict = if o.missing.is_empty() && o.extra.is_empty() {
                "ok".to_owned()
            } else {
                let mut parts = Vec::new();
                if !o.missing.is_empty() {
                    parts.push(format!("missing {}", o.missing.join(", ")));
                }
                if !o.extra.is_empty() {
                    parts.push(format!("unexpected {}", o.extra.join(", ")));
                }
                format!("FAILED ({})", parts.join("; "))
            };
            writeln!(f, "  {}s: {} expected, {verdict}", o.kind, o.expected)?;
        }
        if self.passed() {
            write!(f, "PASSED: the backup restores to what was dumped")
        } else {
            write!(f, "FAILED: {} difference(s)", self.problems().len())
        }
    }
}

/// A fresh scratch database name: `selmai_drill_<yyyymmddhhmmss>_<8 hex>`.
pub fn scratch_name() -> String {
    let mut bytes = [0u8; 4];
    // Without randomness the time alone still makes a collision unlikely,
    // and an existing name is refused anyway.
    let _ = getrandom::fill(&mut bytes);
    format!(
        "{SCRATCH_PREFIX}{}_{}",
        Utc::now().format("%Y%m%d%H%M%S"),
        hex::encode(bytes)
    )
}

/// Drops the scratch database when the drill future is dropped before it
/// could do so itself (cancelled by a signal or a timeout).
struct ScratchGuard {
    db: DbSettings,
    name: String,
    armed: bool,
}

impl Drop for ScratchGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let (db, name) = (self.db.clone(), self.name.clone());
            handle.spawn(async move {
                if let Err(e) = discard(&db, &name).await {
                    tracing::error!(database = %name, error = %e, "cannot drop the drill's scratch database");
                }
            });
        }
    }
}

/// Drop a scratch database (used after an interrupted drill too). Refuses
/// any name without the scratch prefix.
pub async fn discard(db: &DbSettings, scratch: &str) -> Result<(), DbError> {
    assert!(
        scratch.starts_with(SCRATCH_PREFIX),
        "only drill scratch databases are dropped"
    );
    let mut conn = db::connect(db, None).await?;
    let r = conn
        .query_drop(format!("DROP DATABASE IF EXISTS {}", ident(scratch)))
        .await
        .map_err(|e| DbError::query(format!("dropping scratch database `{scratch}`"), e));
    let _ = conn.disconnect().await;
    r
}

/// Restore `source` into the scratch database `scratch` (from
/// [`scratch_name`]), compare with its manifest, drop the scratch
/// database. A mismatch is a report that did not pass, not an error.
///
/// `definer` is `RESTORE_DEFINER`, so the drill restores as a real restore would.
pub async fn run(
    source: &Source,
    passphrase: Option<&Secret>,
    db: &DbSettings,
    scratch: &str,
    definer: Definer,
) -> Result<DrillReport, DrillError> {
    run_with(source, passphrase, db, scratch, definer, None).await
}

/// The drill of the binlog chain: restore `source` (dump N) into the
/// scratch database, replay the archive to the next dump's snapshot
/// position (`chain.plan`), and compare with that dump's manifest
/// (`chain.expected`), so that the archive between the two is proven
/// complete without reading the live database.
pub struct ChainDrill<'a> {
    /// The replay up to the next dump's snapshot.
    pub replay: Replay<'a>,
    /// The next dump's name and manifest.
    pub expected: (&'a str, &'a Manifest),
}

/// [`run`], or with `chain`, the drill of the binlog chain.
pub async fn run_with(
    source: &Source,
    passphrase: Option<&Secret>,
    db: &DbSettings,
    scratch: &str,
    definer: Definer,
    chain: Option<ChainDrill<'_>>,
) -> Result<DrillReport, DrillError> {
    assert!(scratch.starts_with(SCRATCH_PREFIX));
    let started = Instant::now();
    if source.manifest.is_none() {
        return Err(DrillError::NoManifest(source.name.clone()));
    }
    let mut conn = db::connect(db, None).await?;
    let exists = query_strings(
        &mut conn,
        &format!(
            "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
            literal(scratch)
        ),
    )
    .await?;
    if !exists.is_empty() {
        let _ = conn.disconnect().await;
        return Err(DrillError::ScratchExists(scratch.to_owned()));
    }
    // CREATE without IF NOT EXISTS: if another process took the name since
    // the check, we fail rather than restore into (and drop) its database.
    // With the source's defaults, as a restore into a new database has.
    let mut create = format!("CREATE DATABASE {}", ident(scratch));
    if let Some(m) = &source.manifest {
        let word =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if word(&m.database.charset) && word(&m.database.collation) {
            create.push_str(&format!(
                " CHARACTER SET {} COLLATE {}",
                m.database.charset, m.database.collation
            ));
        }
    }
    let created = conn
        .query_drop(create)
        .await
        .map_err(|e| DbError::query(format!("creating scratch database `{scratch}`"), e));
    let _ = conn.disconnect().await;
    created?;
    let mut guard = ScratchGuard {
        db: db.clone(),
        name: scratch.to_owned(),
        armed: true,
    };
    tracing::info!(file = %source.name, scratch, "restore test started");
    let file = match &chain {
        Some(c) => format!(
            "{} with the binlog archive to {}'s snapshot",
            source.name, c.expected.0
        ),
        None => source.name.clone(),
    };
    let result = restore_and_compare(source, passphrase, db, scratch, definer, chain).await;
    guard.armed = false;
    let dropped = discard(db, scratch).await;
    let (statements, tables, extra_tables, objects) = result?;
    dropped?;
    let report = DrillReport {
        file,
        scratch: scratch.to_owned(),
        tables,
        extra_tables,
        objects,
        statements,
        elapsed: started.elapsed(),
    };
    if report.passed() {
        tracing::info!(file = %source.name, seconds = format!("{:.1}", report.elapsed.as_secs_f64()), "restore test passed");
    } else {
        tracing::error!(file = %source.name, problems = %report.problems().join("; "), "restore test failed");
    }
    Ok(report)
}

type Compared = (u64, Vec<TableCheck>, Vec<String>, Vec<ObjectCheck>);

async fn restore_and_compare(
    source: &Source,
    passphrase: Option<&Secret>,
    db: &DbSettings,
    scratch: &str,
    definer: Definer,
    chain: Option<ChainDrill<'_>>,
) -> Result<Compared, DrillError> {
    let (manifest, replay) = match chain {
        Some(c) => (c.expected.1, Some(c.replay)),
        None => (
            source.manifest.as_ref().expect("checked by the caller"),
            None,
        ),
    };
    // The one restore operation, without the app's containers (a scratch
    // database is not the app's) and without a safety snapshot (nothing
    // is replaced).
    let plan = super::Plan {
        source,
        passphrase,
        db,
        into: scratch,
        definer,
        apps: None,
        snapshot: None,
        replay,
    };
    let summary = super::run(plan, std::future::pending(), |_| {})
        .await
        .map_err(|e| DrillError::Restore {
            file: source.name.clone(),
            scratch: scratch.to_owned(),
            source: Box::new(e),
        })?
        .summary;
    let mut conn = db::connect(db, Some(scratch)).await?;
    let result = match disable_events(&mut conn, scratch).await {
        Ok(()) => compare(&mut conn, manifest, scratch).await,
        Err(e) => Err(e),
    };
    let _ = conn.disconnect().await;
    let (tables, extra, objects) = result?;
    Ok((summary.statements, tables, extra, objects))
}

async fn compare(
    conn: &mut Conn,
    manifest: &crate::format::manifest::Manifest,
    scratch: &str,
) -> Result<(Vec<TableCheck>, Vec<String>, Vec<ObjectCheck>), DbError> {
    let lit = literal(scratch);
    let present: BTreeSet<String> = names(
        conn,
        &format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = {lit} AND TABLE_TYPE <> 'VIEW'"
        ),
    )
    .await?;
    let mut tables = Vec::new();
    for t in &manifest.tables {
        let mut check = TableCheck {
            name: t.name.clone(),
            kind: t.kind.clone(),
            expected_rows: t.rows,
            found_rows: None,
            expected_history: t.history_rows,
            found_history: None,
            expected_fingerprint: t.fingerprint.clone(),
            found_fingerprint: None,
        };
        if present.contains(&t.name) {
            if t.kind == "table" {
                // Read as the manifest was written: with the history
                // when it recorded history rows.
                let read =
                    dump::table_fingerprint(conn, scratch, &t.name, t.history_rows.is_some())
                        .await?;
                check.found_rows = Some(read.rows);
                check.found_history = read.history_rows;
                check.found_fingerprint = Some(read.fingerprint.hex());
            } else {
                check.found_rows = Some(t.rows);
            }
        }
        tables.push(check);
    }
    let listed: BTreeSet<&str> = manifest.tables.iter().map(|t| t.name.as_str()).collect();
    let extra_tables = present
        .iter()
        .filter(|n| !listed.contains(n.as_str()))
        .cloned()
        .collect();

    let queries: [(&'static str, &[String], String); 4] = [
        (
            "view",
            &manifest.views,
            format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES \
                 WHERE TABLE_SCHEMA = {lit} AND TABLE_TYPE = 'VIEW'"
            ),
        ),
        (
            "trigger",
            &manifest.triggers,
            format!(
                "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {lit}"
            ),
        ),
        (
            "routine",
            &manifest.routines,
            format!(
                "SELECT CONCAT(ROUTINE_TYPE, ' ', ROUTINE_NAME) FROM information_schema.ROUTINES \
                 WHERE ROUTINE_SCHEMA = {lit}"
            ),
        ),
        (
            "event",
            &manifest.events,
            format!("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {lit}"),
        ),
    ];
    let mut objects = Vec::new();
    for (kind, expected, sql) in queries {
        let found = names(conn, &sql).await?;
        let expected_set: BTreeSet<String> = expected.iter().cloned().collect();
        objects.push(ObjectCheck {
            kind,
            expected: expected_set.len(),
            missing: expected_set.difference(&found).cloned().collect(),
            extra: found.difference(&expected_set).cloned().collect(),
        });
    }
    Ok((tables, extra_tables, objects))
}

/// The copy's events must not run: they would change the data being
/// compared, or act on other databases they name. (They are created
/// enabled, as dumped; this closes the window as soon as the restore ends.)
async fn disable_events(conn: &mut Conn, scratch: &str) -> Result<(), DbError> {
    let events = names(
        conn,
        &format!(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {}",
            literal(scratch)
        ),
    )
    .await?;
    for e in events {
        conn.query_drop(format!("ALTER EVENT {} DISABLE", ident(&e)))
            .await
            .map_err(|err| {
                DbError::query(format!("disabling event `{e}` in the drill's copy"), err)
            })?;
    }
    Ok(())
}

async fn names(conn: &mut Conn, sql: &str) -> Result<BTreeSet<String>, DbError> {
    Ok(query_strings(conn, sql)
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rows: Option<u64>, fp: Option<&str>) -> TableCheck {
        TableCheck {
            name: "t".into(),
            kind: "table".into(),
            expected_rows: 2,
            found_rows: rows,
            expected_history: None,
            found_history: None,
            expected_fingerprint: Some("aa".into()),
            found_fingerprint: fp.map(str::to_owned),
        }
    }

    #[test]
    fn table_problems_name_the_table() {
        assert_eq!(check(Some(2), Some("aa")).problem(), None);
        assert!(check(None, None)
            .problem()
            .unwrap()
            .contains("`t` is missing"));
        assert!(check(Some(3), Some("aa"))
            .problem()
            .unwrap()
            .contains("3 rows"));
        assert!(check(Some(2), Some("bb"))
            .problem()
            .unwrap()
            .contains("`t` has different content"));
    }

    #[test]
    fn scratch_names_are_fresh_and_prefixed() {
        let (a, b) = (scratch_name(), scratch_name());
        assert!(a.starts_with(SCRATCH_PREFIX) && a.len() <= 64, "{a}");
        assert_ne!(a, b);
    }
}
