//! The mounted volume (`BACKUP_DIR`) as a storage target.
//!
//! Writes are atomic: data goes to a hidden `.NAME.partial` file in the same
//! directory, is fsynced, renamed to its final name, and the directory is
//! fsynced, so a crash or a full disk never leaves a partial file under a
//! final name. Stale `.partial` files (from a `kill -9`) are removed by
//! [`LocalTarget::remove_stale_partials`], which callers run while holding
//! the backup lock. This module does not decide which names are backups.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::fs;
use tokio::io::{AsyncWrite, AsyncWriteExt, BufWriter};

use super::{ObjectInfo, ObjectReader, Target, TargetError, Upload};

const LABEL: &str = LocalTarget::LABEL;
const PARTIAL_SUFFIX: &str = ".partial";

/// A directory on the local file system.
#[derive(Debug, Clone)]
pub struct LocalTarget {
    dir: PathBuf,
}

impl LocalTarget {
    /// The label of the volume in logs and listings.
    pub const LABEL: &'static str = "volume";

    /// A target rooted at `dir`; the directory must exist.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LocalTarget { dir: dir.into() }
    }

    /// The directory this target writes into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Full path of object `name`.
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn check_name(name: &str) -> Result<(), TargetError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') || name.contains('\0') {
            return Err(TargetError::Io {
                target: LABEL,
                action: "using",
                name: name.to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
            });
        }
        Ok(())
    }

    /// Remove `.partial` files left by an interrupted run; returns their names.
    ///
    /// Only call this while holding the backup lock: a concurrent writer's
    /// partial file would otherwise be removed under its feet.
    pub async fn remove_stale_partials(&self) -> Result<Vec<String>, TargetError> {
        let mut removed = Vec::new();
        let mut rd = fs::read_dir(&self.dir).await.map_err(|e| {
            TargetError::from_io(LABEL, "listing", &self.dir.display().to_string(), e)
        })?;
        while let Some(entry) = rd.next_entry().await.map_err(|e| {
            TargetError::from_io(LABEL, "listing", &self.dir.display().to_string(), e)
        })? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX) {
                fs::remove_file(entry.path())
                    .await
                    .map_err(|e| TargetError::from_io(LABEL, "removing", &name, e))?;
                removed.push(name);
            }
        }
        Ok(removed)
    }
}

fn info_from(name: String, md: &std::fs::Metadata) -> ObjectInfo {
    ObjectInfo {
        name,
        size: md.len(),
        modified: md.modified().ok().map(DateTime::<Utc>::from),
    }
}

#[async_trait]
impl Target for LocalTarget {
    fn label(&self) -> &'static str {
        LABEL
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        let dir = self.dir.display().to_string();
        let mut rd = fs::read_dir(&self.dir)
            .await
            .map_err(|e| TargetError::from_io(LABEL, "listing", &dir, e))?;
        let mut out = Vec::new();
        while let Some(entry) = rd
            .next_entry()
            .await
            .map_err(|e| TargetError::from_io(LABEL, "listing", &dir, e))?
        {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.starts_with('.') || !name.starts_with(prefix) {
                continue;
            }
            let md = match entry.metadata().await {
                Ok(md) => md,
                // Deleted between read_dir and stat: simply not there any more.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(TargetError::from_io(LABEL, "reading metadata of", &name, e)),
            };
            if md.is_file() {
                out.push(info_from(name, &md));
            }
        }
        Ok(out)
    }

    async fn metadata(&self, name: &str) -> Result<Option<ObjectInfo>, TargetError> {
        Self::check_name(name)?;
        match fs::metadata(self.path_of(name)).await {
            Ok(md) if md.is_file() => Ok(Some(info_from(name.to_owned(), &md))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TargetError::from_io(LABEL, "reading metadata of", name, e)),
        }
    }

    async fn create(&self, name: &str) -> Result<Box<dyn Upload>, TargetError> {
        Self::check_name(name)?;
        let temp = self.dir.join(format!(".{name}{PARTIAL_SUFFIX}"));
        // Backups hold the whole database: 0600 whatever the umask, and
        // also when a stale partial file of another mode is reused.
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)
            .await
            .map_err(|e| TargetError::from_io(LABEL, "creating", name, e))?;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .await
            .map_err(|e| TargetError::from_io(LABEL, "setting the mode of", name, e))?;
        Ok(Box::new(LocalUpload {
            file: Some(BufWriter::with_capacity(256 * 1024, file)),
            temp,
            dir: self.dir.clone(),
            name: name.to_owned(),
            written: 0,
            published: false,
        }))
    }

    async fn open(&self, name: &str) -> Result<ObjectReader, TargetError> {
        Self::check_name(name)?;
        let f = fs::File::open(self.path_of(name))
            .await
            .map_err(|e| TargetError::from_io(LABEL, "opening", name, e))?;
        Ok(Box::new(tokio::io::BufReader::with_capacity(256 * 1024, f)))
    }

    async fn delete(&self, name: &str) -> Result<(), TargetError> {
        Self::check_name(name)?;
        match fs::remove_file(self.path_of(name)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TargetError::from_io(LABEL, "deleting", name, e)),
        }
    }

    async fn clean_interrupted(&self) -> Result<Vec<String>, TargetError> {
        self.remove_stale_partials().await
    }

    fn local_path(&self, name: &str) -> Option<PathBuf> {
        Some(self.path_of(name))
    }
}

/// An in-progress write to `.NAME.partial`.
struct LocalUpload {
    file: Option<BufWriter<fs::File>>,
    temp: PathBuf,
    dir: PathBuf,
    name: String,
    written: u64,
    /// Renamed to its final name: from then on the file is not ours to remove.
    published: bool,
}

impl LocalUpload {
    fn file(&mut self) -> io::Result<&mut BufWriter<fs::File>> {
        self.file
            .as_mut()
            .ok_or_else(|| io::Error::other("upload already finished"))
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // Not published (an error, or a task cancelled at any await point,
        // also half-way through `commit`): never leave the partial file behind.
        if !self.published {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

impl AsyncWrite for LocalUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let f = this.file()?;
        let r = Pin::new(f).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &r {
            this.written += *n as u64;
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.file()?).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Shutdown only flushes: publishing is `commit`'s job.
        Pin::new(self.file()?).poll_flush(cx)
    }
}

#[async_trait]
impl Upload for LocalUpload {
    async fn commit(mut self: Box<Self>) -> Result<ObjectInfo, TargetError> {
        let name = self.name.clone();
        let result = async {
            let mut f = self.file.take().expect("commit called once");
            f.flush().await.map_err(|e| ("writing", e))?;
            let f = f.into_inner();
            f.sync_all().await.map_err(|e| ("syncing", e))?;
            drop(f);
            fs::rename(&self.temp, self.dir.join(&self.name))
                .await
                .map_err(|e| ("renaming", e))?;
            self.published = true;
            sync_dir(&self.dir)
                .await
                .map_err(|e| ("syncing directory for", e))?;
            Ok::<_, (&'static str, io::Error)>(())
        }
        .await;
        match result {
            Ok(()) => Ok(ObjectInfo {
                name,
                size: self.written,
                modified: Some(Utc::now()),
            }),
            Err((action, e)) => {
                let _ = fs::remove_file(&self.temp).await;
                Err(TargetError::from_io(LABEL, action, &name, e))
            }
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), TargetError> {
        drop(self.file.take());
        match fs::remove_file(&self.temp).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(TargetError::from_io(
                LABEL,
                "removing partial",
                &self.name,
                e,
            )),
        }
    }
}

/// fsync a directory so a rename in it survives a power cut.
async fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(&dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn dropping_an_upload_half_way_through_commit_leaves_no_partial_file() {
        let d = tempfile::tempdir().unwrap();
        let t = LocalTarget::new(d.path());
        let mut up = t.create("b.sql.gz").await.unwrap();
        up.write_all(&vec![7u8; 1 << 20]).await.unwrap();
        assert_eq!(names(d.path()), [".b.sql.gz.partial"]);
        // Poll the commit once (its flush goes to the blocking pool, so it
        // is pending) and drop it, as a shutdown drops a running backup.
        let commit = up.commit();
        tokio::select! {
            biased;
            r = commit => panic!("commit finished on its first poll: {r:?}"),
            _ = std::future::ready(()) => {}
        }
        // Let the blocking write the dropped future started finish.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert_eq!(names(d.path()), Vec::<String>::new());
    }
}
