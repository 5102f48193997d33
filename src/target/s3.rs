//! An S3-compatible bucket (AWS, OVH, Scaleway, Backblaze, Wasabi, MinIO ...)
//! as a storage target, through rust-s3 over rustls.
//!
//! Names are relative to `S3_PREFIX`: `list` strips it, so names look like
//! the volume's, and keys outside the prefix or in "sub-folders" below it are
//! never listed. A write is a streaming multipart upload: the caller's bytes
//! fill one part buffer; a full part is uploaded by a background task while
//! the next one fills, at most `S3_CONCURRENCY` at a time, so memory stays
//! near `part size x (concurrency + 1)` whatever the size of the backup.
//! Every part carries a `Content-MD5` and a signed `x-amz-content-sha256`
//! (set by rust-s3), which S3 checks before accepting it. A request that
//! meets a 5xx, a timeout or a dropped connection is retried with
//! exponential back-off; when retries run out, the multipart upload is
//! aborted so no invisible, billed parts are left behind. The object appears
//! under its name only on [`Upload::commit`]; an upload under one part is
//! sent as a single PUT. A read is one streaming GET; when the connection
//! drops or stalls, it resumes from the byte reached with a ranged GET.
//!
//! This module does not decide which names are backups, nor retention, nor
//! manifests: see `catalog` and `pipeline`.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use s3::command::{Command, Multipart};
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::request::tokio_backend::ReqwestRequest;
use s3::request::Request as _;
use s3::serde_types::Part;
use s3::{Bucket, Region};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, AcquireError, OnceCell, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;

use super::{ObjectInfo, ObjectReader, Target, TargetError, Upload};
use crate::config::S3Settings;

const LABEL: &str = "bucket";
/// S3 numbers parts 1 to 10,000.
const MAX_PARTS: u32 = 10_000;
const CONTENT_TYPE: &str = "application/octet-stream";
/// Back-off never waits longer than this between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Key (under the prefix) of the multipart upload `check` starts and aborts.
/// It starts with a dot, so it is never listed as one of our names.
const WRITE_CHECK_NAME: &str = ".selmai-write-check";
/// Keys per ListObjectsV2 page (the S3 maximum).
const LIST_PAGE: usize = 1000;

/// An S3-compatible bucket, scoped to a key prefix.
pub struct S3Target {
    client: Arc<Client>,
    list_page_size: usize,
}

/// What the background tasks of uploads and downloads share with the target.
struct Client {
    /// Requests for everything but initiating an upload.
    bucket: Box<Bucket>,
    /// Same bucket, with the storage-class header that belongs on initiate only.
    initiate_bucket: Box<Bucket>,
    /// Headers of a single-PUT upload (the storage class).
    put_headers: Option<HeaderMap>,
    /// For messages: the endpoint as the operator wrote it.
    endpoint: String,
    prefix: String,
    part_size: usize,
    concurrency: usize,
    retry: RetryPolicy,
    request_timeout: Duration,
    /// Whether requests put the bucket in the path (else in the host name).
    path_style: bool,
}

impl fmt::Debug for S3Target {
    // By hand: rust-s3's `Bucket` carries the credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Target")
            .field("endpoint", &self.client.endpoint)
            .field("bucket", &self.client.bucket.name)
            .field("prefix", &self.client.prefix)
            .field("part_size", &self.client.part_size)
            .field("concurrency", &self.client.concurrency)
            .finish()
    }
}

impl S3Target {
    /// A target for the bucket in `s`. Nothing is sent yet: see [`S3Target::check`].
    ///
    /// Without `S3_ACCESS_KEY_ID`/`S3_SECRET_ACCESS_KEY`, the usual `AWS_*`
    /// variables and `~/.aws/credentials` are tried.
    pub fn new(s: &S3Settings) -> Result<Self, TargetError> {
        // rust-s3 has a process-wide retry count with its own back-off; we
        // retry every request ourselves, with limits the operator sets.
        s3::set_retries(0);
        let config = |detail: String| TargetError::Config {
            target: LABEL,
            detail,
        };
        let endpoint = match &s.endpoint {
            Some(e) => e.trim_end_matches('/').to_owned(),
            None => format!("AWS S3 ({})", s.region),
        };
        let region = match &s.endpoint {
            Some(e) => {
                if !(e.starts_with("http://") || e.starts_with("https://")) {
                    return Err(config(format!(
                        "S3_ENDPOINT {e:?} has no scheme: write it as https://host[:port]"
                    )));
                }
                Region::Custom {
                    region: s.region.clone(),
                    endpoint: endpoint.clone(),
                }
            }
            None => s
                .region
                .parse()
                .map_err(|e| config(format!("S3_REGION {:?}: {e}", s.region)))?,
        };
        let credentials = match (&s.access_key_id, &s.secret_access_key) {
            (Some(id), Some(secret)) => {
                Credentials::new(Some(id), Some(secret.expose()), None, None, None)
            }
            (None, None) => Credentials::default(),
            (Some(_), None) => {
                return Err(config(
                    "S3_ACCESS_KEY_ID is set but not S3_SECRET_ACCESS_KEY: set it or S3_SECRET_ACCESS_KEY_FILE".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(config(
                    "S3_SECRET_ACCESS_KEY is set but not S3_ACCESS_KEY_ID: set both".into(),
                ))
            }
        }
        .map_err(|e| {
            config(format!(
                "no credentials for the bucket ({e}): set S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY"
            ))
        })?;
        let mut bucket = Bucket::new(&s.bucket, region, credentials)
            .map_err(|e| config(format!("bucket {:?}: {e}", s.bucket)))?;
        // Virtual-host addressing puts the bucket in the host name, which
        // cannot work for an IP address or a name without a dot (a compose
        // service such as `minio`): the AWS SDKs use path style there too.
        let path_style = s.path_style || s.endpoint.as_deref().is_some_and(needs_path_style);
        if path_style {
            bucket.set_path_style();
        }
        bucket.set_request_timeout(Some(s.request_timeout));
        let mut initiate_bucket = bucket.clone();
        let mut put_headers = None;
        if let Some(class) = &s.storage_class {
            let value = HeaderValue::from_str(class)
                .map_err(|_| config(format!("S3_STORAGE_CLASS {class:?} is not a valid value")))?;
            let name = HeaderName::from_static("x-amz-storage-class");
            initiate_bucket
                .extra_headers_mut()
                .insert(name.clone(), value.clone());
            let mut h = HeaderMap::new();
            h.insert(name, value);
            put_headers = Some(h);
        }
        Ok(S3Target {
            client: Arc::new(Client {
                bucket,
                initiate_bucket,
                put_headers,
                endpoint,
                prefix: s.prefix.clone(),
                part_size: s.part_size,
                concurrency: s.concurrency.max(1),
                retry: RetryPolicy {
                    retries: s.retries,
                    first_delay: s.retry_delay,
                },
                request_timeout: s.request_timeout,
                path_style,
            }),
            list_page_size: LIST_PAGE,
        })
    }

    /// Ask for smaller list pages (tests use it to exercise pagination).
    pub fn with_list_page_size(mut self, keys: usize) -> Self {
        self.list_page_size = keys.clamp(1, LIST_PAGE);
        self
    }

    /// The bucket name.
    pub fn bucket_name(&self) -> &str {
        &self.client.bucket.name
    }

    /// The key prefix (empty or ending in `/`).
    pub fn prefix(&self) -> &str {
        &self.client.prefix
    }

    /// The full key of object `name`.
    pub fn key_of(&self, name: &str) -> String {
        key_of(&self.client.prefix, name)
    }

    /// Startup check: the endpoint answers, the bucket exists, the
    /// credentials are accepted, and they may list and write under the prefix.
    ///
    /// Writing is proved by starting a multipart upload and aborting it,
    /// which leaves no object behind and does not need delete permission.
    pub async fn check(&self) -> Result<(), TargetError> {
        let c = &self.client;
        retry(c.retry, "listing", || {
            c.bucket
                .list_page(c.prefix.clone(), Some("/".into()), None, None, Some(1))
        })
        .await
        .map_err(|f| c.error("listing", &c.prefix, f))?;
        let key = key_of(&c.prefix, WRITE_CHECK_NAME);
        let init = retry(c.retry, "starting a test upload", || {
            c.initiate_bucket
                .initiate_multipart_upload(&key, CONTENT_TYPE)
        })
        .await
        .map_err(|f| c.error("starting a test upload to", &key, f))?;
        c.abort_multipart(&key, &init.upload_id)
            .await
            .map_err(|f| c.error("aborting the test upload to", &key, f))
    }

    /// Abort the incomplete multipart uploads under our prefix (left by a
    /// `kill -9` or a lost network); returns their keys.
    ///
    /// Only call this while holding the backup lock: a concurrent backup's
    /// upload would otherwise be aborted under its feet.
    pub async fn abort_incomplete_uploads(&self) -> Result<Vec<String>, TargetError> {
        let c = &self.client;
        let uploads = c
            .incomplete_uploads(&c.prefix)
            .await
            .map_err(|f| c.error("listing incomplete uploads under", &c.prefix, f))?;
        let mut keys = Vec::new();
        for (key, id) in uploads {
            c.abort_multipart(&key, &id)
                .await
                .map_err(|f| c.error("aborting the incomplete upload of", &key, f))?;
            keys.push(key);
        }
        Ok(keys)
    }

    /// Keys and ids of the incomplete multipart uploads whose key starts with
    /// our prefix followed by `prefix` (for tests and the health check).
    pub async fn incomplete_uploads(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, TargetError> {
        let c = &self.client;
        let full = key_of(&c.prefix, prefix);
        c.incomplete_uploads(&full)
            .await
            .map_err(|f| c.error("listing incomplete uploads under", &full, f))
    }
}

#[async_trait]
impl Target for S3Target {
    fn label(&self) -> &'static str {
        LABEL
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        let c = &self.client;
        let full = key_of(&c.prefix, prefix);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (page, _) = retry(c.retry, "listing", || {
                c.bucket.list_page(
                    full.clone(),
                    // Keys in "sub-folders" come back as common prefixes,
                    // which we ignore: they cannot be our names.
                    Some("/".into()),
                    token.clone(),
                    None,
                    Some(self.list_page_size),
                )
            })
            .await
            .map_err(|f| c.error("listing", &full, f))?;
            out.extend(page.contents.into_iter().filter_map(|o| {
                let name = name_of(&c.prefix, &o.key)?;
                Some(ObjectInfo {
                    name: name.to_owned(),
                    size: o.size,
                    modified: parse_time(&o.last_modified),
                })
            }));
            match page.next_continuation_token {
                Some(next) if page.is_truncated => {
                    if token.as_deref() == Some(next.as_str()) {
                        return Err(c.remote(
                            "listing",
                            &full,
                            "the server returned the same page token twice".into(),
                        ));
                    }
                    token = Some(next);
                }
                _ => break,
            }
        }
        Ok(out)
    }

    async fn metadata(&self, name: &str) -> Result<Option<ObjectInfo>, TargetError> {
        check_name(name)?;
        self.client.head(name).await
    }

    async fn create(&self, name: &str) -> Result<Box<dyn Upload>, TargetError> {
        check_name(name)?;
        let c = &self.client;
        Ok(Box::new(S3Upload {
            shared: Arc::new(UploadShared {
                client: c.clone(),
                name: name.to_owned(),
                key: key_of(&c.prefix, name),
                upload_id: OnceCell::new(),
                initiate_started: AtomicBool::new(false),
                initiate_ambiguous: AtomicBool::new(false),
                failed: Mutex::new(None),
            }),
            permits: Arc::new(Semaphore::new(c.concurrency)),
            buf: Vec::new(),
            written: 0,
            next_part: 1,
            tasks: VecDeque::new(),
            acquiring: None,
            done: false,
        }))
    }

    async fn open(&self, name: &str) -> Result<ObjectReader, TargetError> {
        check_name(name)?;
        let c = &self.client;
        let key = key_of(&c.prefix, name);
        let (head, _) = retry(c.retry, "reading metadata", || c.bucket.head_object(&key))
            .await
            .map_err(|f| c.error("opening", name, f))?;
        let size = u64::try_from(head.content_length.unwrap_or(0)).unwrap_or(0);
        if size == 0 {
            return Ok(Box::new(tokio::io::empty()));
        }
        // A few network chunks (typically 16 KiB) ahead of the reader.
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(fetch(c.clone(), name.to_owned(), key, size, head.e_tag, tx));
        Ok(Box::new(RangeReader {
            rx,
            current: Bytes::new(),
            remaining: size,
            name: name.to_owned(),
            task,
        }))
    }

    async fn delete(&self, name: &str) -> Result<(), TargetError> {
        check_name(name)?;
        let c = &self.client;
        let key = key_of(&c.prefix, name);
        match retry(c.retry, "deleting", || c.bucket.delete_object(&key)).await {
            Ok(_) => Ok(()),
            Err(f) if error_code_of(&f.error) == Some("NoSuchKey") => Ok(()),
            Err(f) => Err(c.error("deleting", name, f)),
        }
    }

    async fn clean_interrupted(&self) -> Result<Vec<String>, TargetError> {
        self.abort_incomplete_uploads().await
    }

    async fn answers(&self) -> Result<(), TargetError> {
        let c = &self.client;
        let key = key_of(&c.prefix, super::PROBE_NAME);
        let once = RetryPolicy {
            retries: 0,
            ..c.retry
        };
        match retry(once, "reaching the bucket", || c.bucket.head_object(&key)).await {
            Ok(_) => Ok(()),
            Err(f) if status_of(&f.error) == Some(404) => Ok(()),
            Err(f) => Err(c.error("reaching", &c.prefix, f)),
        }
    }
}

impl Client {
    async fn head(&self, name: &str) -> Result<Option<ObjectInfo>, TargetError> {
        let key = key_of(&self.prefix, name);
        match retry(self.retry, "reading metadata", || {
            self.bucket.head_object(&key)
        })
        .await
        {
            Ok((h, _)) => Ok(Some(ObjectInfo {
                name: name.to_owned(),
                size: u64::try_from(h.content_length.unwrap_or(0)).unwrap_or(0),
                modified: h.last_modified.as_deref().and_then(parse_time),
            })),
            Err(f) if status_of(&f.error) == Some(404) => Ok(None),
            Err(f) => Err(self.error("reading metadata of", name, f)),
        }
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), Failed> {
        match retry(self.retry, "aborting an upload", || {
            self.bucket.abort_upload(key, upload_id)
        })
        .await
        {
            Err(f) if error_code_of(&f.error) == Some("NoSuchUpload") => Ok(()),
            r => r,
        }
    }

    async fn incomplete_uploads(&self, prefix: &str) -> Result<Vec<(String, String)>, Failed> {
        let pages = retry(self.retry, "listing incomplete uploads", || {
            self.bucket.list_multiparts_uploads(Some(prefix), None)
        })
        .await?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.uploads)
            .filter(|u| u.key.starts_with(prefix))
            .map(|u| (u.key, u.id))
            .collect())
    }

    fn error(&self, action: &'static str, name: &str, f: Failed) -> TargetError {
        describe(
            &ErrorContext {
                endpoint: &self.endpoint,
                bucket: &self.bucket.name,
                prefix: &self.prefix,
                timeout: self.request_timeout,
                path_style: self.path_style,
            },
            action,
            name,
            &f,
        )
    }

    fn remote(&self, action: &'static str, name: &str, detail: String) -> TargetError {
        TargetError::Remote {
            target: LABEL,
            action,
            name: name.to_owned(),
            detail,
        }
    }
}

// ---------------------------------------------------------------------------
// Upload

/// State shared by an upload and its part tasks.
struct UploadShared {
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
}

type PartTask = JoinHandle<Result<Part, TargetError>>;
type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A streaming multipart upload; see the module documentation.
struct S3Upload {
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

    async fn upload_id(&self) -> Result<&str, TargetError> {
        self.upload_id
            .get_or_try_init(|| self.initiate())
            .await
            .map(String::as_str)
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

    async fn upload_part(&self, number: u32, data: Bytes) -> Result<Part, TargetError> {
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

    async fn complete(&self, parts: Vec<Part>, size: u64) -> Result<ObjectInfo, TargetError> {
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
async fn cleanup(shared: Arc<UploadShared>, tasks: VecDeque<PartTask>) -> Result<(), TargetError> {
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

// ---------------------------------------------------------------------------
// Download

/// Stream `key` into `tx`; a dropped or stalled connection is resumed from
/// the byte reached (a ranged GET), so a restore does not start over.
async fn fetch(
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
struct RangeReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
    remaining: u64,
    name: String,
    task: JoinHandle<()>,
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

// ---------------------------------------------------------------------------
// Retry

/// How often and how patiently a request is retried.
#[derive(Debug, Clone, Copy)]
struct RetryPolicy {
    /// Extra attempts after the first.
    retries: u32,
    /// Wait before the first retry; doubled each time, capped at [`MAX_BACKOFF`].
    first_delay: Duration,
}

impl RetryPolicy {
    /// Wait before retry number `retry` (1-based).
    fn delay(&self, retry: u32) -> Duration {
        let factor = 1u32 << retry.saturating_sub(1).min(16);
        self.first_delay.saturating_mul(factor).min(MAX_BACKOFF)
    }
}

/// A request that failed for good: the last error and the attempts made.
struct Failed {
    error: S3Error,
    attempts: u32,
}

/// Run `op` until it succeeds, fails for good, or retries run out.
async fn retry<T, F, Fut>(policy: RetryPolicy, what: &str, mut op: F) -> Result<T, Failed>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, S3Error>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(error) if attempt <= policy.retries && is_transient(&error) => {
                let wait = policy.delay(attempt);
                tracing::warn!(
                    attempt,
                    wait_ms = wait.as_millis() as u64,
                    error = %one_line(&error),
                    "bucket: {what} failed, retrying"
                );
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(error) => {
                return Err(Failed {
                    error,
                    attempts: attempt,
                })
            }
        }
    }
}

/// Whether a failed request may succeed if sent again.
fn is_transient(e: &S3Error) -> bool {
    match e {
        S3Error::HttpFailWithBody(status, body) => {
            matches!(status, 408 | 429 | 500 | 502 | 503 | 504)
                || matches!(
                    xml_field(body, "Code"),
                    Some(
                        "InternalError"
                            | "ServiceUnavailable"
                            | "SlowDown"
                            | "RequestTimeout"
                            | "BadDigest"
                            | "XAmzContentSHA256Mismatch"
                            | "IncompleteBody"
                    )
                )
        }
        // Connection refused or reset, timeouts, a body cut short: worth
        // another try. A request we could not even build, or a host name
        // that does not resolve, will fail the same way every time.
        S3Error::Reqwest(r) => !r.is_builder() && !is_dns_failure(r),
        S3Error::Io(_) => true,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// Errors

/// What an error message needs to know about the target.
struct ErrorContext<'a> {
    endpoint: &'a str,
    bucket: &'a str,
    prefix: &'a str,
    timeout: Duration,
    path_style: bool,
}

fn status_of(e: &S3Error) -> Option<u16> {
    match e {
        S3Error::HttpFailWithBody(status, _) => Some(*status),
        _ => None,
    }
}

fn error_code_of(e: &S3Error) -> Option<&str> {
    match e {
        S3Error::HttpFailWithBody(_, body) => xml_field(body, "Code"),
        _ => None,
    }
}

/// Whether the host name of a request could not be resolved: a typo in
/// `S3_ENDPOINT`, or a bucket name put in front of a host that only
/// answers by its own name. Retrying does not help.
fn is_dns_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let text = one_line(e).to_ascii_lowercase();
    text.contains("dns error") || text.contains("failed to lookup address")
}

/// Whether `endpoint` (`scheme://host[:port][/...]`) needs path-style
/// addressing: an IP address, or a host name without a dot (`minio`,
/// `localhost`), cannot take the bucket name in front of it.
fn needs_path_style(endpoint: &str) -> bool {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return true; // an IPv6 literal
    }
    let host = host_port.split(':').next().unwrap_or("");
    host.parse::<std::net::Ipv4Addr>().is_ok() || !host.contains('.')
}

/// What a server said about a refused request that points at the
/// credentials rather than at the permissions: the secret (a bad
/// signature) or the key id (unknown to the server). Garage, for one,
/// answers both with `AccessDenied` and says which in the message.
fn credential_problem(code: &str, message: &str) -> Option<&'static str> {
    let m = message.to_ascii_lowercase();
    match code {
        "SignatureDoesNotMatch" => Some("check S3_SECRET_ACCESS_KEY (and S3_ACCESS_KEY_ID)"),
        "InvalidAccessKeyId" => Some("check S3_ACCESS_KEY_ID (and S3_SECRET_ACCESS_KEY)"),
        "InvalidToken" | "ExpiredToken" | "InvalidSecurity" => {
            Some("check S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY")
        }
        _ if m.contains("signature") => Some("check S3_SECRET_ACCESS_KEY (and S3_ACCESS_KEY_ID)"),
        _ if m.contains("no such key")
            || m.contains("unknown key")
            || m.contains("access key")
            || m.contains("key id") =>
        {
            Some("check S3_ACCESS_KEY_ID (and S3_SECRET_ACCESS_KEY)")
        }
        _ => None,
    }
}

/// The text of the first `<tag>` element of an S3 error document.
fn xml_field<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let len = body[start..].find("</")?;
    Some(body[start..start + len].trim())
}

/// An error and its causes on one line (reqwest hides the cause otherwise).
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cause = c.source();
    }
    s
}

/// Turn a failed request into an error that says what to do.
fn describe(ctx: &ErrorContext<'_>, action: &'static str, name: &str, f: &Failed) -> TargetError {
    let name = name.to_owned();
    let tries = if f.attempts > 1 {
        format!(" (after {} attempts)", f.attempts)
    } else {
        String::new()
    };
    let bucket = ctx.bucket;
    let endpoint = ctx.endpoint;
    let remote = |detail: String| TargetError::Remote {
        target: LABEL,
        action,
        name: name.clone(),
        detail,
    };
    let denied = |detail: String| TargetError::Denied {
        target: LABEL,
        name: name.clone(),
        detail,
    };
    match &f.error {
        S3Error::HttpFailWithBody(status, body) => {
            let code = xml_field(body, "Code").unwrap_or("");
            let message = xml_field(body, "Message").unwrap_or("");
            // The server's own words, kept in every 403 message.
            let said = match (code, message) {
                ("", "") => format!("HTTP {status}"),
                (c, "") => c.to_string(),
                ("", m) => format!("HTTP {status}: {m}"),
                (c, m) => format!("{c}: {m}"),
            };
            match (*status, code) {
                (404, "NoSuchBucket") => remote(format!(
                    "bucket {bucket} does not exist at {endpoint}: create it or fix S3_BUCKET"
                )),
                (404, "NoSuchKey" | "") => TargetError::NotFound {
                    target: LABEL,
                    name,
                },
                (403 | 401, _) if credential_problem(code, message).is_some() => {
                    denied(format!(
                        "{endpoint} rejected the credentials ({said}): {}",
                        credential_problem(code, message).unwrap_or_default()
                    ))
                }
                (403, "RequestTimeTooSkewed") => denied(format!(
                    "the clock of this host differs too much from {endpoint}'s ({said}): synchronise it (NTP)"
                )),
                (403, _) if action == "deleting" => denied(format!(
                    "the credentials may upload but not delete under {bucket}/{} ({said}): old backups stay in the bucket; grant s3:DeleteObject on that prefix, or expire them with a lifecycle rule",
                    ctx.prefix
                )),
                (403, _) => denied(format!(
                    "access denied in bucket {bucket} at {endpoint} ({said}): the credentials need s3:ListBucket, s3:GetObject, s3:PutObject and s3:AbortMultipartUpload on the prefix {:?} (see the policy example in the README)",
                    ctx.prefix
                )),
                (_, "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException")
                | (301, _) => {
                    let hint = xml_field(body, "Region")
                        .map(|r| format!("set S3_REGION={r}"))
                        .unwrap_or_else(|| "check S3_REGION and S3_ENDPOINT".into());
                    remote(format!(
                        "bucket {bucket} is not in this region or endpoint ({}): {hint}",
                        if code.is_empty() { "HTTP 301" } else { code }
                    ))
                }
                (_, "InvalidBucketName") => remote(format!(
                    "{bucket:?} is not a valid bucket name: fix S3_BUCKET"
                )),
                (_, "InvalidStorageClass") => remote(format!(
                    "{endpoint} does not accept this storage class: fix S3_STORAGE_CLASS ({message})"
                )),
                _ => {
                    let what = match (code, message) {
                        ("", _) => format!("HTTP {status}"),
                        (c, "") => format!("HTTP {status} {c}"),
                        (c, m) => format!("HTTP {status} {c}: {m}"),
                    };
                    remote(format!("{endpoint} answered {what}{tries}"))
                }
            }
        }
        S3Error::Reqwest(r) if r.is_timeout() => remote(format!(
            "no answer from {endpoint} within {} s{tries}: check the network, or raise S3_REQUEST_TIMEOUT",
            ctx.timeout.as_secs()
        )),
        S3Error::Reqwest(r) if is_dns_failure(r) => {
            let hint = if ctx.path_style {
                String::new()
            } else {
                format!(
                    "; requests go to {bucket}.<host>: if the service only answers by its own name, set S3_PATH_STYLE=true"
                )
            };
            remote(format!(
                "cannot resolve the host of {endpoint} ({}): check S3_ENDPOINT{hint}",
                one_line(r)
            ))
        }
        S3Error::Reqwest(r) if r.is_connect() => remote(format!(
            "cannot connect to {endpoint}{tries} ({}): check S3_ENDPOINT and the network",
            one_line(r)
        )),
        e => remote(format!("{}{tries}", one_line(e))),
    }
}

// ---------------------------------------------------------------------------
// Names

fn key_of(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// Our name for `key`, or `None` when the key is not one of ours.
fn name_of<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix).filter(|n| valid_name(n))
}

/// Same rule as the volume, so a name means the same thing on both.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

fn check_name(name: &str) -> Result<(), TargetError> {
    if valid_name(name) {
        return Ok(());
    }
    Err(TargetError::Io {
        target: LABEL,
        action: "using",
        name: name.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"),
    })
}

/// S3 dates: ISO 8601 in listings, RFC 7231 (RFC 2822 style) in headers.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .or_else(|_| DateTime::parse_from_rfc2822(s))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn ctx() -> ErrorContext<'static> {
        ErrorContext {
            endpoint: "https://s3.example.net",
            bucket: "backups",
            prefix: "prod/",
            timeout: Duration::from_secs(120),
            path_style: false,
        }
    }

    fn http(status: u16, code: &str) -> Failed {
        Failed {
            error: S3Error::HttpFailWithBody(
                status,
                format!("<?xml version=\"1.0\"?><Error><Code>{code}</Code><Message>msg</Message></Error>"),
            ),
            attempts: 1,
        }
    }

    #[rstest]
    #[case("", "a", "a")]
    #[case("prod/", "selmai_backup_1.sql.gz", "prod/selmai_backup_1.sql.gz")]
    #[case("a/b/", "x", "a/b/x")]
    fn keys_are_prefix_then_name(#[case] prefix: &str, #[case] name: &str, #[case] key: &str) {
        assert_eq!(key_of(prefix, name), key);
        assert_eq!(name_of(prefix, key), Some(name));
    }

    #[rstest]
    #[case("prod/", "other/x")] // another prefix
    #[case("prod/", "prod-old/x")] // a sibling sharing the first letters
    #[case("prod/", "prod/sub/x")] // a "sub-folder"
    #[case("prod/", "prod/")] // the folder marker itself
    #[case("prod/", "prod/.selmai-write-check")] // hidden
    #[case("", "sub/x")]
    fn foreign_keys_are_not_ours(#[case] prefix: &str, #[case] key: &str) {
        assert_eq!(name_of(prefix, key), None);
    }

    #[rstest]
    #[case("")]
    #[case(".hidden")]
    #[case("a/b")]
    #[case("a\nb")]
    fn bad_names_are_refused(#[case] name: &str) {
        assert!(check_name(name).is_err());
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy {
            retries: 5,
            first_delay: Duration::from_millis(500),
        };
        let d: Vec<u64> = (1..=4).map(|r| p.delay(r).as_millis() as u64).collect();
        assert_eq!(d, [500, 1000, 2000, 4000]);
        assert_eq!(p.delay(20), MAX_BACKOFF);
        assert_eq!(p.delay(u32::MAX), MAX_BACKOFF);
    }

    #[rstest]
    #[case(500, "InternalError", true)]
    #[case(503, "SlowDown", true)]
    #[case(502, "", true)]
    #[case(429, "", true)]
    #[case(400, "RequestTimeout", true)]
    #[case(400, "BadDigest", true)]
    #[case(200, "InternalError", true)] // CompleteMultipartUpload's 200-with-error
    #[case(403, "AccessDenied", false)]
    #[case(404, "NoSuchBucket", false)]
    #[case(400, "InvalidArgument", false)]
    #[case(501, "NotImplemented", false)]
    fn transient_errors_are_retried(#[case] status: u16, #[case] code: &str, #[case] t: bool) {
        assert_eq!(is_transient(&http(status, code).error), t);
    }

    #[test]
    fn io_errors_are_transient() {
        let e = S3Error::Io(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        assert!(is_transient(&e));
    }

    #[test]
    fn missing_bucket_says_what_to_do() {
        let e = describe(&ctx(), "listing", "prod/", &http(404, "NoSuchBucket")).to_string();
        assert!(
            e.contains("bucket backups does not exist at https://s3.example.net")
                && e.contains("S3_BUCKET"),
            "{e}"
        );
    }

    #[rstest]
    #[case("InvalidAccessKeyId")]
    #[case("SignatureDoesNotMatch")]
    fn bad_credentials_name_the_variables(#[case] code: &str) {
        let e = describe(&ctx(), "uploading", "x", &http(403, code));
        assert!(matches!(e, TargetError::Denied { .. }));
        let e = e.to_string();
        assert!(
            e.contains("S3_ACCESS_KEY_ID") && e.contains("S3_SECRET_ACCESS_KEY"),
            "{e}"
        );
    }

    fn http_said(status: u16, code: &str, message: &str) -> Failed {
        Failed {
            error: S3Error::HttpFailWithBody(
                status,
                format!("<Error><Code>{code}</Code><Message>{message}</Message></Error>"),
            ),
            attempts: 1,
        }
    }

    // Garage answers AccessDenied for a bad secret and for an unknown key
    // id, and says which in the message; AWS has codes of their own.
    #[rstest]
    #[case("AccessDenied", "Forbidden: Invalid signature", "S3_SECRET_ACCESS_KEY")]
    #[case(
        "AccessDenied",
        "Forbidden: No such key: GK31c2f218a2e44f485b94239e",
        "S3_ACCESS_KEY_ID"
    )]
    #[case(
        "SignatureDoesNotMatch",
        "The request signature we calculated does not match",
        "S3_SECRET_ACCESS_KEY"
    )]
    #[case(
        "InvalidAccessKeyId",
        "The AWS Access Key Id you provided does not exist",
        "S3_ACCESS_KEY_ID"
    )]
    fn rejected_credentials_keep_the_servers_words(
        #[case] code: &str,
        #[case] message: &str,
        #[case] variable: &str,
    ) {
        let e = describe(&ctx(), "listing", "prod/", &http_said(403, code, message));
        assert!(matches!(e, TargetError::Denied { .. }));
        let e = e.to_string();
        assert!(e.contains(&format!("{code}: {message}")), "{e}");
        assert!(e.contains(&format!("check {variable}")), "{e}");
        assert!(!e.contains("s3:ListBucket"), "{e}");
    }

    #[test]
    fn a_policy_denial_keeps_the_servers_words_and_lists_the_permissions() {
        let f = http_said(403, "AccessDenied", "Access Denied by bucket policy");
        let e = describe(&ctx(), "uploading", "x", &f).to_string();
        assert!(
            e.contains("AccessDenied: Access Denied by bucket policy")
                && e.contains("s3:PutObject")
                && !e.contains("S3_SECRET_ACCESS_KEY"),
            "{e}"
        );
        let e = describe(&ctx(), "deleting", "x", &f).to_string();
        assert!(
            e.contains("AccessDenied: Access Denied by bucket policy") && e.contains("not delete"),
            "{e}"
        );
    }

    #[rstest]
    #[case("http://127.0.0.1:9000", true)]
    #[case("http://minio:9000", true)]
    #[case("http://localhost:9000/", true)]
    #[case("http://[::1]:9000", true)]
    #[case("https://garage", true)]
    #[case("https://s3.fr-par.scw.cloud", false)]
    #[case("https://minio.internal:9000", false)]
    #[case("https://user@s3.example.net", false)]
    fn path_style_is_chosen_for_hosts_that_need_it(#[case] endpoint: &str, #[case] path: bool) {
        assert_eq!(needs_path_style(endpoint), path);
    }

    #[test]
    fn delete_denied_is_its_own_message() {
        let e = describe(&ctx(), "deleting", "x", &http(403, "AccessDenied"));
        assert!(matches!(e, TargetError::Denied { .. }));
        let e = e.to_string();
        assert!(
            e.contains("may upload but not delete") && e.contains("s3:DeleteObject"),
            "{e}"
        );
        let e = describe(&ctx(), "uploading", "x", &http(403, "AccessDenied")).to_string();
        assert!(
            e.contains("s3:PutObject") && !e.contains("not delete"),
            "{e}"
        );
    }

    #[test]
    fn head_404_is_not_found() {
        let f = Failed {
            error: S3Error::HttpFailWithBody(404, String::new()),
            attempts: 1,
        };
        assert!(matches!(
            describe(&ctx(), "opening", "x", &f),
            TargetError::NotFound { .. }
        ));
    }

    #[test]
    fn wrong_region_names_the_right_one() {
        let f = Failed {
            error: S3Error::HttpFailWithBody(
                400,
                "<Error><Code>AuthorizationHeaderMalformed</Code><Message>m</Message><Region>eu-west-3</Region></Error>".into(),
            ),
            attempts: 1,
        };
        let e = describe(&ctx(), "listing", "", &f).to_string();
        assert!(e.contains("S3_REGION=eu-west-3"), "{e}");
    }

    #[test]
    fn other_errors_carry_code_message_and_attempts() {
        let mut f = http(500, "InternalError");
        f.attempts = 6;
        let e = describe(&ctx(), "uploading a part of", "x", &f).to_string();
        assert!(
            e.contains("HTTP 500 InternalError: msg") && e.contains("after 6 attempts"),
            "{e}"
        );
    }

    #[rstest]
    #[case("2024-05-01T10:20:30.000Z")]
    #[case("Wed, 01 May 2024 10:20:30 GMT")]
    fn dates_of_listings_and_headers_parse(#[case] s: &str) {
        let t = parse_time(s).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T10:20:30+00:00");
    }

    #[test]
    fn xml_fields_are_found() {
        let body = "<Error><Code>NoSuchKey</Code><Message>The key</Message></Error>";
        assert_eq!(xml_field(body, "Code"), Some("NoSuchKey"));
        assert_eq!(xml_field(body, "Message"), Some("The key"));
        assert_eq!(xml_field(body, "Region"), None);
        assert_eq!(xml_field("", "Code"), None);
    }
}
