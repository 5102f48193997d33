//! Off-site copies of one backup from the volume to an off-site target
//! (bucket, SFTP), whatever the target, the completing object last.
//!
//! A backup is written to the off-site targets in the same pass as to the
//! volume (`pipeline`); this module copies it from the volume to a target
//! that could not take it then: one that did not answer in time
//! ([`copy_backup`]), and those a run missed, caught up by
//! `crate::daemon::offsite` after each run. A backup exists on an off-site
//! target once its last object is there (a single backup's manifest, or
//! for a full backup the set manifest), which is why that object is always
//! copied last.
//!
//! Not here: how long to wait on a target (`crate::target::budget` wraps it
//! for the run), retries (each target), which backups to copy later.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::format::manifest;
use crate::target::{ObjectInfo, Target, TargetError};

/// An off-site target that could not take a copy.
#[derive(Debug)]
pub struct TargetFailure {
    /// Which target.
    pub target: &'static str,
    /// Why.
    pub error: TargetError,
}

/// One backup as copied: its objects in copy order, the one that makes it
/// complete last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    /// The backup's name (a full backup: its set manifest).
    pub name: String,
    /// When it was taken.
    pub taken: DateTime<Utc>,
    /// Objects to copy, the completing one (manifest, set manifest) last.
    pub objects: Vec<String>,
}

impl Unit {
    /// A database dump, file archive or binlog segment and its manifest:
    /// the data first and the manifest last. Off the volume a backup counts
    /// once its manifest is there (`list`, `latest`, `health` and the
    /// catch-up look for it), so data left without one by a cut copy is
    /// never taken for a backup, and the next catch-up completes it.
    pub fn single(name: &str, taken: DateTime<Utc>) -> Self {
        Unit {
            name: name.to_owned(),
            taken,
            objects: vec![name.to_owned(), manifest::name_for(name)],
        }
    }

    /// The object whose presence makes the backup complete.
    pub fn last(&self) -> &str {
        self.objects.last().map_or("", String::as_str)
    }
}

/// Copy `name` from `from` to `to`, streaming; nothing is visible under
/// the name on `to` before its upload commits.
pub async fn copy_object(
    from: &dyn Target,
    to: &dyn Target,
    name: &str,
) -> Result<ObjectInfo, TargetError> {
    let mut reader = from.open(name).await?;
    let mut up = to.create(name).await?;
    if let Err(e) = tokio::io::copy(&mut reader, &mut up).await {
        let _ = up.abort().await;
        // Say which side failed: the volume's read, or the target's write.
        let e = TargetError::from_io(to.label(), "copying", name, e);
        return Err(e);
    }
    if let Err(e) = tokio::io::AsyncWriteExt::shutdown(&mut up).await {
        let _ = up.abort().await;
        return Err(TargetError::from_io(to.label(), "copying", name, e));
    }
    up.commit().await
}

/// Copy `unit` from the volume to `to`: its objects in order, the
/// completing one last. Objects already there with the same size are not
/// sent again (a copy interrupted after them). When the completing object
/// cannot be written, the data just copied is taken back: without it, it
/// is not a backup.
pub async fn copy_unit(
    volume: &dyn Target,
    to: &dyn Target,
    unit: &Unit,
    present: &HashMap<String, u64>,
) -> Result<(), TargetError> {
    let mut copied = Vec::new();
    for (i, name) in unit.objects.iter().enumerate() {
        let completing = i + 1 == unit.objects.len();
        if !completing {
            let size = volume.metadata(name).await?.map(|o| o.size);
            if size.is_some() && present.get(name).copied() == size {
                continue;
            }
        }
        match copy_object(volume, to, name).await {
            Ok(_) => copied.push(name.as_str()),
            Err(e) => {
                for name in copied {
                    let _ = to.delete(name).await;
                }
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Copy the backup `unit`, just written to `targets[0]` (the volume), to
/// every other target. Returns the targets holding it (the volume first)
/// and those that failed.
pub async fn copy_backup(
    targets: &[Arc<dyn Target>],
    unit: &Unit,
) -> (Vec<&'static str>, Vec<TargetFailure>) {
    let Some((volume, others)) = targets.split_first() else {
        return (Vec::new(), Vec::new());
    };
    let mut stored = vec![volume.label()];
    let mut failed = Vec::new();
    for t in others {
        match copy_unit(volume.as_ref(), t.as_ref(), unit, &HashMap::new()).await {
            Ok(()) => stored.push(t.label()),
            Err(error) => {
                tracing::warn!(target = t.label(), file = %unit.name, error = %error, "off-site copy failed; the local backup is kept and a later run copies it");
                failed.push(TargetFailure {
                    target: t.label(),
                    error,
                });
            }
        }
    }
    (stored, failed)
}
