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
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

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

/// Suffix appended to a backup's name to name its manifest.
pub const MANIFEST_SUFFIX: &str = ".manifest.json";

/// The manifest's name for a backup file.
pub fn manifest_name(file: &str) -> String {
    format!("{file}{MANIFEST_SUFFIX}")
}

/// Suffix of a full backup's set manifest (`PREFIX_YYYYMMDD_HHMMSS.full.json`).
pub const SET_SUFFIX: &str = ".full.json";

/// The parts of a full backup, in the order they are written and restored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Part {
    /// The database dump (`PREFIX_STAMP.sql.gz[.enc]`).
    Db,
    /// The configuration archive (`PREFIX_STAMP.config.tar.gz[.enc]`).
    Config,
    /// The uploads archive (`PREFIX_STAMP.uploads.tar.gz[.enc]`).
    Uploads,
}

impl Part {
    /// Every part, in the order they are written and restored.
    pub const ALL: [Part; 3] = [Part::Db, Part::Config, Part::Uploads];

    /// Name in manifests and logs.
    pub fn name(self) -> &'static str {
        match self {
            Part::Db => "db",
            Part::Config => "config",
            Part::Uploads => "uploads",
        }
    }
}

impl std::fmt::Display for Part {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The set manifest's name of the full backup taken at `taken`.
pub fn full_set_name(prefix: &str, taken: DateTime<Utc>) -> String {
    format!("{prefix}_{}{SET_SUFFIX}", taken.format(STAMP))
}

/// The file name of one part of the full backup taken at `taken`. The
/// part's kind sits after the timestamp, so no database or archive
/// prefix's retention ever takes a part for one of its own backups.
pub fn full_part_name(
    prefix: &str,
    taken: DateTime<Utc>,
    part: Part,
    compression_ext: &str,
    encrypted: bool,
) -> String {
    let kind = match part {
        Part::Db => ".sql".to_owned(),
        Part::Config | Part::Uploads => format!(".{}.tar", part.name()),
    };
    format!(
        "{prefix}_{}{kind}{compression_ext}{}",
        taken.format(STAMP),
        if encrypted { ".enc" } else { "" }
    )
}

/// What an object of a full backup is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FullObject {
    /// The set manifest: the set is complete.
    Set,
    /// A part's data.
    Part(Part),
    /// A part's own manifest.
    PartManifest(Part),
}

/// Parse `name` as an object of a full backup with `prefix`: when it was
/// taken and what it is; `None` if it is not ours.
pub fn parse_full_object(prefix: &str, name: &str) -> Option<(DateTime<Utc>, FullObject)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix('_')?;
    let stamp = rest.get(..15)?;
    let tail = rest.get(15..)?;
    let taken = Utc.from_utc_datetime(&NaiveDateTime::parse_from_str(stamp, STAMP).ok()?);
    if tail == SET_SUFFIX {
        return Some((taken, FullObject::Set));
    }
    let (data, is_manifest) = match tail.strip_suffix(MANIFEST_SUFFIX) {
        Some(d) => (d, true),
        None => (tail, false),
    };
    let data = data.strip_suffix(".enc").unwrap_or(data);
    let part = Part::ALL.into_iter().find(|p| {
        let base = match p {
            Part::Db => ".sql".to_owned(),
            _ => format!(".{}.tar", p.name()),
        };
        ["", ".gz", ".zst"]
            .iter()
            .any(|c| data == format!("{base}{c}"))
    })?;
    Some((
        taken,
        if is_manifest {
            FullObject::PartManifest(part)
        } else {
            FullObject::Part(part)
        },
    ))
}

/// Whether `spec` names a full backup: its set manifest, the set's name
/// without the suffix (`PREFIX_YYYYMMDD_HHMMSS`), or `latest-full`.
pub fn is_full_spec(prefix: &str, spec: &str) -> bool {
    spec == LATEST_FULL
        || spec.ends_with(SET_SUFFIX)
        || parse_full_object(prefix, &format!("{spec}{SET_SUFFIX}")).is_some()
}

/// The restore argument naming the newest complete full backup.
pub const LATEST_FULL: &str = "latest-full";

/// One full backup as found in a target: every object under its timestamp.
#[derive(Debug, Clone)]
pub struct FullSetEntry {
    /// The set manifest's name (whether or not it is stored).
    pub name: String,
    /// When the set was taken.
    pub taken: DateTime<Utc>,
    /// Whether the set manifest is stored (the set is complete).
    pub complete: bool,
    /// Every object of the set (parts, their manifests, the set manifest).
    pub objects: Vec<ObjectInfo>,
    /// Which target holds it.
    pub location: &'static str,
}

/// Our full backups in `target`, complete or not, newest first.
pub async fn list_full(
    target: &dyn Target,
    prefix: &str,
) -> Result<Vec<FullSetEntry>, TargetError> {
    let objects = target.list(prefix).await?;
    Ok(full_sets(&objects, prefix, target.label()))
}

fn full_sets(objects: &[ObjectInfo], prefix: &str, location: &'static str) -> Vec<FullSetEntry> {
    let mut sets: std::collections::BTreeMap<DateTime<Utc>, FullSetEntry> = Default::default();
    for o in objects {
        let Some((taken, what)) = parse_full_object(prefix, &o.name) else {
            continue;
        };
        let set = sets.entry(taken).or_insert_with(|| FullSetEntry {
            name: full_set_name(prefix, taken),
            taken,
            complete: false,
            objects: Vec::new(),
            location,
        });
        set.complete |= what == FullObject::Set;
        set.objects.push(o.clone());
    }
    sets.into_values().rev().collect()
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

/// Our backups that `parse` recognises with `prefix` in `target`, newest
/// first, and the manifests among the objects whose backup is gone (left
/// by a delete interrupted between the two: data goes first).
pub async fn list_with_orphans(
    target: &dyn Target,
    prefix: &str,
    parse: fn(&str, &str) -> Option<BackupName>,
) -> Result<(Vec<Entry>, Vec<String>), TargetError> {
    let objects = target.list(prefix).await?;
    let names: std::collections::HashSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    let orphans = objects
        .iter()
        .filter(|o| {
            o.name
                .strip_suffix(MANIFEST_SUFFIX)
                .is_some_and(|data| parse(prefix, data).is_some() && !names.contains(data))
        })
        .map(|o| o.name.clone())
        .collect();
    Ok((entries(&objects, prefix, target.label(), parse), orphans))
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
                has_manifest: names.contains(manifest_name(&o.name).as_str()),
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

/// The file-name prefixes of every kind of backup we write, to tell our
/// objects from foreign ones.
#[derive(Debug, Clone, Default)]
pub struct Prefixes {
    /// Database backups (`BACKUP_PREFIX`) and safety snapshots.
    pub db: Vec<String>,
    /// File archives (`CONFIG_PREFIX`, `UPLOADS_PREFIX`).
    pub archives: Vec<String>,
    /// Full backups (`FULL_PREFIX`).
    pub full: String,
}

impl Prefixes {
    /// Every prefix, for listing.
    pub fn all(&self) -> impl Iterator<Item = &str> {
        self.db
            .iter()
            .chain(&self.archives)
            .chain(std::iter::once(&self.full))
            .map(String::as_str)
    }

    /// Whether `name` is the data file of one of our backups (not a manifest).
    pub fn is_ours(&self, name: &str) -> bool {
        self.db.iter().any(|p| parse_db_name(p, name).is_some())
            || self
                .archives
                .iter()
                .any(|p| parse_archive_name(p, name).is_some())
            || matches!(
                parse_full_object(&self.full, name),
                Some((_, FullObject::Part(_)))
            )
    }
}

/// The manifests among `objects` whose backup is not stored beside them.
///
/// On the volume a backup publishes its manifest first and its data last,
/// and retention deletes its data first: an interrupted write or delete
/// can leave such a manifest there. They are not backups; whoever
/// holds the lock removes them. (Off-site the manifest is written last, so
/// a cut copy leaves data without a manifest instead: it is not listed as
/// a backup there, and the next catch-up completes it.)
pub fn orphan_manifests(objects: &[ObjectInfo], prefixes: &Prefixes) -> Vec<String> {
    let names: std::collections::HashSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    let mut out: Vec<String> = objects
        .iter()
        .filter(|o| {
            o.name
                .strip_suffix(MANIFEST_SUFFIX)
                .is_some_and(|data| prefixes.is_ours(data) && !names.contains(data))
        })
        .map(|o| o.name.clone())
        .collect();
    out.sort();
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

/// Create (or truncate) `path` for writing with mode 0600 whatever the
/// umask: what we write into `BACKUP_DIR` (state, records, decrypted
/// output) is for the backup's owner only. An existing file of another
/// mode is tightened too.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
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
        .mode(0o600)
        .open(&path)
        .map_err(|source| LockError::Open {
            path: path.clone(),
            source,
        })?;
    // A lock file left by an older version may be 0666: tighten it.
    let mode = file
        .metadata()
        .map_err(|source| LockError::Open {
            path: path.clone(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|source| LockError::Open {
                path: path.clone(),
                source,
            })?;
    }
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

    #[rstest]
    #[case("selmai_full_20250301_040000.full.json", Some(FullObject::Set))]
    #[case("selmai_full_20250301_040000.sql.gz", Some(FullObject::Part(Part::Db)))]
    #[case(
        "selmai_full_20250301_040000.sql.zst.enc",
        Some(FullObject::Part(Part::Db))
    )]
    #[case(
        "selmai_full_20250301_040000.sql.gz.manifest.json",
        Some(FullObject::PartManifest(Part::Db))
    )]
    #[case(
        "selmai_full_20250301_040000.config.tar.gz.enc",
        Some(FullObject::Part(Part::Config))
    )]
    #[case(
        "selmai_full_20250301_040000.uploads.tar.manifest.json",
        Some(FullObject::PartManifest(Part::Uploads))
    )]
    #[case("selmai_full_20250301_040000.tar.gz", None)]
    #[case("selmai_full_20250301_040000.sql.gz.gpg", None)]
    #[case("selmai_full_20250301_040000.sql.gz.partial", None)]
    #[case("selmai_full_20250301_040000.other.tar.gz", None)]
    #[case("selmai_full_20250399_040000.full.json", None)]
    #[case("selmai_fullx_20250301_040000.full.json", None)]
    #[case("selmai_full_2025", None)]
    fn full_objects(#[case] name: &str, #[case] want: Option<FullObject>) {
        let t = Utc.with_ymd_and_hms(2025, 3, 1, 4, 0, 0).unwrap();
        assert_eq!(parse_full_object("selmai_full", name), want.map(|w| (t, w)));
    }

    #[test]
    fn full_names_round_trip_and_stay_out_of_the_other_kinds() {
        let t = Utc.with_ymd_and_hms(2025, 3, 1, 4, 0, 0).unwrap();
        let set = full_set_name("selmai_full", t);
        assert_eq!(set, "selmai_full_20250301_040000.full.json");
        for part in Part::ALL {
            let n = full_part_name("selmai_full", t, part, ".gz", true);
            assert_eq!(
                parse_full_object("selmai_full", &n),
                Some((t, FullObject::Part(part)))
            );
            // The database and archive kinds never see a part, even with
            // the full prefix as their own.
            assert!(parse_db_name("selmai_full", &n).is_none() || part == Part::Db);
            assert!(parse_archive_name("selmai_full", &n).is_none());
            assert!(parse_db_name("selmai_backup", &n).is_none());
        }
        assert_eq!(
            full_part_name("selmai_full", t, Part::Config, ".zst", false),
            "selmai_full_20250301_040000.config.tar.zst"
        );
        assert!(is_archive_name(&full_part_name(
            "selmai_full",
            t,
            Part::Uploads,
            ".gz",
            false
        )));
    }

    #[rstest]
    #[case("latest-full", true)]
    #[case("selmai_full_20250301_040000", true)]
    #[case("selmai_full_20250301_040000.full.json", true)]
    #[case("/backups/selmai_full_20250301_040000.full.json", true)]
    #[case("selmai_full_20250301_040000.sql.gz", false)]
    #[case("latest", false)]
    #[case("selmai_backup_20250301_040000", false)]
    fn full_specs(#[case] spec: &str, #[case] want: bool) {
        assert_eq!(is_full_spec("selmai_full", spec), want);
    }

    #[test]
    fn full_sets_group_by_time_newest_first() {
        let o = |n: &str| ObjectInfo {
            name: n.into(),
            size: 1,
            modified: None,
        };
        let objs = [
            o("selmai_full_20250201_040000.sql.gz"),
            o("selmai_full_20250301_040000.sql.gz"),
            o("selmai_full_20250301_040000.sql.gz.manifest.json"),
            o("selmai_full_20250301_040000.full.json"),
            o("selmai_full_notes.txt"),
        ];
        let sets = full_sets(&objs, "selmai_full", "volume");
        let got: Vec<_> = sets
            .iter()
            .map(|s| (s.name.as_str(), s.complete, s.objects.len()))
            .collect();
        assert_eq!(
            got,
            [
                ("selmai_full_20250301_040000.full.json", true, 3),
                ("selmai_full_20250201_040000.full.json", false, 1)
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
