//! `selmai-backup health`: Docker's HEALTHCHECK. Exit 0 when healthy,
//! 1 with a one-line reason otherwise (see [`crate::daemon::health`] for what is
//! checked). Reads only the state file and the free space of `BACKUP_DIR`:
//! fast, and independent of the database and the bucket.

use chrono::Utc;

use crate::config::Settings;
use crate::daemon::health;

/// Arguments of `health`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// The check failed: exit 1 with this reason.
#[derive(Debug, thiserror::Error)]
#[error("unhealthy: {0}")]
pub struct Unhealthy(pub String);

/// Print the verdict; an unhealthy one is an error (exit 1).
pub async fn run(_args: Args, settings: &Settings) -> anyhow::Result<()> {
    match health::check(settings, Utc::now()) {
        Ok(summary) => {
            println!("{summary}");
            Ok(())
        }
        Err(reason) => Err(Unhealthy(reason).into()),
    }
}
