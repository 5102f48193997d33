//! The S3-compatible test server (moto at `TEST_S3_ENDPOINT`): unique
//! buckets in a region other than us-east-1, the raw bucket to look behind
//! our target, settings and variables for the tool, and the byte patterns
//! and uneven uploads and reads the target tests use.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use s3::creds::Credentials;
use s3::{Bucket, BucketConfiguration, Region};
use selmai_backup::config::{S3Settings, Settings};
use selmai_backup::target::{Target, TargetError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::tool;

pub(crate) const MIB: usize = 1024 * 1024;
/// Part size of the bucket tests: the S3 minimum, so 12 MiB makes 3 parts.
pub(crate) const TEST_PART: usize = 5 * MIB;
/// Region of the test buckets: not us-east-1, whose special cases hide bugs.
pub(crate) const TEST_REGION: &str = "eu-west-3";

/// Base URL of the S3-compatible test server.
pub(crate) fn s3_endpoint() -> String {
    std::env::var("TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:35555".into())
}

/// A bucket name no other test uses (3-63 characters, lower case).
pub(crate) fn unique_bucket(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(32)
        .collect();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "t-{}-{}-{:x}{:x}",
        tag.trim_matches('-'),
        N.fetch_add(1, Ordering::SeqCst),
        std::process::id(),
        nanos
    )
}

fn region(endpoint: &str) -> Region {
    Region::Custom {
        region: TEST_REGION.into(),
        endpoint: endpoint.into(),
    }
}

fn credentials() -> Credentials {
    Credentials::new(Some("test"), Some("test"), None, None, None).unwrap()
}

/// Create `name` on the test server (path style, in [`TEST_REGION`]).
pub(crate) async fn create_bucket(name: &str) {
    let r = Bucket::create_with_path_style(
        name,
        region(&s3_endpoint()),
        credentials(),
        BucketConfiguration::default(),
    )
    .await
    .unwrap();
    assert!(r.success(), "creating bucket {name}: {}", r.response_text);
}

/// The bucket itself, without our prefix or retries: to plant foreign
/// objects and look at what the target left behind.
pub(crate) fn raw_bucket(name: &str) -> Box<Bucket> {
    Bucket::new(name, region(&s3_endpoint()), credentials())
        .unwrap()
        .with_path_style()
}

/// Settings for `bucket` at `endpoint`, built from variables like the real
/// thing, with short back-off so the fault tests stay fast.
pub(crate) fn s3_settings(endpoint: &str, bucket: &str, prefix: &str) -> S3Settings {
    let mut s = Settings::from_vars([
        ("S3_ENDPOINT", endpoint),
        ("S3_BUCKET", bucket),
        ("S3_REGION", TEST_REGION),
        ("S3_ACCESS_KEY_ID", "test"),
        ("S3_SECRET_ACCESS_KEY", "test"),
        ("S3_PREFIX", prefix),
        ("S3_PATH_STYLE", "true"),
        ("S3_PART_SIZE_MB", "5"),
    ])
    .unwrap()
    .s3
    .unwrap();
    s.retry_delay = Duration::from_millis(20);
    s
}

/// Incomplete multipart uploads anywhere in `bucket`, asked of moto directly.
pub(crate) async fn open_uploads(bucket: &Bucket) -> Vec<String> {
    bucket
        .list_multiparts_uploads(None, None)
        .await
        .unwrap()
        .into_iter()
        .flat_map(|p| p.uploads)
        .map(|u| u.key)
        .collect()
}

/// Whether `key` exists in `bucket`, asked of moto directly.
pub(crate) async fn raw_exists(bucket: &Bucket, key: &str) -> bool {
    bucket.object_exists(key).await.unwrap()
}

/// `len` bytes that differ with `seed`, cheap to make (xorshift).
pub(crate) fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Write `data` through `target.create` in uneven pieces, then commit.
pub(crate) async fn upload(
    target: &dyn Target,
    name: &str,
    data: &[u8],
) -> Result<selmai_backup::target::ObjectInfo, TargetError> {
    let mut up = target.create(name).await?;
    for piece in data.chunks(100_003) {
        if let Err(e) = up.write_all(piece).await {
            // The reason is in commit's error.
            let committed = up.commit().await;
            assert!(
                committed.is_err(),
                "commit succeeded after a failed write: {e}"
            );
            return committed;
        }
    }
    up.commit().await
}

/// Read `name` whole through `target.open`, in small reads.
pub(crate) async fn download(target: &dyn Target, name: &str) -> Result<Vec<u8>, TargetError> {
    let mut r = target.open(name).await?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 70_001];
    loop {
        let n = r
            .read(&mut buf)
            .await
            .map_err(|e| TargetError::from_io(target.label(), "reading", name, e))?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// The tool's variables for `db` with its backups in `dir` and copies in
/// `bucket` at `endpoint`, quick to give up, plus `extra`.
pub(crate) fn bucket_vars(
    db: &str,
    dir: &Path,
    endpoint: &str,
    bucket: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut v: Vec<(&str, &str)> = vec![
        ("S3_ENDPOINT", endpoint),
        ("S3_BUCKET", bucket),
        ("S3_REGION", "eu-west-3"),
        ("S3_ACCESS_KEY_ID", "test"),
        ("S3_SECRET_ACCESS_KEY", "test"),
        ("S3_PREFIX", "selmai/prod"),
        ("S3_PATH_STYLE", "true"),
        ("S3_RETRIES", "1"),
        ("S3_REQUEST_TIMEOUT", "5"),
    ];
    v.extend_from_slice(extra);
    tool::vars_with(db, dir, &v)
}
