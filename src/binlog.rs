//! The continuous binlog archive: the server's binlog, received as a
//! replica and kept byte for byte in segments that go through the same
//! compression, encryption and targets as every backup, so that a
//! point-in-time restore can replay from a dump's snapshot to any moment.
//!
//! Responsible for: following the server's binlog (`binlog/protocol.rs`,
//! the replica side of the protocol), recognising transaction boundaries
//! and checksums (`binlog/event.rs`), writing segments and their manifests
//! (`binlog/segment.rs`), storing them and reading the chain back
//! (`binlog/store.rs`), the archiver loop with its reconnects, deadlines
//! and gap detection (`binlog/archiver.rs`), and the state other processes
//! read (`binlog/status.rs`).
//!
//! Not responsible for: when it runs (the daemon decides), dumps (the
//! caller passes the newest snapshot position), or replaying events into a
//! database (point-in-time restore reads the chain through
//! [`store::list_chain`] and the segments' manifests).
//!
//! # What a segment holds
//! See `binlog/segment.rs`: the magic, the file's format description, then
//! the server's own events of one byte range of one binlog file, unchanged.
//! `mariadb-binlog` reads a decrypted, decompressed segment as a binlog file.

pub mod archiver;
pub mod event;
pub mod protocol;
pub mod segment;
pub mod status;
pub mod store;

use std::path::Path;

pub use archiver::{run, Hooks, NoHooks, Options, StartPoint};
pub use segment::SegmentManifest;
pub use status::{Gap, OffsitePending, Position, Status};
pub use store::{Encoding, StoreError};

/// Errors that stop the archive (the server's are retried, not returned).
#[derive(Debug, thiserror::Error)]
pub enum BinlogError {
    /// The volume failed.
    #[error(
        "binlog archive: {action} {path}: {source}; check BACKUP_DIR (free space, permissions)"
    )]
    Io {
        /// What we were doing.
        action: &'static str,
        /// Which file or directory.
        path: String,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing segments in a target failed.
    #[error("binlog archive: {0}")]
    Store(#[from] StoreError),
    /// A task of the archive stopped unexpectedly.
    #[error("binlog archive: a task stopped: {0}")]
    Thread(String),
}

impl BinlogError {
    /// Wrap an I/O error met while doing `action` on `path`.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        BinlogError::Io {
            action,
            path: path.display().to_string(),
            source,
        }
    }
}
