//! The write path: database or files -> encode (compress, encrypt) -> every
//! target, with a manifest next to each backup.
//!
//! Owns: the streaming encode-and-store path and its fan-out to the targets
//! ([`pipeline`]), full backups (dump and archives under one timestamp,
//! [`full`]) and the safety snapshot taken before a restore overwrites a
//! database ([`snapshot`]).
//!
//! Does not own: the dumper itself (`crate::dump`), the file formats
//! (`crate::format`), the storage targets (`crate::target`), reading a
//! backup back (`crate::restore`), or deciding when to run and what to
//! rotate afterwards (`crate::daemon`).

pub mod full;
pub mod pipeline;
pub mod snapshot;
