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
//! The parts: the target and its client here (names, listing, the write
//! check); `s3/upload.rs` the multipart upload; `s3/read.rs` the resuming
//! reader; `s3/retry.rs` which failures are retried and how long to wait;
//! `s3/errors.rs` the one-line error with its advice.
//!
//! This module does not decide which names are backups, nor retention, nor
//! manifests: see `format::catalog` and `backup`.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use http::{HeaderMap, HeaderName, HeaderValue};
use s3::creds::Credentials;
use s3::{Bucket, Region};

use super::{ObjectInfo, ObjectReader, Target, TargetError, Upload};
use crate::config::S3Settings;

mod errors;
mod read;
mod retry;
mod upload;

use errors::{describe, error_code_of, needs_path_style, status_of, ErrorContext, Failed};
use read::RangeReader;
use retry::{retry, RetryPolicy};
use upload::S3Upload;

const LABEL: &str = "bucket";
/// S3 numbers parts 1 to 10,000.
const MAX_PARTS: u32 = 10_000;
const CONTENT_TYPE: &str = "application/octet-stream";
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
        Ok(Box::new(S3Upload::new(c.clone(), name)))
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
        Ok(Box::new(RangeReader::start(
            c.clone(),
            name,
            key,
            size,
            head.e_tag,
        )))
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
// Names

fn key_of(prefix: &str, name: &str) -> String {
    format!("{prefix}{name}")
}

/// Our name for `key`, or `None` when the key is not one of ours.
fn name_of<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix).filter(|n| super::valid_name(n))
}

fn check_name(name: &str) -> Result<(), TargetError> {
    super::check_name(LABEL, name)
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

    #[rstest]
    #[case("2024-05-01T10:20:30.000Z")]
    #[case("Wed, 01 May 2024 10:20:30 GMT")]
    fn dates_of_listings_and_headers_parse(#[case] s: &str) {
        let t = parse_time(s).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-05-01T10:20:30+00:00");
    }
}
