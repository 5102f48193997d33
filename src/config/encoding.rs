//! The compression the configuration parses (`BACKUP_COMPRESSION`,
//! `BACKUP_COMPRESSION_LEVEL`). The type is defined here, below both the
//! configuration and [`crate::format::codec`]; its parsing and its encoders
//! and decoders are `impl` blocks in the codec, which re-exports it.

/// The default gzip level. Blocks are compressed with libdeflate, whose
/// level 1 writes SQL dumps smaller than `gzip -6` (61.2 MB against 62.5 MB
/// on the benchmark's 183 MB of SQL) at 270 MB/s on one core, 1.8 times
/// the speed of zlib-rs at level 2 for the same size (docs/BENCHMARKS.md).
pub const DEFAULT_GZIP_LEVEL: i32 = 1;

/// Compression of a backup stream, with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (a standard `.gz` that `gunzip` reads), level 1-9.
    Gzip(i32),
    /// zstd, level 1-19.
    Zstd(i32),
    /// Plain SQL.
    None,
}
