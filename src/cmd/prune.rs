//! `selmai-backup prune [--dry-run]`: apply each kind's retention to our
//! database backups and uploads archives (`RETENTION_DAILY`, `_WEEKLY`,
//! `_MONTHLY`), config archives (`RETENTION_CONFIG_WEEKLY`) and full
//! backups (`RETENTION_FULL_MONTHLY`, whole sets) on every target now, printing
//! every backup with its verdict ("keep (daily 3/7)", "delete (...)") and
//! why. The daemon does the same after each successful backup of a kind.

use crate::config::Settings;
use crate::daemon::retention;

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
    // An off-site target that does not answer costs BACKUP_OFFSITE_TIMEOUT
    // in all, not its retries at every step.
    let targets =
        crate::target::budget::for_run(&super::targets(settings)?, settings.offsite_timeout);
    for t in targets {
        let t = t.as_ref();
        let s = settings;
        let kinds = [
            (
                "backups",
                &s.retention,
                retention::plan(t, &s.prefix, &s.retention, tz).await?,
            ),
            (
                "config archives",
                &s.config_retention,
                retention::plan_archives(t, &s.config_archive.prefix, &s.config_retention, tz)
                    .await?,
            ),
            (
                "uploads archives",
                &s.retention,
                retention::plan_archives(t, &s.uploads_archive.prefix, &s.retention, tz).await?,
            ),
            (
                "full backups",
                &s.full_retention,
                retention::plan_full(t, &s.full_prefix, &s.full_retention, tz).await?,
            ),
        ];
        for (what, policy, mut p) in kinds {
            if !args.dry_run {
                p = retention::execute(t, p).await;
            }
            // The database line always shows; the other kinds when they have backups.
            if p.verdicts.is_empty() && p.orphans.is_empty() && what != "backups" {
                continue;
            }
            report(
                p,
                what,
                policy,
                tz,
                args.dry_run,
                &mut failures,
                &mut first_failure,
            );
        }
    }
    match first_failure {
        None => Ok(()),
        Some(e) => Err(anyhow::Error::new(e).context(format!(
            "{failures} backup(s) could not be deleted; they are kept"
        ))),
    }
}

/// Print one kind's plan on one target and count its failed deletes.
fn report(
    p: retention::Pruned,
    what: &str,
    policy: &retention::Policy,
    tz: chrono_tz::Tz,
    dry_run: bool,
    failures: &mut usize,
    first_failure: &mut Option<crate::target::TargetError>,
) {
    let keep = p.verdicts.iter().filter(|(_, v)| v.keeps()).count();
    println!(
        "{}: {} {what}, {} kept, {} {} (retention {}, days in {})",
        p.target,
        p.verdicts.len(),
        keep,
        p.verdicts.len() - keep,
        if dry_run {
            "to delete; dry run, nothing deleted"
        } else {
            "to delete"
        },
        policy,
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
    for name in &p.orphans {
        println!("  {name}  delete (a manifest whose backup is gone)");
    }
    for f in p.failed {
        eprintln!(
            "warning: could not delete {} from the {}: {}",
            f.name, p.target, f.error
        );
        *failures += 1;
        first_failure.get_or_insert(f.error);
    }
}
