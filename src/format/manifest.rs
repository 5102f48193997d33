//! The manifest: a small JSON file stored next to every backup
//! (`NAME.manifest.json`), written after the backup itself so that its
//! presence means the backup is complete.
//!
//! Format version 1 (this file's [`FORMAT_VERSION`]); fields added later are
//! optional, so every manifest written since version 1 stays readable. A
//! golden fixture (`tests/fixtures/manifest_v1.json`) is parsed by a test.
//! The manifest holds no secret.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::dump::{BinlogPosition, DumpSummary, TableStats};

/// The manifest format this build writes.
pub const FORMAT_VERSION: u32 = 1;
/// Suffix appended to a backup's name to name its manifest (a name, so
/// it is defined with the other names in [`super::catalog`]).
pub use super::catalog::MANIFEST_SUFFIX as SUFFIX;

/// The manifest's name for a backup file.
pub use super::catalog::manifest_name as name_for;

/// Errors reading a manifest.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not valid JSON of our shape.
    #[error("manifest {name} is unreadable ({source}); the backup itself may still restore: rename the manifest away and retry")]
    Parse {
        /// Manifest name.
        name: String,
        /// serde's error.
        #[source]
        source: serde_json::Error,
    },
    /// Written by a newer version of the tool.
    #[error("manifest {name} has format version {found}, newer than this selmai-backup understands ({FORMAT_VERSION}): upgrade selmai-backup")]
    TooNew {
        /// Manifest name.
        name: String,
        /// Version found.
        found: u32,
    },
}

/// The database a dump came from (empty in a file archive's manifest).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseInfo {
    /// Database name.
    pub name: String,
    /// Default character set.
    pub charset: String,
    /// Default collation.
    pub collation: String,
    /// `VERSION()` of the server.
    pub server_version: String,
}

/// Encryption parameters of an encrypted backup (no secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncryptionInfo {
    /// Container format version.
    pub format_version: u32,
    /// AEAD algorithm (`aes-256-gcm`).
    pub algorithm: String,
    /// Key derivation (`argon2id`).
    pub kdf: String,
    /// KDF memory in KiB.
    pub memory_kib: u32,
    /// KDF passes.
    pub iterations: u32,
    /// KDF lanes.
    pub parallelism: u32,
    /// Plaintext bytes per segment.
    #[serde(default)]
    pub segment_size: u32,
}

impl From<crate::format::crypto::HeaderInfo> for EncryptionInfo {
    fn from(h: crate::format::crypto::HeaderInfo) -> Self {
        EncryptionInfo {
            format_version: u32::from(h.version),
            algorithm: h.aead,
            kdf: h.kdf,
            memory_kib: h.kdf_params.memory_kib,
            iterations: h.kdf_params.iterations,
            parallelism: h.kdf_params.parallelism,
            segment_size: h.segment_size,
        }
    }
}

/// Everything recorded about one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format_version: u32,
    /// Backup kind (`db`, `config`, `uploads`).
    pub kind: String,
    /// Tool and version that wrote it.
    pub tool: String,
    /// The backup's file name.
    pub file: String,
    /// Size of the stored file in bytes.
    pub size: u64,
    /// SHA-256 of the stored file (after compression and encryption), hex.
    pub sha256: String,
    /// `gzip`, `zstd` or `none`.
    pub compression: String,
    /// Present when the file is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// The source database.
    #[serde(default)]
    pub database: DatabaseInfo,
    /// When the snapshot was taken.
    pub started_at: DateTime<Utc>,
    /// When the backup finished.
    pub finished_at: DateTime<Utc>,
    /// Binlog coordinates of the snapshot (binary logging on).
    #[serde(default)]
    pub snapshot: Option<BinlogPosition>,
    /// Tables and sequences with their row counts.
    #[serde(default)]
    pub tables: Vec<TableStats>,
    /// Views.
    #[serde(default)]
    pub views: Vec<String>,
    /// Routines (`FUNCTION f`, `PROCEDURE p`).
    #[serde(default)]
    pub routines: Vec<String>,
    /// Triggers.
    #[serde(default)]
    pub triggers: Vec<String>,
    /// Events.
    #[serde(default)]
    pub events: Vec<String>,
    /// Bytes of SQL before compression.
    #[serde(default)]
    pub sql_bytes: u64,
    /// Length in bytes of the largest single value dumped; a restore needs
    /// a `max_allowed_packet` at least this large. Absent in older manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub largest_value: Option<u64>,
    /// Every entry of a file archive, in archive order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
}

/// One entry of a file archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path inside the archive (`config/nginx/nginx.conf`).
    pub path: String,
    /// `file`, `dir` or `symlink`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Bytes stored (0 for directories and symlinks).
    pub size: u64,
    /// Permission bits (`0o644` is 420).
    pub mode: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: i64,
    /// SHA-256 of the content stored, for files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Where a symlink points, as stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The file changed while it was read: its copy may be inconsistent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub changed: bool,
}

impl Manifest {
    /// The manifest for a finished database dump stored as `file`.
    pub fn for_dump(
        file: &str,
        size: u64,
        sha256: String,
        compression: &str,
        d: &DumpSummary,
    ) -> Self {
        Manifest {
            format_version: FORMAT_VERSION,
            kind: "db".into(),
            tool: format!("selmai-backup {}", env!("CARGO_PKG_VERSION")),
            file: file.to_owned(),
            size,
            sha256,
            compression: compression.to_owned(),
            encryption: None,
            database: DatabaseInfo {
                name: d.database.clone(),
                charset: d.charset.clone(),
                collation: d.collation.clone(),
                server_version: d.server_version.clone(),
            },
            started_at: d.started_at,
            finished_at: d.finished_at,
            snapshot: d.binlog.clone(),
            tables: d.tables.clone(),
            views: d.views.clone(),
            routines: d.routines.clone(),
            triggers: d.triggers.clone(),
            events: d.events.clone(),
            sql_bytes: d.sql_bytes,
            largest_value: Some(d.largest_value),
            files: Vec::new(),
        }
    }

    /// The manifest for a file archive of `kind` (`config`, `uploads`) stored as `file`.
    #[allow(clippy::too_many_arguments)]
    pub fn for_archive(
        kind: &str,
        file: &str,
        size: u64,
        sha256: String,
        compression: &str,
        started_at: DateTime<Utc>,
        finished_at: DateTime<Utc>,
        files: Vec<FileEntry>,
    ) -> Self {
        Manifest {
            format_version: FORMAT_VERSION,
            kind: kind.to_owned(),
            tool: format!("selmai-backup {}", env!("CARGO_PKG_VERSION")),
            file: file.to_owned(),
            size,
            sha256,
            compression: compression.to_owned(),
            encryption: None,
            database: DatabaseInfo::default(),
            started_at,
            finished_at,
            snapshot: None,
            tables: Vec::new(),
            views: Vec::new(),
            routines: Vec::new(),
            triggers: Vec::new(),
            events: Vec::new(),
            sql_bytes: 0,
            largest_value: None,
            files,
        }
    }

    /// One warning per archived file that changed while it was being read.
    pub fn changed_file_warnings(&self) -> Vec<String> {
        self.files
            .iter()
            .filter(|f| f.changed)
            .map(|f| format!("{} changed while it was archived", f.path))
            .collect()
    }

    /// Serialise (pretty, stable field order).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("manifest serialises");
        v.push(b'\n');
        v
    }

    /// Parse a manifest named `name`.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        // Read the version first, so a newer manifest gets "upgrade", not a parse error.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
            name: name.to_owned(),
            source,
        })?;
        if v.format_version > FORMAT_VERSION {
            return Err(ManifestError::TooNew {
                name: name.to_owned(),
                found: v.format_version,
            });
        }
        serde_json::from_slice(bytes).map_err(|source| ManifestError::Parse {
            name: name.to_owned(),
            source,
        })
    }
}

/// One part of a full backup, as its set manifest names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPart {
    /// `db`, `config` or `uploads`.
    pub kind: crate::format::catalog::Part,
    /// The part's file name (its own manifest is `FILE.manifest.json`).
    pub file: String,
    /// Size of the stored file in bytes.
    pub size: u64,
    /// SHA-256 of the stored file, hex.
    pub sha256: String,
}

/// The set manifest of a full backup (`PREFIX_YYYYMMDD_HHMMSS.full.json`),
/// written after every part: its presence means the set is complete.
/// Same format version as [`Manifest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetManifest {
    /// Manifest format version.
    pub format_version: u32,
    /// Always `full`.
    pub kind: String,
    /// Tool and version that wrote it.
    pub tool: String,
    /// The set manifest's own name.
    pub name: String,
    /// The timestamp every part carries.
    pub taken: DateTime<Utc>,
    /// When the last part was stored.
    pub finished_at: DateTime<Utc>,
    /// Every part, in the order written (database first).
    pub parts: Vec<SetPart>,
}

impl SetManifest {
    /// The set manifest of the full backup `name` taken at `taken`.
    pub fn new(name: &str, taken: DateTime<Utc>, parts: Vec<SetPart>) -> Self {
        SetManifest {
            format_version: FORMAT_VERSION,
            kind: "full".into(),
            tool: format!("selmai-backup {}", env!("CARGO_PKG_VERSION")),
            name: name.to_owned(),
            taken,
            finished_at: Utc::now(),
            parts,
        }
    }

    /// Serialise (pretty, stable field order).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("set manifest serialises");
        v.push(b'\n');
        v
    }

    /// Parse a set manifest named `name`.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Self, ManifestError> {
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let parse_err = |source| ManifestError::Parse {
            name: name.to_owned(),
            source,
        };
        let v: Version = serde_json::from_slice(bytes).map_err(parse_err)?;
        if v.format_version > FORMAT_VERSION {
            return Err(ManifestError::TooNew {
                name: name.to_owned(),
                found: v.format_version,
            });
        }
        serde_json::from_slice(bytes).map_err(parse_err)
    }

    /// Total stored size of the parts.
    pub fn size(&self) -> u64 {
        self.parts.iter().map(|p| p.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_v1_manifest_parses() {
        let bytes = include_bytes!("../../tests/fixtures/manifest_v1.json");
        let m = Manifest::parse("manifest_v1.json", bytes).unwrap();
        assert_eq!(m.format_version, 1);
        assert_eq!(m.file, "selmai_backup_20250120_020000.sql.gz");
        assert_eq!(m.snapshot.as_ref().unwrap().gtid.as_deref(), Some("0-1-42"));
        assert_eq!(m.tables[0].rows, 3);
        // And what we write today reads back identically.
        assert_eq!(Manifest::parse("x", &m.to_json()).unwrap(), m);
    }

    #[test]
    fn golden_v1_set_manifest_parses() {
        let bytes = include_bytes!("../../tests/fixtures/set_manifest_v1.json");
        let m = SetManifest::parse("set_manifest_v1.json", bytes).unwrap();
        assert_eq!(m.name, "selmai_full_20250301_040000.full.json");
        let kinds: Vec<_> = m.parts.iter().map(|p| p.kind).collect();
        use crate::format::catalog::Part;
        assert_eq!(kinds, [Part::Db, Part::Config, Part::Uploads]);
        assert_eq!(m.size(), 1000 + 200 + 30);
        assert_eq!(SetManifest::parse("x", &m.to_json()).unwrap(), m);
        let err = SetManifest::parse("s.json", br#"{"format_version": 99}"#).unwrap_err();
        assert!(err.to_string().contains("upgrade"), "{err}");
    }

    #[test]
    fn newer_manifest_asks_for_an_upgrade() {
        let err = Manifest::parse("m.json", br#"{"format_version": 99}"#).unwrap_err();
        assert!(err.to_string().contains("upgrade"), "{err}");
    }
}
