//! `selmai-backup backup`: one database backup now.

use chrono::Utc;

use crate::config::Settings;
use crate::dump::{DumpOptions, NoHooks};
use crate::health;
use crate::pipeline;
use crate::schedule::{Kind, Trigger};
use crate::state::{self, Offsite, Outcome, Run, State};

/// The local backup succeeded but an off-site copy did not (exit code 8).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OffsiteFailed(pub String);

/// Arguments of `backup`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run a backup, print the path written.
pub async fn run(_args: Args, settings: &Settings) -> anyhow::Result<()> {
    let _lock = super::lock_and_clean(settings).await?;
    let known = State::load(&settings.backup_dir).unwrap_or_default();
    health::space_for_backup(&settings.backup_dir, &known, Kind::Db)?;
    let targets = super::targets(settings)?;
    let started = Utc::now();
    let outcome =
        pipeline::backup_db(settings, &targets, &DumpOptions::default(), &NoHooks).await?;
    // `health` and the daemon's catch-up count a one-off backup too.
    let offsite = match (&settings.s3, outcome.failed.first()) {
        (None, _) => Offsite::NotConfigured,
        (Some(_), Some(f)) => Offsite::Failed {
            error: f.error.to_string(),
        },
        (Some(_), None) if outcome.stored.len() > 1 => Offsite::Stored,
        (Some(_), None) => Offsite::Failed {
            error: "no bucket target was written".into(),
        },
    };
    let run = Run {
        kind: Kind::Db,
        trigger: Trigger::Cli,
        started,
        finished: Utc::now(),
        outcome: Outcome::Success,
        file: Some(outcome.file.clone()),
        size: Some(outcome.manifest.size),
        offsite,
        error: None,
        warnings: Vec::new(),
    };
    if let Err(e) = state::record(&settings.backup_dir, run) {
        eprintln!("warning: {e}");
    }
    println!("{}", settings.backup_dir.join(&outcome.file).display());
    if let Some(f) = outcome.failed.first() {
        return Err(OffsiteFailed(format!(
            "{} was written to the volume, but the copy to the {} failed: {}",
            outcome.file, f.target, f.error
        ))
        .into());
    }
    Ok(())
}
