//! Catching up off-site copies: after each run and at start, copy to each
//! off-site target every backup that retention keeps on the volume and that
//! the target lacks, newest first, manifest last, and record what is still
//! missing in the state file (`health` reads it, `list` shows what is local
//! only). Stops on a target at its first failure: the rest waits for the
//! next run, within the run's budget (`crate::target::budget`).
//!
//! Not here: copying one backup (`crate::backup::offsite`), retention's
//! rules (`retention::plan_times`).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;

use crate::backup::offsite::{copy_unit, Unit};
use crate::config::Settings;
use crate::daemon::retention;
use crate::daemon::state::{self, Missing, OffsiteCopies, State};
use crate::format::catalog::{self, Entry};
use crate::format::manifest;
use crate::target::{Target, TargetError};

/// The name prefixes of every kind of backup, for one listing each.
fn prefixes(s: &Settings) -> [&str; 4] {
    [
        &s.prefix,
        &s.config_archive.prefix,
        &s.uploads_archive.prefix,
        &s.full_prefix,
    ]
}

/// Every complete backup on the volume that retention keeps, newest first.
pub async fn kept_on_volume(volume: &dyn Target, s: &Settings) -> Result<Vec<Unit>, TargetError> {
    let tz = s.schedule.tz;
    let mut units = Vec::new();
    let singles = [
        (catalog::list_db(volume, &s.prefix).await?, &s.retention),
        (
            catalog::list_archives(volume, &s.config_archive.prefix).await?,
            &s.config_retention,
        ),
        (
            catalog::list_archives(volume, &s.uploads_archive.prefix).await?,
            &s.retention,
        ),
    ];
    for (entries, policy) in singles {
        let entries: Vec<Entry> = entries.into_iter().filter(|e| e.has_manifest).collect();
        let times: Vec<_> = entries.iter().map(|e| e.parsed.taken).collect();
        for (e, verdict) in entries
            .iter()
            .zip(retention::plan_times(&times, policy, tz))
        {
            if verdict.keeps() {
                units.push(Unit::single(&e.name, e.parsed.taken));
            }
        }
    }
    let sets: Vec<_> = catalog::list_full(volume, &s.full_prefix)
        .await?
        .into_iter()
        .filter(|set| set.complete)
        .collect();
    let times: Vec<_> = sets.iter().map(|set| set.taken).collect();
    for (set, verdict) in sets
        .iter()
        .zip(retention::plan_times(&times, &s.full_retention, tz))
    {
        if verdict.keeps() {
            let mut objects: Vec<String> = set.objects.iter().map(|o| o.name.clone()).collect();
            // Data, then each part's manifest, then the set manifest.
            objects.sort_by_key(|n| {
                (
                    n.ends_with(catalog::SET_SUFFIX),
                    n.ends_with(manifest::SUFFIX),
                    n.clone(),
                )
            });
            units.push(Unit {
                name: set.name.clone(),
                taken: set.taken,
                objects,
            });
        }
    }
    units.sort_by(|a, b| b.taken.cmp(&a.taken).then_with(|| a.name.cmp(&b.name)));
    Ok(units)
}

/// What [`catch_up`] did.
#[derive(Debug, Default)]
pub struct CatchUp {
    /// Backups copied, with the target each went to.
    pub copied: Vec<(&'static str, String)>,
    /// What each off-site target still lacks (for the state file).
    pub copies: Vec<OffsiteCopies>,
}

impl CatchUp {
    /// One line per off-site target still missing backups, for the run's warnings.
    pub fn warnings(&self) -> Vec<String> {
        self.copies
            .iter()
            .filter_map(|c| {
                let newest = c.missing.first()?;
                Some(format!(
                    "{} backup(s) kept on the volume are not in {} yet, the newest {}: {}",
                    c.missing.len(),
                    crate::target::the(&c.target),
                    newest.name,
                    newest.error
                ))
            })
            .collect()
    }
}

/// Copy to every off-site target (`targets[1..]`) each backup that
/// retention keeps on the volume (`targets[0]`) and that the target lacks,
/// newest first; stop on a target at its first failure (the rest waits for
/// the next run). `previous` is what the state file recorded, used when a
/// target cannot even be listed. Errors only when the volume cannot be
/// listed.
pub async fn catch_up(
    targets: &[Arc<dyn Target>],
    s: &Settings,
    previous: &[OffsiteCopies],
) -> Result<CatchUp, TargetError> {
    let mut out = CatchUp::default();
    let Some((volume, others)) = targets.split_first() else {
        return Ok(out);
    };
    if others.is_empty() {
        return Ok(out);
    }
    let units = kept_on_volume(volume.as_ref(), s).await?;
    for t in others {
        let label = t.label();
        let before = previous.iter().find(|c| c.target == label);
        let present = match list_all(t.as_ref(), &prefixes(s)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(target = label, error = %e, "cannot list the off-site copies; a later run copies what is missing");
                out.copies
                    .push(unknown(label, &units, before, &e.to_string()));
                continue;
            }
        };
        let mut missing = Vec::new();
        let mut gave_up: Option<String> = None;
        for unit in units.iter().filter(|u| !present.contains_key(u.last())) {
            if let Some(why) = &gave_up {
                missing.push(Missing {
                    name: unit.name.clone(),
                    taken: unit.taken,
                    error: why.clone(),
                });
                continue;
            }
            match copy_unit(volume.as_ref(), t.as_ref(), unit, &present).await {
                Ok(()) => {
                    tracing::info!(target = label, file = %unit.name, "copied a backup that was missing off-site");
                    out.copied.push((label, unit.name.clone()));
                }
                Err(e) => {
                    tracing::warn!(target = label, file = %unit.name, error = %e, "catching up the off-site copy failed; a later run tries again");
                    let why = e.to_string();
                    missing.push(Missing {
                        name: unit.name.clone(),
                        taken: unit.taken,
                        error: why.clone(),
                    });
                    gave_up = Some(why);
                }
            }
        }
        out.copies.push(OffsiteCopies {
            target: label.to_owned(),
            checked: Some(Utc::now()),
            missing,
        });
    }
    Ok(out)
}

/// After a run, holding the `BACKUP_DIR` lock: remove what interrupted
/// uploads left on each off-site target, [`catch_up`], and record what is
/// still missing in the state file for `health`. Returns one warning per
/// target still missing something.
pub async fn catch_up_and_record(targets: &[Arc<dyn Target>], s: &Settings) -> Vec<String> {
    let dir = &s.backup_dir;
    let previous = State::load(dir).map(|st| st.offsite).unwrap_or_default();
    if targets.len() < 2 {
        // No off-site target any more: nothing is missing from one.
        if !previous.is_empty() {
            if let Err(e) = state::record_offsite(dir, Vec::new()) {
                tracing::warn!(error = %e, "cannot update the state file");
            }
        }
        return Vec::new();
    }
    crate::target::clean_interrupted_all(&targets[1..]).await;
    match catch_up(targets, s, &previous).await {
        Ok(c) => {
            if let Err(e) = state::record_offsite(dir, c.copies.clone()) {
                tracing::error!(error = %e, "cannot record the off-site copies; `health` will not see them");
            }
            c.warnings()
        }
        Err(e) => vec![format!(
            "cannot list the volume to catch up the off-site copies: {e}"
        )],
    }
}

/// Names and sizes of everything under the kinds' prefixes in `t`.
async fn list_all(t: &dyn Target, prefixes: &[&str]) -> Result<HashMap<String, u64>, TargetError> {
    let mut out = HashMap::new();
    let mut seen = Vec::new();
    for p in prefixes {
        // Prefixes may share a beginning; each listing is asked once.
        if seen.contains(p) {
            continue;
        }
        seen.push(*p);
        for o in t.list(p).await? {
            out.insert(o.name, o.size);
        }
    }
    Ok(out)
}

/// What a target that cannot be listed lacks, as far as we know: what it
/// lacked when last listed and is still kept, and every kept backup taken
/// since.
fn unknown(
    label: &str,
    units: &[Unit],
    before: Option<&OffsiteCopies>,
    error: &str,
) -> OffsiteCopies {
    let checked = before.and_then(|b| b.checked);
    let missing = units
        .iter()
        .filter(|u| {
            checked.is_none_or(|c| u.taken >= c - chrono::Duration::seconds(1))
                || before.is_some_and(|b| b.missing.iter().any(|m| m.name == u.name))
        })
        .map(|u| Missing {
            name: u.name.clone(),
            taken: u.taken,
            error: error.to_owned(),
        })
        .collect();
    OffsiteCopies {
        target: label.to_owned(),
        checked,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn unit(name: &str, hour: u32) -> Unit {
        Unit::single(name, Utc.with_ymd_and_hms(2025, 1, 20, hour, 0, 0).unwrap())
    }

    #[test]
    fn an_unlistable_target_lacks_what_it_lacked_and_everything_newer() {
        let units = [unit("c", 9), unit("b", 5), unit("a", 2)];
        let before = OffsiteCopies {
            target: "bucket".into(),
            checked: Some(Utc.with_ymd_and_hms(2025, 1, 20, 6, 0, 0).unwrap()),
            missing: vec![Missing {
                name: "a".into(),
                taken: units[2].taken,
                error: "old".into(),
            }],
        };
        let now = unknown("bucket", &units, Some(&before), "down");
        let names: Vec<_> = now.missing.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["c", "a"]);
        assert!(now.missing.iter().all(|m| m.error == "down"));
        assert_eq!(now.checked, before.checked);
        // Never listed: every kept backup may be missing.
        let never = unknown("bucket", &units, None, "down");
        assert_eq!(never.missing.len(), 3);
    }
}
