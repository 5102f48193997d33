//! `selmai-backup verify <FILE|latest>`: read a backup to the end and say
//! whether it would restore, without touching any database; with
//! `--restore-test`, also restore it into a scratch database and prove the
//! data is what was dumped (see [`crate::restore::drill`]). A full backup is
//! checked part by part against its set manifest.

use crate::config::Settings;
use crate::format::catalog::{self, Part};
use crate::progress::human_bytes;
use crate::restore::archive;
use crate::restore::drill;
use crate::restore::full;
use crate::restore::open;

/// Arguments of `verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A backup name in BACKUP_DIR, a path to a file, `latest`, or a full
    /// backup (`PREFIX_YYYYMMDD_HHMMSS[.full.json]` or `latest-full`).
    #[arg(default_value = "latest")]
    pub file: String,
    /// Then restore it into a scratch database on the server, compare row
    /// counts, fingerprints, views, triggers, routines and events with the
    /// manifest, and drop the scratch database (exit 5 on a difference).
    #[arg(long)]
    pub restore_test: bool,
    /// Also read the binlog archive from that dump's snapshot to its end:
    /// every segment's SHA-256, encryption tags, event checksums (CRC32)
    /// and positions; exit 4 on a gap, 5 on damage. With --restore-test,
    /// also restore the dump before it, replay the archive to its snapshot
    /// and compare every table with its manifest (exit 5 naming the table).
    #[arg(long)]
    pub binlog: bool,
}

/// Check SHA-256 against the manifest, every encryption tag, decompression
/// and SQL splitting (for an archive: the tar and every file's SHA-256).
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    if catalog::is_full_spec(&settings.full_prefix, &args.file) {
        return run_full(args, settings).await;
    }
    // A bucket copy is read straight from the bucket: verify leaves no file behind.
    let source = open::locate(&args.file, &settings.prefix, &super::targets(settings)?).await?;
    if catalog::is_archive_name(&source.name) {
        let report = archive::verify(&source, settings.passphrase.as_ref()).await?;
        println!("ok: {} ({})", source.name, report.summary());
        return Ok(());
    }
    let report = open::verify(&source, settings.passphrase.as_ref()).await?;
    println!(
        "ok: {} ({}, {} statements, SHA-256 {}{})",
        source.name,
        human_bytes(report.bytes),
        report.statements,
        report.sha256,
        if report.manifest_checked {
            ", matches the manifest".to_owned()
        } else {
            format!("; {}", report.checked())
        }
    );
    if args.restore_test {
        restore_test(&source, settings).await?;
    }
    if args.binlog {
        let from = source
            .manifest
            .as_ref()
            .and_then(|m| m.snapshot.as_ref())
            .map(|s| (s.file.clone(), s.position));
        verify_binlog(settings, from).await?;
    }
    if args.restore_test && args.binlog {
        chain_drill(&args.file, settings).await?;
    }
    Ok(())
}

/// The drill of the binlog chain leading to `spec`: restore the dump
/// before it into a scratch database, replay the archive to its snapshot,
/// and compare every table with its manifest (exit 5 naming the table).
async fn chain_drill(spec: &str, settings: &Settings) -> anyhow::Result<()> {
    let targets = super::targets(settings)?;
    let passphrase = settings.passphrase.as_ref();
    let (to, expected, plan) =
        crate::restore::replay::chain_to(spec, &settings.prefix, &targets, passphrase).await?;
    let (source, _) =
        open::prepare(&plan.dump, &settings.prefix, &targets, None, passphrase).await?;
    let db = settings.db()?;
    let scratch = drill::scratch_name();
    let chain = drill::ChainDrill {
        replay: crate::restore::replay::Replay {
            plan: &plan,
            passphrase,
        },
        expected: (&to, &expected),
    };
    let drilled = tokio::select! {
        r = drill::run_with(&source, passphrase, &db, &scratch, settings.restore_definer, Some(chain)) => r?,
        signal = super::interrupted() => {
            drill::discard(&db, &scratch).await?;
            anyhow::bail!("restore test of the binlog chain to {to} interrupted by {signal}; scratch database `{scratch}` dropped");
        }
    };
    println!("{drilled}");
    drilled.into_result()?;
    Ok(())
}

/// The binlog chain in every target from `from` (a dump's snapshot) on.
async fn verify_binlog(settings: &Settings, from: Option<(String, u64)>) -> anyhow::Result<()> {
    let Some((file, pos)) = from else {
        anyhow::bail!(crate::binlog::StoreError::Gap(
            "the dump records no binlog position (binary logging was off): there is no chain to check".into()
        ));
    };
    for t in super::targets(settings)? {
        let r = crate::binlog::store::verify_chain(
            t.as_ref(),
            &settings.prefix,
            settings.passphrase.as_ref(),
            Some((&file, pos)),
        )
        .await?;
        println!(
            "ok: binlog archive in {} from {} to {} ({} segments, {} transactions, {} of events{}), no gap",
            crate::target::the(t.label()),
            r.from.as_deref().unwrap_or("-"),
            r.to.as_deref().unwrap_or("-"),
            r.segments,
            r.transactions,
            human_bytes(r.bytes),
            r.last_event_time
                .map(|t| format!(", last event {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// Every part of a full backup against its set manifest and to the end;
/// with `--restore-test`, the drill of its database part.
async fn run_full(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let targets = super::targets(settings)?;
    let set = full::locate(&args.file, &settings.full_prefix, &targets).await?;
    let (set, reports) = full::verify(set, settings.passphrase.as_ref(), None).await?;
    for r in &reports {
        println!("ok: {} ({} part: {})", r.file, r.kind, r.summary);
    }
    println!(
        "ok: {} ({} parts, each matches the set manifest)",
        set.name,
        reports.len()
    );
    match (args.restore_test, set.part(Part::Db)) {
        (true, Some(source)) => restore_test(source, settings).await,
        _ => Ok(()),
    }
}

/// Restore `source` into a scratch database and compare it with its manifest.
async fn restore_test(source: &open::Source, settings: &Settings) -> anyhow::Result<()> {
    let db = settings.db()?;
    let scratch = drill::scratch_name();
    let drilled = tokio::select! {
        r = drill::run(source, settings.passphrase.as_ref(), &db, &scratch, settings.restore_definer) => r?,
        signal = super::interrupted() => {
            // The drill future is gone: drop its scratch database before exiting.
            drill::discard(&db, &scratch).await?;
            anyhow::bail!("restore test of {} interrupted by {signal}; scratch database `{scratch}` dropped", source.name);
        }
    };
    println!("{drilled}");
    drilled.into_result()?;
    Ok(())
}
