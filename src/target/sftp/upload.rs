//! One upload to the SFTP server: a task that owns the remote partial
//! file, fed chunks by the [`SftpUpload`] writer.
//!
//! The task keeps up to `SFTP_CONCURRENCY` writes in flight and each chunk
//! until the server acknowledges it. When the connection drops, it opens
//! a new one, opens the partial file again (without truncating), checks
//! that everything acknowledged is still there, and sends the
//! unacknowledged chunks again: the upload goes on where it was, as a
//! bucket upload retries one part. On commit it waits for the last
//! acknowledgement, asks the server to `fsync`, closes the file, checks its
//! size and renames it to the final name. Without a commit (an abort, a
//! drop, a failure), the partial file is removed and the final name is
//! never touched.

use std::collections::BTreeMap;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use futures_util::stream::{FuturesUnordered, StreamExt};
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};
use tokio::io::AsyncWrite;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::PollSender;

use super::session::{Conn, Failure};
use super::{partial_name, Inner, LABEL};
use crate::target::{ObjectInfo, TargetError, Upload};

/// Bytes per write request (OpenSSH's server takes up to 256 KiB). With
/// the default 16 in flight that is 2 MiB on the way, as much as OpenSSH's
/// `sftp` keeps: over a 20 ms round trip, 64 KiB writes (1 MiB) reached
/// 0.6x its throughput, 128 KiB as much as it (docs/BENCHMARKS.md).
const CHUNK: usize = 128 * 1024;

enum Msg {
    Data(Bytes),
    Commit,
}

/// The writer side of an upload.
pub(super) struct SftpUpload {
    name: String,
    buf: Vec<u8>,
    tx: Option<PollSender<Msg>>,
    task: Option<JoinHandle<Result<ObjectInfo, TargetError>>>,
    /// The task's error, once it has stopped, for `poll_write` to report.
    failed: Arc<Mutex<Option<String>>>,
}

impl SftpUpload {
    /// Open the partial file and start the task.
    pub(super) async fn start(inner: Arc<Inner>, name: &str) -> Result<Self, TargetError> {
        let temp = partial_name(name);
        let (conn, handle) = inner
            .request("creating", |c| {
                let temp = temp.clone();
                async move {
                    let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE;
                    let h = open(&c, &temp, flags).await?;
                    Ok((c, h))
                }
            })
            .await?;
        let depth = inner.settings.concurrency;
        let (tx, rx) = mpsc::channel(depth);
        let failed = Arc::new(Mutex::new(None));
        let writer = Writer {
            inner,
            name: name.to_owned(),
            temp,
            conn,
            handle,
            next: 0,
            pending: BTreeMap::new(),
            inflight: FuturesUnordered::new(),
            depth,
            stalls: 0,
        };
        let task = tokio::spawn(writer.run(rx, Arc::clone(&failed)));
        Ok(SftpUpload {
            name: name.to_owned(),
            buf: Vec::with_capacity(CHUNK),
            tx: Some(PollSender::new(tx)),
            task: Some(task),
            failed,
        })
    }

    fn stopped(&self) -> io::Error {
        let why = self.failed.lock().unwrap().clone();
        io::Error::other(why.unwrap_or_else(|| "the upload to the SFTP server stopped".into()))
    }

    /// Hand the buffered bytes to the task once it can take them.
    fn poll_send_buf(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.buf.is_empty() {
            return Poll::Ready(Ok(()));
        }
        let Some(tx) = self.tx.as_mut() else {
            return Poll::Ready(Err(io::Error::other("upload already finished")));
        };
        if std::task::ready!(tx.poll_reserve(cx)).is_err() {
            return Poll::Ready(Err(self.stopped()));
        }
        let data = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let tx = self.tx.as_mut().expect("checked above");
        if tx.send_item(Msg::Data(data)).is_err() {
            return Poll::Ready(Err(self.stopped()));
        }
        Poll::Ready(Ok(()))
    }

    /// Stop the task (without a commit it removes the partial file) and
    /// wait for it.
    async fn finish(&mut self, commit: bool) -> Result<Option<ObjectInfo>, TargetError> {
        let lost = |e: tokio::task::JoinError| TargetError::Io {
            target: LABEL,
            action: "uploading",
            name: self.name.clone(),
            source: io::Error::other(e),
        };
        if commit {
            if let Some(mut tx) = self.tx.take() {
                if !self.buf.is_empty() {
                    let data = Bytes::from(std::mem::take(&mut self.buf));
                    let _ = send(&mut tx, Msg::Data(data)).await;
                }
                let _ = send(&mut tx, Msg::Commit).await;
            }
        } else {
            self.tx = None;
        }
        match self.task.take() {
            Some(task) => match task.await.map_err(lost)? {
                Ok(info) => Ok(Some(info)),
                Err(_) if !commit => Ok(None),
                Err(e) => Err(e),
            },
            None => Ok(None),
        }
    }
}

async fn send(tx: &mut PollSender<Msg>, msg: Msg) -> Result<(), ()> {
    std::future::poll_fn(|cx| tx.poll_reserve(cx))
        .await
        .map_err(|_| ())?;
    tx.send_item(msg).map_err(|_| ())
}

impl AsyncWrite for SftpUpload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.buf.len() >= CHUNK {
            std::task::ready!(this.poll_send_buf(cx))?;
        }
        let n = data.len().min(CHUNK - this.buf.len());
        this.buf.extend_from_slice(&data[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is visible before commit: flushing has no meaning here.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Upload for SftpUpload {
    async fn commit(mut self: Box<Self>) -> Result<ObjectInfo, TargetError> {
        match self.finish(true).await? {
            Some(info) => Ok(info),
            None => Err(TargetError::Io {
                target: LABEL,
                action: "uploading",
                name: self.name.clone(),
                source: io::Error::other("the upload was already finished"),
            }),
        }
    }

    async fn abort(mut self: Box<Self>) -> Result<(), TargetError> {
        self.finish(false).await.map(|_| ())
    }
}

impl Drop for SftpUpload {
    fn drop(&mut self) {
        // Dropping the sender tells the task to remove the partial file;
        // it runs on by itself until it has.
        self.tx = None;
    }
}

/// A write in flight, as a task so that it makes progress on its own.
type Ack = JoinHandle<(u64, Result<(), Failure>)>;

/// The task's state.
struct Writer {
    inner: Arc<Inner>,
    name: String,
    temp: String,
    conn: Arc<Conn>,
    handle: String,
    /// Offset of the next chunk.
    next: u64,
    /// Chunks sent and not yet acknowledged, by offset.
    pending: BTreeMap<u64, Bytes>,
    inflight: FuturesUnordered<Ack>,
    depth: usize,
    /// Reconnections since the last acknowledged write.
    stalls: u32,
}

impl Writer {
    async fn run(
        mut self,
        mut rx: mpsc::Receiver<Msg>,
        failed: Arc<Mutex<Option<String>>>,
    ) -> Result<ObjectInfo, TargetError> {
        let result = self.pump(&mut rx).await;
        if let Err(e) = &result {
            *failed.lock().unwrap() = Some(e.to_string());
        }
        if !matches!(result, Ok(Some(_))) {
            rx.close();
            self.discard().await;
        }
        match result {
            Ok(Some(info)) => Ok(info),
            Ok(None) => Err(TargetError::Io {
                target: LABEL,
                action: "uploading",
                name: self.name.clone(),
                source: io::Error::other("aborted"),
            }),
            Err(e) => Err(e),
        }
    }

    /// Send chunks as they come; `Some` once committed, `None` when the
    /// writer went away without a commit.
    async fn pump(
        &mut self,
        rx: &mut mpsc::Receiver<Msg>,
    ) -> Result<Option<ObjectInfo>, TargetError> {
        loop {
            tokio::select! {
                msg = rx.recv(), if self.inflight.len() < self.depth => match msg {
                    Some(Msg::Data(d)) => {
                        let at = self.next;
                        self.next += d.len() as u64;
                        self.pending.insert(at, d.clone());
                        self.inflight.push(write(&self.conn, &self.handle, at, d));
                    }
                    Some(Msg::Commit) => return self.publish().await.map(Some),
                    None => return Ok(None),
                },
                Some(done) = self.inflight.next(), if !self.inflight.is_empty() => {
                    let (at, r) = joined(done);
                    self.acked(at, r).await?;
                }
            }
        }
    }

    /// One write answered: forget the chunk, or recover from the failure.
    async fn acked(&mut self, at: u64, r: Result<(), Failure>) -> Result<(), TargetError> {
        match r {
            Ok(()) => {
                self.pending.remove(&at);
                self.stalls = 0;
                Ok(())
            }
            Err(f) if f.transient => self.recover(f).await,
            Err(f) => Err(self.explain(f).await),
        }
    }

    /// Wait for every write in flight.
    async fn drain(&mut self) -> Result<(), TargetError> {
        while let Some(done) = self.inflight.next().await {
            let (at, r) = joined(done);
            self.acked(at, r).await?;
        }
        Ok(())
    }

    /// After a dropped connection: a new one, the partial file opened
    /// again, and every unacknowledged chunk sent again.
    async fn recover(&mut self, first: Failure) -> Result<(), TargetError> {
        self.stop_inflight();
        self.stalls += 1;
        if self.stalls > self.inner.settings.retries {
            return Err(first.error);
        }
        tokio::time::sleep(self.inner.backoff(self.stalls)).await;
        let old = Arc::clone(&self.conn);
        self.inner.forget(&old).await;
        tracing::warn!(file = %self.name, error = %first.error, "sftp: the connection dropped during an upload, reconnecting");
        // Everything below the first unacknowledged chunk was acknowledged
        // and must still be in the file.
        let kept = self.pending.keys().next().copied().unwrap_or(self.next);
        let temp = self.temp.clone();
        let (conn, handle) = self
            .inner
            .request("reopening the partial file", |c| {
                let temp = temp.clone();
                async move {
                    let h = open(&c, &temp, OpenFlags::WRITE).await?;
                    let size = c
                        .sftp
                        .fstat(h.as_str())
                        .await
                        .map_err(|e| Failure::sftp("reading the size of", &temp, e))?
                        .attrs
                        .size
                        .unwrap_or(0);
                    if size < kept {
                        return Err(Failure::stop(TargetError::Remote {
                            target: LABEL,
                            action: "resuming",
                            name: temp.clone(),
                            detail: format!("the partial file holds {size} bytes, fewer than the {kept} the server had acknowledged: the server lost data; the next run copies the backup again"),
                        }));
                    }
                    Ok((c, h))
                }
            })
            .await?;
        self.conn = conn;
        self.handle = handle;
        for (&at, d) in &self.pending {
            self.inflight
                .push(write(&self.conn, &self.handle, at, d.clone()));
        }
        Ok(())
    }

    /// Make the file durable, close it, check it and give it its name.
    async fn publish(&mut self) -> Result<ObjectInfo, TargetError> {
        self.drain().await?;
        let size = self.next;
        loop {
            match self.close_checked(size).await {
                Ok(()) => break,
                Err(f) if f.transient => {
                    self.recover(f).await?;
                    self.drain().await?;
                }
                Err(f) => return Err(self.explain(f).await),
            }
        }
        let (temp, name) = (self.temp.clone(), self.name.clone());
        self.inner
            .request("renaming", |c| {
                let (temp, name) = (temp.clone(), name.clone());
                async move { rename(&c, &temp, &name, size).await }
            })
            .await?;
        Ok(ObjectInfo {
            name: self.name.clone(),
            size,
            modified: Some(Utc::now()),
        })
    }

    async fn close_checked(&mut self, size: u64) -> Result<(), Failure> {
        let c = &self.conn;
        if c.ext.fsync {
            c.sftp
                .fsync(self.handle.as_str())
                .await
                .map_err(|e| Failure::sftp("syncing", &self.temp, e))?;
        }
        c.sftp
            .close(self.handle.as_str())
            .await
            .map_err(|e| Failure::sftp("closing", &self.temp, e))?;
        let on_server = c
            .sftp
            .stat(c.path(&self.temp))
            .await
            .map_err(|e| Failure::sftp("checking", &self.temp, e))?
            .attrs
            .size;
        if on_server != Some(size) {
            return Err(Failure::stop(TargetError::Remote {
                target: LABEL,
                action: "checking",
                name: self.temp.clone(),
                detail: format!(
                    "the server holds {} bytes of the {size} written",
                    on_server.map_or("an unknown number of".into(), |s| s.to_string())
                ),
            }));
        }
        Ok(())
    }

    /// A failure that is not a dropped connection: a full disk says so.
    async fn explain(&self, f: Failure) -> TargetError {
        let failure =
            matches!(&f.error, TargetError::Remote { detail, .. } if detail.starts_with("Failure"));
        if failure && self.conn.ext.statvfs {
            if let Ok(st) = self.conn.sftp.statvfs(self.conn.root.as_str()).await {
                let free = st.blocks_avail.saturating_mul(st.fragment_size.max(1));
                if free < (CHUNK * (self.depth + 1)) as u64 {
                    return TargetError::NoSpace {
                        target: LABEL,
                        name: self.name.clone(),
                    };
                }
            }
        }
        f.error
    }

    /// Remove the partial file (best effort: the next run's clean-up
    /// removes what this could not).
    async fn discard(&mut self) {
        self.stop_inflight();
        let c = &self.conn;
        let _ = c.sftp.close(self.handle.as_str()).await;
        if c.sftp.remove(c.path(&self.temp)).await.is_err() {
            let temp = self.temp.clone();
            let _ = self
                .inner
                .retry("removing the partial file", 1, |c| {
                    let temp = temp.clone();
                    async move {
                        c.sftp
                            .remove(c.path(&temp))
                            .await
                            .map(|_| ())
                            .map_err(|e| Failure::sftp("removing", &temp, e))
                    }
                })
                .await;
        }
    }
}

impl Writer {
    fn stop_inflight(&mut self) {
        for w in std::mem::take(&mut self.inflight) {
            w.abort();
        }
    }
}

/// A write task's answer; a task that panicked counts as a lost write.
fn joined(
    r: Result<(u64, Result<(), Failure>), tokio::task::JoinError>,
) -> (u64, Result<(), Failure>) {
    r.unwrap_or_else(|e| {
        (
            u64::MAX,
            Err(Failure::stop(TargetError::Io {
                target: LABEL,
                action: "writing",
                name: "the partial file".into(),
                source: io::Error::other(e),
            })),
        )
    })
}

fn write(conn: &Arc<Conn>, handle: &str, at: u64, data: Bytes) -> Ack {
    let (conn, handle) = (Arc::clone(conn), handle.to_owned());
    tokio::spawn(async move {
        let r = conn
            .sftp
            .write(handle, at, data.to_vec())
            .await
            .map(|_| ())
            .map_err(|e| Failure::sftp("writing", "the partial file", e));
        (at, r)
    })
}

async fn open(c: &Conn, temp: &str, flags: OpenFlags) -> Result<String, Failure> {
    let attrs = FileAttributes {
        permissions: Some(0o600),
        ..FileAttributes::empty()
    };
    c.sftp
        .open(c.path(temp), flags, attrs)
        .await
        .map(|h| h.handle)
        .map_err(|e| Failure::sftp("creating", temp, e))
}

/// Give the partial file its final name, replacing an older object of
/// that name. Idempotent: after a dropped connection, a rename that did
/// happen is recognised by the partial file being gone and the final one
/// having the size written.
async fn rename(c: &Conn, temp: &str, name: &str, size: u64) -> Result<(), Failure> {
    let (from, to) = (c.path(temp), c.path(name));
    let done = || async {
        let temp_gone = matches!(c.sftp.stat(from.as_str()).await, Err(russh_sftp::client::error::Error::Status(ref s)) if s.status_code == StatusCode::NoSuchFile);
        let final_size = c
            .sftp
            .stat(to.as_str())
            .await
            .ok()
            .and_then(|a| a.attrs.size);
        temp_gone && final_size == Some(size)
    };
    let r = if c.ext.posix_rename {
        let mut data = Vec::with_capacity(8 + from.len() + to.len());
        for s in [&from, &to] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        match c.sftp.extended("posix-rename@openssh.com", data).await {
            Ok(Packet::Status(s)) if s.status_code == StatusCode::Ok => Ok(()),
            Ok(Packet::Status(s)) => Err(russh_sftp::client::error::Error::Status(s)),
            Ok(_) => Err(russh_sftp::client::error::Error::UnexpectedPacket),
            Err(e) => Err(e),
        }
    } else {
        // SFTP version 3 refuses to rename onto an existing file: remove
        // it first. Not atomic; servers without posix-rename are rare.
        let _ = c.sftp.remove(to.as_str()).await;
        c.sftp.rename(from.as_str(), to.as_str()).await.map(|_| ())
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) => {
            if done().await {
                return Ok(());
            }
            Err(Failure::sftp("renaming", name, e))
        }
    }
}
