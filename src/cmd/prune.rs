//! `selmai-backup prune [--dry-run]`: apply retention (`RETENTION_*`) to
//! our backups on every target now, printing every backup with its verdict
//! ("keep (daily 3/7)", "delete (...)") and why. The daemon does the same
//! after each successful backup.

use crate::config::Settings;
use crate::retention;

/// Arguments of `prune`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only print what would be kept and deleted.
    #[arg(long)]
    pub dry_run: bool,
}

/// Print the plan for each target and, unless `--dry-run`, delete.
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    // A dry run reads only; deleting waits for no one and races no one.
    let _lock = if args.dry_run {
        None
    } else {
        Some(super::lock_and_clean(settings).await?)
    };
    let tz = settings.schedule.tz;
    let mut first_failure = None;
    let mut failures = 0;
    for t in super::targets(settings)? {
        let p = retention::prune(
            t.as_ref(),
            &settings.prefix,
            &settings.retention,
            tz,
            args.dry_run,
        )
        .await?;
        let keep = p.verdicts.iter().filter(|(_, v)| v.keeps()).count();
        println!(
            "{}: {} backups, {} kept, {} {} (retention {}, days in {})",
            p.target,
            p.verdicts.len(),
            keep,
            p.verdicts.len() - keep,
            if args.dry_run {
                "to delete; dry run, nothing deleted"
            } else {
                "to delete"
            },
            settings.retention,
            tz.name()
        );
        let width = p
            .verdicts
            .iter()
            .map(|(e, _)| e.name.len())
            .max()
            .unwrap_or(0);
        for (e, v) in &p.verdicts {
            println!("  {:<width$}  {v}", e.name);
        }
        for f in p.failed {
            eprintln!(
                "warning: could not delete {} from the {}: {}",
                f.name, p.target, f.error
            );
            failures += 1;
            first_failure.get_or_insert(f.error);
        }
    }
    match first_failure {
        None => Ok(()),
        Some(e) => Err(anyhow::Error::new(e).context(format!(
            "{failures} backup(s) could not be deleted; they are kept"
        ))),
    }
}
