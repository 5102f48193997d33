//! `selmai-backup restore <FILE|latest>`: verify the whole backup, confirm,
//! then replace the database's objects with the backup's.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Instant;

use crate::config::Settings;
use crate::pipeline;
use crate::progress::human_bytes;

use super::Refused;

/// Arguments of `restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A backup name in BACKUP_DIR, a path to a file, or `latest`.
    pub file: String,
    /// Restore into this database instead of DB_NAME (created when missing).
    #[arg(long, value_name = "NAME")]
    pub into: Option<String>,
    /// Do not ask for confirmation (required when there is no terminal).
    #[arg(long)]
    pub yes: bool,
}

/// Verify, confirm, restore.
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
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
    let source = pipeline::locate(&args.file, &settings.prefix, &targets).await?;
    let source = pipeline::fetch_to_volume(source, &targets[0]).await?;
    let started = Instant::now();
    let report = pipeline::verify(&source, settings.passphrase.as_ref()).await?;
    eprintln!(
        "verified {} ({}, {} statements{})",
        source.name,
        human_bytes(report.bytes),
        report.statements,
        if report.manifest_checked {
            ", SHA-256 matches the manifest"
        } else {
            ", no manifest to check against"
        }
    );
    if !args.yes {
        let taken = source
            .manifest
            .as_ref()
            .map(|m| format!(" taken {}", m.started_at.format("%Y-%m-%d %H:%M:%S UTC")))
            .unwrap_or_default();
        eprint!(
            "This replaces the tables, views and routines of database `{into}` on {} with those of {}{taken}.\nType 'yes' to continue: ",
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
    let summary = pipeline::apply(&source, settings.passphrase.as_ref(), &db, &into).await?;
    eprintln!(
        "restored {} into `{into}`: {} statements in {:.1}s",
        source.name,
        summary.statements,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
