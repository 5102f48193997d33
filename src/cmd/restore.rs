//! `selmai-backup restore <FILE|latest>`: verify the whole backup, run the
//! preflight (refusing on a fatal finding), confirm,
//! dump the database about to be replaced (the safety snapshot, see
//! [`crate::backup::snapshot`]), then replace its objects with the backup's; for a
//! file archive, `restore <ARCHIVE> --to DIR` verifies it, confirms and
//! extracts it; for a full backup, `restore SET --to DIR` verifies every
//! part, restores the database the same way and extracts the archives
//! into `DIR/config` and `DIR/uploads`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use crate::backup::pipeline::Encoding;
use crate::backup::snapshot;
use crate::config::{DbSettings, Settings};
use crate::format::catalog::{self, Part};
use crate::preflight;
use crate::progress::human_bytes;
use crate::restore::archive;
use crate::restore::docker::AppControl;
use crate::restore::full;
use crate::restore::replay::{self, PitrPlan, Replay};
use crate::restore::{self, open};
use crate::target::Target;

use super::{BadArgument, Refused};

/// Arguments of `restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A backup name in BACKUP_DIR, a path to a file, `latest`, or a full
    /// backup (`PREFIX_YYYYMMDD_HHMMSS[.full.json]` or `latest-full`, with --to).
    pub file: String,
    /// Restore into this database instead of DB_NAME (created when missing).
    #[arg(long, value_name = "NAME")]
    pub into: Option<String>,
    /// Do not ask for confirmation (required when there is no terminal).
    #[arg(long)]
    pub yes: bool,
    /// Extract a configuration or uploads archive into this directory (new or
    /// empty); for a full backup, its archives go into DIR/config and DIR/uploads.
    /// For a database backup (`latest` or a dump's name): the point in time to
    /// restore to, RFC 3339, `YYYY-MM-DD HH:MM:SS` (read in TZ) or `end`;
    /// the dump is restored, then the binlog archive replayed up to it.
    #[arg(long, value_name = "DIR|TIME")]
    pub to: Option<String>,
    /// Restore a database backup, then replay the binlog archive up to and
    /// including this transaction (domain-server-sequence).
    #[arg(long, value_name = "D-S-N", conflicts_with = "to")]
    pub to_gtid: Option<String>,
    /// With --to TIME or --to-gtid: print the plan (dump, segments,
    /// transactions, the last one applied) and touch nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// With --to: extract into a directory that is not empty, replacing the files the archive holds.
    #[arg(long, requires = "to")]
    pub force: bool,
    /// Do not dump the database to BACKUP_DIR before replacing it (the
    /// pre-restore snapshot is what undoes a wrong restore).
    #[arg(long)]
    pub no_safety_snapshot: bool,
}

/// Verify, confirm, stop the labelled app containers, take the safety
/// snapshot, restore, start them again.
pub async fn run(args: Args, settings: &Settings, apps: &AppControl) -> anyhow::Result<()> {
    if catalog::is_full_spec(&settings.full_prefix, &args.file) {
        return match &args.to {
            Some(to) => run_full(&args, Path::new(to), settings, apps).await,
            None => Err(Refused(format!(
                "{} is a full backup: give the directory to extract its configuration and uploads into with --to DIR (the database is restored too)",
                args.file
            ))
            .into()),
        };
    }
    match (&args.to, catalog::is_archive_name(&args.file)) {
        (Some(to), true) => return run_archive(&args, Path::new(to), settings).await,
        (Some(_), false) => return run_pitr(&args, settings, apps).await,
        (None, false) if args.to_gtid.is_some() => return run_pitr(&args, settings, apps).await,
        (None, true) => {
            return Err(Refused(format!(
                "{} is a file archive: give the directory to extract it into with --to DIR",
                args.file
            ))
            .into())
        }
        (None, false) => {}
    }
    if args.dry_run {
        return Err(Refused(
            "--dry-run plans a point-in-time restore: give --to TIME or --to-gtid D-S-N".into(),
        )
        .into());
    }
    let db = settings.db()?;
    let into = args.into.clone().unwrap_or_else(|| db.name.clone());
    let interactive = std::io::stdin().is_terminal();
    if !args.yes && !interactive {
        return Err(Refused(format!(
            "refusing to restore into `{into}` without confirmation: there is no terminal to ask on; pass --yes"
        ))
        .into());
    }
    let _lock = super::lock_and_clean(settings).await?;
    let targets = super::targets(settings)?;
    let started = Instant::now();
    let source = fetch_and_verify(&args.file, settings, &targets).await?;
    // Read from the manifest before anything is touched (verifying reads only).
    let other = other_database(&source, &into, &args)?;
    check_restore(settings, &db, &into, &source, !args.no_safety_snapshot).await?;
    if !args.yes {
        let taken = source
            .manifest
            .as_ref()
            .map(|m| format!(" taken {}", m.started_at.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        eprint!(
            "{other}This replaces the tables, views and routines of database `{into}` on {} with those of {}{taken}.\nType 'yes' to continue: ",
            crate::db::addr(&db),
            source.name
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            return Err(Refused("restore cancelled; the database was not touched".into()).into());
        }
    }
    apply_db(
        &args, settings, apps, &targets, &source, &db, &into, started, None,
    )
    .await
}

/// Restore the verified, confirmed `source` into `into` through the one
/// restore operation (safety snapshot and restore with the labelled app
/// containers stopped, then started again), and say how to undo it.
#[allow(clippy::too_many_arguments)]
async fn apply_db(
    args: &Args,
    settings: &Settings,
    apps: &AppControl,
    targets: &[Arc<dyn Target>],
    source: &open::Source,
    db: &DbSettings,
    into: &str,
    started: Instant,
    replay: Option<Replay<'_>>,
) -> anyhow::Result<()> {
    let encoding = Encoding::of(settings);
    let plan = restore::Plan {
        source,
        passphrase: settings.passphrase.as_ref(),
        db,
        into,
        definer: settings.restore_definer,
        apps: Some(apps),
        snapshot: (!args.no_safety_snapshot).then_some(restore::SafetySnapshot {
            volume: &targets[0],
            encoding: &encoding,
        }),
        replay,
    };
    let outcome = restore::run(plan, super::interrupted(), |file| {
        eprintln!("safety snapshot of `{into}`: {file}")
    })
    .await
    .map_err(|e| {
        if args.no_safety_snapshot {
            e.partly_restored(&source.name, into)
        } else {
            e
        }
    })?;
    match &outcome.replayed {
        Some(r) => eprintln!(
            "restored {} into `{into}` ({} statements) and replayed {} transactions ({} statements) in {:.1}s",
            source.name,
            outcome.summary.statements,
            r.transactions,
            r.statements,
            started.elapsed().as_secs_f64()
        ),
        None => eprintln!(
            "restored {} into `{into}`: {} statements in {:.1}s",
            source.name,
            outcome.summary.statements,
            started.elapsed().as_secs_f64()
        ),
    }
    if let Some(snap) = outcome.snapshot {
        let into_arg = if into == db.name {
            String::new()
        } else {
            format!(" --into {into}")
        };
        eprintln!("to undo this restore: selmai-backup restore {snap}{into_arg} --yes");
        // Expired snapshots go only after a restore that worked, so the
        // newest undo is never the one deleted.
        if let Err(e) = snapshot::prune(
            targets[0].as_ref(),
            settings.restore_snapshot_keep_days,
            chrono::Utc::now(),
        )
        .await
        {
            tracing::warn!(error = %e, "cannot delete expired pre-restore snapshots");
        }
    }
    Ok(())
}

/// `restore latest|DUMP --to TIME|end` or `--to-gtid D-S-N`: choose the
/// dump and read every binlog segment up to the target against its
/// manifest (exit 4 when the archive does not reach, 5 on damage), print
/// the plan (all `--dry-run` does), verify the dump, run the preflight
/// (with `BINLOG REPLAY`), confirm, then restore the dump and replay
/// through the one restore operation (a failed replay is rolled back with
/// the restore).
async fn run_pitr(args: &Args, settings: &Settings, apps: &AppControl) -> anyhow::Result<()> {
    let stop =
        replay::parse_stop(args.to.as_deref(), args.to_gtid.as_deref()).map_err(BadArgument)?;
    let db = settings.db()?;
    if !args.dry_run && !args.yes && !std::io::stdin().is_terminal() {
        let into = args.into.clone().unwrap_or_else(|| db.name.clone());
        return Err(Refused(format!(
            "refusing to restore into `{into}` without confirmation: there is no terminal to ask on; pass --yes"
        ))
        .into());
    }
    let _lock = super::lock_and_clean(settings).await?;
    let targets = super::targets(settings)?;
    let started = Instant::now();
    let plan = replay::plan(
        &args.file,
        &settings.prefix,
        &targets,
        settings.passphrase.as_ref(),
        stop,
    )
    .await?;
    print_plan(&plan);
    if args.dry_run {
        return Ok(());
    }
    let source = fetch_and_verify(&plan.dump, settings, &targets).await?;
    let into = args.into.clone().unwrap_or_else(|| db.name.clone());
    let other = other_database(&source, &into, args)?;
    // The restore's preflight and the replay's, every finding printed
    // before refusing, so that one run names every grant missing.
    let untouched = "not restoring, the database was not touched";
    let restoring = preflight::for_restore(settings, &db, &into, &source, !args.no_safety_snapshot)
        .await
        .context(untouched)?;
    let replaying = preflight::for_replay(&db, &into).await.context(untouched)?;
    for finding in restoring
        .at_least(preflight::Severity::Warning)
        .chain(replaying.at_least(preflight::Severity::Warning))
    {
        eprintln!("preflight: {finding}");
    }
    restoring.into_result().context(untouched)?;
    replaying.into_result().context(untouched)?;
    if !args.yes {
        eprint!(
            "{other}This replaces the tables, views and routines of database `{into}` on {} with those of {} taken {}, then replays {} archived transactions up to {}.\nType 'yes' to continue: ",
            crate::db::addr(&db),
            source.name,
            plan.manifest.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
            plan.transactions,
            plan.asked
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            return Err(Refused("restore cancelled; the database was not touched".into()).into());
        }
    }
    let replay = Replay {
        plan: &plan,
        passphrase: settings.passphrase.as_ref(),
    };
    apply_db(
        args,
        settings,
        apps,
        &targets,
        &source,
        &db,
        &into,
        started,
        Some(replay),
    )
    .await
}

/// The plan on stdout: dump, segments, transactions, the last one.
fn print_plan(plan: &PitrPlan) {
    println!(
        "dump: {} (taken {}, binlog position {}:{})",
        plan.dump,
        plan.manifest.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        plan.start.0,
        plan.start.1
    );
    println!(
        "segments: {} from the {}, each verified against its manifest",
        plan.segments.len(),
        plan.target.label()
    );
    for m in &plan.segments {
        println!(
            "  {} ({}:{}..{})",
            m.file, m.binlog_file, m.start_position, m.end_position
        );
    }
    println!(
        "transactions: {} of database `{}` up to {}",
        plan.transactions, plan.database, plan.asked
    );
    match &plan.last {
        Some(l) => println!(
            "last: {} committed {} (ends at {}:{})",
            l.gtid.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
            l.time.format("%Y-%m-%d %H:%M:%S UTC"),
            l.file,
            l.position
        ),
        None => println!("last: none (the dump alone is the state asked for)"),
    }
}

/// Locate `spec`, fetch it into the volume (`targets[0]`) and verify it
/// whole, saying so; nothing is touched yet.
async fn fetch_and_verify(
    spec: &str,
    settings: &Settings,
    targets: &[Arc<dyn Target>],
) -> anyhow::Result<open::Source> {
    let (source, report) = open::prepare(
        spec,
        &settings.prefix,
        targets,
        Some(&targets[0]),
        settings.passphrase.as_ref(),
    )
    .await?;
    eprintln!(
        "verified {} ({}, {} statements, {})",
        source.name,
        human_bytes(report.bytes),
        report.statements,
        report.checked()
    );
    Ok(source)
}

/// A backup of another database than the one it would replace: its
/// tables would be merged into that database. With `--into` the operator
/// chose the target, and the confirmation prompt (if any) says it again;
/// without it, `--yes` is refused and the prompt starts with a warning.
/// Returns that warning ("" when the databases match or the source is
/// unknown: a file of the old script has no manifest).
fn other_database(source: &open::Source, into: &str, args: &Args) -> anyhow::Result<String> {
    let Some(from) = source
        .manifest
        .as_ref()
        .map(|m| m.database.name.as_str())
        .filter(|n| !n.is_empty() && *n != into)
    else {
        return Ok(String::new());
    };
    if args.into.is_none() && args.yes {
        return Err(Refused(format!(
            "{} is a backup of database `{from}`, not of `{into}` (DB_NAME): restoring it would merge `{from}`'s tables into `{into}`; nothing was touched. If that is what you want, say so with --into {into}; to restore it as it was, use --into {from}",
            source.name
        ))
        .into());
    }
    Ok(format!(
        "Note: {} is a backup of database `{from}`, not of `{into}`.\n",
        source.name
    ))
}

/// Verify every part of a full backup, confirm, restore the database as
/// [`run`] does, then extract each archive into `to/config` and `to/uploads`.
async fn run_full(
    args: &Args,
    to: &Path,
    settings: &Settings,
    apps: &AppControl,
) -> anyhow::Result<()> {
    let db = settings.db()?;
    let into = args.into.clone().unwrap_or_else(|| db.name.clone());
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(Refused(format!(
            "refusing to restore into `{into}` and {} without confirmation: there is no terminal to ask on; pass --yes",
            to.display()
        ))
        .into());
    }
    let _lock = super::lock_and_clean(settings).await?;
    let targets = super::targets(settings)?;
    let set = full::locate(&args.file, &settings.full_prefix, &targets).await?;
    let archives: Vec<(Part, PathBuf)> = set
        .manifest
        .parts
        .iter()
        .filter(|p| p.kind != Part::Db)
        .map(|p| (p.kind, to.join(p.kind.name())))
        .collect();
    for (_, dir) in &archives {
        archive::check_target(dir, args.force)?;
    }
    let started = Instant::now();
    let (set, reports) = full::verify(set, settings.passphrase.as_ref(), Some(&targets[0])).await?;
    for r in &reports {
        eprintln!("verified {} ({})", r.file, r.summary);
    }
    let Some(source) = set.part(Part::Db) else {
        return Err(Refused(format!(
            "full backup {} has no db part: restore its archives one by one with `restore ARCHIVE --to DIR`",
            set.name
        ))
        .into());
    };
    eprintln!(
        "verified full backup {}: every part matches the set manifest",
        set.name
    );
    let other = other_database(source, &into, args)?;
    check_restore(settings, &db, &into, source, !args.no_safety_snapshot).await?;
    let extracts: Vec<String> = archives
        .iter()
        .map(|(part, dir)| format!("its {part} into {}", dir.display()))
        .collect();
    if !args.yes {
        eprint!(
            "{other}This replaces the tables, views and routines of database `{into}` on {} with those of {} taken {}{}{}.\nType 'yes' to continue: ",
            crate::db::addr(&db),
            set.name,
            set.manifest.taken.format("%Y-%m-%d %H:%M:%S UTC"),
            if extracts.is_empty() { "" } else { ", and extracts " },
            extracts.join(" and "),
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            return Err(Refused("restore cancelled; nothing was touched".into()).into());
        }
    }
    apply_db(
        args, settings, apps, &targets, source, &db, &into, started, None,
    )
    .await?;
    for (part, dir) in &archives {
        let source = set.part(*part).expect("archives come from the set's parts");
        let report = archive::extract_verified(source, settings.passphrase.as_ref(), dir)
            .await
            .with_context(|| {
                format!(
                    "the database was restored from {}, but extracting its {part} archive failed",
                    set.name
                )
            })?;
        eprintln!(
            "extracted {} into {}: {} entries",
            source.name,
            dir.display(),
            report.entries
        );
    }
    eprintln!(
        "restored full backup {} in {:.1}s",
        set.name,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The preflight of a restore, before asking and before touching anything:
/// a restore that cannot finish (no INSERT, no room for the snapshot ...)
/// is refused here; warnings are printed.
async fn check_restore(
    settings: &Settings,
    db: &crate::config::DbSettings,
    into: &str,
    source: &open::Source,
    snapshot: bool,
) -> anyhow::Result<()> {
    let report = preflight::for_restore(settings, db, into, source, snapshot)
        .await
        .context("not restoring, the database was not touched")?;
    for finding in report.at_least(preflight::Severity::Warning) {
        eprintln!("preflight: {finding}");
    }
    report
        .into_result()
        .context("not restoring, the database was not touched")?;
    Ok(())
}

/// Verify a file archive, confirm, extract it into `to`.
async fn run_archive(args: &Args, to: &Path, settings: &Settings) -> anyhow::Result<()> {
    if !args.yes && !std::io::stdin().is_terminal() {
        return Err(Refused(format!(
            "refusing to extract into {} without confirmation: there is no terminal to ask on; pass --yes",
            to.display()
        ))
        .into());
    }
    archive::check_target(to, args.force)?;
    let _lock = super::lock_and_clean(settings).await?;
    let targets = super::targets(settings)?;
    let source = open::locate(&args.file, &settings.prefix, &targets).await?;
    let source = open::fetch_to_volume(source, &targets[0]).await?;
    let started = Instant::now();
    let report = archive::verify(&source, settings.passphrase.as_ref()).await?;
    eprintln!("verified {} ({})", source.name, report.summary());
    if !args.yes {
        eprint!(
            "This extracts {} into {}{}.\nType 'yes' to continue: ",
            source.name,
            to.display(),
            if args.force {
                ", replacing the files it holds"
            } else {
                ""
            }
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "yes" {
            return Err(Refused("extraction cancelled; nothing was written".into()).into());
        }
    }
    let report = archive::extract_verified(&source, settings.passphrase.as_ref(), to).await?;
    eprintln!(
        "extracted {} into {}: {} entries in {:.1}s",
        source.name,
        to.display(),
        report.entries,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
