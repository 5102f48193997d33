//! The one restore operation: with a backup located and verified
//! ([`super::open::prepare`]), stop the app, take the safety snapshot,
//! apply (and, for a point-in-time restore, replay the archived
//! transactions after the dump), start the app again.
//!
//! When the plan has a safety snapshot and applying fails or is
//! interrupted midway, the database is put back as it was before the app
//! starts again: emptied, then restored from the snapshot (or, when it was
//! empty or missing, emptied or dropped again). The error then says what
//! failed and that the database is as before. Without a snapshot in the
//! plan nothing is rolled back; [`RunError::partly_restored`] words that.
//!
//! Every restore goes through [`run`]: the `restore` command, the drill
//! behind `verify --restore-test` and the daemon's `DRILL_SCHEDULE` (into
//! a scratch database, with neither app control nor snapshot), and the
//! tests. The steps a caller does not want are `None` in the [`Plan`], not
//! flags. Not responsible for finding or verifying the backup
//! ([`super::open`]), for asking the operator or the preflight (the
//! `restore` command), or for comparing a drill's result ([`super::drill`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mysql_async::prelude::Queryable;

use crate::backup::pipeline::{BackupError, Encoding};
use crate::backup::snapshot::{self, Contents};
use crate::config::DbSettings;
use crate::db::{self, ident, literal, query_strings, DbError};
use crate::restore::definer::Definer;
use crate::restore::docker::{AppControl, DockerError};
use crate::restore::open::{self, Source};
use crate::restore::replay::{PitrError, Replay, ReplaySummary};
use crate::restore::{ExecSummary, RestoreError};
use crate::secret::Secret;
use crate::target::Target;

/// Where and how the safety snapshot is taken.
pub struct SafetySnapshot<'a> {
    /// The volume (an undo is local and short-lived).
    pub volume: &'a Arc<dyn Target>,
    /// The backups' compression and encryption.
    pub encoding: &'a Encoding,
}

/// One restore: what goes where, and which of the optional steps run.
pub struct Plan<'a> {
    /// The backup, located and verified.
    pub source: &'a Source,
    /// `BACKUP_PASSPHRASE`, for an encrypted backup.
    pub passphrase: Option<&'a Secret>,
    /// The server and account; its `name` is the app's own database.
    pub db: &'a DbSettings,
    /// The database restored into (created when missing).
    pub into: &'a str,
    /// `RESTORE_DEFINER`.
    pub definer: Definer,
    /// Stop the labelled containers while the app's own database is
    /// replaced (a restore into another database leaves them running).
    pub apps: Option<&'a AppControl>,
    /// Dump `into` first, when it holds anything.
    pub snapshot: Option<SafetySnapshot<'a>>,
    /// Then replay archived transactions into it (a point-in-time
    /// restore); a failed replay is rolled back with the restore.
    pub replay: Option<Replay<'a>>,
}

/// What a restore did.
#[derive(Debug)]
pub struct Outcome {
    /// The statements executed.
    pub summary: ExecSummary,
    /// The safety snapshot's file name, when one was taken.
    pub snapshot: Option<String>,
    /// What the replay applied, when there was one.
    pub replayed: Option<ReplaySummary>,
}

/// Why a restore stopped. The messages say whether the database was touched.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Looking at the database before the snapshot failed.
    #[error("not restoring, the database was not touched")]
    Checking(#[source] DbError),
    /// The app's containers could not be stopped.
    #[error("not restoring, the database was not touched")]
    Stopping(#[source] DockerError),
    /// The safety snapshot failed.
    #[error("safety snapshot of `{into}` failed; not restoring, the database was not touched (--no-safety-snapshot skips the snapshot)")]
    Snapshot {
        /// The database.
        into: String,
        /// Why.
        #[source]
        source: BackupError,
    },
    /// Executing the backup failed.
    #[error(transparent)]
    Apply(#[from] RestoreError),
    /// Replaying the archived transactions after the dump failed.
    #[error(transparent)]
    Replay(#[from] PitrError),
    /// A stop signal came while restoring.
    #[error("restore of {name} into `{into}` interrupted by {signal}{}", if *.touched { ": the database may be partly restored; run the restore again" } else { " before it changed anything: the database was not touched" })]
    Interrupted {
        /// The backup.
        name: String,
        /// The database.
        into: String,
        /// SIGINT or SIGTERM.
        signal: &'static str,
        /// Whether applying had begun.
        touched: bool,
    },
    /// Applying failed or was interrupted, and the database was put back
    /// as it was before. The message names the failure (`cause`, not a
    /// source: its own text would contradict the outcome) on one line.
    #[error("{message}")]
    RolledBack {
        /// What failed, and that the database is as before.
        message: String,
        /// The failure.
        cause: Box<RunError>,
    },
    /// Applying failed or was interrupted, and the database is left partly
    /// restored: putting it back failed too, or there was no snapshot.
    #[error("{message}")]
    PartlyRestored {
        /// What failed, the state of the database and what to do.
        message: String,
        /// The failure.
        cause: Box<RunError>,
    },
    /// Restored, but the stopped containers did not all start again.
    #[error(
        "restored {name} into `{into}`, but the containers stopped for it did not all start again"
    )]
    Restarting {
        /// The backup.
        name: String,
        /// The database.
        into: String,
        /// Why.
        #[source]
        source: DockerError,
    },
}

/// Restore `plan.source` into `plan.into`: stop the app (when asked and the
/// database is the app's own), take the safety snapshot (when asked and
/// the database holds anything; `snapshot_taken` hears its name before the
/// restore starts), apply, start the app again, also when applying failed
/// or `interrupt` resolved first.
pub async fn run(
    plan: Plan<'_>,
    interrupt: impl Future<Output = &'static str>,
    snapshot_taken: impl Fn(&str),
) -> Result<Outcome, RunError> {
    let into = plan.into;
    // With a snapshot planned, what the database held decides how a
    // failure is rolled back: from the snapshot, or back to empty or missing.
    let (snapshot_to, before) = match &plan.snapshot {
        Some(s) => {
            let before = snapshot::contents(plan.db, into)
                .await
                .map_err(RunError::Checking)?;
            ((before == Contents::Held).then_some(s), Some(before))
        }
        None => (None, None),
    };
    // Whether applying has begun, and the snapshot taken (read after a
    // failure or an interruption, when the work future is gone).
    let touched = AtomicBool::new(false);
    let taken: Mutex<Option<String>> = Mutex::new(None);
    let paused = match plan.apps {
        Some(apps) if into == plan.db.name => apps.pause().await.map_err(RunError::Stopping)?,
        _ => None,
    };
    // A signal must not skip the restart below (as PID 1 in a container we
    // would otherwise ignore SIGTERM and be killed by `docker stop`).
    // The snapshot is taken with the app stopped, so that it holds the
    // very state the restore replaces.
    let work = async {
        let snap = match &snapshot_to {
            Some(s) => {
                let out = snapshot::take(plan.db, s.encoding, s.volume, into)
                    .await
                    .map_err(|source| RunError::Snapshot {
                        into: into.to_owned(),
                        source,
                    })?;
                snapshot_taken(&out.file);
                *taken.lock().unwrap_or_else(|e| e.into_inner()) = Some(out.file.clone());
                Some(out.file)
            }
            None => None,
        };
        touched.store(true, Ordering::SeqCst);
        let summary =
            open::apply_with(plan.source, plan.passphrase, plan.db, into, plan.definer).await?;
        let replayed = match &plan.replay {
            Some(r) => Some(r.run(plan.db, into).await?),
            None => None,
        };
        Ok::<_, RunError>(Outcome {
            summary,
            snapshot: snap,
            replayed,
        })
    };
    let applied = tokio::select! {
        r = work => r,
        signal = interrupt => Err(RunError::Interrupted {
            name: plan.source.name.clone(),
            into: into.to_owned(),
            signal,
            touched: touched.load(Ordering::SeqCst),
        }),
    };
    // Put the database back before the app starts again.
    let applied = match (applied, before) {
        (Err(e), Some(before)) if touched.load(Ordering::SeqCst) => {
            let snap = taken.lock().unwrap_or_else(|e| e.into_inner()).clone();
            Err(roll_back(&plan, before, snap.as_deref(), e).await)
        }
        (other, _) => other,
    };
    let resumed = match (paused, plan.apps) {
        (Some(p), Some(apps)) => apps.resume(p).await,
        _ => Ok(()),
    };
    let outcome = applied?;
    resumed.map_err(|source| RunError::Restarting {
        name: plan.source.name.clone(),
        into: into.to_owned(),
        source,
    })?;
    Ok(outcome)
}

/// The failure's first line (naming the backup and the database) and the
/// rest (a statement's excerpt), which goes last.
fn failure_text(cause: &RunError, name: &str, into: &str) -> (String, String) {
    let text = match cause {
        RunError::Interrupted { signal, .. } => {
            format!("restore of {name} into `{into}` interrupted by {signal}")
        }
        other => format!("restore of {name} into `{into}` failed: {other}"),
    };
    // A statement's excerpt follows on its own line; a server message may
    // hold line breaks of its own (the SQL it quotes), which would break
    // the one line.
    let (first, rest) = match text.find("\n  in: ") {
        Some(at) => text.split_at(at),
        None => (text.as_str(), ""),
    };
    (first.replace('\n', " "), rest.to_owned())
}

impl RunError {
    /// This failure of a restore without a safety snapshot: the database
    /// is left partly restored, and the message says so and what to do.
    /// Other errors are returned as they are.
    pub fn partly_restored(self, name: &str, into: &str) -> RunError {
        let applied = match &self {
            RunError::Apply(_) | RunError::Replay(_) => true,
            RunError::Interrupted { touched, .. } => *touched,
            _ => false,
        };
        if !applied {
            return self;
        }
        let (first, rest) = failure_text(&self, name, into);
        RunError::PartlyRestored {
            message: format!("{first}; `{into}` is partly restored: no safety snapshot was taken (--no-safety-snapshot), so nothing was rolled back; the tables restored before the failure were replaced, the others are as they were: restore a backup into it again (this one once the cause is fixed, or another){rest}"),
            cause: Box::new(self),
        }
    }

    /// The failure that a [`RunError::RolledBack`] or
    /// [`RunError::PartlyRestored`] reports (for the exit code).
    pub fn cause(&self) -> Option<&RunError> {
        match self {
            RunError::RolledBack { cause, .. } | RunError::PartlyRestored { cause, .. } => {
                Some(cause)
            }
            _ => None,
        }
    }
}

/// Put `plan.into` back as it was `before` the failed restore: emptied and
/// restored from the safety snapshot `snap` (when it held anything), or
/// emptied (when it was empty), or dropped (when it was missing). Returns
/// the error to report.
async fn roll_back(
    plan: &Plan<'_>,
    before: Contents,
    snap: Option<&str>,
    cause: RunError,
) -> RunError {
    let into = plan.into;
    let (first, rest) = failure_text(&cause, &plan.source.name, into);
    let into_arg = if into == plan.db.name {
        String::new()
    } else {
        format!(" --into {into}")
    };
    let result = match (before, snap, &plan.snapshot) {
        (Contents::Missing, _, _) => drop_database(plan.db, into)
            .await
            .map(|()| "it did not exist, and was dropped again".to_owned())
            .map_err(|e| {
                (
                    e.to_string(),
                    format!("drop it: DROP DATABASE {}", ident(into)),
                )
            }),
        (Contents::Empty, _, _) => clear(plan.db, into)
            .await
            .map(|()| "it was empty, and what the restore created was dropped".to_owned())
            .map_err(|e| {
                (
                    e.to_string(),
                    "drop its tables, views, routines and events by hand".to_owned(),
                )
            }),
        (Contents::Held, Some(file), Some(s)) => {
            let by_hand = format!(
                "restore the safety snapshot: selmai-backup restore {file}{into_arg} --yes"
            );
            tracing::warn!(database = into, snapshot = file, "the restore failed; putting the database back from the safety snapshot (should this be interrupted, {by_hand})");
            from_snapshot(plan, s.volume, file)
                .await
                .map(|()| format!("rolled back from the safety snapshot {file}"))
                .map_err(|e| (e, by_hand))
        }
        // Held without a snapshot taken cannot happen (applying begins
        // after the snapshot); say what is known.
        (Contents::Held, _, _) => Err((
            "no safety snapshot was taken".to_owned(),
            "restore a backup into it again".to_owned(),
        )),
    };
    match result {
        Ok(how) => RunError::RolledBack {
            message: format!("{first}; `{into}` is as it was before: {how}{rest}"),
            cause: Box::new(cause),
        },
        Err((why, what_to_do)) => {
            let why = why.lines().next().unwrap_or_default().to_owned();
            RunError::PartlyRestored {
                message: format!("{first}; putting `{into}` back as it was failed too ({why}), so it is partly restored: {what_to_do}{rest}"),
                cause: Box::new(cause),
            }
        }
    }
}

/// Empty `into` and restore the snapshot `file` from `volume` into it.
async fn from_snapshot(
    plan: &Plan<'_>,
    volume: &Arc<dyn Target>,
    file: &str,
) -> Result<(), String> {
    clear(plan.db, plan.into).await.map_err(|e| e.to_string())?;
    let source = open::source_at(volume.clone(), file)
        .await
        .map_err(|e| e.to_string())?;
    open::apply_with(&source, plan.passphrase, plan.db, plan.into, plan.definer)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Drop every table, sequence, view, routine and event of `database`
/// (triggers go with their tables), keeping the database and its options.
async fn clear(db: &DbSettings, database: &str) -> Result<(), DbError> {
    let mut conn = db::connect(db, Some(database)).await?;
    let result = clear_on(&mut conn, database).await;
    let _ = conn.disconnect().await;
    result
}

async fn clear_on(conn: &mut mysql_async::Conn, database: &str) -> Result<(), DbError> {
    let lit = literal(database);
    let what = |e| DbError::query(format!("emptying `{database}` to roll the restore back"), e);
    conn.query_drop("SET SESSION FOREIGN_KEY_CHECKS = 0")
        .await
        .map_err(what)?;
    let mut drops = Vec::new();
    for (sql, kind) in [
        (
            format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit} AND TABLE_TYPE = 'VIEW'"),
            "VIEW",
        ),
        (
            format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit} AND TABLE_TYPE <> 'VIEW'"),
            "TABLE",
        ),
        (
            format!("SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {lit}"),
            "EVENT",
        ),
    ] {
        for row in query_strings(conn, &sql).await? {
            if let Some(name) = row.into_iter().next().flatten() {
                drops.push(format!("DROP {kind} IF EXISTS {}", ident(&name)));
            }
        }
    }
    for row in query_strings(
        conn,
        &format!("SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {lit}"),
    )
    .await?
    {
        if let [Some(kind), Some(name)] = &row[..] {
            drops.push(format!("DROP {kind} IF EXISTS {}", ident(name)));
        }
    }
    for sql in drops {
        conn.query_drop(&sql).await.map_err(what)?;
    }
    Ok(())
}

/// Drop `database`, which the failed restore created.
async fn drop_database(db: &DbSettings, database: &str) -> Result<(), DbError> {
    let mut conn = db::connect(db, None).await?;
    let result = conn
        .query_drop(format!("DROP DATABASE IF EXISTS {}", ident(database)))
        .await
        .map_err(|e| DbError::query(format!("dropping `{database}` to roll the restore back"), e));
    let _ = conn.disconnect().await;
    result
}
