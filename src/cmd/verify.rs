//! `selmai-backup verify <FILE|latest>`: read a backup to the end and say
//! whether it would restore, without touching any database; with
//! `--restore-test`, also restore it into a scratch database and prove the
//! data is what was dumped (see [`crate::drill`]).

use crate::archive;
use crate::catalog;
use crate::config::Settings;
use crate::drill;
use crate::pipeline;
use crate::progress::human_bytes;

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A backup name in BACKUP_DIR, a path to a file, or `latest`.
    pub file: String,
    /// Then restore it into a scratch database on the server, compare row
    /// counts, fingerprints, views, triggers, routines and events with the
    /// manifest, and drop the scratch database (exit 5 on a difference).
    #[arg(long)]
    pub restore_test: bool,
}

/// Check SHA-256 against the manifest, every encryption tag, decompression
/// and SQL splitting (for an archive: the tar and every file's SHA-256).
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    // A bucket copy is read straight from the bucket: verify leaves no file behind.
    let source = pipeline::locate(&args.file, &settings.prefix, &super::targets(settings)?).await?;
    if catalog::is_archive_name(&source.name) {
        let report = archive::verify(&source, settings.passphrase.as_ref()).await?;
        println!(
            "ok: {} ({} entries, {} of files{})",
            source.name,
            report.entries,
            human_bytes(report.bytes),
            if report.manifest_checked {
                ", every SHA-256 matches the manifest"
            } else {
                ", no manifest"
            }
        );
        return Ok(());
    }
    let report = pipeline::verify(&source, settings.passphrase.as_ref()).await?;
    println!(
        "ok: {} ({}, {} statements, SHA-256 {}{})",
        source.name,
        human_bytes(report.bytes),
        report.statements,
        report.sha256,
        if report.manifest_checked {
            ", matches the manifest"
        } else {
            ", no manifest"
        }
    );
    if !args.restore_test {
        return Ok(());
    }
    let db = settings.db()?;
    let scratch = drill::scratch_name();
    let drilled = tokio::select! {
        r = drill::run(&source, settings.passphrase.as_ref(), &db, &scratch, settings.restore_definer) => r?,
        signal = super::restore::interrupted() => {
            // The drill future is gone: drop its scratch database before exiting.
            drill::discard(&db, &scratch).await?;
            anyhow::bail!("restore test of {} interrupted by {signal}; scratch database `{scratch}` dropped", source.name);
        }
    };
    println!("{drilled}");
    drilled.into_result()?;
    Ok(())
}
