//! Reading one object from the SFTP server: a task keeps several read
//! requests in flight (one at a time is bound by the round trip) and hands
//! the data on in order. A dropped connection is reopened and reading goes
//! on from the first byte not yet handed on.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::sync::mpsc;

use super::session::{Conn, Failure};
use super::Inner;
use crate::target::{ObjectReader, TargetError};

/// Bytes per read request (OpenSSH's server answers up to 256 KiB).
const CHUNK: u32 = 128 * 1024;

/// Open `name` and start reading it.
pub(super) async fn open(inner: Arc<Inner>, name: &str) -> Result<ObjectReader, TargetError> {
    let (conn, handle, size) = open_sized(&inner, name).await?;
    let depth = inner.settings.concurrency;
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(depth);
    let task = Reader {
        inner,
        name: name.to_owned(),
        conn,
        handle,
        size,
        delivered: 0,
        tx,
    };
    tokio::spawn(task.run());
    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Ok(Box::new(tokio_util::io::StreamReader::new(stream)))
}

async fn open_sized(inner: &Inner, name: &str) -> Result<(Arc<Conn>, String, u64), TargetError> {
    inner
        .request("opening", |c| async move {
            let h = c
                .sftp
                .open(c.path(name), OpenFlags::READ, FileAttributes::empty())
                .await
                .map_err(|e| Failure::sftp("opening", name, e))?
                .handle;
            let size = c
                .sftp
                .fstat(h.as_str())
                .await
                .map_err(|e| Failure::sftp("reading the size of", name, e))?
                .attrs
                .size
                .unwrap_or(0);
            Ok((c, h, size))
        })
        .await
}

struct Reader {
    inner: Arc<Inner>,
    name: String,
    conn: Arc<Conn>,
    handle: String,
    size: u64,
    /// Bytes handed on so far.
    delivered: u64,
    tx: mpsc::Sender<io::Result<Bytes>>,
}

type Answer = (u64, u32, Result<Vec<u8>, SftpError>);

impl Reader {
    async fn run(mut self) {
        let mut stalls = 0;
        loop {
            match self.pipeline().await {
                Ok(()) => break,
                Err(f) if f.transient && stalls < self.inner.settings.retries => {
                    stalls += 1;
                    tracing::warn!(file = %self.name, error = %f.error, "sftp: the connection dropped while reading, reconnecting");
                    self.inner.forget(&self.conn).await;
                    tokio::time::sleep(self.inner.backoff(stalls)).await;
                    match open_sized(&self.inner, &self.name).await {
                        Ok((c, h, _)) => {
                            self.conn = c;
                            self.handle = h;
                        }
                        Err(e) => {
                            let _ = self.tx.send(Err(io::Error::other(e.to_string()))).await;
                            return;
                        }
                    }
                }
                Err(f) => {
                    let _ = self
                        .tx
                        .send(Err(io::Error::other(f.error.to_string())))
                        .await;
                    break;
                }
            }
        }
        let _ = self.conn.sftp.close(self.handle.as_str()).await;
    }

    /// Read from `delivered` to the end, several requests in flight; `Ok`
    /// at the end or when the reader went away.
    async fn pipeline(&mut self) -> Result<(), Failure> {
        let depth = self.inner.settings.concurrency;
        let mut queue: VecDeque<tokio::task::JoinHandle<Answer>> = VecDeque::new();
        let mut ask = self.delivered;
        let result = loop {
            while queue.len() < depth && ask < self.size {
                let len = CHUNK.min((self.size - ask).min(u64::from(u32::MAX)) as u32);
                let (c, h) = (Arc::clone(&self.conn), self.handle.clone());
                let at = ask;
                queue.push_back(tokio::spawn(async move {
                    let r = c.sftp.read(h, at, len).await.map(|d| d.data);
                    (at, len, r)
                }));
                ask += u64::from(len);
            }
            let Some(next) = queue.pop_front() else {
                break Ok(());
            };
            let (at, len, r) = match next.await {
                Ok(a) => a,
                Err(e) => break Err(Failure::stop(self.error(e.to_string()))),
            };
            debug_assert_eq!(at, self.delivered);
            let data = match r {
                Ok(d) if !d.is_empty() => d,
                Ok(_) => break Err(Failure::stop(self.shorter())),
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => {
                    break Err(Failure::stop(self.shorter()))
                }
                Err(e) => break Err(Failure::sftp("reading", &self.name, e)),
            };
            let short = data.len() < len as usize;
            self.delivered += data.len() as u64;
            if self.tx.send(Ok(Bytes::from(data))).await.is_err() {
                break Ok(());
            }
            if short && self.delivered < self.size {
                // A short answer in the middle: ask again from here.
                for q in queue.drain(..) {
                    q.abort();
                }
                ask = self.delivered;
            }
        };
        for q in queue {
            q.abort();
        }
        result
    }

    fn error(&self, detail: String) -> TargetError {
        TargetError::Remote {
            target: super::LABEL,
            action: "reading",
            name: self.name.clone(),
            detail,
        }
    }

    fn shorter(&self) -> TargetError {
        self.error(format!(
            "the file ended at {} bytes, before its size of {}: it changed or was truncated on the server",
            self.delivered, self.size
        ))
    }
}
