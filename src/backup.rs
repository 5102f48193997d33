//! The write path: database or files -> encode (compress, encrypt) -> the
//! volume, then every off-site target, with a manifest next to each backup.
//!
//! Owns: the streaming encode-and-store path to the volume ([`pipeline`]),
//! the copy of a finished backup to each off-site target ([`offsite`]),
//! full backups (dump and archives under one timestamp, [`full`]) and the
//! safety snapshot taken before a restore overwrites a database
//! ([`snapshot`]).
//!
//! Does not own: the dumper itself (`crate::dump`), the file formats
//! (`crate::format`), the storage targets (`crate::target`), reading a
//! backup back (`crate::restore`), or deciding when to run and what to
//! rotate afterwards (`crate::daemon`).

pub mod full;
pub mod offsite;
pub mod pipeline;
pub mod snapshot;
