//! `selmai-backup backup`: one database backup now.

use crate::config::Settings;
use crate::dump::{DumpOptions, NoHooks};
use crate::pipeline;

/// Arguments of `backup`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Run a backup, print the path written.
pub async fn run(_args: Args, settings: &Settings) -> anyhow::Result<()> {
    let _lock = super::lock_and_clean(settings).await?;
    let targets = super::targets(settings);
    let outcome =
        pipeline::backup_db(settings, &targets, &DumpOptions::default(), &NoHooks).await?;
    for f in &outcome.failed {
        eprintln!("warning: the copy to the {} failed: {}", f.target, f.error);
    }
    println!("{}", settings.backup_dir.join(&outcome.file).display());
    Ok(())
}
