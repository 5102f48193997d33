//! `selmai-backup backup [--kind db|config|uploads|full] [--no-prune]`: one
//! backup now, run exactly as the daemon runs one ([`crate::daemon::jobs::Jobs`]):
//! retention after a success, the run recorded for `health`, alerts on
//! failure.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::daemon::jobs::{JobError, Jobs};
use crate::daemon::metrics::Metrics;
use crate::daemon::notify::Notifier;
use crate::daemon::schedule::{Kind, Trigger};
use crate::daemon::state::State;

/// The local backup succeeded but an off-site copy did not (exit code 8).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OffsiteFailed(pub String);

/// What `backup` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BackupKind {
    /// The database dump.
    Db,
    /// The configuration files (CONFIG_PATHS minus CONFIG_EXCLUDE) as a tar.
    Config,
    /// The users' uploads (UPLOADS_PATHS) as a tar.
    Uploads,
    /// The database and both archives under one timestamp, with one set manifest.
    Full,
}

/// Arguments of `backup`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to back up.
    #[arg(long, value_enum, default_value = "db")]
    pub kind: BackupKind,
    /// Do not apply retention after the backup (by default the kind's
    /// retention runs after a success, as in the daemon).
    #[arg(long)]
    pub no_prune: bool,
}

/// Run one backup as the daemon does (lock, clean-up of interrupted runs,
/// space check, backup, retention, run history, alerts) and print the
/// paths written. SIGINT or SIGTERM abandons it cleanly: partial files
/// and incomplete uploads are removed before the exit (130 or 143).
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let kind = match args.kind {
        BackupKind::Db => Kind::Db,
        BackupKind::Config => Kind::Config,
        BackupKind::Uploads => Kind::Uploads,
        BackupKind::Full => Kind::Full,
    };
    // Installed first: from here on SIGINT and SIGTERM no longer kill the
    // process, they abandon the backup below.
    let mut interrupt = super::Interrupt::install()?;
    let state = State::load(&settings.backup_dir).unwrap_or_default();
    // A one-off run never waits for the lock: "another backup or restore
    // is running" at once (exit 7).
    let jobs = Jobs::new(
        Arc::new(settings.clone()),
        super::targets(settings)?,
        Notifier::new(settings.notify.clone()),
        Metrics::from_state(&state),
    )
    .with_lock_wait(Duration::ZERO, Duration::from_secs(1))
    .with_prune(!args.no_prune);
    let (run, result) = tokio::select! {
        done = jobs.run_reporting(kind, Trigger::Cli) => done,
        signal = interrupt.recv() => {
            // The backup future is dropped (its uploads with it); remove
            // what it left on every target before exiting.
            jobs.clean_up_abandoned(kind, Trigger::Cli).await;
            return Err(super::Interrupted {
                signal,
                what: format!("the {kind} backup"),
                after: "nothing of it was kept (partial files and incomplete uploads removed)",
            }
            .into());
        }
    };
    let written = result.map_err(cause)?;
    for w in &run.warnings {
        eprintln!("warning: {w}");
    }
    for file in &written.files {
        println!("{}", settings.backup_dir.join(file).display());
    }
    if let Some(why) = written.offsite_failed {
        return Err(OffsiteFailed(why).into());
    }
    Ok(())
}

/// The error under a failed run, so that its exit code is the documented one.
fn cause(e: JobError) -> anyhow::Error {
    match e {
        JobError::Lock { source, .. } => source.into(),
        JobError::Space(e) => e.into(),
        JobError::Backup(e) => e.into(),
        JobError::Locate(e) => e.into(),
        JobError::Verify(e) => e.into(),
        JobError::Drill(e) => e.into(),
        JobError::Chain(e) => e.into(),
        JobError::Full(e) => e.into(),
    }
}
