//! Backup names, and which stored objects are ours.
//!
//! A database backup is named `PREFIX_YYYYMMDD_HHMMSS.sql[.gz|.zst][.enc|.gpg]`,
//! a file archive `PREFIX_YYYYMMDD_HHMMSS.tar[.gz|.zst][.enc]` with its own prefix
//! (the old shell script's format, timestamps in UTC), with its manifest
//! beside it. Only names matching that pattern with our prefix are ever
//! listed, picked by `latest` or (later) rotated: foreign files in the same
//! volume or bucket prefix are invisible to us. Also holds the directory lock
//! that keeps two backups or restores from running at once. This module
//! does not read backup contents.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

use crate::manifest;
use crate::target::{ObjectInfo, Target, TargetError};

/// Timestamp layout inside names (`20250120_020000`).
const STAMP: &str = "%Y%m%d_%H%M%S";

/// A parsed backup file name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName {
    /// When the backup was taken (UTC).
    pub taken: DateTime<Utc>,
    /// `.sql.gz`, `.sql.zst`, `.sql` (without `.enc`/`.gpg`).
    pub extension: String,
    /// Ends in `.enc` (our encryption).
    pub encrypted: bool,
    /// Ends in `.gpg` (the old runbook's gpg encryption).
    pub gpg: bool,
}

/// The file name for a database backup taken at `taken`.
pub fn db_file_name(
    prefix: &str,
    taken: DateTime<Utc>,
    compression_ext: &str,
    encrypted: bool,
) -> String {
    format!(
        "{prefix}_{}.sql{compression_ext}{}",
        taken.format(STAMP),
        if encrypted { ".enc" } else { "" }
    )
}

/// The file name for a file archive (`PREFIX_YYYYMMDD_HHMMSS.tar.gz[.enc]`).
pub fn archive_file_name(
    prefix: &str,
    taken: DateTime<Utc>,
    compression_ext: &str,
    encrypted: bool,
) -> String {
    format!(
        "{prefix}_{}.tar{compression_ext}{}",
        taken.format(STAMP),
        if encrypted { ".enc" } else { "" }
    )
}

/// Whether `name` is a file archive (`.tar`, `.tar.gz`, `.tar.zst`, maybe
/// `.enc`) rather than a database dump.
pub fn is_archive_name(name: &str) -> bool {
    let base = name.strip_suffix(".enc").unwrap_or(name);
    [".tar", ".tar.gz", ".tar.zst"]
        .iter()
        .any(|e| base.ends_with(e))
}

/// Parse `name` as one of our database backups with `prefix`; `None` if it is not ours.
pub fn parse_db_name(prefix: &str, name: &str) -> Option<BackupName> {
    parse_name(prefix, name, &[".sql", ".sql.gz", ".sql.zst"])
}

/// Parse `name` as one of our file archives with `prefix`; `None` if it is not ours.
pub fn parse_archive_name(prefix: &str, name: &str) -> Option<BackupName> {
    parse_name(prefix, name, &[".tar", ".tar.gz", ".tar.zst"]).filter(|p| !p.gpg)
}

fn parse_name(prefix: &str, name: &str, extensions: &[&str]) -> Option<BackupName> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('_')?;
    if rest.len() < 15 {
        return None;
    }
    let (stamp, ext) = rest.split_at(15);
    let taken = NaiveDateTime::parse_from_str(stamp, STAMP).ok()?;
    let (ext, encrypted, gpg) = if let Some(e) = ext.strip_suffix(".enc") {
        (e, true, false)
    } else if let Some(e) = ext.strip_suffix(".gpg") {
        (e, false, true)
    } else {
        (ext, false, false)
    };
    if !extensions.contains(&ext) {
        return None;
    }
    Some(BackupName {
        taken: Utc.from_utc_datetime(&taken),
        extension: ext.to_owned(),
        encrypted,
        gpg,
    })
}

/// One backup as found in a target.
#[derive(Debug, Clone)]
pub struct Entry {
    /// File name.
    pub name: String,
    /// Parsed name.
    pub parsed: BackupName,
    /// Stored size.
    pub size: u64,
    /// Whether its manifest is stored beside it.
    pub has_manifest: bool,
    /// Which target holds it.
    pub location: &'static str,
}

/// Our database backups in `target`, newest first.
pub async fn list_db(target: &dyn Target, prefix: &str) -> Result<Vec<Entry>, TargetError> {
    let objects = target.list(prefix).await?;
    Ok(entries(&objects, prefix, target.label(), parse_db_name))
}

/// Our file archives with `prefix` in `target`, newest first.
pub async fn list_archives(target: &dyn Target, prefix: &str) -> Result<Vec<Entry>, TargetError> {
    let objects = target.list(prefix).await?;
    Ok(entries(
        &objects,
        prefix,
        target.label(),
        parse_archive_name,
    ))
}

fn entries(
    objects: &[ObjectInfo],
    prefix: &str,
    location: &'static str,
    parse: fn(&str, &str) -> Option<BackupName>,
) -> Vec<Entry> {
    let names: std::collections::HashSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    let mut out: Vec<Entry> = objects
        .iter()
        .filter_map(|o| {
            let parsed = parse(prefix, &o.name)?;
            Some(Entry {
                has_manifest: names.contains(manifest::name_for(&o.name).as_str()),
                name: o.name.clone(),
                parsed,
                size: o.size,
                location,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.parsed
            .taken
            .cmp(&a.parsed.taken)
            .then_with(|| b.name.cmp(&a.name))
    });
    out
}

/// Errors taking the lock.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it.
    #[error("another backup or restore is running (lock {0} is held); wait for it to finish")]
    Busy(PathBuf),
    /// The lock file could not be opened.
    #[error(
        "cannot open the lock file {path}: {source}; check that BACKUP_DIR exists and is writable"
    )]
    Open {
        /// Lock path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// An exclusive lock on `BACKUP_DIR`, released when dropped (or when the
/// process dies, even by `kill -9`: it is an `flock`).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// The lock file's name inside `BACKUP_DIR`.
pub const LOCK_FILE: &str = ".selmai-backup.lock";

/// Take the lock on `dir` without waiting.
pub fn lock_dir(dir: &Path) -> Result<DirLock, LockError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LockError::Open {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(DirLock { _file: file }),
        Err(TryLockError::WouldBlock) => Err(LockError::Busy(path)),
        Err(TryLockError::Error(source)) => Err(LockError::Open { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("selmai_backup_20250120_020000.sql.gz", Some((".sql.gz", false, false)))]
    #[case("selmai_backup_20250120_020000.sql.zst.enc", Some((".sql.zst", true, false)))]
    #[case("selmai_backup_20250120_020000.sql.gz.gpg", Some((".sql.gz", false, true)))]
    #[case("selmai_backup_20250120_020000.sql", Some((".sql", false, false)))]
    #[case("selmai_backup_20250120_020000.sql.gz.manifest.json", None)]
    #[case("selmai_backup_20251320_020000.sql.gz", None)]
    #[case("selmai_backup_latest.sql.gz", None)]
    #[case("other_20250120_020000.sql.gz", None)]
    #[case("selmai_backup_20250120_020000.tar.gz", None)]
    #[case("selmai_backup_extra_20250120_020000.sql.gz", None)]
    fn names(#[case] name: &str, #[case] want: Option<(&str, bool, bool)>) {
        let got = parse_db_name("selmai_backup", name).map(|p| (p.extension, p.encrypted, p.gpg));
        assert_eq!(got, want.map(|(e, a, b)| (e.to_string(), a, b)));
    }

    #[rstest]
    #[case("selmai_config_20250120_020000.tar.gz", true)]
    #[case("selmai_uploads_20250120_020000.tar.zst.enc", true)]
    #[case("/tmp/x/selmai_config_20250120_020000.tar", true)]
    #[case("selmai_backup_20250120_020000.sql.gz", false)]
    #[case("selmai_config_20250120_020000.tar.gz.manifest.json", false)]
    fn archive_names(#[case] name: &str, #[case] want: bool) {
        assert_eq!(is_archive_name(name), want);
    }

    #[rstest]
    #[case("selmai_config_20250120_020000.tar.gz", Some((".tar.gz", false)))]
    #[case("selmai_config_20250120_020000.tar.zst.enc", Some((".tar.zst", true)))]
    #[case("selmai_config_20250120_020000.tar.gz.manifest.json", None)]
    #[case("selmai_config_20250120_020000.sql.gz", None)]
    #[case("selmai_config_20250120_020000.tar.gz.gpg", None)]
    #[case("selmai_configs_20250120_020000.tar.gz", None)]
    fn archive_names_parse(#[case] name: &str, #[case] want: Option<(&str, bool)>) {
        let got = parse_archive_name("selmai_config", name).map(|p| (p.extension, p.encrypted));
        assert_eq!(got, want.map(|(e, a)| (e.to_string(), a)));
    }

    #[test]
    fn archive_name_has_the_tar_extension() {
        let t = Utc.with_ymd_and_hms(2025, 1, 20, 2, 0, 0).unwrap();
        let n = archive_file_name("selmai_config", t, ".gz", true);
        assert_eq!(n, "selmai_config_20250120_020000.tar.gz.enc");
    }

    #[test]
    fn name_round_trips() {
        let t = Utc.with_ymd_and_hms(2025, 1, 20, 2, 0, 0).unwrap();
        let n = db_file_name("selmai_backup", t, ".gz", false);
        assert_eq!(n, "selmai_backup_20250120_020000.sql.gz");
        assert_eq!(parse_db_name("selmai_backup", &n).unwrap().taken, t);
    }

    #[test]
    fn entries_are_ours_only_and_newest_first() {
        let o = |n: &str| ObjectInfo {
            name: n.into(),
            size: 1,
            modified: None,
        };
        let objs = [
            o("selmai_backup_20250101_000000.sql.gz"),
            o("selmai_backup_20250102_000000.sql.gz"),
            o("selmai_backup_20250102_000000.sql.gz.manifest.json"),
            o("selmai_backup_notes.txt"),
            o("selmai_backup_20250103_000000.sql.gz.partial"),
        ];
        let e = entries(&objs, "selmai_backup", "volume", parse_db_name);
        let names: Vec<_> = e
            .iter()
            .map(|e| (e.name.as_str(), e.has_manifest))
            .collect();
        assert_eq!(
            names,
            [
                ("selmai_backup_20250102_000000.sql.gz", true),
                ("selmai_backup_20250101_000000.sql.gz", false)
            ]
        );
    }

    #[test]
    fn lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let l = lock_dir(d.path()).unwrap();
        assert!(matches!(lock_dir(d.path()), Err(LockError::Busy(_))));
        drop(l);
        lock_dir(d.path()).unwrap();
    }
}
