//! The storage-target conformance suite: one set of checks, run against
//! every implementation of `Target` (the volume in a temporary directory,
//! the bucket on the moto server at `TEST_S3_ENDPOINT`), in the spirit of
//! restic's `internal/backend/test`. Each bucket test gets its own bucket,
//! so the tests run in parallel. Also a few bucket-only checks (list pagination, `check`, the sweep of
//! incomplete uploads) and, ignored by default, the upload throughput
//! measurement.

use std::sync::Arc;
use std::time::{Duration, Instant};

use s3::Bucket;
use selmai_backup::target::local::LocalTarget;
use selmai_backup::target::s3::S3Target;
use selmai_backup::target::sftp::SftpTarget;
use selmai_backup::target::{get_bytes, put_bytes, Target, TargetError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::bucket::*;
use crate::support::sshd;

// ---------------------------------------------------------------------------
// Fixtures

/// A target under test and a side door to see what it left behind.
pub(crate) struct Fixture {
    target: Arc<dyn Target>,
    kind: Kind,
}

enum Kind {
    Volume(tempfile::TempDir),
    Bucket {
        raw: Box<Bucket>,
        prefix: String,
    },
    /// The remote directory, seen through the local file system.
    Sftp(std::path::PathBuf),
}

impl Fixture {
    fn volume() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Fixture {
            target: Arc::new(LocalTarget::new(dir.path())),
            kind: Kind::Volume(dir),
        }
    }

    async fn bucket(tag: &str) -> Self {
        let name = unique_bucket(tag);
        create_bucket(&name).await;
        let prefix = "backups/prod/";
        let target = S3Target::new(&s3_settings(&s3_endpoint(), &name, prefix)).unwrap();
        Fixture {
            target: Arc::new(target),
            kind: Kind::Bucket {
                raw: raw_bucket(&name),
                prefix: prefix.into(),
            },
        }
    }

    fn sftp(tag: &str) -> Self {
        let env = sshd::sftp_env();
        let (remote, local) = env.fresh_dir(tag);
        let target = SftpTarget::new(&env.settings(&remote)).unwrap();
        Fixture {
            target: Arc::new(target),
            kind: Kind::Sftp(local),
        }
    }

    fn target(&self) -> &dyn Target {
        &*self.target
    }

    /// Plant objects that are near our names but not ours.
    async fn put_foreign(&self, name: &str) {
        match &self.kind {
            Kind::Volume(_) | Kind::Sftp(_) => {
                let d = self.local_dir();
                std::fs::write(d.join(format!(".{name}")), b"hidden").unwrap();
                std::fs::write(d.join(format!(".{name}.partial")), b"partial").unwrap();
                std::fs::create_dir(d.join(format!("{name}.d"))).unwrap();
                std::fs::write(d.join(format!("{name}.d/{name}")), b"nested").unwrap();
            }
            Kind::Bucket { raw, prefix } => {
                let trimmed = prefix.trim_end_matches('/');
                for key in [
                    name.to_string(),                                   // bucket root
                    format!("other/{name}"),                            // another prefix
                    format!("{trimmed}-old/{name}"),                    // a sibling prefix
                    format!("{prefix}sub/{name}"),                      // below ours
                    format!("{prefix}.{name}"),                         // hidden
                    format!("{}/{name}", trimmed.replace("/prod", "")), // a parent
                ] {
                    raw.put_object(&key, b"foreign").await.unwrap();
                }
            }
        }
    }

    /// The directory behind a volume or an SFTP server.
    fn local_dir(&self) -> &std::path::Path {
        match &self.kind {
            Kind::Volume(dir) => dir.path(),
            Kind::Sftp(dir) => dir,
            Kind::Bucket { .. } => unreachable!("a bucket has no directory"),
        }
    }

    /// Partial files or incomplete multipart uploads left behind.
    async fn leftovers(&self) -> Vec<String> {
        match &self.kind {
            Kind::Volume(_) | Kind::Sftp(_) => std::fs::read_dir(self.local_dir())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".partial"))
                .collect(),
            Kind::Bucket { raw, .. } => open_uploads(raw).await,
        }
    }

    /// Wait up to 30 s for background clean-up to leave nothing behind (an
    /// abort sent from `Drop` to moto took over 10 s once on a loaded machine).
    async fn assert_no_leftovers_soon(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = self.leftovers().await;
            if left.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "left behind: {left:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// The suite

async fn round_trip_of_every_size(f: &Fixture) {
    let t = f.target();
    let sizes = [
        0,
        1,
        1000,
        TEST_PART - 1,
        TEST_PART,     // one full part, nothing after it
        2 * TEST_PART, // the last part is full too
        12 * MIB + 123,
    ];
    for (i, size) in sizes.into_iter().enumerate() {
        let name = format!("obj_{i}_{size}");
        let data = pattern(size, i as u64);
        let info = upload(t, &name, &data).await.unwrap();
        assert_eq!(
            (info.name.as_str(), info.size),
            (name.as_str(), size as u64)
        );
        let meta = t.metadata(&name).await.unwrap().unwrap();
        assert_eq!(meta.size, size as u64, "{name}");
        let back = download(t, &name).await.unwrap();
        assert!(back == data, "{name}: {} bytes back", back.len());
    }
    assert!(f.leftovers().await.is_empty());
}

async fn put_bytes_and_get_bytes(f: &Fixture) {
    let t = f.target();
    put_bytes(t, "manifest.json", b"{\"v\":1}").await.unwrap();
    assert_eq!(get_bytes(t, "manifest.json").await.unwrap(), b"{\"v\":1}");
    // Committing again replaces the object.
    put_bytes(t, "manifest.json", b"{\"v\":2}").await.unwrap();
    assert_eq!(get_bytes(t, "manifest.json").await.unwrap(), b"{\"v\":2}");
}

async fn list_by_prefix_returns_exact_names(f: &Fixture) {
    let t = f.target();
    assert!(t.list("").await.unwrap().is_empty());
    for (name, len) in [
        ("sel_2024-01-01.sql.gz", 3),
        ("sel_2024-01-02.sql.gz", 4),
        ("other.sql", 5),
    ] {
        put_bytes(t, name, &vec![7; len]).await.unwrap();
    }
    let names = |v: Vec<selmai_backup::target::ObjectInfo>| {
        let mut v: Vec<(String, u64)> = v.into_iter().map(|o| (o.name, o.size)).collect();
        v.sort();
        v
    };
    assert_eq!(
        names(t.list("sel_").await.unwrap()),
        [
            ("sel_2024-01-01.sql.gz".to_string(), 3),
            ("sel_2024-01-02.sql.gz".to_string(), 4)
        ]
    );
    assert_eq!(names(t.list("").await.unwrap()).len(), 3);
    assert_eq!(names(t.list("sel_2024-01-02").await.unwrap()).len(), 1);
    assert!(t.list("nothing").await.unwrap().is_empty());
    let all = t.list("").await.unwrap();
    assert!(all.iter().all(|o| o.modified.is_some()), "{all:?}");
}

async fn foreign_objects_are_never_listed(f: &Fixture) {
    let t = f.target();
    put_bytes(t, "sel_1.sql.gz", b"ours").await.unwrap();
    f.put_foreign("sel_2.sql.gz").await;
    let listed: Vec<String> = t
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(listed, ["sel_1.sql.gz"]);
    assert_eq!(t.list("sel_").await.unwrap().len(), 1);
    assert!(t.metadata("sel_2.sql.gz").await.unwrap().is_none());
    // Names that could reach outside the scope are refused outright.
    for bad in ["sub/sel_2.sql.gz", "../sel_2.sql.gz", ".sel_2.sql.gz", ""] {
        assert!(t.create(bad).await.is_err(), "{bad:?}");
        assert!(t.open(bad).await.is_err(), "{bad:?}");
        assert!(t.delete(bad).await.is_err(), "{bad:?}");
    }
}

async fn metadata_reports_size_or_none(f: &Fixture) {
    let t = f.target();
    put_bytes(t, "m", &[1; 4321]).await.unwrap();
    let m = t.metadata("m").await.unwrap().unwrap();
    assert_eq!((m.name.as_str(), m.size), ("m", 4321));
    assert!(m.modified.is_some());
    assert!(t.metadata("missing").await.unwrap().is_none());
}

async fn delete_removes_and_missing_is_ok(f: &Fixture) {
    let t = f.target();
    put_bytes(t, "d", b"x").await.unwrap();
    t.delete("d").await.unwrap();
    assert!(t.metadata("d").await.unwrap().is_none());
    assert!(t.list("").await.unwrap().is_empty());
    t.delete("d").await.unwrap();
    t.delete("never-existed").await.unwrap();
}

async fn open_missing_is_not_found(f: &Fixture) {
    let t = f.target();
    match t.open("missing.sql.gz").await {
        Err(TargetError::NotFound { name, .. }) => assert_eq!(name, "missing.sql.gz"),
        Err(e) => panic!("expected NotFound, got {e}"),
        Ok(_) => panic!("expected NotFound, got a reader"),
    }
}

async fn abort_leaves_nothing_visible(f: &Fixture) {
    let t = f.target();
    // Small (never sent) and large (parts already on the server).
    for (name, size) in [("small", 1000), ("large", 2 * TEST_PART + 10)] {
        let mut up = t.create(name).await.unwrap();
        up.write_all(&pattern(size, 1)).await.unwrap();
        up.abort().await.unwrap();
        assert!(t.metadata(name).await.unwrap().is_none(), "{name}");
    }
    assert!(t.list("").await.unwrap().is_empty());
    assert!(f.leftovers().await.is_empty(), "{:?}", f.leftovers().await);

    // Aborting a rewrite leaves the older object as it was.
    let old = pattern(3000, 2);
    put_bytes(t, "kept", &old).await.unwrap();
    let mut up = t.create("kept").await.unwrap();
    up.write_all(&pattern(TEST_PART + 1, 3)).await.unwrap();
    up.abort().await.unwrap();
    assert_eq!(get_bytes(t, "kept").await.unwrap(), old);
    assert!(f.leftovers().await.is_empty());
}

async fn dropped_upload_leaves_nothing_visible(f: &Fixture) {
    let t = f.target();
    for (name, size) in [("small", 10), ("large", TEST_PART + TEST_PART / 2)] {
        let mut up = t.create(name).await.unwrap();
        up.write_all(&pattern(size, 4)).await.unwrap();
        drop(up);
        assert!(t.metadata(name).await.unwrap().is_none(), "{name}");
    }
    f.assert_no_leftovers_soon().await;
    assert!(t.list("").await.unwrap().is_empty());
    for name in ["small", "large"] {
        assert!(t.metadata(name).await.unwrap().is_none(), "{name}");
    }
}

async fn nothing_is_visible_before_commit(f: &Fixture) {
    let t = f.target();
    let mut up = t.create("pending").await.unwrap();
    up.write_all(&pattern(TEST_PART * 2 + 5, 5)).await.unwrap();
    up.flush().await.unwrap();
    assert!(t.metadata("pending").await.unwrap().is_none());
    assert!(t.list("").await.unwrap().is_empty());
    let info = up.commit().await.unwrap();
    assert_eq!(info.size, (TEST_PART * 2 + 5) as u64);
    assert_eq!(t.list("").await.unwrap().len(), 1);
}

/// One test per check and target: `volume::case`, `bucket::case` and `sftp::case`.
macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod volume {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let f = super::Fixture::volume();
                    super::$case(&f).await;
                }
            )*
        }
        mod bucket {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let f = super::Fixture::bucket(stringify!($case)).await;
                    super::$case(&f).await;
                }
            )*
        }
        mod sftp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let f = super::Fixture::sftp(stringify!($case));
                    super::$case(&f).await;
                }
            )*
        }
    };
}

conformance!(
    round_trip_of_every_size,
    put_bytes_and_get_bytes,
    list_by_prefix_returns_exact_names,
    foreign_objects_are_never_listed,
    metadata_reports_size_or_none,
    delete_removes_and_missing_is_ok,
    open_missing_is_not_found,
    abort_leaves_nothing_visible,
    dropped_upload_leaves_nothing_visible,
    nothing_is_visible_before_commit,
);

// ---------------------------------------------------------------------------
// Bucket only

async fn fresh_bucket(tag: &str, prefix: &str) -> (S3Target, Box<Bucket>) {
    let name = unique_bucket(tag);
    create_bucket(&name).await;
    let t = S3Target::new(&s3_settings(&s3_endpoint(), &name, prefix)).unwrap();
    (t, raw_bucket(&name))
}

#[tokio::test]
async fn bucket_list_follows_pagination() {
    let (t, _raw) = fresh_bucket("paginate", "p/").await;
    let t = t.with_list_page_size(2);
    for i in 0..7 {
        put_bytes(&t, &format!("n{i}"), b"x").await.unwrap();
    }
    let mut names: Vec<String> = t
        .list("n")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    names.sort();
    assert_eq!(names, (0..7).map(|i| format!("n{i}")).collect::<Vec<_>>());
}

#[tokio::test]
async fn bucket_without_prefix_uses_the_root() {
    let (t, raw) = fresh_bucket("noprefix", "").await;
    put_bytes(&t, "a.sql", b"x").await.unwrap();
    raw.put_object("dir/b.sql", b"y").await.unwrap();
    assert!(raw_exists(&raw, "a.sql").await);
    let names: Vec<String> = t
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["a.sql"]);
}

#[tokio::test]
async fn bucket_check_passes_and_leaves_nothing() {
    let (t, raw) = fresh_bucket("check", "c/").await;
    t.check().await.unwrap();
    assert!(open_uploads(&raw).await.is_empty());
    assert!(t.list("").await.unwrap().is_empty());
    let (_, _raw) = (t, raw);
}

#[tokio::test]
async fn bucket_sweep_aborts_only_our_incomplete_uploads() {
    let (t, raw) = fresh_bucket("sweep", "ours/").await;
    for key in ["ours/left.sql.gz", "theirs/left.sql.gz"] {
        raw.initiate_multipart_upload(key, "application/octet-stream")
            .await
            .unwrap();
    }
    assert_eq!(t.incomplete_uploads("").await.unwrap().len(), 1);
    let swept = t.abort_incomplete_uploads().await.unwrap();
    assert_eq!(swept, ["ours/left.sql.gz"]);
    assert_eq!(open_uploads(&raw).await, ["theirs/left.sql.gz"]);
}

#[tokio::test]
async fn bucket_storage_class_is_applied() {
    let name = unique_bucket("class");
    create_bucket(&name).await;
    let mut s = s3_settings(&s3_endpoint(), &name, "");
    s.storage_class = Some("STANDARD_IA".into());
    let t = S3Target::new(&s).unwrap();
    put_bytes(&t, "small", b"x").await.unwrap();
    upload(&t, "large", &pattern(TEST_PART + 1, 9))
        .await
        .unwrap();
    let raw = raw_bucket(&name);
    let (pages, _) = raw
        .list_page(String::new(), None, None, None, None)
        .await
        .unwrap();
    let classes: Vec<Option<String>> = pages
        .contents
        .into_iter()
        .map(|o| o.storage_class)
        .collect();
    assert_eq!(
        classes,
        [Some("STANDARD_IA".into()), Some("STANDARD_IA".into())]
    );
}

/// Throughput and memory of a 200 MiB upload and download (run by hand:
/// `cargo test --release --test it -- --ignored bucket_throughput --nocapture`;
/// `SELMAI_BENCH_MIB` changes the size, to see that memory does not follow it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn bucket_throughput() {
    let name = unique_bucket("throughput");
    create_bucket(&name).await;
    let mut s = s3_settings(&s3_endpoint(), &name, "bench/");
    s.part_size = 8 * MIB;
    s.concurrency = 2;
    let t = S3Target::new(&s).unwrap();
    let mib: usize = std::env::var("SELMAI_BENCH_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let total = mib * MIB;
    let block = pattern(MIB, 42);
    let before = peak_rss_kib();
    let start = Instant::now();
    let mut up = t.create("big").await.unwrap();
    let mut buf = block.clone();
    for i in 0..total / MIB {
        buf[..8].copy_from_slice(&(i as u64).to_le_bytes());
        up.write_all(&buf).await.unwrap();
    }
    let info = up.commit().await.unwrap();
    let up_secs = start.elapsed().as_secs_f64();
    let after_upload = peak_rss_kib();
    assert_eq!(info.size, total as u64);

    let start = Instant::now();
    let mut r = t.open("big").await.unwrap();
    let mut sink = vec![0u8; 256 * 1024];
    let mut n = 0usize;
    loop {
        let k = r.read(&mut sink).await.unwrap();
        if k == 0 {
            break;
        }
        n += k;
    }
    let down_secs = start.elapsed().as_secs_f64();
    assert_eq!(n, total);
    println!(
        "upload {mib} MiB: {up_secs:.1} s = {:.1} MiB/s; download: {down_secs:.1} s = {:.1} MiB/s; \
         peak RSS before {} MiB, after upload {} MiB, after download {} MiB \
         (part 8 MiB, 2 in flight)",
        mib as f64 / up_secs,
        mib as f64 / down_secs,
        before / 1024,
        after_upload / 1024,
        peak_rss_kib() / 1024
    );
}

/// Peak resident memory of this process so far (VmHWM), in KiB.
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
