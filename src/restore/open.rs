//! Opening a stored backup: find it ([`locate`]), bring a bucket-only copy
//! to the volume ([`fetch_to_volume`]), read it to the end against its
//! manifest ([`verify`]), and execute it into a database ([`apply_with`]).
//!
//! Target -> meter (SHA-256, progress) -> decrypt -> decompress -> split.
//! [`verify`] reads a backup to the end without touching any database;
//! [`apply_with`] executes it and is only called after [`verify`] succeeded.
//! Not responsible for writing backups (`crate::backup::pipeline`) or for
//! the order of a whole restore (stopping the app, the safety snapshot:
//! [`crate::restore::run`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

use crate::config::DbSettings;
use crate::format::catalog::{self, Entry};
use crate::format::codec::{BoxRead, Compression};
use crate::format::crypto;
use crate::format::manifest::{self, Manifest, ManifestError};
use crate::progress::{Counter, MeteredReader, Reporter, SharedHash};
use crate::restore::definer::Definer;
use crate::restore::{self, ExecSummary, RestoreError};
use crate::secret::Secret;
use crate::sql::StatementReader;
use crate::target::local::LocalTarget;
use crate::target::{self, Target, TargetError};

/// A stored backup chosen for verify or restore.
#[derive(Debug, Clone)]
pub struct Source {
    /// Where it is.
    pub target: Arc<dyn Target>,
    /// Its name in that target.
    pub name: String,
    /// Its manifest, when there is one (files of the old shell script have none).
    pub manifest: Option<Manifest>,
    /// Stored size, when known.
    pub size: Option<u64>,
}

/// Errors finding a backup.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// No backup of that name.
    #[error("no backup named {name} in {place}{}", newest_hint(.newest))]
    NotFound {
        /// Name asked for.
        name: String,
        /// Where we looked.
        place: String,
        /// The five newest backups, to help.
        newest: Vec<String>,
    },
    /// There is no backup at all.
    #[error("there is no backup in {0} yet: run `selmai-backup backup` first")]
    Empty(String),
    /// Listing or reading failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The manifest is unreadable.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

fn newest_hint(newest: &[String]) -> String {
    if newest.is_empty() {
        String::new()
    } else {
        format!("; the newest are:\n  {}", newest.join("\n  "))
    }
}

/// Find `spec` (`latest`, a name in the targets, or a path to a file).
pub async fn locate(
    spec: &str,
    prefix: &str,
    targets: &[Arc<dyn Target>],
) -> Result<Source, LocateError> {
    if spec.contains('/') {
        let path = std::path::Path::new(spec);
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let t: Arc<dyn Target> = Arc::new(target::local::LocalTarget::new(dir));
        return source_in(t, &name, dir.display().to_string(), Vec::new()).await;
    }
    let place = targets
        .iter()
        .map(|t| t.label())
        .collect::<Vec<_>>()
        .join(" and ");
    let Some((volume, others)) = targets.split_first() else {
        return Err(LocateError::Empty(place));
    };
    // The volume first: a backup found there is used without waiting on
    // any off-site target, which may be the thing that is down.
    if spec != "latest" && volume.metadata(spec).await?.is_some() {
        return source_in(volume.clone(), spec, place, Vec::new()).await;
    }
    let mut all: Vec<(Arc<dyn Target>, Entry)> = complete(volume, prefix).await?;
    let mut unread = Vec::new();
    // For `latest` with backups on the volume, a target that does not
    // answer at once is left out (and named). A name not on the volume, or
    // an empty volume, leaves the off-site targets as the only hope: they
    // get their full retries.
    let patient = spec != "latest" || all.is_empty();
    for t in others {
        if !patient {
            if let Err(e) = target::reachable(t.as_ref(), target::PATIENCE).await {
                unread.push((t.label(), e));
                continue;
            }
        }
        match complete(t, prefix).await {
            Ok(found) => all.extend(found),
            Err(e) if !patient => unread.push((t.label(), e)),
            Err(e) => return Err(e.into()),
        }
    }
    // A volume file without a manifest is one the old shell script wrote
    // (ours publish the manifest first): `latest` takes it only when no
    // backup has a manifest.
    if all.iter().any(|(_, e)| e.has_manifest) {
        all.retain(|(_, e)| e.has_manifest);
    }
    all.sort_by_key(|(_, e)| std::cmp::Reverse(e.parsed.taken));
    if spec == "latest" {
        let (t, e) = all
            .into_iter()
            .next()
            .ok_or_else(|| LocateError::Empty(place.clone()))?;
        for (label, error) in &unread {
            tracing::warn!(target = label, error = %error, "the {label} could not be read: it might hold a backup newer than {}", e.name);
        }
        return source_in(t, &e.name, place, Vec::new()).await;
    }
    let newest: Vec<String> = all.iter().take(5).map(|(_, e)| e.name.clone()).collect();
    for t in others {
        if t.metadata(spec).await?.is_some() {
            return source_in(t.clone(), spec, place, newest).await;
        }
    }
    Err(LocateError::NotFound {
        name: spec.to_owned(),
        place,
        newest,
    })
}

/// The complete backups in `t` (off the volume, a backup exists only once
/// its manifest does: the manifest is copied after the data).
async fn complete(
    t: &Arc<dyn Target>,
    prefix: &str,
) -> Result<Vec<(Arc<dyn Target>, Entry)>, TargetError> {
    Ok(catalog::list_db(t.as_ref(), prefix)
        .await?
        .into_iter()
        .filter(|e| e.has_manifest || t.label() == LocalTarget::LABEL)
        .map(|e| (t.clone(), e))
        .collect())
}

/// The backup `name` in target `t`, with its manifest when there is one.
pub async fn source_at(t: Arc<dyn Target>, name: &str) -> Result<Source, LocateError> {
    let place = t.label().to_owned();
    source_in(t, name, place, Vec::new()).await
}

async fn source_in(
    t: Arc<dyn Target>,
    name: &str,
    place: String,
    newest: Vec<String>,
) -> Result<Source, LocateError> {
    let Some(info) = t.metadata(name).await? else {
        return Err(LocateError::NotFound {
            name: name.to_owned(),
            place,
            newest,
        });
    };
    let mname = manifest::name_for(name);
    let manifest = match t.metadata(&mname).await? {
        Some(_) => Some(Manifest::parse(
            &mname,
            &target::get_bytes(t.as_ref(), &mname).await?,
        )?),
        None => None,
    };
    Ok(Source {
        target: t,
        name: name.to_owned(),
        manifest,
        size: Some(info.size),
    })
}

/// Copy a backup that is only in a remote target (and its manifest) into
/// the volume, so that verify and restore read it from local disk, once
/// downloaded. The copy is the stored form (compressed, encrypted): no
/// plaintext touches the disk. A source already on the volume is returned
/// as it is.
pub async fn fetch_to_volume(
    source: Source,
    volume: &Arc<dyn Target>,
) -> Result<Source, RestoreError> {
    if source.target.label() == volume.label() {
        return Ok(source);
    }
    let name = source.name.clone();
    let fail = |detail: String| RestoreError::Integrity {
        name: name.clone(),
        detail,
    };
    tracing::info!(file = %name, from = source.target.label(), "fetching the backup into the volume");
    let mut reader = source
        .target
        .open(&name)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut up = volume
        .create(&name)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let counter = Counter::default();
    let _progress = Reporter::start(
        "downloading",
        counter.clone(),
        source.size,
        Duration::from_secs(5),
    );
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                let _ = up.abort().await;
                return Err(fail(format!(
                    "downloading from the {}: {e}",
                    source.target.label()
                )));
            }
        };
        if let Err(e) = up.write_all(&buf[..n]).await {
            let _ = up.abort().await;
            return Err(fail(format!("writing into the volume: {e}")));
        }
        counter.add(n as u64);
    }
    // The manifest first, the data last: the copy is a backup on the
    // volume only once both are there (the commit point of every backup).
    if let Some(m) = &source.manifest {
        if let Err(e) =
            target::put_bytes(volume.as_ref(), &manifest::name_for(&name), &m.to_json()).await
        {
            let _ = up.abort().await;
            return Err(fail(e.to_string()));
        }
    }
    if let Err(e) = up.commit().await {
        let _ = volume.delete(&manifest::name_for(&name)).await;
        return Err(fail(e.to_string()));
    }
    Ok(Source {
        target: Arc::clone(volume),
        ..source
    })
}

/// What reading a backup to the end found.
#[derive(Debug, Clone)]
pub struct VerifyReport {
    /// Stored bytes read.
    pub bytes: u64,
    /// Their SHA-256.
    pub sha256: String,
    /// SQL statements found.
    pub statements: u64,
    /// Whether a manifest was checked.
    pub manifest_checked: bool,
    /// What wrote the file, from its first lines (`mariadb-dump`,
    /// `mysqldump`, `selmai-backup`): without a manifest, the only sign
    /// that it is a dump at all.
    pub origin: Option<&'static str>,
}

impl VerifyReport {
    /// What this verification proved and what it could not, in words: with
    /// a manifest, size and SHA-256 matched it; without one, the file was
    /// only read to the end and split into statements.
    pub fn checked(&self) -> String {
        match (self.manifest_checked, self.origin) {
            (true, _) => "SHA-256 matches the manifest".to_owned(),
            (false, origin) => format!(
                "no manifest: a {} dump, decompressed and split into statements to the end; its size, checksum and row counts could not be checked against anything, and its SQL is only checked by the server when restored",
                origin.unwrap_or("SQL")
            ),
        }
    }
}

/// How much of the start of the SQL is kept to recognise its writer.
const HEAD_LEN: usize = 4096;

/// What wrote a dump, from its first lines: `mariadb-dump` and `mysqldump`
/// start with their own comment (after MariaDB's sandbox-mode line, in
/// recent versions), and so do our dumps.
pub fn dump_origin(head: &[u8]) -> Option<&'static str> {
    let text = String::from_utf8_lossy(&head[..head.len().min(HEAD_LEN)]);
    text.lines().take(5).find_map(|line| {
        let line = line.trim_start();
        if line.starts_with("-- MariaDB dump") {
            Some("mariadb-dump")
        } else if line.starts_with("-- MySQL dump") {
            Some("mysqldump")
        } else if line.starts_with("-- selmai-backup ") {
            Some("selmai-backup")
        } else {
            None
        }
    })
}

/// A reader that keeps a copy of the first [`HEAD_LEN`] bytes read through it.
struct KeepHead<R> {
    inner: R,
    head: Arc<std::sync::Mutex<Vec<u8>>>,
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for KeepHead<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &r {
            let mut head = self.head.lock().expect("head lock");
            if head.len() < HEAD_LEN {
                let new = &buf.filled()[before..];
                let take = new.len().min(HEAD_LEN - head.len());
                head.extend_from_slice(&new[..take]);
            }
        }
        r
    }
}

type Opened = (StatementReader<BoxRead>, Counter, SharedHash);

/// Open the stored bytes of `source`, metered, and decrypted when they are
/// encrypted (our format or an old `.gpg`); returns the plaintext reader.
pub async fn open_plain(
    source: &Source,
    passphrase: Option<&Secret>,
) -> Result<(BoxRead, Counter, SharedHash), RestoreError> {
    let name = &source.name;
    let raw = source
        .target
        .open(name)
        .await
        .map_err(|e| RestoreError::Integrity {
            name: name.clone(),
            detail: e.to_string(),
        })?;
    let (metered, counter, hash) = MeteredReader::new(raw);
    let (plain, _) = crypto::decrypt_any(Box::new(metered), passphrase)
        .await
        .map_err(|source| RestoreError::Crypto {
            name: name.clone(),
            source,
        })?;
    Ok((plain, counter, hash))
}

async fn open_statements(
    source: &Source,
    passphrase: Option<&Secret>,
) -> Result<Opened, RestoreError> {
    let (plain, counter, hash) = open_plain(source, passphrase).await?;
    let compression = Compression::from_file_name(&source.name);
    let decoded = compression.decoder(BufReader::with_capacity(256 * 1024, plain));
    Ok((StatementReader::new(decoded), counter, hash))
}

/// Compare what was read with the manifest, when there is one.
pub fn check_manifest(source: &Source, bytes: u64, sha256: &str) -> Result<(), RestoreError> {
    if let Some(m) = &source.manifest {
        if m.size != bytes || m.sha256 != sha256 {
            return Err(RestoreError::Integrity {
                name: source.name.clone(),
                detail: format!(
                    "manifest says {} bytes with SHA-256 {}, file has {} bytes with SHA-256 {}",
                    m.size, m.sha256, bytes, sha256
                ),
            });
        }
    }
    Ok(())
}

/// Read `source` to the end: SHA-256 and size against the manifest,
/// decompression, SQL splitting. Touches no database.
pub async fn verify(
    source: &Source,
    passphrase: Option<&Secret>,
) -> Result<VerifyReport, RestoreError> {
    let (plain, counter, hash) = open_plain(source, passphrase).await?;
    let compression = Compression::from_file_name(&source.name);
    let head = Arc::new(std::sync::Mutex::new(Vec::new()));
    let decoded = KeepHead {
        inner: compression.decoder(BufReader::with_capacity(256 * 1024, plain)),
        head: head.clone(),
    };
    let mut reader = StatementReader::new(decoded);
    let _progress = Reporter::start(
        "verifying",
        counter.clone(),
        source.size,
        Duration::from_secs(5),
    );
    let mut statements = 0u64;
    loop {
        match reader.next().await {
            Ok(Some(_)) => statements += 1,
            Ok(None) => break,
            Err(source_err) => {
                return Err(RestoreError::Unreadable {
                    name: source.name.clone(),
                    source: source_err,
                })
            }
        }
    }
    let bytes = counter.get();
    let sha256 = hash.hex();
    check_manifest(source, bytes, &sha256)?;
    let origin = dump_origin(&head.lock().expect("head lock"));
    if source.manifest.is_none() && origin.is_none() {
        // Nothing says this is a backup: any text "splits" into statements
        // (`/etc/passwd` is one), and restoring it would run it.
        return Err(RestoreError::NotADump {
            name: source.name.clone(),
        });
    }
    Ok(VerifyReport {
        bytes,
        sha256,
        statements,
        manifest_checked: source.manifest.is_some(),
        origin,
    })
}

/// Why a backup could not be prepared for a restore.
#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    /// Not found.
    #[error(transparent)]
    Locate(#[from] LocateError),
    /// Not fetched, or not read to the end.
    #[error(transparent)]
    Read(#[from] RestoreError),
}

/// Locate `spec` in `targets`, copy it into `fetch_to` when it is only in
/// a remote target and `fetch_to` is given, and [`verify`] it: the steps
/// before every restore and drill.
pub async fn prepare(
    spec: &str,
    prefix: &str,
    targets: &[Arc<dyn Target>],
    fetch_to: Option<&Arc<dyn Target>>,
    passphrase: Option<&Secret>,
) -> Result<(Source, VerifyReport), PrepareError> {
    let source = locate(spec, prefix, targets).await?;
    let source = match fetch_to {
        Some(volume) => fetch_to_volume(source, volume).await?,
        None => source,
    };
    let report = verify(&source, passphrase).await?;
    Ok((source, report))
}

/// Execute `source` into database `into` (created when missing), handling
/// `DEFINER` clauses as `definer` says (`RESTORE_DEFINER`). Call only after
/// [`verify`] succeeded on the same source; restores call it through
/// [`crate::restore::run`].
pub async fn apply_with(
    source: &Source,
    passphrase: Option<&Secret>,
    db: &DbSettings,
    into: &str,
    definer: Definer,
) -> Result<ExecSummary, RestoreError> {
    let mut conn = crate::db::connect(db, None).await?;
    let (charset, collation) = match &source.manifest {
        Some(m) => (
            Some(m.database.charset.as_str()),
            Some(m.database.collation.as_str()),
        ),
        None => (None, None),
    };
    restore::prepare_database(&mut conn, into, charset, collation).await?;
    // Tables (and the rows of keyed InnoDB tables) load in parallel on as
    // many connections as there are cores, 2 to 4: the server's insert work
    // is what a restore waits on.
    let loaders = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(2, 4);
    let mut conns = Vec::with_capacity(loaders);
    for _ in 0..loaders {
        conns.push(crate::db::connect(db, Some(into)).await?);
    }
    let (mut reader, counter, _) = open_statements(source, passphrase).await?;
    let ours = std::iter::once(conn.id()).chain(conns.iter().map(|c| c.id()));
    let _waits = crate::db::lock::watch(db, into, ours.collect(), "the restore");
    let _progress = Reporter::start("restoring", counter, source.size, Duration::from_secs(5));
    let result = restore::execute(&mut conn, conns, &source.name, &mut reader, definer).await;
    let _ = conn.disconnect().await;
    result
}
