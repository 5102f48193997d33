//! Composing the write stages: "back up the database now" and "archive
//! these files now", both through one compress-encrypt-store path.
//!
//! Backup: the dumper writes SQL into an in-memory pipe; an encoder on a
//! blocking thread compresses it into a bounded channel of chunks; the store
//! loop hashes each chunk once and writes it to every upload ([`FanOut`]):
//! the volume's, and those of the off-site targets (bucket, SFTP) that take
//! one within [`TEE_PATIENCE`], so the off-site copies are written in the
//! same pass, without reading the file back. If the volume fails the backup
//! fails and nothing is published anywhere; an off-site target that fails is
//! dropped from the pass and the backup goes on (a later run's catch-up
//! copies it from the volume). One that did not take an upload in time is
//! copied from the volume once the local backup is stored (`offsite`), so
//! a target that is down never holds up the local backup. Memory is
//! bounded by the pipe, the channel and each upload's buffer, whatever the
//! database size.
//!
//! Reading a backup back is [`crate::restore::open`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::config::{ArchiveSettings, DbSettings, Settings};
use crate::dump::{self, DumpError, DumpHooks, DumpOptions};
use crate::format::archive::{self, ArchiveError, ArchiveKind};
use crate::format::catalog;
use crate::format::codec::{BoxWrite, Compression};
use crate::format::crypto;
use crate::format::manifest::{self, EncryptionInfo, Manifest};
use crate::progress::human_bytes;
use crate::secret::Secret;
use crate::target::{self, Target, TargetError, Upload};

/// Errors of a backup run.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// Configuration incomplete.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The dump failed.
    #[error(transparent)]
    Dump(#[from] DumpError),
    /// The primary target failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The encoder failed.
    #[error("compressing the dump failed: {0}")]
    Encode(#[source] std::io::Error),
    /// Setting up encryption failed.
    #[error("cannot encrypt the backup: {0}")]
    Crypto(#[from] crate::format::crypto::CryptoError),
    /// Reading the files to archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
}

pub use crate::backup::offsite::TargetFailure;

/// How long an off-site target may take to answer and start an upload
/// before the pass goes on without it (it is then copied from the volume
/// once the local backup is stored): long enough for an SSH handshake over
/// a slow link. The dump does not wait for it: what it writes meanwhile is
/// held for the target, up to [`HOLD_LIMIT`].
pub const TEE_PATIENCE: Duration = Duration::from_secs(5);

/// The most a starting off-site target may have held for it; past it, the
/// target is copied from the volume instead.
const HOLD_LIMIT: usize = 32 << 20;

/// An off-site target answering and starting its upload (in a task), with
/// the chunks written meanwhile.
struct Starting {
    /// Ends within [`TEE_PATIENCE`] of its start, with the upload or why not.
    task: tokio::task::JoinHandle<Result<Box<dyn Upload>, TargetError>>,
    held: Vec<Bytes>,
    held_bytes: usize,
}

impl Starting {
    /// Stop starting: cancel the task, and abort the upload it may have
    /// started meanwhile, so that its clean-up on the target is done (and
    /// cannot race a copy of the same name that follows).
    async fn give_up(mut self) {
        self.task.abort();
        if let Ok(Ok(up)) = (&mut self.task).await {
            let _ = up.abort().await;
        }
    }
}

impl Drop for Starting {
    fn drop(&mut self) {
        // Dropped without `give_up` (the backup's future was dropped): an
        // upload it started is dropped with the task, and cleans up.
        self.task.abort();
    }
}

/// One backup's uploads, one per target, the first target (the volume)
/// primary. Every stage (start, write, commit) reports a target's failure
/// through [`FanOut::fail`], so the rule lives in one place: a failing
/// primary fails the run, a failing secondary is dropped and recorded and
/// the backup goes on.
struct FanOut<'a> {
    /// The targets, in the order of `uploads`.
    targets: &'a [Arc<dyn Target>],
    /// The live uploads; `None` once a target failed or was committed.
    uploads: Vec<Option<Box<dyn Upload>>>,
    /// The off-site targets still starting, by index.
    starting: Vec<Option<Starting>>,
    /// The secondary targets dropped so far.
    failed: Vec<TargetFailure>,
    /// The secondary targets that did not join the pass: copied from the
    /// volume after the backup.
    late: Vec<usize>,
}

impl<'a> FanOut<'a> {
    /// Start an upload of `name` on the volume (there is nothing to abort
    /// when it cannot start) and, without waiting, on every off-site
    /// target: each is asked to answer first ([`Target::answers`], no
    /// retries) and joins the pass when its upload has started.
    async fn start(targets: &'a [Arc<dyn Target>], name: &str) -> Result<Self, TargetError> {
        let mut fan = FanOut {
            targets,
            uploads: Vec::with_capacity(targets.len()),
            starting: Vec::with_capacity(targets.len()),
            failed: Vec::new(),
            late: Vec::new(),
        };
        let Some(volume) = targets.first() else {
            return Ok(fan);
        };
        fan.uploads.push(Some(volume.create(name).await?));
        fan.starting.push(None);
        for t in &targets[1..] {
            let (t, name) = (Arc::clone(t), name.to_owned());
            let label = t.label();
            let task = tokio::spawn(async move {
                let starting = async {
                    t.answers().await?;
                    t.create(&name).await
                };
                match tokio::time::timeout(TEE_PATIENCE, starting).await {
                    Ok(r) => r,
                    Err(_) => Err(TargetError::Remote {
                        target: label,
                        action: "starting the upload of",
                        name,
                        detail: format!("no answer within {} s", TEE_PATIENCE.as_secs()),
                    }),
                }
            });
            fan.uploads.push(None);
            fan.starting.push(Some(Starting {
                task,
                held: Vec::new(),
                held_bytes: 0,
            }));
        }
        Ok(fan)
    }

    /// Off-site target `i`, still starting: it joins the pass when its
    /// upload has started (what was held for it is written first), waits
    /// on with `next` held for it, or is left for a copy from the volume
    /// when it failed to start (in time) or needs more held than
    /// [`HOLD_LIMIT`]. With `next` `None` (the data has ended), it is
    /// waited for: its task ends within [`TEE_PATIENCE`] of its start.
    async fn join(&mut self, i: usize, next: Option<&Bytes>) {
        let Some(st) = self.starting[i].as_mut() else {
            return;
        };
        if !st.task.is_finished() {
            match next {
                Some(chunk) if st.held_bytes + chunk.len() <= HOLD_LIMIT => {
                    st.held.push(chunk.clone());
                    st.held_bytes += chunk.len();
                    return;
                }
                Some(_) => {
                    if let Some(st) = self.starting[i].take() {
                        st.give_up().await;
                    }
                    let why = format!(
                        "its upload had not started when {} MiB were held for it",
                        HOLD_LIMIT >> 20
                    );
                    self.leave(i, &why);
                    return;
                }
                None => {}
            }
        }
        let Some(mut st) = self.starting[i].take() else {
            return;
        };
        let held = std::mem::take(&mut st.held);
        match (&mut st.task).await {
            Ok(Ok(up)) => {
                self.uploads[i] = Some(up);
                for chunk in &held {
                    // Off-site (i > 0): a failure is recorded, not returned.
                    let _ = self.write_one(i, chunk).await;
                    if self.uploads[i].is_none() {
                        break;
                    }
                }
            }
            Ok(Err(e)) => self.leave(i, &e.to_string()),
            Err(e) => self.leave(i, &format!("starting the upload failed: {e}")),
        }
    }

    /// Off-site target `i` is left out of the pass, for `why`: it is copied
    /// from the volume once the local backup is stored.
    fn leave(&mut self, i: usize, why: &str) {
        let label = self.targets[i].label();
        tracing::info!(target = label, reason = %why, "{} is left out of the pass: the backup is copied there from the volume once stored", target::the(label));
        self.late.push(i);
    }

    /// Target `i` failed with `error` while doing `what`. The primary's
    /// error is handed back for the run to fail with (the caller aborts the
    /// other uploads); a secondary is dropped, logged and recorded.
    fn fail(&mut self, i: usize, error: TargetError, what: &str) -> Result<(), TargetError> {
        self.uploads[i] = None;
        if i == 0 {
            return Err(error);
        }
        let target = self.targets[i].label();
        tracing::warn!(target, error = %error, "{what}");
        self.failed.push(TargetFailure { target, error });
        Ok(())
    }

    /// Write `chunk` to every live upload (an upload that fails is aborted)
    /// and hold it for the off-site targets still starting.
    async fn write_all(&mut self, chunk: &Bytes) -> Result<(), TargetError> {
        for i in 0..self.uploads.len() {
            self.join(i, Some(chunk)).await;
            if self.starting[i].is_some() {
                continue;
            }
            self.write_one(i, chunk).await?;
        }
        Ok(())
    }

    /// Write `chunk` to upload `i` if it is live; one that fails is aborted
    /// and goes through [`FanOut::fail`].
    async fn write_one(&mut self, i: usize, chunk: &[u8]) -> Result<(), TargetError> {
        let Some(up) = self.uploads[i].as_mut() else {
            return Ok(());
        };
        let Err(e) = up.write_all(chunk).await else {
            return Ok(());
        };
        let err = TargetError::from_io(self.targets[i].label(), "writing", "backup", e);
        if let Some(up) = self.uploads[i].take() {
            let _ = up.abort().await;
        }
        self.fail(
            i,
            err,
            "off-site copy failed; continuing with the local backup",
        )
    }

    /// Flush every live upload before the commit; an error is only logged here.
    async fn shutdown(&mut self) {
        for up in self.uploads.iter_mut().flatten() {
            flush(up).await;
        }
    }

    /// The data has ended and the volume holds the backup: off-site target
    /// `i`, if still starting, is given the rest of its [`TEE_PATIENCE`],
    /// then joins with everything held for it (and is flushed) or is left
    /// for a copy from the volume.
    async fn settle(&mut self, i: usize) {
        if self.starting[i].is_none() {
            return;
        }
        self.join(i, None).await;
        if let Some(up) = self.uploads[i].as_mut() {
            flush(up).await;
        }
    }

    /// Publish every live upload of `name` with its manifest, the volume
    /// first. On the volume the manifest goes first and the data last: that
    /// is the commit point of a backup there, so a kill at any point leaves
    /// either nothing or a manifest whose data is missing (swept at the
    /// next start by [`clean_interrupted`], never counted as a backup).
    /// Off-site the data goes first and the manifest last: a backup counts
    /// there once its manifest is, and a data file left without one is
    /// never listed (the catch-up completes it). Returns the targets
    /// holding a complete copy, the secondary targets that failed at any
    /// stage, and those to copy from the volume ([`FanOut::late`]).
    async fn commit(mut self, name: &str, manifest_json: &[u8]) -> Result<Committed, TargetError> {
        let mut stored_on = Vec::new();
        for i in 0..self.uploads.len() {
            self.settle(i).await;
            let Some(up) = self.uploads[i].take() else {
                continue;
            };
            let t = self.targets[i].as_ref();
            let result = if i == 0 {
                manifest_then_data(t, up, name, manifest_json).await
            } else {
                data_then_manifest(t, up, name, manifest_json).await
            };
            match result {
                Ok(()) => stored_on.push(t.label()),
                Err(e) => {
                    if let Err(e) =
                        self.fail(i, e, "off-site copy failed; the local backup is kept")
                    {
                        self.abort().await;
                        return Err(e);
                    }
                }
            }
        }
        Ok(Committed {
            stored: stored_on,
            failed: self.failed,
            late: self
                .late
                .iter()
                .map(|&i| Arc::clone(&self.targets[i]))
                .collect(),
        })
    }

    /// Abort every live upload, and every one still starting.
    async fn abort(self) {
        for st in self.starting.into_iter().flatten() {
            st.give_up().await;
        }
        for up in self.uploads.into_iter().flatten() {
            if let Err(e) = up.abort().await {
                tracing::warn!(error = %e, "cleaning up a failed upload");
            }
        }
    }
}

/// What [`FanOut::commit`] leaves: where the backup is complete, which
/// off-site targets failed, and which are still to be copied from the volume.
struct Committed {
    stored: Vec<&'static str>,
    failed: Vec<TargetFailure>,
    late: Vec<Arc<dyn Target>>,
}

/// Flush `up` before its commit; an error is only logged (the commit reports it).
async fn flush(up: &mut Box<dyn Upload>) {
    if let Err(e) = up.shutdown().await {
        tracing::debug!(error = %e, "flushing an upload");
    }
}

/// The volume's order: the manifest, then the data (the commit point).
/// A manifest whose data could not be published is taken back.
async fn manifest_then_data(
    t: &dyn Target,
    up: Box<dyn Upload>,
    name: &str,
    manifest_json: &[u8],
) -> Result<(), TargetError> {
    let manifest_name = manifest::name_for(name);
    if let Err(e) = target::put_bytes(t, &manifest_name, manifest_json).await {
        let _ = up.abort().await;
        return Err(e);
    }
    if let Err(e) = up.commit().await {
        let _ = t.delete(&manifest_name).await;
        return Err(e);
    }
    Ok(())
}

/// The off-site order: the data, then the manifest (the commit point).
/// Data whose manifest could not be stored is taken back: without it, it
/// is not a backup.
async fn data_then_manifest(
    t: &dyn Target,
    up: Box<dyn Upload>,
    name: &str,
    manifest_json: &[u8],
) -> Result<(), TargetError> {
    up.commit().await?;
    if let Err(e) = target::put_bytes(t, &manifest::name_for(name), manifest_json).await {
        let _ = t.delete(name).await;
        return Err(e);
    }
    Ok(())
}

/// What a successful backup produced.
#[derive(Debug)]
pub struct BackupOutcome {
    /// The backup's file name.
    pub file: String,
    /// Its manifest.
    pub manifest: Manifest,
    /// Targets holding a complete copy (data and manifest).
    pub stored: Vec<&'static str>,
    /// Secondary targets that failed (the backup still counts).
    pub failed: Vec<TargetFailure>,
    /// Wall time.
    pub elapsed: Duration,
}

/// How a backup's bytes are encoded: the two settings the write path
/// needs, not the whole configuration.
#[derive(Debug, Clone)]
pub struct Encoding {
    /// `BACKUP_COMPRESSION` and its level.
    pub compression: Compression,
    /// `BACKUP_PASSPHRASE`: encrypt when set.
    pub passphrase: Option<Secret>,
}

impl Encoding {
    /// The encoding the configuration asks for.
    pub fn of(settings: &Settings) -> Encoding {
        Encoding {
            compression: settings.compression,
            passphrase: settings.passphrase.clone(),
        }
    }
}

/// Back database `db.name` up to `targets` (the first is primary) under a
/// new name with `prefix` (`BACKUP_PREFIX`, or the safety snapshots').
pub async fn backup_db(
    db: &DbSettings,
    enc: &Encoding,
    prefix: &str,
    targets: &[Arc<dyn Target>],
    opts: &DumpOptions,
    hooks: &dyn DumpHooks,
) -> Result<BackupOutcome, BackupError> {
    let compression = enc.compression;
    let encrypted = enc.passphrase.is_some();
    let name = free_name(targets, |when| {
        catalog::db_file_name(prefix, when, compression.extension(), encrypted)
    })
    .await?;
    backup_db_as(db, enc, targets, &name, opts, hooks).await
}

/// [`backup_db`] under a name the caller chose (a part of a full backup).
pub async fn backup_db_as(
    db: &DbSettings,
    enc: &Encoding,
    targets: &[Arc<dyn Target>],
    name: &str,
    opts: &DumpOptions,
    hooks: &dyn DumpHooks,
) -> Result<BackupOutcome, BackupError> {
    let started = Instant::now();
    let compression = enc.compression;
    let name = name.to_owned();
    tracing::info!(file = %name, database = %db.name, host = %crate::db::addr(db), "backup started");
    let encoded = encode_and_store(enc, targets, &name, |sql_w| async {
        Ok(dump::dump_database(db, sql_w, opts, hooks).await?)
    })
    .await?;
    let summary = &encoded.value;
    let mut manifest = Manifest::for_dump(
        &name,
        encoded.size,
        encoded.sha256.clone(),
        compression_name(compression),
        summary,
    );
    manifest.encryption = encoded.encryption.clone();
    let sql_bytes = summary.sql_bytes;
    let tables = summary.tables.len();
    let size = encoded.size;
    let committed = encoded.fan.commit(&name, &manifest.to_json()).await?;
    let elapsed = started.elapsed();
    tracing::info!(
        file = %name,
        size = %human_bytes(size),
        sql = %human_bytes(sql_bytes),
        tables,
        seconds = format!("{:.1}", elapsed.as_secs_f64()),
        "backup finished"
    );
    let (stored, failed) = copy_late(targets, committed, &name).await;
    Ok(BackupOutcome {
        file: name,
        manifest,
        stored,
        failed,
        elapsed,
    })
}

/// Archive the files `spec` names (`CONFIG_PATHS` or `UPLOADS_PATHS`, for
/// `kind`) to `targets` through the same compression, encryption and
/// storage as a database dump.
pub async fn backup_archive(
    spec: &ArchiveSettings,
    enc: &Encoding,
    targets: &[Arc<dyn Target>],
    kind: ArchiveKind,
) -> Result<BackupOutcome, BackupError> {
    let compression = enc.compression;
    let encrypted = enc.passphrase.is_some();
    let name = free_name(targets, |when| {
        catalog::archive_file_name(&spec.prefix, when, compression.extension(), encrypted)
    })
    .await?;
    backup_archive_as(spec, enc, targets, kind, &name).await
}

/// [`backup_archive`] under a name the caller chose (a part of a full backup).
pub async fn backup_archive_as(
    spec: &ArchiveSettings,
    enc: &Encoding,
    targets: &[Arc<dyn Target>],
    kind: ArchiveKind,
    name: &str,
) -> Result<BackupOutcome, BackupError> {
    let started = Instant::now();
    let spec = spec.clone();
    let compression = enc.compression;
    let name = name.to_owned();
    tracing::info!(file = %name, kind = kind.name(), paths = ?spec.paths, "archive started");
    let encoded = encode_and_store(enc, targets, &name, |w| async move {
        // The file system is read with blocking calls: a blocking thread
        // writes the tar into the pipe through a bridge.
        let bridge = tokio_util::io::SyncIoBridge::new(w);
        tokio::task::spawn_blocking(move || archive::write_tar(bridge, &spec))
            .await
            .unwrap_or_else(|e| Err(ArchiveError::Thread(e.to_string())))
            .map_err(BackupError::from)
    })
    .await?;
    let summary = &encoded.value;
    let mut manifest = Manifest::for_archive(
        kind.name(),
        &name,
        encoded.size,
        encoded.sha256.clone(),
        compression_name(compression),
        summary.started_at,
        summary.finished_at,
        summary.files.clone(),
    );
    manifest.encryption = encoded.encryption.clone();
    let size = encoded.size;
    let entries = summary.files.len();
    let changed = summary.files.iter().filter(|f| f.changed).count();
    let committed = encoded.fan.commit(&name, &manifest.to_json()).await?;
    let elapsed = started.elapsed();
    tracing::info!(
        file = %name,
        size = %human_bytes(size),
        entries,
        changed,
        seconds = format!("{:.1}", elapsed.as_secs_f64()),
        "archive finished"
    );
    let (stored, failed) = copy_late(targets, committed, &name).await;
    Ok(BackupOutcome {
        file: name,
        manifest,
        stored,
        failed,
        elapsed,
    })
}

/// The volume alone: a backup is made there first, and counts once it is.
fn volume_of(targets: &[Arc<dyn Target>]) -> &[Arc<dyn Target>] {
    &targets[..targets.len().min(1)]
}

/// Copy the backup `name`, now stored, to the off-site targets that did
/// not take it in the same pass ([`Committed::late`]), from the volume
/// (`targets[0]`); a failed copy is left to the next run's catch-up.
/// Returns every target holding it and every off-site failure.
async fn copy_late(
    targets: &[Arc<dyn Target>],
    committed: Committed,
    name: &str,
) -> (Vec<&'static str>, Vec<TargetFailure>) {
    let Committed {
        mut stored,
        mut failed,
        late,
    } = committed;
    if !late.is_empty() {
        let volume_and_late: Vec<Arc<dyn Target>> =
            targets[..1].iter().chain(&late).cloned().collect();
        let unit = crate::backup::offsite::Unit::single(name, Utc::now());
        let (copied, missed) = crate::backup::offsite::copy_backup(&volume_and_late, &unit).await;
        stored.extend(copied.into_iter().skip(1));
        failed.extend(missed);
    }
    (stored, failed)
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip(_) => "gzip",
        Compression::Zstd(_) => "zstd",
        Compression::None => "none",
    }
}

/// Bytes compressed, encrypted and written to every live upload, not yet committed.
struct Encoded<'a, T> {
    /// What the producer returned.
    value: T,
    /// The uploads holding the bytes.
    fan: FanOut<'a>,
    /// Stored size.
    size: u64,
    /// SHA-256 of the stored bytes.
    sha256: String,
    /// How the bytes were encrypted, if they were.
    encryption: Option<EncryptionInfo>,
}

/// Start an upload of `name` on every target, run `produce` writing plain
/// bytes into a pipe, and push them through compression (on blocking
/// threads), encryption and every upload. Any failure aborts every upload.
async fn encode_and_store<'a, T, F, Fut>(
    enc: &Encoding,
    targets: &'a [Arc<dyn Target>],
    name: &str,
    produce: F,
) -> Result<Encoded<'a, T>, BackupError>
where
    F: FnOnce(tokio::io::DuplexStream) -> Fut,
    Fut: std::future::Future<Output = Result<T, BackupError>>,
{
    let compression = enc.compression;
    let mut fan = FanOut::start(targets, name).await?;

    let (plain_w, plain_r) = tokio::io::duplex(1 << 20);
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    // Compression is CPU-bound: it runs on blocking threads so the source
    // and the uploads keep running on the async workers.
    let handle = tokio::runtime::Handle::current();
    let channel = ChannelWriter(tokio_util::sync::PollSender::new(tx));
    // Encryption comes after compression, inside the pipeline: no plaintext
    // ever reaches a disk or the network.
    let (sink, encryption): (BoxWrite, _) = match &enc.passphrase {
        Some(pass) => {
            match crypto::EncryptWriter::new(channel, pass, crypto::KdfParams::default()).await {
                Ok(w) => {
                    let info = w.header_info();
                    (Box::new(w), Some(EncryptionInfo::from(info)))
                }
                Err(e) => {
                    fan.abort().await;
                    return Err(e.into());
                }
            }
        }
        None => (Box::new(channel), None),
    };
    let encoder = tokio::task::spawn_blocking(move || encode(&handle, plain_r, sink, compression));
    let (produced, stored) = tokio::join!(produce(plain_w), store(rx, &mut fan));
    let encoded = encoder
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("encoder thread failed: {e}"))));

    // The store side's error explains a broken pipe on the source side, so
    // it wins; the source's own error explains a short input to the encoder.
    let result = match (stored, produced, encoded) {
        (Err(e), _, _) => Err(e.into()),
        (Ok(_), Err(e), _) => Err(e),
        (Ok(_), Ok(_), Err(e)) => Err(BackupError::Encode(e)),
        (Ok(stored), Ok(value), Ok(())) => Ok((stored, value)),
    };
    match result {
        Ok(((size, sha256), value)) => Ok(Encoded {
            value,
            fan,
            size,
            sha256,
            encryption,
        }),
        Err(e) => {
            fan.abort().await;
            Err(e)
        }
    }
}

/// The prefixes of every kind of backup these settings write (safety
/// snapshots included), to tell our objects from foreign ones.
pub fn our_prefixes(settings: &Settings) -> catalog::Prefixes {
    catalog::Prefixes {
        db: vec![
            settings.prefix.clone(),
            crate::config::SNAPSHOT_PREFIX.to_owned(),
        ],
        archives: vec![
            settings.config_archive.prefix.clone(),
            settings.uploads_archive.prefix.clone(),
        ],
        full: settings.full_prefix.clone(),
    }
}

/// Clean what interrupted runs left on every target: partial files and
/// incomplete uploads ([`Target::clean_interrupted`]), and manifests whose
/// backup was never published or was half deleted
/// ([`catalog::orphan_manifests`]). Call only while holding the backup
/// lock. A target that cannot be cleaned is logged and skipped: the next
/// start tries again.
pub async fn clean_interrupted(targets: &[Arc<dyn Target>], prefixes: &catalog::Prefixes) {
    target::clean_interrupted_all(targets).await;
    for t in targets {
        let mut objects: std::collections::BTreeMap<String, target::ObjectInfo> =
            Default::default();
        for p in prefixes.all() {
            match t.list(p).await {
                Ok(found) => objects.extend(found.into_iter().map(|o| (o.name.clone(), o))),
                Err(e) => {
                    tracing::warn!(target = t.label(), error = %e, "cannot list to clean up after interrupted runs");
                    break;
                }
            }
        }
        let objects: Vec<_> = objects.into_values().collect();
        for name in catalog::orphan_manifests(&objects, prefixes) {
            match t.delete(&name).await {
                Ok(()) => {
                    tracing::warn!(target = t.label(), file = %name, "removed a manifest whose backup an interrupted run never stored")
                }
                Err(e) => {
                    tracing::warn!(target = t.label(), file = %name, error = %e, "cannot remove a manifest whose backup is missing")
                }
            }
        }
    }
}

/// A name no target holds yet (a backup in the same second as the last
/// one waits for the next second: see [`free_time`]).
async fn free_name(
    targets: &[Arc<dyn Target>],
    make: impl Fn(chrono::DateTime<Utc>) -> String,
) -> Result<String, TargetError> {
    let when = free_time(volume_of(targets), |when| {
        let name = make(when);
        vec![manifest::name_for(&name), name]
    })
    .await?;
    Ok(make(when))
}

/// The current second, once none of the names `make` gives for it is held
/// by any target (a full backup checks all its parts at once). When a name
/// is taken (two backups within one second), this waits for the clock to
/// reach the next second rather than naming the backup ahead of time: a
/// name never claims a time that has not come yet.
pub async fn free_time(
    targets: &[Arc<dyn Target>],
    make: impl Fn(chrono::DateTime<Utc>) -> Vec<String>,
) -> Result<chrono::DateTime<Utc>, TargetError> {
    use chrono::{SubsecRound, Timelike};
    loop {
        let when = Utc::now().trunc_subsecs(0);
        let mut taken = false;
        for (i, t) in targets.iter().enumerate() {
            for candidate in make(when) {
                match t.metadata(&candidate).await {
                    Ok(found) => taken |= found.is_some(),
                    // Only the primary must answer; an unreachable bucket
                    // fails its own upload later and is reported then.
                    Err(e) if i == 0 => return Err(e),
                    Err(_) => {}
                }
            }
        }
        if !taken {
            return Ok(when);
        }
        // Sleep to the start of the next second (a few ms past it).
        let into_second = Utc::now().nanosecond().min(999_999_999);
        let rest = Duration::from_nanos(u64::from(1_000_000_000 - into_second));
        tokio::time::sleep(rest + Duration::from_millis(5)).await;
    }
}

/// Size of the blocks compressed independently (one gzip member or zstd frame each).
const BLOCK: usize = 1 << 20;

/// Read plain bytes from `input` in blocks, compress them on every core, write the
/// results in order to `sink`. Runs on a blocking thread.
fn encode(
    handle: &tokio::runtime::Handle,
    mut input: tokio::io::DuplexStream,
    mut sink: BoxWrite,
    c: Compression,
) -> std::io::Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    c.compress_blocks(
        threads,
        || {
            let mut block = vec![0u8; BLOCK];
            let mut filled = 0;
            while filled < BLOCK {
                let n = handle.block_on(input.read(&mut block[filled..]))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            block.truncate(filled);
            Ok((filled > 0).then_some(block))
        },
        |out| handle.block_on(sink.write_all(&out)),
    )?;
    handle.block_on(sink.shutdown())
}

/// An `AsyncWrite` that sends each write as one chunk into a bounded channel.
struct ChannelWriter(tokio_util::sync::PollSender<Bytes>);

impl tokio::io::AsyncWrite for ChannelWriter {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let closed =
            || std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the storage side stopped");
        match self.0.poll_reserve(cx) {
            std::task::Poll::Ready(Ok(())) => {
                self.0
                    .send_item(Bytes::copy_from_slice(buf))
                    .map_err(|_| closed())?;
                std::task::Poll::Ready(Ok(buf.len()))
            }
            std::task::Poll::Ready(Err(_)) => std::task::Poll::Ready(Err(closed())),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.0.close();
        std::task::Poll::Ready(Ok(()))
    }
}

/// Write every chunk to every live upload, hashing once. Returns the
/// stored size and SHA-256, or the primary target's error.
async fn store(
    mut rx: mpsc::Receiver<Bytes>,
    fan: &mut FanOut<'_>,
) -> Result<(u64, String), TargetError> {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = rx.recv().await {
        hash.update(&chunk);
        size += chunk.len() as u64;
        fan.write_all(&chunk).await?;
    }
    fan.shutdown().await;
    Ok((size, hex::encode(hash.finalize())))
}
