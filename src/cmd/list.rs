//! `selmai-backup list`: the backups (database dumps, configuration and
//! uploads archives, full backups with each of their parts) in every
//! target, newest first; those not yet copied to a readable off-site
//! target are marked local only. An off-site target that does not answer
//! is named in one line and left out, so the volume's list never waits on it.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;

use crate::config::Settings;
use crate::format::catalog::{self, FullObject, Part};
use crate::format::manifest;
use crate::progress::human_bytes;
use crate::target::local::LocalTarget;
use crate::target::{self, Target, TargetError};

/// Arguments of `list`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (one array) instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    kind: &'static str,
    taken: chrono::DateTime<Utc>,
    size: u64,
    age_hours: f64,
    locations: Vec<&'static str>,
    manifest: bool,
    /// On the volume and in no off-site target that could be read.
    local_only: bool,
    #[serde(skip)]
    offsite: bool,
}

/// One backup (or part) as one target holds it.
struct Item {
    name: String,
    kind: &'static str,
    taken: chrono::DateTime<Utc>,
    size: u64,
    manifest: bool,
    location: &'static str,
}

/// Print the list.
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut offsite_read = false;
    // The targets that answered: the binlog window is read from those only.
    let mut readable = Vec::new();
    for (i, target) in super::targets(settings)?.into_iter().enumerate() {
        let t = target.as_ref();
        // The volume is listed whatever else happens; an off-site target
        // that does not answer at once, or fails, is named in one line
        // rather than holding the list up or failing it.
        let listed = if i == 0 {
            items(t, settings).await?
        } else {
            let read = match target::reachable(t, target::PATIENCE).await {
                Ok(()) => items(t, settings).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(l) => {
                    offsite_read = true;
                    l
                }
                Err(e) => {
                    eprintln!(
                        "the {} could not be read, backups only there are not listed: {e}",
                        t.label()
                    );
                    continue;
                }
            }
        };
        readable.push(target.clone());
        for it in listed {
            let row = rows.entry(it.name.clone()).or_insert_with(|| Row {
                name: it.name.clone(),
                kind: it.kind,
                taken: it.taken,
                size: it.size,
                age_hours: (Utc::now() - it.taken).num_seconds() as f64 / 3600.0,
                locations: Vec::new(),
                manifest: it.manifest,
                local_only: false,
                offsite: false,
            });
            row.locations.push(it.location);
            row.offsite |= i > 0 && it.manifest;
        }
    }
    for r in rows.values_mut() {
        r.local_only = offsite_read && !r.offsite && r.locations.contains(&LocalTarget::LABEL);
    }
    let mut rows: Vec<Row> = rows.into_values().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.taken));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no backups in {}", settings.backup_dir.display());
        return Ok(());
    }
    println!(
        "{:<48} {:<20} {:>10} {:>8}  WHERE",
        "NAME", "TAKEN (UTC)", "SIZE", "AGE"
    );
    for r in rows {
        println!(
            "{:<48} {:<20} {:>10} {:>8}  {}{}",
            r.name,
            r.taken.format("%Y-%m-%d %H:%M:%S"),
            human_bytes(r.size),
            age(r.age_hours),
            r.locations.join("+"),
            match (r.manifest, r.local_only) {
                (false, _) => " (no manifest)",
                (true, true) => " (local only: not copied off-site yet)",
                (true, false) => "",
            }
        );
    }
    for t in &readable {
        if let Some(line) = binlog_window(t.as_ref(), settings).await? {
            println!("{line}");
        }
    }
    Ok(())
}

/// "point-in-time restore of DB from the volume: any time from ... to ...
/// UTC, no gap", when the target holds binlog segments.
async fn binlog_window(
    t: &dyn crate::target::Target,
    settings: &Settings,
) -> anyhow::Result<Option<String>> {
    let chain = crate::binlog::store::list_chain(t, &settings.prefix).await?;
    if chain.is_empty() {
        return Ok(None);
    }
    let mut dumps = Vec::new();
    for e in catalog::list_db(t, &settings.prefix).await? {
        if !e.has_manifest {
            continue;
        }
        let name = manifest::name_for(&e.name);
        let bytes = crate::target::get_bytes(t, &name).await?;
        if let Ok(m) = manifest::Manifest::parse(&name, &bytes) {
            if let Some(s) = m.snapshot {
                dumps.push((m.started_at, s.file, s.position));
            }
        }
    }
    let db = settings.db_name();
    let breaks = crate::binlog::store::breaks(&chain).len();
    let gaps = match breaks {
        0 => "no gap".to_owned(),
        n => format!("{n} gap(s) earlier in the archive"),
    };
    Ok(Some(match crate::binlog::store::window(&chain, &dumps) {
        Some((from, to)) => format!(
            "point-in-time restore of `{db}` from the {}: any time from {} to {} UTC, {gaps}",
            t.label(),
            from.format("%Y-%m-%d %H:%M:%S"),
            to.format("%Y-%m-%d %H:%M:%S")
        ),
        None => format!(
            "point-in-time restore of `{db}` from the {}: not possible, no dump's snapshot is followed by an unbroken binlog chain ({} segments); take a dump",
            t.label(),
            chain.len()
        ),
    }))
}

fn age(hours: f64) -> String {
    if hours < 1.0 {
        format!("{:.0}m", hours * 60.0)
    } else if hours < 48.0 {
        format!("{hours:.1}h")
    } else {
        format!("{:.1}d", hours / 24.0)
    }
}

/// Every backup, archive, full set and part that `t` holds.
async fn items(t: &dyn Target, settings: &Settings) -> Result<Vec<Item>, TargetError> {
    let mut out = Vec::new();
    let kinds = [
        ("db", catalog::list_db(t, &settings.prefix).await?),
        (
            "config",
            catalog::list_archives(t, &settings.config_archive.prefix).await?,
        ),
        (
            "uploads",
            catalog::list_archives(t, &settings.uploads_archive.prefix).await?,
        ),
    ];
    for (kind, e) in kinds
        .into_iter()
        .flat_map(|(k, es)| es.into_iter().map(move |e| (k, e)))
        // Off the volume, data without its manifest is not a backup of
        // ours (a copy is complete only once its manifest is there); on the
        // volume it is a file of the old shell script, shown with "(no manifest)".
        .filter(|(_, e)| e.has_manifest || t.label() == LocalTarget::LABEL)
    {
        out.push(Item {
            name: e.name,
            kind,
            taken: e.parsed.taken,
            size: e.size,
            manifest: e.has_manifest,
            location: e.location,
        });
    }
    for set in catalog::list_full(t, &settings.full_prefix).await? {
        let names: std::collections::HashSet<&str> =
            set.objects.iter().map(|o| o.name.as_str()).collect();
        let mut add = |name: &str, kind: &'static str, size: u64, manifest: bool| {
            out.push(Item {
                name: name.to_owned(),
                kind,
                taken: set.taken,
                size,
                manifest,
                location: set.location,
            });
        };
        if set.complete {
            let parts = set
                .objects
                .iter()
                .filter(|o| {
                    matches!(
                        catalog::parse_full_object(&settings.full_prefix, &o.name),
                        Some((_, FullObject::Part(_)))
                    )
                })
                .map(|o| o.size)
                .sum();
            add(&set.name, "full", parts, true);
        }
        for o in &set.objects {
            if let Some((_, FullObject::Part(part))) =
                catalog::parse_full_object(&settings.full_prefix, &o.name)
            {
                let kind = match part {
                    Part::Db => "full:db",
                    Part::Config => "full:config",
                    Part::Uploads => "full:uploads",
                };
                let has_manifest = names.contains(manifest::name_for(&o.name).as_str());
                add(&o.name, kind, o.size, set.complete && has_manifest);
            }
        }
    }
    Ok(out)
}
