//! Reading an object: one streaming GET that resumes with a ranged GET
//! from the byte reached when the connection drops or stalls.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use futures_util::StreamExt;
use http::HeaderValue;
use s3::command::Command;
use s3::error::S3Error;
use s3::request::tokio_backend::ReqwestRequest;
use s3::request::Request as _;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::errors::{one_line, status_of, Failed};
use super::retry::is_transient;
use super::Client;

/// Stream `key` into `tx`; a dropped or stalled connection is resumed from
/// the byte reached (a ranged GET), so a restore does not start over.
pub(super) async fn fetch(
    c: Arc<Client>,
    name: String,
    key: String,
    size: u64,
    etag: Option<String>,
    tx: mpsc::Sender<io::Result<Bytes>>,
) {
    let mut bucket = c.bucket.clone();
    // rust-s3's time limit covers a whole request, which for a download of
    // any size is wrong: each wait (for the answer, for the next bytes) is
    // limited below instead.
    bucket.set_request_timeout(None);
    // If-Match: a replaced object fails (412) instead of mixing two versions.
    if let Some(Ok(v)) = etag.as_deref().map(HeaderValue::from_str) {
        bucket.extra_headers_mut().insert(http::header::IF_MATCH, v);
    }
    let limit = c.request_timeout;
    let timed_out = |what: &str| {
        S3Error::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no {what} within {} s", limit.as_secs()),
        ))
    };
    let mut offset = 0u64;
    // Failures since the last byte received: progress renews the budget.
    let mut failures = 0u32;
    while offset < size {
        let attempt = async {
            let command = Command::GetObjectRange {
                start: offset,
                end: None,
            };
            let request = ReqwestRequest::new(&bucket, &key, command).await?;
            let mut stream = tokio::time::timeout(limit, request.response_data_to_stream())
                .await
                .map_err(|_| timed_out("answer"))??;
            if stream.status_code != 206 && offset > 0 {
                return Err(S3Error::HttpFailWithBody(
                    stream.status_code,
                    "<Error><Code>RangeIgnored</Code><Message>the server ignored the Range header, so the download cannot resume</Message></Error>".into(),
                ));
            }
            while let Some(chunk) = tokio::time::timeout(limit, stream.bytes.next())
                .await
                .map_err(|_| timed_out("data"))?
            {
                let chunk = chunk?;
                offset += chunk.len() as u64;
                failures = 0;
                if offset > size {
                    return Err(S3Error::HttpFailWithBody(
                        stream.status_code,
                        format!("<Error><Code>TooLong</Code><Message>more than the {size} bytes announced</Message></Error>"),
                    ));
                }
                if tx.send(Ok(chunk)).await.is_err() {
                    return Ok(false); // the reader is gone
                }
            }
            if offset < size {
                return Err(S3Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("the answer ended at byte {offset} of {size}"),
                )));
            }
            Ok(true)
        }
        .await;
        match attempt {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) if failures < c.retry.retries && is_transient(&e) => {
                failures += 1;
                let wait = c.retry.delay(failures);
                tracing::warn!(
                    %name,
                    offset,
                    wait_ms = wait.as_millis() as u64,
                    error = %one_line(&e),
                    "bucket: download interrupted, resuming"
                );
                tokio::time::sleep(wait).await;
            }
            Err(error) => {
                let e = if status_of(&error) == Some(412) {
                    c.remote(
                        "downloading",
                        &name,
                        "the object was replaced while it was read: start again".into(),
                    )
                } else {
                    c.error(
                        "downloading",
                        &name,
                        Failed {
                            error,
                            attempts: failures + 1,
                        },
                    )
                };
                let _ = tx.send(Err(io::Error::other(e))).await;
                return;
            }
        }
    }
}

/// Reads what [`fetch`] sends; fails rather than ends early.
pub(super) struct RangeReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    remaining: u64,
    name: String,
    task: JoinHandle<()>,
}

impl RangeReader {
    /// Start fetching `name` (`size` bytes, entity tag `etag`) in the
    /// background, a few network chunks (typically 16 KiB) ahead of the
    /// reader.
    pub(super) fn start(
        client: Arc<Client>,
        name: &str,
        key: String,
        size: u64,
        etag: Option<String>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(fetch(client, name.to_owned(), key, size, etag, tx));
        RangeReader {
            rx,
            current: Bytes::new(),
            remaining: size,
            name: name.to_owned(),
            task,
        }
    }
}

impl AsyncRead for RangeReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                let chunk = self.current.split_to(n);
                buf.put_slice(&chunk);
                self.remaining = self.remaining.saturating_sub(n as u64);
                return Poll::Ready(Ok(()));
            }
            if self.remaining == 0 || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Ok(data)) => self.current = data,
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "bucket: download of {} stopped {} bytes before the end",
                            self.name, self.remaining
                        ),
                    )))
                }
            }
        }
    }
}

impl Drop for RangeReader {
    fn drop(&mut self) {
        self.task.abort();
    }
}
