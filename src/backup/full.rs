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
//! Restoring one is `restore::full`'s. Retention of whole sets is
//! `daemon::retention::plan_full`. This module does not know how a part
//! is made: that is the pipeline's and the archive's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backup::pipeline::{self, BackupError, BackupOutcome, Encoding, TargetFailure};
use crate::config::{ArchiveSettings, ConfigError, DbSettings, Settings};
use crate::dump::{DumpHooks, DumpOptions};
use crate::format::archive::ArchiveKind;
use crate::format::catalog::{self, Part};
use crate::format::manifest::{self, SetManifest, SetPart};
use crate::progress::human_bytes;
use crate::target::{self, Target, TargetError};

/// Errors making a full backup.
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

/// What a full backup needs of the configuration: the database, the
/// encoding, `FULL_PREFIX` and the two archives' paths.
#[derive(Debug, Clone)]
pub struct FullSpec {
    /// The database dumped as the `db` part.
    pub db: DbSettings,
    /// Compression and encryption of every part.
    pub encoding: Encoding,
    /// `FULL_PREFIX`.
    pub prefix: String,
    /// `CONFIG_PATHS` and `CONFIG_EXCLUDE`.
    pub config: ArchiveSettings,
    /// `UPLOADS_PATHS`.
    pub uploads: ArchiveSettings,
}

impl FullSpec {
    /// The full backup the configuration asks for.
    pub fn of(settings: &Settings) -> Result<FullSpec, ConfigError> {
        Ok(FullSpec {
            db: settings.db()?,
            encoding: Encoding::of(settings),
            prefix: settings.full_prefix.clone(),
            config: settings.config_archive.clone(),
            uploads: settings.uploads_archive.clone(),
        })
    }

    fn archive(&self, kind: ArchiveKind) -> &ArchiveSettings {
        match kind {
            ArchiveKind::Config => &self.config,
            ArchiveKind::Uploads => &self.uploads,
        }
    }
}

/// Make a full backup on `targets` (the first is primary): the database,
/// then each archive whose paths exist, then the set manifest.
pub async fn backup(
    spec: &FullSpec,
    targets: &[Arc<dyn Target>],
    opts: &DumpOptions,
    hooks: &dyn DumpHooks,
) -> Result<FullOutcome, FullError> {
    let started = Instant::now();
    let prefix = &spec.prefix;
    let ext = spec.encoding.compression.extension();
    let encrypted = spec.encoding.passphrase.is_some();
    let mut parts = vec![Part::Db];
    let mut warnings = Vec::new();
    for part in [Part::Config, Part::Uploads] {
        let kind = archive_kind(part).expect("an archive part");
        let paths = &spec.archive(kind).paths;
        if paths.iter().any(|p| p.exists()) {
            parts.push(part);
        } else {
            let var = format!("{}_PATHS", part.name().to_ascii_uppercase());
            let w = format!("the full backup has no {part} part: none of {var} ({paths:?}) exists");
            tracing::warn!("{w}");
            warnings.push(w);
        }
    }
    let taken = pipeline::free_time(&targets[..targets.len().min(1)], |when| {
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
            None => {
                pipeline::backup_db_as(&spec.db, &spec.encoding, targets, &name, opts, hooks).await
            }
            Some(kind) => {
                let archive = spec.archive(kind);
                pipeline::backup_archive_as(archive, &spec.encoding, targets, kind, &name).await
            }
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
