//! File archives: the configuration (`CONFIG_PATHS`) and the users' uploads
//! (`UPLOADS_PATHS`) as a streamed tar, and their safe extraction.
//!
//! Writing runs on a blocking thread and produces plain tar bytes into any
//! `Write`; compression, encryption and storage are the pipeline's, as for
//! a database dump. Symlinks are stored, never followed; special files are
//! skipped with a warning; a file that changes while it is read is flagged
//! in the manifest. Each archived path is stored under its base name
//! (`/config` -> `config/...`).
//!
//! Reading ([`read_tar`]) checks a tar stream's structure, each file's
//! SHA-256 against the manifest and every path, and extracts (when given a
//! directory) refusing absolute paths, `..` components, links that escape
//! the target and any write through a symlink. Opening a stored archive,
//! checking it whole before writing anything, then extracting it is
//! `restore::archive`'s. This module does not know where the bytes are
//! stored.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::{ArchiveSettings, Settings};
use crate::format::manifest::{FileEntry, Manifest};

/// The kinds of file archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `CONFIG_PATHS` minus `CONFIG_EXCLUDE`.
    Config,
    /// `UPLOADS_PATHS`.
    Uploads,
}

impl ArchiveKind {
    /// Name in manifests and logs.
    pub fn name(self) -> &'static str {
        match self {
            ArchiveKind::Config => "config",
            ArchiveKind::Uploads => "uploads",
        }
    }

    /// What this kind archives.
    pub fn settings(self, s: &Settings) -> &ArchiveSettings {
        match self {
            ArchiveKind::Config => &s.config_archive,
            ArchiveKind::Uploads => &s.uploads_archive,
        }
    }
}

/// Errors writing or extracting an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A path to archive cannot be read.
    #[error("cannot read {path} for the archive: {source}; check that it is mounted and readable (CONFIG_PATHS / UPLOADS_PATHS)")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Two archived paths have the same base name.
    #[error("{0}: two archived paths have this base name; mount them under different names")]
    Clash(String),
    /// Writing the tar stream failed (usually: the storage side stopped).
    #[error("writing the archive stream: {0}")]
    Stream(#[source] io::Error),
    /// A thread died.
    #[error("archive thread failed: {0}")]
    Thread(String),
    /// The archive is damaged or does not match its manifest.
    #[error("{name} is corrupt: {detail}; nothing was extracted, restore another archive")]
    Corrupt {
        /// Archive name.
        name: String,
        /// What is wrong.
        detail: String,
    },
    /// An entry would land outside the target directory.
    #[error(
        "{name} holds an unsafe entry {entry:?} ({reason}); refusing to extract anything from it"
    )]
    Unsafe {
        /// Archive name.
        name: String,
        /// The entry's path as stored.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// The target directory is not empty.
    #[error("{0} is not empty: extract into a new directory, or pass --force to overwrite what the archive holds")]
    NotEmpty(PathBuf),
    /// Writing into the target directory failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// What writing the tar found.
#[derive(Debug, Clone)]
pub struct ArchiveSummary {
    /// Every entry, in archive order.
    pub files: Vec<FileEntry>,
    /// When reading started.
    pub started_at: DateTime<Utc>,
    /// When the tar was complete.
    pub finished_at: DateTime<Utc>,
}

/// Write `spec`'s paths as a tar into `out` (blocking).
pub fn write_tar<W: Write>(out: W, spec: &ArchiveSettings) -> Result<ArchiveSummary, ArchiveError> {
    let started_at = Utc::now();
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let mut files = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for root in &spec.paths {
        let base = root
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "root".into());
        if !seen.insert(base.clone()) {
            return Err(ArchiveError::Clash(base));
        }
        // A listed path that is itself excluded (`/opt/app/nginx/ssl`) stays out
        // too, as it would with `tar --exclude nginx/ssl /opt/app/nginx/ssl`.
        if excluded(root, spec) {
            tracing::warn!(path = %root.display(), "listed for the archive but excluded (CONFIG_EXCLUDE): left out");
            continue;
        }
        let meta = fs::symlink_metadata(root).map_err(|source| ArchiveError::Read {
            path: root.clone(),
            source,
        })?;
        add(
            &mut builder,
            root,
            Path::new(&base),
            &meta,
            spec,
            &mut files,
        )?;
    }
    let mut inner = builder.into_inner().map_err(ArchiveError::Stream)?;
    inner.flush().map_err(ArchiveError::Stream)?;
    Ok(ArchiveSummary {
        files,
        started_at,
        finished_at: Utc::now(),
    })
}

/// Whether `path` is excluded: an exclusion matches, as `tar --exclude`
/// does, a run of whole components anywhere in the path, and everything
/// below it (`nginx/ssl` leaves out `config/nginx/ssl/privkey.pem` and
/// `nginx/ssl`, not `nginx/ssl.conf`). Matching the path inside the
/// archive, not the path below a listed directory, keeps the private keys
/// out however `CONFIG_PATHS` lists them (`/config` or `/opt/app/nginx`).
fn excluded(path: &Path, spec: &ArchiveSettings) -> bool {
    let comps: Vec<&std::ffi::OsStr> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            _ => None,
        })
        .collect();
    spec.exclude.iter().any(|p| {
        let pat: Vec<&std::ffi::OsStr> = Path::new(p)
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        !pat.is_empty() && comps.windows(pat.len()).any(|w| w == pat.as_slice())
    })
}

fn header_for(meta: &fs::Metadata) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_metadata_in_mode(meta, tar::HeaderMode::Complete);
    h
}

fn entry_for(path: &Path, kind: &str, meta: &fs::Metadata) -> FileEntry {
    FileEntry {
        path: path.to_string_lossy().into_owned(),
        kind: kind.into(),
        size: 0,
        mode: meta.mode() & 0o7777,
        mtime: meta.mtime(),
        sha256: None,
        target: None,
        changed: false,
    }
}

/// Add `fs_path` (metadata `meta`) as `name`, recursing into directories.
fn add<W: Write>(
    b: &mut tar::Builder<W>,
    fs_path: &Path,
    name: &Path,
    meta: &fs::Metadata,
    spec: &ArchiveSettings,
    files: &mut Vec<FileEntry>,
) -> Result<(), ArchiveError> {
    let read_err = |source| ArchiveError::Read {
        path: fs_path.to_owned(),
        source,
    };
    let ft = meta.file_type();
    if ft.is_dir() {
        let mut h = header_for(meta);
        h.set_size(0);
        b.append_data(&mut h, name, io::empty())
            .map_err(ArchiveError::Stream)?;
        files.push(entry_for(name, "dir", meta));
        let mut children: Vec<_> = fs::read_dir(fs_path)
            .map_err(read_err)?
            .collect::<Result<_, _>>()
            .map_err(read_err)?;
        children.sort_by_key(|e| e.file_name());
        for c in children {
            let child_name = name.join(c.file_name());
            if excluded(&child_name, spec) {
                tracing::info!(path = %c.path().display(), "excluded from the archive");
                continue;
            }
            let child_meta =
                fs::symlink_metadata(c.path()).map_err(|source| ArchiveError::Read {
                    path: c.path(),
                    source,
                })?;
            add(b, &c.path(), &child_name, &child_meta, spec, files)?;
        }
    } else if ft.is_symlink() {
        let target = fs::read_link(fs_path).map_err(read_err)?;
        let mut h = header_for(meta);
        h.set_size(0);
        b.append_link(&mut h, name, &target)
            .map_err(ArchiveError::Stream)?;
        let mut e = entry_for(name, "symlink", meta);
        e.target = Some(target.to_string_lossy().into_owned());
        files.push(e);
    } else if ft.is_file() {
        let file = File::open(fs_path).map_err(read_err)?;
        // The header's size is fixed before the content is read: take at
        // most that many bytes, pad with zeros if the file shrank, and flag it.
        let before = file.metadata().map_err(read_err)?;
        let size = before.len();
        let mut h = header_for(&before);
        let mut reader = Hashing {
            inner: file.take(size),
            left: size,
            hash: Sha256::new(),
            short: false,
        };
        b.append_data(&mut h, name, &mut reader)
            .map_err(ArchiveError::Stream)?;
        let after = fs::symlink_metadata(fs_path).map_err(read_err)?;
        let changed = reader.short
            || after.len() != size
            || after.mtime() != before.mtime()
            || after.mtime_nsec() != before.mtime_nsec()
            || after.ctime() != before.ctime()
            || after.ctime_nsec() != before.ctime_nsec();
        if changed {
            tracing::warn!(path = %fs_path.display(), "the file changed while it was archived; its copy may be inconsistent (flagged in the manifest)");
        }
        let mut e = entry_for(name, "file", &before);
        e.size = size;
        e.sha256 = Some(hex::encode(reader.hash.finalize()));
        e.changed = changed;
        files.push(e);
    } else {
        tracing::warn!(path = %fs_path.display(), "not a file, directory or symlink (a socket, pipe or device): skipped");
    }
    Ok(())
}

/// Reads exactly `left` bytes (zeros after a premature end), hashing them.
struct Hashing<R> {
    inner: R,
    left: u64,
    hash: Sha256,
    short: bool,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let mut n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            n = want;
        }
        self.left -= n as u64;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// What extracting (or only checking) an archive found.
#[derive(Debug, Clone, Default)]
pub struct ExtractReport {
    /// Entries in the archive.
    pub entries: u64,
    /// Bytes of file content.
    pub bytes: u64,
    /// Whether a manifest was checked.
    pub manifest_checked: bool,
    /// Entries skipped (devices, pipes), by path.
    pub skipped: Vec<String>,
}

impl ExtractReport {
    /// One line for the operator: "12 entries, 3.1 MB of files, every
    /// SHA-256 matches the manifest".
    pub fn summary(&self) -> String {
        format!(
            "{} entries, {} of files, {}",
            self.entries,
            crate::progress::human_bytes(self.bytes),
            if self.manifest_checked {
                "every SHA-256 matches the manifest"
            } else {
                "no manifest to check against"
            }
        )
    }
}

/// The normal components of a stored path, or why it is refused.
fn safe_relative(p: &Path) -> Result<Vec<&std::ffi::OsStr>, String> {
    let mut out = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("a `..` component".into()),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path".into()),
        }
    }
    if out.is_empty() {
        return Err("an empty path".into());
    }
    Ok(out)
}

/// Whether a symlink at `at` pointing to `target` stays inside the root (lexically).
fn link_stays_inside(at: &[&std::ffi::OsStr], target: &Path) -> Result<(), String> {
    let mut depth = at.len().saturating_sub(1) as i64;
    for c in target.components() {
        match c {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return Err(format!("a link to {} leaves the target", target.display()));
                }
            }
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("a link to the absolute path {}", target.display()))
            }
        }
    }
    Ok(())
}

/// Read (and, with `dest`, extract) a tar; drain the stream to its end so
/// that the decryption and compression layers check their trailers.
pub fn read_tar<R: Read>(
    reader: R,
    name: &str,
    manifest: Option<&Manifest>,
    dest: Option<&Path>,
) -> Result<ExtractReport, ArchiveError> {
    let corrupt = |detail: String| ArchiveError::Corrupt {
        name: name.to_owned(),
        detail,
    };
    let unsafe_entry = |entry: &Path, reason: String| ArchiveError::Unsafe {
        name: name.to_owned(),
        entry: entry.display().to_string(),
        reason,
    };
    let expected: HashMap<&str, &FileEntry> = manifest
        .map(|m| m.files.iter().map(|f| (f.path.as_str(), f)).collect())
        .unwrap_or_default();
    let mut seen = 0usize;
    let mut report = ExtractReport::default();
    let mut dirs: Vec<(PathBuf, u32, i64)> = Vec::new();
    // Symlinks the archive creates: an entry below one would be written
    // through it, so the checking pass refuses it already.
    let mut links: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| corrupt(format!("reading the tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(format!("reading the tar stream: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| corrupt(format!("an entry's path: {e}")))?
            .into_owned();
        let parts = safe_relative(&path).map_err(|r| unsafe_entry(&path, r))?;
        let rel: PathBuf = parts.iter().collect();
        if let Some(l) = rel.ancestors().skip(1).find(|a| links.contains(*a)) {
            return Err(unsafe_entry(
                &path,
                format!("it would be written through the symlink {}", l.display()),
            ));
        }
        let header = entry.header();
        let mode = header.mode().map_err(|e| corrupt(e.to_string()))? & 0o7777;
        let mtime = header.mtime().map_err(|e| corrupt(e.to_string()))? as i64;
        let kind = header.entry_type();
        let want = expected.get(rel.to_string_lossy().as_ref()).copied();
        if want.is_some() {
            seen += 1;
        } else if manifest.is_some_and(|m| !m.files.is_empty()) {
            return Err(corrupt(format!("{} is not in the manifest", rel.display())));
        }
        report.entries += 1;
        let out = match dest {
            Some(d) => Some(prepare(d, &parts).map_err(|r| match r {
                Prepared::Unsafe(reason) => unsafe_entry(&path, reason),
                Prepared::Io(p, source) => ArchiveError::Write { path: p, source },
            })?),
            None => None,
        };
        let write_err = |p: &Path| {
            let p = p.to_owned();
            move |source| ArchiveError::Write { path: p, source }
        };
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut hash = Sha256::new();
                let mut file = match &out {
                    Some(p) => Some(
                        OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(0o600)
                            .open(p)
                            .map_err(write_err(p))?,
                    ),
                    None => None,
                };
                let mut buf = vec![0u8; 256 * 1024];
                let mut size = 0u64;
                loop {
                    let n = entry
                        .read(&mut buf)
                        .map_err(|e| corrupt(format!("reading {}: {e}", rel.display())))?;
                    if n == 0 {
                        break;
                    }
                    hash.update(&buf[..n]);
                    size += n as u64;
                    if let (Some(f), Some(p)) = (file.as_mut(), &out) {
                        f.write_all(&buf[..n]).map_err(write_err(p))?;
                    }
                }
                let digest = hex::encode(hash.finalize());
                if let Some(w) = want {
                    if w.sha256.as_deref() != Some(digest.as_str()) || w.size != size {
                        return Err(corrupt(format!(
                            "{} has {size} bytes with SHA-256 {digest}, the manifest says {} bytes with {}",
                            rel.display(),
                            w.size,
                            w.sha256.as_deref().unwrap_or("none")
                        )));
                    }
                }
                report.bytes += size;
                if let (Some(f), Some(p)) = (file, &out) {
                    drop(f);
                    fs::set_permissions(p, fs::Permissions::from_mode(mode))
                        .map_err(write_err(p))?;
                    filetime::set_file_mtime(p, filetime::FileTime::from_unix_time(mtime, 0))
                        .map_err(write_err(p))?;
                }
            }
            tar::EntryType::Directory => {
                if let Some(p) = &out {
                    match fs::symlink_metadata(p) {
                        Ok(m) if m.is_dir() => {}
                        _ => fs::create_dir(p).map_err(write_err(p))?,
                    }
                    // Modes and times of directories are set last: writing
                    // their contents would change them, and a read-only
                    // directory would refuse its contents.
                    dirs.push((p.clone(), mode, mtime));
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name()
                    .map_err(|e| corrupt(e.to_string()))?
                    .ok_or_else(|| corrupt(format!("symlink {} has no target", rel.display())))?
                    .into_owned();
                link_stays_inside(&parts, &target).map_err(|r| unsafe_entry(&path, r))?;
                links.insert(rel.clone());
                if let Some(p) = &out {
                    std::os::unix::fs::symlink(&target, p).map_err(write_err(p))?;
                    let t = filetime::FileTime::from_unix_time(mtime, 0);
                    filetime::set_symlink_file_times(p, t, t).map_err(write_err(p))?;
                }
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name()
                    .map_err(|e| corrupt(e.to_string()))?
                    .ok_or_else(|| corrupt(format!("hard link {} has no target", rel.display())))?
                    .into_owned();
                let tparts = safe_relative(&target)
                    .map_err(|r| unsafe_entry(&path, format!("a hard link to {r}")))?;
                if let (Some(p), Some(d)) = (&out, dest) {
                    // The link's source must be a plain file reached without a symlink.
                    let from = prepare_existing(d, &tparts).map_err(|r| match r {
                        Prepared::Unsafe(reason) => unsafe_entry(&path, reason),
                        Prepared::Io(p, source) => ArchiveError::Write { path: p, source },
                    })?;
                    fs::hard_link(&from, p).map_err(write_err(p))?;
                }
            }
            tar::EntryType::XGlobalHeader | tar::EntryType::XHeader => {}
            other => {
                tracing::warn!(path = %rel.display(), kind = ?other, "not a file, directory or link: skipped");
                report.skipped.push(rel.display().to_string());
            }
        }
    }
    if seen != expected.len() {
        return Err(corrupt(format!(
            "the manifest lists {} entries, the archive holds {seen} of them",
            expected.len()
        )));
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|e| corrupt(format!("reading past the end of the tar: {e}")))?;
    for (p, mode, mtime) in dirs.into_iter().rev() {
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).map_err(|source| {
            ArchiveError::Write {
                path: p.clone(),
                source,
            }
        })?;
        filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(mtime, 0))
            .map_err(|source| ArchiveError::Write { path: p, source })?;
    }
    Ok(report)
}

enum Prepared {
    Unsafe(String),
    Io(PathBuf, io::Error),
}

/// Make the parents of `parts` under `dest` (real directories only, never
/// through a symlink) and clear the way for the entry itself.
fn prepare(dest: &Path, parts: &[&std::ffi::OsStr]) -> Result<PathBuf, Prepared> {
    let mut p = dest.to_owned();
    let (last, parents) = parts.split_last().expect("safe_relative is never empty");
    for c in parents {
        p.push(c);
        match fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(Prepared::Unsafe(format!(
                    "its parent {} is a symlink or a file",
                    p.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&p).map_err(|e| Prepared::Io(p.clone(), e))?
            }
            Err(e) => return Err(Prepared::Io(p, e)),
        }
    }
    p.push(last);
    match fs::symlink_metadata(&p) {
        // With --force: what the archive holds replaces what is there
        // (a directory stays and is merged into).
        Ok(m) if !m.is_dir() => fs::remove_file(&p).map_err(|e| Prepared::Io(p.clone(), e))?,
        _ => {}
    }
    Ok(p)
}

/// The path of an already extracted plain file, reached without a symlink.
fn prepare_existing(dest: &Path, parts: &[&std::ffi::OsStr]) -> Result<PathBuf, Prepared> {
    let mut p = dest.to_owned();
    for (i, c) in parts.iter().enumerate() {
        p.push(c);
        let m = fs::symlink_metadata(&p).map_err(|e| Prepared::Io(p.clone(), e))?;
        let ok = if i + 1 == parts.len() {
            m.is_file()
        } else {
            m.is_dir()
        };
        if !ok {
            return Err(Prepared::Unsafe(format!(
                "a hard link through {}, not a plain file in a directory",
                p.display()
            )));
        }
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("a/b", true)]
    #[case("./a", true)]
    #[case("../x", false)]
    #[case("a/../../x", false)]
    #[case("/etc/x", false)]
    #[case(".", false)]
    fn relative_paths(#[case] p: &str, #[case] ok: bool) {
        assert_eq!(safe_relative(Path::new(p)).is_ok(), ok, "{p}");
    }

    #[rstest]
    #[case("a/l", "b", true)]
    #[case("a/l", "../b", true)]
    #[case("a/l", "../../b", false)]
    #[case("l", "../b", false)]
    #[case("a/l", "/etc", false)]
    #[case("a/b/l", "../c/../../d", true)]
    fn links(#[case] at: &str, #[case] target: &str, #[case] ok: bool) {
        let parts = safe_relative(Path::new(at)).unwrap();
        assert_eq!(
            link_stays_inside(&parts, Path::new(target)).is_ok(),
            ok,
            "{at} -> {target}"
        );
    }

    #[rstest]
    #[case("nginx/ssl", true)]
    #[case("nginx/ssl/key.pem", true)]
    #[case("config/nginx/ssl", true)]
    #[case("config/nginx/ssl/key.pem", true)]
    #[case("/opt/app/nginx/ssl", true)]
    #[case("nginx/ssl.conf", false)]
    #[case("config/nginx/ssl.conf", false)]
    #[case("nginx", false)]
    #[case("ssl", false)]
    #[case("config/ssl/nginx", false)]
    #[case("config/my-nginx/ssl", false)]
    fn exclusions(#[case] rel: &str, #[case] out: bool) {
        let spec = ArchiveSettings {
            prefix: "x".into(),
            paths: vec![],
            exclude: vec!["nginx/ssl".into()],
        };
        assert_eq!(excluded(Path::new(rel), &spec), out);
    }
}
