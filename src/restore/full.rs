//! Restoring a full backup ([`locate`], [`verify`]): the set manifest and
//! every part it names are found, each part is fetched into the volume,
//! compared with the set manifest and read to the end before anything is
//! touched; `cmd::restore` then restores the database and extracts the
//! archives. Making one is `backup::full`'s.

use std::sync::Arc;

use super::open::{self, LocateError, Source};
use super::RestoreError;
use crate::config::Secret;
use crate::format::catalog::{self, Part};
use crate::format::manifest::{ManifestError, SetManifest, SetPart};
use crate::progress::human_bytes;
use crate::target::{self, Target, TargetError};

/// Errors finding or checking a full backup.
#[derive(Debug, thiserror::Error)]
pub enum FullSetError {
    /// Listing or reading a target failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// A set manifest is unreadable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// No full backup has that name.
    #[error("no full backup named {name} in {place}{}", newest_hint(.newest))]
    NotFound {
        /// The name asked for.
        name: String,
        /// Where we looked.
        place: String,
        /// The newest complete full backups, to help.
        newest: Vec<String>,
    },
    /// There is no complete full backup at all.
    #[error(
        "there is no complete full backup in {0}: run `selmai-backup backup --kind full` first"
    )]
    Empty(String),
    /// A part the set manifest names is not stored.
    #[error("full backup {set} names its {part} part {file}, which cannot be read from the {target}: {source}; nothing was restored, restore another full backup")]
    MissingPart {
        /// The set manifest's name.
        set: String,
        /// Which part.
        part: Part,
        /// The part's file.
        file: String,
        /// Where it was looked for.
        target: &'static str,
        /// Why.
        #[source]
        source: LocateError,
    },
    /// A part does not match the set manifest.
    #[error("{file}, the {part} part of full backup {set}, does not match the set manifest ({detail}); nothing was restored, restore another full backup")]
    Mismatch {
        /// The set manifest's name.
        set: String,
        /// Which part.
        part: Part,
        /// The part's file.
        file: String,
        /// What differs.
        detail: String,
    },
    /// The database part did not verify.
    #[error("the db part of full backup {set} is damaged: {source}; nothing was restored, restore another full backup")]
    Db {
        /// The set manifest's name.
        set: String,
        /// Why.
        #[source]
        source: RestoreError,
    },
    /// An archive part did not verify.
    #[error("the {part} part of full backup {set} is damaged: {source}; nothing was restored, restore another full backup")]
    Archive {
        /// The set manifest's name.
        set: String,
        /// Which part.
        part: Part,
        /// Why.
        #[source]
        source: RestoreError,
    },
}

fn newest_hint(newest: &[String]) -> String {
    if newest.is_empty() {
        String::new()
    } else {
        format!("; the newest are:\n  {}", newest.join("\n  "))
    }
}

/// A full backup chosen for restore: its set manifest and every part.
#[derive(Debug, Clone)]
pub struct FullSource {
    /// The set manifest's name.
    pub name: String,
    /// The set manifest.
    pub manifest: SetManifest,
    /// The target holding it.
    pub target: Arc<dyn Target>,
    /// Each part as the set manifest names it, with where it is stored.
    pub parts: Vec<(SetPart, Source)>,
}

impl FullSource {
    /// The part of `kind`, when the set has one.
    pub fn part(&self, kind: Part) -> Option<&Source> {
        self.parts
            .iter()
            .find(|(p, _)| p.kind == kind)
            .map(|(_, s)| s)
    }
}

/// Find the full backup `spec`: `latest-full`, a set manifest's name (with
/// or without `.full.json`) in the targets, or a path to a set manifest.
pub async fn locate(
    spec: &str,
    prefix: &str,
    targets: &[Arc<dyn Target>],
) -> Result<FullSource, FullSetError> {
    let name = if spec == catalog::LATEST_FULL || spec.ends_with(catalog::SET_SUFFIX) {
        spec.to_owned()
    } else {
        format!("{spec}{}", catalog::SET_SUFFIX)
    };
    if name.contains('/') {
        let path = std::path::Path::new(&name);
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let t: Arc<dyn Target> = Arc::new(target::local::LocalTarget::new(dir));
        if t.metadata(&file).await?.is_none() {
            return Err(FullSetError::NotFound {
                name: file,
                place: dir.display().to_string(),
                newest: Vec::new(),
            });
        }
        return open_set(t, &file).await;
    }
    let place = targets
        .iter()
        .map(|t| t.label())
        .collect::<Vec<_>>()
        .join(" and ");
    let mut complete = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        // The volume first: a set found there is used without waiting on
        // an off-site target, which may be the thing that is down. For
        // `latest-full`, an off-site target that does not answer at once
        // is left out and named.
        if i > 0 && !complete.is_empty() {
            if name != catalog::LATEST_FULL
                && complete
                    .iter()
                    .any(|(_, s): &(_, catalog::FullSetEntry)| s.name == name)
            {
                break;
            }
            if name == catalog::LATEST_FULL {
                if let Err(e) = target::reachable(t.as_ref(), target::PATIENCE).await {
                    tracing::warn!(target = t.label(), error = %e, "the {} could not be read: it might hold a full backup newer than {}", t.label(), complete[0].1.name);
                    continue;
                }
            }
        }
        let mut sets: Vec<_> = catalog::list_full(t.as_ref(), prefix)
            .await?
            .into_iter()
            .filter(|s| s.complete)
            .map(|s| (t.clone(), s))
            .collect();
        sets.sort_by_key(|(_, s)| std::cmp::Reverse(s.taken));
        complete.extend(sets);
    }
    // Newest first; for the same set the earlier target (the volume) wins.
    complete.sort_by_key(|(_, s)| std::cmp::Reverse(s.taken));
    if name == catalog::LATEST_FULL {
        let (t, s) = complete
            .into_iter()
            .next()
            .ok_or(FullSetError::Empty(place))?;
        return open_set(t, &s.name).await;
    }
    match complete.iter().find(|(_, s)| s.name == name) {
        Some((t, s)) => open_set(t.clone(), &s.name).await,
        None => {
            let mut newest: Vec<String> = complete.into_iter().map(|(_, s)| s.name).collect();
            newest.dedup();
            newest.truncate(5);
            Err(FullSetError::NotFound {
                name,
                place,
                newest,
            })
        }
    }
}

/// Read the set manifest `name` in `t` and find each of its parts there.
async fn open_set(t: Arc<dyn Target>, name: &str) -> Result<FullSource, FullSetError> {
    let manifest = SetManifest::parse(name, &target::get_bytes(t.as_ref(), name).await?)?;
    let mut parts = Vec::new();
    for p in &manifest.parts {
        let source = open::source_at(t.clone(), &p.file)
            .await
            .map_err(|source| FullSetError::MissingPart {
                set: name.to_owned(),
                part: p.kind,
                file: p.file.clone(),
                target: t.label(),
                source,
            })?;
        parts.push((p.clone(), source));
    }
    Ok(FullSource {
        name: name.to_owned(),
        manifest,
        target: t,
        parts,
    })
}

/// What verifying one part found, for the operator.
#[derive(Debug, Clone)]
pub struct PartReport {
    /// Which part.
    pub kind: Part,
    /// Its file.
    pub file: String,
    /// One line: size and what was checked.
    pub summary: String,
}

/// Check every part of `set` against the set manifest and read each to
/// the end. With `fetch_into` (the volume, before a restore), a set that
/// is only in the bucket is first copied there, set manifest included,
/// and the set is returned as it now is in the volume. Touches no
/// database and no file outside the volume.
pub async fn verify(
    set: FullSource,
    passphrase: Option<&Secret>,
    fetch_into: Option<&Arc<dyn Target>>,
) -> Result<(FullSource, Vec<PartReport>), FullSetError> {
    let name = set.name.clone();
    let mut parts = Vec::new();
    let mut reports = Vec::new();
    for (p, source) in set.parts {
        let mismatch = |detail: String| FullSetError::Mismatch {
            set: name.clone(),
            part: p.kind,
            file: p.file.clone(),
            detail,
        };
        match &source.manifest {
            Some(m) if m.size == p.size && m.sha256 == p.sha256 => {}
            Some(m) => {
                return Err(mismatch(format!(
                    "its manifest says {} bytes with SHA-256 {}, the set manifest {} bytes with SHA-256 {}",
                    m.size, m.sha256, p.size, p.sha256
                )))
            }
            None => return Err(mismatch("its own manifest is missing".into())),
        }
        let damaged = |source: RestoreError| match p.kind {
            Part::Db => FullSetError::Db {
                set: name.clone(),
                source,
            },
            part => FullSetError::Archive {
                set: name.clone(),
                part,
                source,
            },
        };
        let source = match fetch_into {
            Some(volume) => open::fetch_to_volume(source, volume)
                .await
                .map_err(damaged)?,
            None => source,
        };
        let summary = match p.kind {
            Part::Db => {
                let r = open::verify(&source, passphrase).await.map_err(damaged)?;
                format!("{}, {} statements", human_bytes(r.bytes), r.statements)
            }
            Part::Config | Part::Uploads => {
                let r = super::archive::verify(&source, passphrase)
                    .await
                    .map_err(|source| FullSetError::Archive {
                        set: name.clone(),
                        part: p.kind,
                        source,
                    })?;
                r.summary()
            }
        };
        reports.push(PartReport {
            kind: p.kind,
            file: p.file.clone(),
            summary,
        });
        parts.push((p, source));
    }
    let target = match fetch_into {
        Some(volume) if set.target.label() != volume.label() => {
            target::put_bytes(volume.as_ref(), &name, &set.manifest.to_json()).await?;
            Arc::clone(volume)
        }
        _ => set.target,
    };
    Ok((
        FullSource {
            target,
            parts,
            ..set
        },
        reports,
    ))
}
