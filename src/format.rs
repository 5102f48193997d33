//! The formats: everything that decides how bytes look on a volume or in a
//! bucket, so that a file written today can be read forever.
//!
//! Owns: backup file names and which stored objects are ours
//! ([`catalog`]), the JSON manifests ([`manifest`]), compression
//! ([`codec`]), encryption ([`crypto`]) and the tar archives of
//! configuration and uploads ([`archive`]). Each is versioned, with golden
//! fixtures under `tests/fixtures`.
//!
//! Does not own: where the bytes go (`crate::target`), when a backup runs
//! (`crate::daemon`), or talking to the database (`crate::dump`,
//! `crate::restore`). Nothing here imports the backup, restore or daemon
//! stages; they import these formats.

pub mod archive;
pub mod catalog;
pub mod codec;
pub mod crypto;
pub mod manifest;
