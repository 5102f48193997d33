//! Full backups: the database dump and the configuration and uploads
//! archives under one timestamp, with one set manifest naming every part,
//! so that "the state of March 1st" is one name to restore.
//!
//! Making one ([`backup`]): each part goes through the pipeline as a backup
//! of its own (same compression, encryption and targets, its own manifest)
//! under a name with `FULL_PREFIX` and the set's timestamp
//! ([`catalog::full_part_name`]), which the database and archive kinds'
//! retention never lists. The set manifest
//! ([`crate::format::manifest::SetManifest`]) is written last, on every target
//! that holds every part: its presence means the set is complete. When a
//! part fails, the parts already stored are deleted: a set is there whole
//! or not at all. An archive none of whose paths exists is left out, with
//! a warning.
//!
//! Restoring one ([`locate`], [`verify`]): every part is fetched into the
//! volume, compared with the set manifest and read to the end before
//! anything is touched; `cmd::restore` then restores the database and
//! extracts the archives. Retention of whole sets is
//! [`crate::daemon::retention::prune_full`]. This module does not know how a part
//! is made or restored: that is the pipeline's and the archive's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backup::pipeline::{self, BackupError, BackupOutcome, TargetFailure};
use crate::config::{Secret, Settings};
use crate::dump::{DumpHooks, DumpOptions};
use crate::format::archive::{self, ArchiveError, ArchiveKind};
use crate::format::catalog::{self, Part};
use crate::format::manifest::{self, ManifestError, SetManifest, SetPart};
use crate::progress::human_bytes;
use crate::restore::open::{self, LocateError, Source};
use crate::restore::RestoreError;
use crate::target::{self, Target, TargetError};

/// Errors making, finding or checking a full backup.
#[derive(Debug, thiserror::Error)]
pub enum FullError {
    /// One part could not be made; the parts made before it were deleted.
    #[error("the {part} part of full backup {set} failed: {source}; no part of it was kept, fix the cause and run the full backup again")]
    Part {
        /// The set manifest's name.
        set: String,
        /// Which part.
        part: Part,
        /// Why.
        #[source]
        source: BackupError,
    },
    /// The set manifest could not be stored on the volume.
    #[error("storing the set manifest {set} in the {target} failed: {source}; its parts were deleted, run the full backup again")]
    SetManifest {
        /// The set manifest's name.
        set: String,
        /// Which target.
        target: &'static str,
        /// Why.
        #[source]
        source: TargetError,
    },
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
        source: ArchiveError,
    },
}

fn newest_hint(newest: &[String]) -> String {
    if newest.is_empty() {
        String::new()
    } else {
        format!("; the newest are:\n  {}", newest.join("\n  "))
    }
}

/// What a successful full backup produced.
#[derive(Debug)]
pub struct FullOutcome {
    /// The set manifest's name.
    pub set: String,
    /// The set manifest.
    pub manifest: SetManifest,
    /// Each part's own outcome (its `failed` moved to [`FullOutcome::failed`]).
    pub parts: Vec<BackupOutcome>,
    /// Targets holding the complete set.
    pub stored: Vec<&'static str>,
    /// Secondary targets that did not get the complete set (they hold none of it).
    pub failed: Vec<TargetFailure>,
    /// Parts left out and files that changed while they were read.
    pub warnings: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

/// The archive kind of an archive part.
fn archive_kind(part: Part) -> Option<ArchiveKind> {
    match part {
        Part::Db => None,
        Part::Config => Some(ArchiveKind::Config),
        Part::Uploads => Some(ArchiveKind::Uploads),
    }
}

/// Make a full backup on `targets` (the first is primary): the database,
/// then each archive whose paths exist, then the set manifest.
pub async fn backup(
    settings: &Settings,
    targets: &[Arc<dyn Target>],
    opts: &DumpOptions,
    hooks: &dyn DumpHooks,
) -> Result<FullOutcome, FullError> {
    let started = Instant::now();
    let prefix = &settings.full_prefix;
    let ext = settings.compression.extension();
    let encrypted = settings.passphrase.is_some();
    let mut parts = vec![Part::Db];
    let mut warnings = Vec::new();
    for part in [Part::Config, Part::Uploads] {
        let kind = archive_kind(part).expect("an archive part");
        let paths = &kind.settings(settings).paths;
        if paths.iter().any(|p| p.exists()) {
            parts.push(part);
        } else {
            let var = format!("{}_PATHS", part.name().to_ascii_uppercase());
            let w = format!("the full backup has no {part} part: none of {var} ({paths:?}) exists");
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }
    let taken = pipeline::free_time(targets, |when| {
        let mut names = vec![catalog::full_set_name(prefix, when)];
        for &p in &parts {
            let n = catalog::full_part_name(prefix, when, p, ext, encrypted);
            names.push(manifest::name_for(&n));
            names.push(n);
        }
        names
    })
    .await?;
    // Names carry whole seconds; the set manifest says the same instant.
    let taken = chrono::Timelike::with_nanosecond(&taken, 0).unwrap_or(taken);
    let set = catalog::full_set_name(prefix, taken);
    tracing::info!(set = %set, parts = ?parts, "full backup started");
    let mut done: Vec<(Part, BackupOutcome)> = Vec::new();
    for part in parts {
        let name = catalog::full_part_name(prefix, taken, part, ext, encrypted);
        let made = match archive_kind(part) {
            None => pipeline::backup_db_as(settings, targets, &name, opts, hooks).await,
            Some(kind) => pipeline::backup_archive_as(settings, targets, kind, &name).await,
        };
        match made {
            Ok(o) => done.push((part, o)),
            Err(source) => {
                for t in targets {
                    discard(t.as_ref(), &done).await;
                }
                return Err(FullError::Part { set, part, source });
            }
        }
    }
    let manifest = SetManifest::new(
        &set,
        taken,
        done.iter()
            .map(|(part, o)| SetPart {
                kind: *part,
                file: o.file.clone(),
                size: o.manifest.size,
                sha256: o.manifest.sha256.clone(),
            })
            .collect(),
    );
    let json = manifest.to_json();
    let mut stored = Vec::new();
    let mut failed: Vec<TargetFailure> = Vec::new();
    for (_, o) in done.iter_mut() {
        failed.append(&mut o.failed);
    }
    for (i, t) in targets.iter().enumerate() {
        let label = t.label();
        // A target that missed a part (its failure is already in `failed`)
        // gets no set manifest, and loses the parts it has.
        if !done.iter().all(|(_, o)| o.stored.contains(&label)) {
            discard(t.as_ref(), &done).await;
            continue;
        }
        match target::put_bytes(t.as_ref(), &set, &json).await {
            Ok(_) => stored.push(label),
            Err(source) if i == 0 => {
                for t in targets {
                    discard(t.as_ref(), &done).await;
                }
                return Err(FullError::SetManifest {
                    set,
                    target: label,
                    source,
                });
            }
            Err(error) => {
                tracing::warn!(target = label, error = %error, "off-site copy of the full backup failed; the local one is kept");
                discard(t.as_ref(), &done).await;
                failed.push(TargetFailure {
                    target: label,
                    error,
                });
            }
        }
    }
    for (_, o) in &done {
        warnings.extend(o.manifest.changed_file_warnings());
    }
    let elapsed = started.elapsed();
    tracing::info!(
        set = %set,
        size = %human_bytes(manifest.size()),
        parts = done.len(),
        seconds = format!("{:.1}", elapsed.as_secs_f64()),
        "full backup finished"
    );
    Ok(FullOutcome {
        set,
        manifest,
        parts: done.into_iter().map(|(_, o)| o).collect(),
        stored,
        failed,
        warnings,
        elapsed,
    })
}

/// Delete the stored parts `done` (data and manifests) from `t`, logging
/// what stays.
async fn discard(t: &dyn Target, done: &[(Part, BackupOutcome)]) {
    for (_, o) in done {
        for name in [manifest::name_for(&o.file), o.file.clone()] {
            if let Err(e) = t.delete(&name).await {
                tracing::warn!(target = t.label(), file = %name, error = %e, "cannot delete a part of an unfinished full backup; retention removes it later");
            }
        }
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
) -> Result<FullSource, FullError> {
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
            return Err(FullError::NotFound {
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
    for t in targets {
        for s in catalog::list_full(t.as_ref(), prefix).await? {
            if s.complete {
                complete.push((t.clone(), s));
            }
        }
    }
    // Newest first; for the same set the earlier target (the volume) wins.
    complete.sort_by_key(|(_, s)| std::cmp::Reverse(s.taken));
    if name == catalog::LATEST_FULL {
        let (t, s) = complete.into_iter().next().ok_or(FullError::Empty(place))?;
        return open_set(t, &s.name).await;
    }
    match complete.iter().find(|(_, s)| s.name == name) {
        Some((t, s)) => open_set(t.clone(), &s.name).await,
        None => {
            let mut newest: Vec<String> = complete.into_iter().map(|(_, s)| s.name).collect();
            newest.dedup();
            newest.truncate(5);
            Err(FullError::NotFound {
                name,
                place,
                newest,
            })
        }
    }
}

/// Read the set manifest `name` in `t` and find each of its parts there.
async fn open_set(t: Arc<dyn Target>, name: &str) -> Result<FullSource, FullError> {
    let manifest = SetManifest::parse(name, &target::get_bytes(t.as_ref(), name).await?)?;
    let mut parts = Vec::new();
    for p in &manifest.parts {
        let source = open::source_at(t.clone(), &p.file)
            .await
            .map_err(|source| FullError::MissingPart {
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
) -> Result<(FullSource, Vec<PartReport>), FullError> {
    let name = set.name.clone();
    let mut parts = Vec::new();
    let mut reports = Vec::new();
    for (p, source) in set.parts {
        let mismatch = |detail: String| FullError::Mismatch {
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
            Part::Db => FullError::Db {
                set: name.clone(),
                source,
            },
            part => FullError::Archive {
                set: name.clone(),
                part,
                source: ArchiveError::Open(source),
            },
        };
        let source = match fetch_into {
            Some(volume) => open::fetch_to_volume(source, volume)
                .await
                .map_err(damaged)?,
            None => source,
        };
        let summary = match archive_kind(p.kind) {
            None => {
                let r = open::verify(&source, passphrase).await.map_err(damaged)?;
                format!("{}, {} statements", human_bytes(r.bytes), r.statements)
            }
            Some(_) => {
                let r = archive::verify(&source, passphrase)
                    .await
                    .map_err(|source| FullError::Archive {
                        set: name.clone(),
                        part: p.kind,
                        source,
                    })?;
                format!("{} entries, {} of files", r.entries, human_bytes(r.bytes))
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
