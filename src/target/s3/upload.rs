//! Writing an object: a streaming multipart upload whose parts go up in
//! the background, at most `S3_CONCURRENCY` at a time, committed by
//! [`Upload::commit`] and aborted on any failure or drop (see the
//! module documentation of `target::s3`).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::Utc;
use s3::command::{Command, Multipart};
use s3::error::S3Error;
use s3::request::tokio_backend::ReqwestRequest;
use s3::request::Request as _;
use s3::serde_types::Part;
use tokio::io::AsyncWrite;
use tokio::sync::{AcquireError, Notify, OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::errors::error_code_of;
use super::retry::{is_transient, retry};
use super::{key_of, Client, CONTENT_TYPE, MAX_PARTS};
use crate::target::{ObjectInfo, TargetError, Upload};

/// State shared by an upload and its part tasks.
pub(super) struct UploadShared {
    client: Arc<Client>,
    name: String,
    key: String,
    /// Set by the first part task; later ones wait for it.
    upload_id: OnceCell<String>,
    /// An initiate request was sent, so an upload may exist on the server.
    initiate_started: AtomicBool,
    /// An initiate attempt failed after it may have reached the server, so
    /// an upload we never heard of may exist for our key.
    initiate_ambiguous: AtomicBool,
    /// The first part failure, so the writer stops early.
    failed: Mutex<Option<String>>,
    /// The initiate task ended (with an id or an error).
    initiate_finished: AtomicBool,
    /// Wakes [`cleanup`] waiting for the initiate task.
    initiate_done: Notify,
}

pub(super) type PartTask = JoinHandle<Result<Part, TargetError>>;
pub(super) type Acquire =
    Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A streaming multipart upload; see the module documentation.
pub(super) struct S3Upload {
    shared: Arc<UploadShared>,
    /// One permit per part in flight.
    permits: Arc<Semaphore>,
    /// The part being filled (allocated on first write).
    buf: Vec<u8>,
    written: u64,
    next_part: u32,
    /// Part tasks in part order, not yet awaited.
    tasks: VecDeque<PartTask>,
    /// Waiting for a free slot to send a full part.
    acquiring: Option<Acquire>,
    /// Committed or aborted: nothing left to clean up.
    done: bool,
}

impl S3Upload {
    /// An upload of `name`; nothing is sent before the first full part
    /// (or the commit, for an object under one part).
    pub(super) fn new(client: Arc<Client>, name: &str) -> Self {
        let key = key_of(&client.prefix, name);
        let permits = Arc::new(Semaphore::new(client.concurrency));
        S3Upload {
            shared: Arc::new(UploadShared {
                client,
                name: name.to_owned(),
                key,
                upload_id: OnceCell::new(),
                initiate_started: AtomicBool::new(false),
                initiate_ambiguous: AtomicBool::new(false),
                failed: Mutex::new(None),
                initiate_finished: AtomicBool::new(false),
                initiate_done: Notify::new(),
            }),
            permits,
            buf: Vec::new(),
            written: 0,
            next_part: 1,
            tasks: VecDeque::new(),
            acquiring: None,
            done: false,
        }
    }
}

impl UploadShared {
    fn fail(&self, e: &TargetError) {
        let mut f = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        f.get_or_insert_with(|| e.to_string());
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn upload_id(self: &Arc<Self>) -> Result<&str, TargetError> {
        if let Some(id) = self.upload_id.get() {
            return Ok(id);
        }
        // In a task of its own: a part task aborted while the request is
        // out (a dropped upload) must not cut it off, leaving an upload on
        // the server whose id we never learnt. The cell is filled inside
        // that task, so an initiate is never cancelled and never sent
        // twice at once; `cleanup` waits for it, then aborts that id.
        // Marked before the task is spawned, not when it first runs: a
        // dropped upload's clean-up that looks while the task is not yet
        // scheduled must wait for it rather than conclude that no upload
        // was ever started (it then ran, and its upload stayed behind).
        self.initiate_started.store(true, Ordering::SeqCst);
        let me = Arc::clone(self);
        let task = tokio::spawn(async move {
            let r = me
                .upload_id
                .get_or_try_init(|| me.initiate())
                .await
                .map(|_| ());
            me.initiate_finished.store(true, Ordering::SeqCst);
            me.initiate_done.notify_waiters();
            r
        });
        task.await.unwrap_or_else(|e| {
            Err(self.client.remote(
                "starting the upload of",
                &self.name,
                format!("the request task stopped: {e}"),
            ))
        })?;
        Ok(self
            .upload_id
            .get()
            .expect("set by the initiate task")
            .as_str())
    }

    /// Wait (a bounded time) for an initiate request still out, so that
    /// the upload it may create is known and can be aborted.
    async fn settle_initiate(&self) {
        let done = self.initiate_done.notified();
        if !self.initiate_started.load(Ordering::SeqCst)
            || self.initiate_finished.load(Ordering::SeqCst)
        {
            return;
        }
        let limit = self.client.request_timeout * (self.client.retry.retries + 1);
        let _ = tokio::time::timeout(limit, done).await;
    }

    async fn initiate(&self) -> Result<String, TargetError> {
        let c = &self.client;
        self.initiate_started.store(true, Ordering::SeqCst);
        let this = self;
        let init = retry(c.retry, "starting an upload", move || async move {
            let r = c
                .initiate_bucket
                .initiate_multipart_upload(&this.key, CONTENT_TYPE)
                .await;
            if let Err(e) = &r {
                if is_transient(e) {
                    this.initiate_ambiguous.store(true, Ordering::SeqCst);
                }
            }
            r
        })
        .await
        .map_err(|f| c.error("starting the upload of", &self.name, f))?;
        if self.initiate_ambiguous.load(Ordering::SeqCst) {
            // A failed attempt may have created an upload after all: abort
            // any but ours now, so success leaves nothing behind either.
            self.abort_others(Some(&init.upload_id)).await;
        }
        Ok(init.upload_id)
    }

    async fn upload_part(self: &Arc<Self>, number: u32, data: Bytes) -> Result<Part, TargetError> {
        if let Some(f) = self.failure() {
            return Err(self.client.remote(
                "uploading",
                &self.name,
                format!("part {number} not sent: {f}"),
            ));
        }
        let id = self.upload_id().await?;
        let c = &self.client;
        let (data, key) = (&data, &self.key);
        let etag = retry(c.retry, "uploading a part", move || async move {
            // Built by hand rather than with `put_multipart_chunk`, which
            // takes the part by value: a retry would need a fresh copy.
            // rust-s3 adds Content-MD5 and the signed SHA-256 of the body.
            let command = Command::PutObject {
                content: data,
                content_type: CONTENT_TYPE,
                custom_headers: None,
                multipart: Some(Multipart::new(number, id)),
            };
            let request = ReqwestRequest::new(&c.bucket, key, command).await?;
            let response = request.response_data(true).await?;
            let etag = response.as_str()?.to_owned();
            if etag.is_empty() {
                return Err(S3Error::HttpFailWithBody(
                    response.status_code(),
                    "no ETag in the answer to UploadPart".into(),
                ));
            }
            Ok(etag)
        })
        .await
        .map_err(|f| c.error("uploading a part of", &self.name, f))?;
        Ok(Part {
            part_number: number,
            etag,
        })
    }

    async fn complete(
        self: &Arc<Self>,
        parts: Vec<Part>,
        size: u64,
    ) -> Result<ObjectInfo, TargetError> {
        let c = &self.client;
        let id = self.upload_id().await?;
        let (parts_ref, key) = (&parts, &self.key);
        let mut attempt = 0;
        retry(c.retry, "completing an upload", move || {
            attempt += 1;
            let parts = parts_ref.clone();
            let retried = attempt > 1;
            async move {
                match c.bucket.complete_multipart_upload(key, id, parts).await {
                    // An earlier attempt may have completed it before its
                    // answer was lost; the size check below decides.
                    Err(e) if retried && error_code_of(&e) == Some("NoSuchUpload") => Ok(()),
                    Err(e) => Err(e),
                    Ok(_) => Ok(()),
                }
            }
        })
        .await
        .map_err(|f| c.error("completing the upload of", &self.name, f))?;
        let info = c.head(&self.name).await?.ok_or_else(|| {
            c.remote(
                "completing the upload of",
                &self.name,
                "the object is missing after the upload completed".into(),
            )
        })?;
        if info.size != size {
            return Err(c.remote(
                "completing the upload of",
                &self.name,
                format!(
                    "the stored object has {} bytes but {size} were written",
                    info.size
                ),
            ));
        }
        Ok(info)
    }

    async fn put_whole(&self, data: Vec<u8>) -> Result<ObjectInfo, TargetError> {
        let c = &self.client;
        retry(c.retry, "uploading", || {
            c.bucket
                .put_object_with_headers(&self.key, &data, c.put_headers.clone())
        })
        .await
        .map_err(|f| c.error("uploading", &self.name, f))?;
        Ok(ObjectInfo {
            name: self.name.clone(),
            size: data.len() as u64,
            modified: Some(Utc::now()),
        })
    }

    /// Abort the multipart upload, if one may exist. Part tasks must have ended.
    async fn abort(&self) -> Result<(), TargetError> {
        let c = &self.client;
        self.settle_initiate().await;
        if let Some(id) = self.upload_id.get() {
            c.abort_multipart(&self.key, id)
                .await
                .map_err(|f| c.error("aborting the upload of", &self.name, f))?;
        }
        if self.initiate_started.load(Ordering::SeqCst)
            && (self.upload_id.get().is_none() || self.initiate_ambiguous.load(Ordering::SeqCst))
        {
            self.abort_others(None).await;
        }
        Ok(())
    }

    /// Best effort: abort the uploads of our key other than `keep`.
    async fn abort_others(&self, keep: Option<&str>) {
        let c = &self.client;
        let found = match c.incomplete_uploads(&self.key).await {
            Ok(found) => found,
            Err(f) => {
                tracing::warn!(key = %self.key, error = %f.error, "cannot list incomplete uploads to clean up after an ambiguous failure");
                return;
            }
        };
        for (key, id) in found {
            if key == self.key && Some(id.as_str()) != keep {
                if let Err(f) = c.abort_multipart(&key, &id).await {
                    tracing::warn!(key = %key, error = %f.error, "cannot abort an orphan upload");
                }
            }
        }
    }
}

/// Stop the part tasks, then abort the upload on the server.
pub(super) async fn cleanup(
    shared: Arc<UploadShared>,
    tasks: VecDeque<PartTask>,
) -> Result<(), TargetError> {
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    shared.abort().await
}

impl S3Upload {
    fn part_size(&self) -> usize {
        self.shared.client.part_size
    }

    fn check_failed(&self) -> io::Result<()> {
        match self.shared.failure() {
            Some(f) => Err(io::Error::other(f)),
            None => Ok(()),
        }
    }

    /// Send the full buffer as the next part once a slot is free.
    fn poll_dispatch(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.next_part > MAX_PARTS {
            let e = self.shared.client.remote(
                "uploading",
                &self.shared.name,
                format!(
                    "more than {MAX_PARTS} parts of {} MiB: raise S3_PART_SIZE_MB",
                    self.part_size() / (1024 * 1024)
                ),
            );
            self.shared.fail(&e);
            return Poll::Ready(Err(io::Error::other(e.to_string())));
        }
        let permits = &self.permits;
        let acquiring = self
            .acquiring
            .get_or_insert_with(|| Box::pin(permits.clone().acquire_owned()));
        let permit = ready!(acquiring.as_mut().poll(cx)).map_err(io::Error::other)?;
        self.acquiring = None;
        self.check_failed()?;
        let data = Bytes::from(std::mem::take(&mut self.buf));
        let number = self.next_part;
        self.next_part += 1;
        let shared = self.shared.clone();
        self.tasks.push_back(tokio::spawn(async move {
            let _permit = permit;
            let r = shared.upload_part(number, data).await;
            if let Err(e) = &r {
                shared.fail(e);
            }
            r
        }));
        Poll::Ready(Ok(()))
    }

    async fn finish(&mut self) -> Result<ObjectInfo, TargetError> {
        if self.next_part == 1 && self.shared.failure().is_none() {
            // Under one part: a single PUT, with Content-MD5.
            let data = std::mem::take(&mut self.buf);
            return self.shared.put_whole(data).await;
        }
        if !self.buf.is_empty() && self.shared.failure().is_none() {
            let r = std::future::poll_fn(|cx| self.poll_dispatch(cx)).await;
            if let Err(e) = r {
                // The part tasks below hold the reason, when there is one.
                tracing::debug!(error = %e, "last part not sent");
            }
        }
        let mut parts = Vec::with_capacity(self.tasks.len());
        while let Some(task) = self.tasks.front_mut() {
            let r = task.await;
            self.tasks.pop_front();
            match r {
                Ok(Ok(part)) => parts.push(part),
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    return Err(self.shared.client.remote(
                        "uploading",
                        &self.shared.name,
                        format!("a part task ended abnormally: {e}"),
                    ))
                }
            }
        }
        if let Some(f) = self.shared.failure() {
            return Err(self.shared.client.remote("uploading", &self.shared.name, f));
        }
        self.shared.complete(parts, self.written).await
    }
}

impl AsyncWrite for S3Upload {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(Err(io::Error::other("upload already finished")));
        }
        this.check_failed()?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let part_size = this.part_size();
        if this.buf.len() >= part_size {
            ready!(this.poll_dispatch(cx))?;
        }
        if this.buf.capacity() == 0 {
            this.buf.reserve_exact(part_size);
        }
        let n = data.len().min(part_size - this.buf.len());
        this.buf.extend_from_slice(&data[..n]);
        this.written += n as u64;
        if this.buf.len() >= part_size {
            // Send it now if a slot is free, so it travels while the caller
            // produces the next part; otherwise the next write waits.
            if let Poll::Ready(Err(e)) = this.poll_dispatch(cx) {
                return Poll::Ready(Err(e));
            }
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A part can only be sent whole; `commit` sends the rest.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Publishing is `commit`'s job.
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn commit(mut self: Box<Self>) -> Result<ObjectInfo, TargetError> {
        let r = self.finish().await;
        if r.is_err() {
            self.acquiring = None;
            let tasks = std::mem::take(&mut self.tasks);
            if let Err(e) = cleanup(self.shared.clone(), tasks).await {
                tracing::warn!(name = %self.shared.name, error = %e, "the failed upload could not be aborted; it is retried at next start");
            }
        }
        self.done = true;
        r
    }

    async fn abort(mut self: Box<Self>) -> Result<(), TargetError> {
        self.acquiring = None;
        let tasks = std::mem::take(&mut self.tasks);
        let r = cleanup(self.shared.clone(), tasks).await;
        self.done = true;
        r
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let tasks = std::mem::take(&mut self.tasks);
        let shared = self.shared.clone();
        if !shared.initiate_started.load(Ordering::SeqCst) && tasks.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    let name = shared.name.clone();
                    if let Err(e) = cleanup(shared, tasks).await {
                        tracing::warn!(%name, error = %e, "an abandoned upload could not be aborted; it is retried at next start");
                    }
                });
            }
            Err(_) => {
                for t in &tasks {
                    t.abort();
                }
                tracing::warn!(name = %shared.name, "upload abandoned outside the runtime; its parts are removed at next start");
            }
        }
    }
}
