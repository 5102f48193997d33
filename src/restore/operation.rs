//! The one restore operation: with a backup located and verified
//! ([`super::open::prepare`]), stop the app, take the safety snapshot,
//! apply, start the app again.
//!
//! Every restore goes through [`run`]: the `restore` command, the drill
//! behind `verify --restore-test` and the daemon's `DRILL_SCHEDULE` (into
//! a scratch database, with neither app control nor snapshot), and the
//! tests. The steps a caller does not want are `None` in the [`Plan`], not
//! flags. Not responsible for finding or verifying the backup
//! ([`super::open`]), for asking the operator or the preflight (the
//! `restore` command), or for comparing a drill's result ([`super::drill`]).

use std::future::Future;
use std::sync::Arc;

use crate::backup::pipeline::{BackupError, Encoding};
use crate::backup::snapshot;
use crate::config::DbSettings;
use crate::db::DbError;
use crate::restore::definer::Definer;
use crate::restore::docker::{AppControl, DockerError};
use crate::restore::open::{self, Source};
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
}

/// What a restore did.
#[derive(Debug)]
pub struct Outcome {
    /// The statements executed.
    pub summary: ExecSummary,
    /// The safety snapshot's file name, when one was taken.
    pub snapshot: Option<String>,
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
    /// A stop signal came while restoring.
    #[error("restore of {name} into `{into}` interrupted by {signal}: the database may be partly restored; run the restore again")]
    Interrupted {
        /// The backup.
        name: String,
        /// The database.
        into: String,
        /// SIGINT or SIGTERM.
        signal: &'static str,
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
    let snapshot_to = match plan.snapshot {
        Some(s) => snapshot::worth_taking(plan.db, into)
            .await
            .map_err(RunError::Checking)?
            .then_some(s),
        None => None,
    };
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
                Some(out.file)
            }
            None => None,
        };
        let summary =
            open::apply_with(plan.source, plan.passphrase, plan.db, into, plan.definer).await?;
        Ok::<_, RunError>(Outcome {
            summary,
            snapshot: snap,
        })
    };
    let applied = tokio::select! {
        r = work => r,
        signal = interrupt => Err(RunError::Interrupted {
            name: plan.source.name.clone(),
            into: into.to_owned(),
            signal,
        }),
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
