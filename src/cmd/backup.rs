//! `selmai-backup backup [--kind db|config|uploads|full]`: one backup now.

use chrono::Utc;

use crate::archive::ArchiveKind;
use crate::config::Settings;
use crate::dump::{DumpOptions, NoHooks};
use crate::full;
use crate::health;
use crate::pipeline;
use crate::schedule::{Kind, Trigger};
use crate::state::{self, Offsite, Outcome, Run, State};

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
}

/// Run a backup, print the path written.
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let _lock = super::lock_and_clean(settings).await?;
    let known = State::load(&settings.backup_dir).unwrap_or_default();
    let kind = match args.kind {
        BackupKind::Db => Kind::Db,
        BackupKind::Config => Kind::Config,
        BackupKind::Uploads => Kind::Uploads,
        BackupKind::Full => Kind::Full,
    };
    health::space_for_backup(
        &settings.backup_dir,
        &known,
        kind,
        settings.health.min_free_bytes,
    )?;
    let targets = super::targets(settings)?;
    let started = Utc::now();
    let written = match args.kind {
        BackupKind::Db => Written::from(
            pipeline::backup_db(settings, &targets, &DumpOptions::default(), &NoHooks).await?,
        ),
        BackupKind::Config => {
            Written::from(pipeline::backup_archive(settings, &targets, ArchiveKind::Config).await?)
        }
        BackupKind::Uploads => {
            Written::from(pipeline::backup_archive(settings, &targets, ArchiveKind::Uploads).await?)
        }
        BackupKind::Full => {
            let o = full::backup(settings, &targets, &DumpOptions::default(), &NoHooks).await?;
            for part in &o.manifest.parts {
                println!("{}", settings.backup_dir.join(&part.file).display());
            }
            Written {
                file: o.set,
                size: o.manifest.size(),
                stored: o.stored,
                failed: o.failed,
                warnings: o.warnings,
            }
        }
    };
    finish(settings, kind, started, written)
}

/// What a backup of any kind wrote, for the run history and the exit code.
struct Written {
    /// The backup's file (for a full backup, its set manifest).
    file: String,
    size: u64,
    stored: Vec<&'static str>,
    failed: Vec<pipeline::TargetFailure>,
    warnings: Vec<String>,
}

impl From<pipeline::BackupOutcome> for Written {
    fn from(o: pipeline::BackupOutcome) -> Self {
        Written {
            warnings: o.manifest.changed_file_warnings(),
            file: o.file,
            size: o.manifest.size,
            stored: o.stored,
            failed: o.failed,
        }
    }
}

/// Print the warnings, record the run, print the file written, and fail
/// (exit 8) when an off-site copy failed.
fn finish(
    settings: &Settings,
    kind: Kind,
    started: chrono::DateTime<Utc>,
    outcome: Written,
) -> anyhow::Result<()> {
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
    let warnings = outcome.warnings;
    for w in &warnings {
        eprintln!("warning: {w}");
    }
    let run = Run {
        kind,
        trigger: Trigger::Cli,
        started,
        finished: Utc::now(),
        outcome: Outcome::Success,
        file: Some(outcome.file.clone()),
        size: Some(outcome.size),
        offsite,
        error: None,
        warnings,
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
