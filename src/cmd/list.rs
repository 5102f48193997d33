//! `selmai-backup list`: the backups (database dumps, configuration and
//! uploads archives, full backups with each of their parts) in every
//! target, newest first.

use std::collections::BTreeMap;

use chrono::Utc;
use serde::Serialize;

use crate::config::Settings;
use crate::format::catalog::{self, FullObject, Part};
use crate::format::manifest;
use crate::progress::human_bytes;
use crate::target::local::LocalTarget;

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
}

/// Print the list.
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    for t in super::targets(settings)? {
        let t = t.as_ref();
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
            // ours (ours store the manifest first); on the volume it is a
            // file of the old shell script, shown with "(no manifest)".
            .filter(|(_, e)| e.has_manifest || t.label() == LocalTarget::LABEL)
        {
            let row = rows.entry(e.name.clone()).or_insert_with(|| Row {
                name: e.name.clone(),
                kind,
                taken: e.parsed.taken,
                size: e.size,
                age_hours: (Utc::now() - e.parsed.taken).num_seconds() as f64 / 3600.0,
                locations: Vec::new(),
                manifest: e.has_manifest,
            });
            row.locations.push(e.location);
        }
        for set in catalog::list_full(t, &settings.full_prefix).await? {
            let names: std::collections::HashSet<&str> =
                set.objects.iter().map(|o| o.name.as_str()).collect();
            let mut add = |name: &str, kind: &'static str, size: u64, manifest: bool| {
                let row = rows.entry(name.to_owned()).or_insert_with(|| Row {
                    name: name.to_owned(),
                    kind,
                    taken: set.taken,
                    size,
                    age_hours: (Utc::now() - set.taken).num_seconds() as f64 / 3600.0,
                    locations: Vec::new(),
                    manifest,
                });
                row.locations.push(set.location);
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
            if r.manifest { "" } else { " (no manifest)" }
        );
    }
    Ok(())
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
