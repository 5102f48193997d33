//! Off-site copies in the same pass as the volume (issue 16, RELIABILITY.md
//! item 24), against the real MariaDB, S3 test server and OpenSSH server:
//! each chunk of a backup goes to the volume, the bucket and the SFTP
//! server as it is produced, and the volume is never read back; on the
//! volume the manifest is published before the data, off-site after it; a
//! target that does not start an upload in time is copied from the volume
//! once the local backup is stored, manifest last too.
//!
//! Every target is wrapped in [`Recording`], which passes each call to the
//! real target and writes down what happened, in order.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWrite};

use selmai_backup::backup::pipeline::{self, Encoding, TEE_PATIENCE};
use selmai_backup::config::Settings;
use selmai_backup::dump::{DumpHooks, DumpOptions, NoHooks};
use selmai_backup::target::{ObjectInfo, ObjectReader, Target, TargetError, Upload};

use crate::support::bucket::{bucket_vars, create_bucket, s3_endpoint, unique_bucket};
use crate::support::sshd::sftp_env;
use crate::support::TestDb;

/// What happened on a target, in the order it happened (one log for all).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Event {
    /// An object was opened for reading.
    Open(&'static str, String),
    /// An upload has started.
    Create(&'static str, String),
    /// Bytes were accepted by an upload (one event per write).
    Write(&'static str, String),
    /// An upload was published under its final name.
    Commit(&'static str, String),
}

type Log = Arc<Mutex<Vec<Event>>>;

/// A real target that logs what is done with it; its first `create`
/// waits `late` first when set (a target slow to start an upload).
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn Target>,
    log: Log,
    late: Mutex<Option<Duration>>,
}

impl Recording {
    fn wrap(inner: Arc<dyn Target>, log: &Log) -> Arc<dyn Target> {
        Arc::new(Recording {
            inner,
            log: Arc::clone(log),
            late: Mutex::new(None),
        })
    }

    fn note(&self, e: Event) {
        self.log.lock().unwrap().push(e);
    }
}

#[async_trait]
impl Target for Recording {
    fn label(&self) -> &'static str {
        self.inner.label()
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        self.inner.list(prefix).await
    }
    async fn metadata(&self, name: &str) -> Result<Option<ObjectInfo>, TargetError> {
        self.inner.metadata(name).await
    }
    async fn create(&self, name: &str) -> Result<Box<dyn Upload>, TargetError> {
        let late = self.late.lock().unwrap().take();
        if let Some(wait) = late {
            tokio::time::sleep(wait).await;
        }
        let inner = self.inner.create(name).await?;
        self.note(Event::Create(self.label(), name.to_owned()));
        Ok(Box::new(RecordingUpload {
            inner,
            label: self.label(),
            name: name.to_owned(),
            log: Arc::clone(&self.log),
        }))
    }
    async fn open(&self, name: &str) -> Result<ObjectReader, TargetError> {
        self.note(Event::Open(self.label(), name.to_owned()));
        self.inner.open(name).await
    }
    async fn delete(&self, name: &str) -> Result<(), TargetError> {
        self.inner.delete(name).await
    }
}

struct RecordingUpload {
    inner: Box<dyn Upload>,
    label: &'static str,
    name: String,
    log: Log,
}

impl AsyncWrite for RecordingUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            let e = Event::Write(self.label, self.name.clone());
            self.log.lock().unwrap().push(e);
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[async_trait]
impl Upload for RecordingUpload {
    async fn commit(self: Box<Self>) -> Result<ObjectInfo, TargetError> {
        let info = self.inner.commit().await?;
        let e = Event::Commit(self.label, self.name.clone());
        self.log.lock().unwrap().push(e);
        Ok(info)
    }
    async fn abort(self: Box<Self>) -> Result<(), TargetError> {
        self.inner.abort().await
    }
}

/// Settings for `db` with a volume in `dir`, a bucket and the shared SFTP
/// server (`remote`); every target wrapped in one [`Recording`] log.
async fn recorded_targets(
    db: &str,
    dir: &std::path::Path,
    remote: &str,
    tag: &str,
) -> (Settings, Vec<Arc<dyn Target>>, Log) {
    let bucket = unique_bucket(tag);
    create_bucket(&bucket).await;
    let mut vars = bucket_vars(db, dir, &s3_endpoint(), &bucket, &[]);
    let env = sftp_env();
    vars.extend(env.vars(env.port, remote));
    let settings = Settings::from_vars(vars).unwrap();
    let log: Log = Arc::default();
    let targets = selmai_backup::cmd::targets(&settings)
        .unwrap()
        .into_iter()
        .map(|t| Recording::wrap(t, &log))
        .collect();
    (settings, targets, log)
}

async fn backup(
    s: &Settings,
    targets: &[Arc<dyn Target>],
    hooks: &dyn DumpHooks,
) -> pipeline::BackupOutcome {
    pipeline::backup_db(
        &s.db().unwrap(),
        &Encoding::of(s),
        &s.prefix,
        targets,
        &DumpOptions::default(),
        hooks,
    )
    .await
    .unwrap_or_else(|e| panic!("backup failed: {e}"))
}

/// Holds the dump's rows back until every off-site target has started its
/// upload (5 s at most), so that they all join the pass before the first
/// chunk whatever the machine's load: the test then sees the chunks stream.
struct UntilOffsiteStarted(Log);

#[async_trait]
impl DumpHooks for UntilOffsiteStarted {
    async fn before_table_data(&self, _: &str) {
        for _ in 0..500 {
            let started = self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|e| matches!(e, Event::Create(l, _) if *l != "volume"))
                .count();
            if started >= 2 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn position(log: &[Event], e: &Event) -> usize {
    log.iter()
        .position(|x| x == e)
        .unwrap_or_else(|| panic!("{e:?} never happened: {log:#?}"))
}

async fn sha256_in(t: &dyn Target, name: &str) -> String {
    let mut r = t.open(name).await.unwrap();
    let mut all = Vec::new();
    r.read_to_end(&mut all).await.unwrap();
    hex::encode(Sha256::digest(&all))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_reaches_the_bucket_and_the_sftp_server_in_the_same_pass_manifest_last() {
    // Some megabytes, so that the dump spans many chunks.
    let db = TestDb::with_hex_rows("one_pass", 40_000);
    let dir = tempfile::tempdir().unwrap();
    let (remote, _) = sftp_env().fresh_dir("one_pass");
    let (settings, targets, log) =
        recorded_targets(&db.name, dir.path(), &remote, "one-pass").await;
    let outcome = backup(&settings, &targets, &UntilOffsiteStarted(Arc::clone(&log))).await;
    let name = outcome.file.clone();
    let manifest = format!("{name}.manifest.json");
    assert_eq!(
        outcome.stored,
        ["volume", "bucket", "sftp"],
        "{:?}",
        outcome.failed
    );
    assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);

    let log = log.lock().unwrap().clone();
    // No second read: nothing was opened on the volume (or anywhere).
    let opened: Vec<_> = log
        .iter()
        .filter(|e| matches!(e, Event::Open(..)))
        .collect();
    assert!(opened.is_empty(), "the backup was read back: {opened:?}");
    // The same pass: every off-site target got the data as it was
    // produced, its first bytes before the volume's last ones.
    let volume_commit = position(&log, &Event::Commit("volume", name.clone()));
    let volume_write = Event::Write("volume", name.clone());
    let volume_last = log
        .iter()
        .rposition(|e| *e == volume_write)
        .expect("the volume was written");
    let volume_writes = log.iter().filter(|e| **e == volume_write).count();
    assert!(
        volume_writes > 3,
        "too few chunks to show a stream: {log:#?}"
    );
    for label in ["bucket", "sftp"] {
        let wrote = position(&log, &Event::Write(label, name.clone()));
        assert!(
            wrote < volume_last,
            "{label} got its first bytes after the dump: {log:#?}"
        );
    }
    // The volume: manifest, then data. Off-site: data, then manifest.
    assert!(position(&log, &Event::Commit("volume", manifest.clone())) < volume_commit);
    for label in ["bucket", "sftp"] {
        let data = position(&log, &Event::Commit(label, name.clone()));
        let m = position(&log, &Event::Commit(label, manifest.clone()));
        assert!(
            data < m,
            "{label}: the manifest went before the data: {log:#?}"
        );
        assert!(
            volume_commit < data,
            "{label}: published before the volume: {log:#?}"
        );
    }
    // The same bytes everywhere, and the manifest's checksum is theirs.
    let want = sha256_in(targets[0].as_ref(), &name).await;
    assert_eq!(want, outcome.manifest.sha256);
    for t in &targets[1..] {
        assert_eq!(sha256_in(t.as_ref(), &name).await, want, "{}", t.label());
        assert_eq!(
            sha256_in(t.as_ref(), &manifest).await,
            sha256_in(targets[0].as_ref(), &manifest).await,
            "{}",
            t.label()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_slow_to_start_an_upload_gets_its_copy_from_the_volume_manifest_last() {
    let db = TestDb::new("one_pass_late");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2)");
    let dir = tempfile::tempdir().unwrap();
    let (remote, _) = sftp_env().fresh_dir("one_pass_late");
    let env = sftp_env();
    let mut vars = crate::support::tool::vars(&db.name, dir.path());
    vars.extend(env.vars(env.port, &remote));
    let settings = Settings::from_vars(vars).unwrap();
    let log: Log = Arc::default();
    let real = selmai_backup::cmd::targets(&settings).unwrap();
    let volume = Recording::wrap(Arc::clone(&real[0]), &log);
    let sftp = Arc::new(Recording {
        inner: Arc::clone(&real[1]),
        log: Arc::clone(&log),
        late: Mutex::new(Some(TEE_PATIENCE + Duration::from_secs(1))),
    });
    let targets: Vec<Arc<dyn Target>> = vec![volume, sftp];
    let outcome = backup(&settings, &targets, &NoHooks).await;
    let name = outcome.file.clone();
    let manifest = format!("{name}.manifest.json");
    assert_eq!(outcome.stored, ["volume", "sftp"], "{:?}", outcome.failed);

    let log = log.lock().unwrap().clone();
    // Copied from the volume, after the local backup was stored.
    let volume_commit = position(&log, &Event::Commit("volume", name.clone()));
    let read = position(&log, &Event::Open("volume", name.clone()));
    assert!(volume_commit < read, "{log:#?}");
    let data = position(&log, &Event::Commit("sftp", name.clone()));
    let m = position(&log, &Event::Commit("sftp", manifest.clone()));
    assert!(read < data && data < m, "{log:#?}");
    assert_eq!(
        sha256_in(targets[1].as_ref(), &name).await,
        outcome.manifest.sha256
    );
}
