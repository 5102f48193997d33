//! Storage targets: the places a finished backup lives (the mounted volume,
//! an S3-compatible bucket, an SFTP server).
//!
//! Every target implements [`Target`]: list by prefix, metadata, create (a
//! streaming [`Upload`] that becomes visible under its final name only on
//! [`Upload::commit`]), open for reading, delete. A target knows nothing of
//! backups, file-name patterns or retention: the catalog decides which names
//! are ours. Cross-cutting behaviour wraps a target rather than living
//! inside one: the run-wide time budget of an off-site target
//! ([`budget`]). Retries are the exception, on purpose: a bucket retries
//! each request (one part of a multipart upload, one ranged read) in
//! `s3/retry.rs`, since only the target knows which of its requests can be
//! repeated, and a wrapper could only repeat a whole upload whose bytes
//! are gone. A dry run is a retention plan that is not executed
//! (`daemon::retention`), so no target pretends to delete. The shared
//! conformance suite in
//! `tests/it/target_conformance.rs` runs against every implementation.

pub mod budget;
pub mod local;
pub mod s3;
pub mod sftp;

use std::fmt;
use std::io;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What a target knows about one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Name relative to the target's root (no directory, no bucket prefix).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time, when the target reports one.
    pub modified: Option<DateTime<Utc>>,
}

/// Errors at the boundary of a storage target; each names the target and object.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The object does not exist.
    #[error("{target}: {name} not found")]
    NotFound {
        /// Which target ("volume", "bucket").
        target: &'static str,
        /// Object name.
        name: String,
    },
    /// The volume is full.
    #[error("{target}: no space left on device while writing {name}: free space or lower retention, older backups were left untouched")]
    NoSpace {
        /// Which target.
        target: &'static str,
        /// Object being written.
        name: String,
    },
    /// Permission denied by the file system or the server.
    #[error("{target}: permission denied for {name}: {detail}")]
    Denied {
        /// Which target.
        target: &'static str,
        /// Object or location concerned.
        name: String,
        /// What the system said and what to check.
        detail: String,
    },
    /// Any other I/O failure.
    #[error("{target}: {action} {name}: {source}")]
    Io {
        /// Which target.
        target: &'static str,
        /// What we were doing ("writing", "renaming" ...).
        action: &'static str,
        /// Object name.
        name: String,
        /// Underlying error.
        #[source]
        source: io::Error,
    },
    /// The target's settings are wrong or incomplete (found before any write).
    #[error("{target}: {detail}")]
    Config {
        /// Which target.
        target: &'static str,
        /// What is wrong and which variable to fix.
        detail: String,
    },
    /// A remote service answered with an error (after retries).
    #[error("{target}: {action} {name}: {detail}")]
    Remote {
        /// Which target.
        target: &'static str,
        /// What we were doing.
        action: &'static str,
        /// Object name.
        name: String,
        /// What the server said.
        detail: String,
    },
}

impl TargetError {
    /// Classify an `io::Error` met while doing `action` on `name`.
    pub fn from_io(target: &'static str, action: &'static str, name: &str, e: io::Error) -> Self {
        let name = name.to_owned();
        match e.kind() {
            io::ErrorKind::NotFound => TargetError::NotFound { target, name },
            io::ErrorKind::StorageFull => TargetError::NoSpace { target, name },
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                TargetError::Denied {
                    target,
                    name,
                    detail: format!("{e}; check the mount and the owner of the directory"),
                }
            }
            _ => TargetError::Io {
                target,
                action,
                name,
                source: e,
            },
        }
    }
}

/// A streaming write that becomes visible under its final name only when committed.
///
/// Dropping an upload without calling [`Upload::commit`] must never leave a
/// visible object; implementations clean up in [`Upload::abort`] and, where
/// they can, on drop.
#[async_trait]
pub trait Upload: AsyncWrite + Send + Unpin {
    /// Flush, make durable and publish under the final name.
    async fn commit(self: Box<Self>) -> Result<ObjectInfo, TargetError>;
    /// Throw away everything written; the final name is left as it was.
    async fn abort(self: Box<Self>) -> Result<(), TargetError>;
}

/// A readable stream of one stored object.
pub type ObjectReader = Box<dyn AsyncRead + Send + Unpin>;

/// One place backups are stored.
#[async_trait]
pub trait Target: Send + Sync + fmt::Debug {
    /// Short label used in logs, errors and `list` ("volume", "bucket").
    fn label(&self) -> &'static str;
    /// Objects whose name starts with `prefix`, in no particular order.
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError>;
    /// Metadata of one object, `None` when it does not exist.
    async fn metadata(&self, name: &str) -> Result<Option<ObjectInfo>, TargetError>;
    /// Start writing `name`; nothing is visible under that name before commit.
    async fn create(&self, name: &str) -> Result<Box<dyn Upload>, TargetError>;
    /// Read `name` from the beginning.
    async fn open(&self, name: &str) -> Result<ObjectReader, TargetError>;
    /// Delete `name`; deleting a missing object is not an error.
    async fn delete(&self, name: &str) -> Result<(), TargetError>;
    /// The file behind `name` when the target is a local directory (so a
    /// command can tell that a path it is about to write is this object).
    fn local_path(&self, _name: &str) -> Option<std::path::PathBuf> {
        None
    }
    /// Remove what an interrupted run left behind (partial files,
    /// incomplete uploads) and return its names. Call only while holding the
    /// backup lock, or a running writer loses its work.
    async fn clean_interrupted(&self) -> Result<Vec<String>, TargetError> {
        Ok(Vec::new())
    }
    /// One request that shows the target answers, without retries: a
    /// target that is down says so at once. Used through [`reachable`].
    async fn answers(&self) -> Result<(), TargetError> {
        self.metadata(PROBE_NAME).await.map(|_| ())
    }
}

/// [`Target::clean_interrupted`] on every target, logging what was removed;
/// a target that cannot be cleaned is logged and skipped.
pub async fn clean_interrupted_all(targets: &[std::sync::Arc<dyn Target>]) {
    for t in targets {
        match t.clean_interrupted().await {
            Ok(removed) => {
                for name in removed {
                    tracing::warn!(target = t.label(), file = %name, "removed what an interrupted run left behind");
                }
            }
            Err(e) => {
                tracing::warn!(target = t.label(), error = %e, "cannot clean up after interrupted runs")
            }
        }
    }
}

/// Whether `name` is a plain object name: not empty, not hidden, no
/// directory, no control character. The remote targets share this rule so
/// that a name means the same thing on each (the volume's is the same but
/// for control characters other than NUL).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

/// [`valid_name`] as the error `target` reports for a name it refuses.
pub fn check_name(target: &'static str, name: &str) -> Result<(), TargetError> {
    if valid_name(name) {
        return Ok(());
    }
    Err(TargetError::Io {
        target,
        action: "using",
        name: name.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
    })
}

/// A target's label as words in a sentence: "the bucket", "the SFTP server".
pub fn the(label: &str) -> String {
    match label {
        "sftp" => "the SFTP server".to_owned(),
        other => format!("the {other}"),
    }
}

/// How long a command that found what it needs on the volume waits for an
/// off-site target to answer at all before going on without it.
pub const PATIENCE: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest wait between two attempts of a request.
pub const MAX_BACKOFF: std::time::Duration = std::time::Duration::from_secs(30);

/// Wait before retry number `retry` (1-based): `first`, doubled at each
/// retry, capped at [`MAX_BACKOFF`].
pub fn backoff(first: std::time::Duration, retry: u32) -> std::time::Duration {
    let factor = 1u32 << retry.saturating_sub(1).min(16);
    first.saturating_mul(factor).min(MAX_BACKOFF)
}

/// A name that is never one of ours: asking for it shows that a target answers.
pub const PROBE_NAME: &str = "selmai-backup-reachable";

/// Whether `target` answers within `patience` ([`Target::answers`], one
/// request without retries). Used where the volume has already answered,
/// so a target that is down costs at most `patience`, not its retries; a
/// target that answers is then asked in full, however long that takes.
pub async fn reachable(
    target: &dyn Target,
    patience: std::time::Duration,
) -> Result<(), TargetError> {
    match tokio::time::timeout(patience, target.answers()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(TargetError::Remote {
            target: target.label(),
            action: "reaching",
            name: "the target".into(),
            detail: format!("no answer within {} s", patience.as_secs_f64()),
        }),
    }
}

/// Write a small object (a manifest) in one go.
pub async fn put_bytes(
    target: &dyn Target,
    name: &str,
    data: &[u8],
) -> Result<ObjectInfo, TargetError> {
    let mut up = target.create(name).await?;
    if let Err(e) = up.write_all(data).await {
        let _ = up.abort().await;
        return Err(TargetError::from_io(target.label(), "writing", name, e));
    }
    up.commit().await
}

/// Read a small object (a manifest) whole.
pub async fn get_bytes(target: &dyn Target, name: &str) -> Result<Vec<u8>, TargetError> {
    let mut r = target.open(name).await?;
    let mut buf = Vec::new();
    r.read_to_end(&mut buf)
        .await
        .map_err(|e| TargetError::from_io(target.label(), "reading", name, e))?;
    Ok(buf)
}
