//! The storage-target conformance suite: one set of checks, run against
//! every implementation of `Target` (the volume in a temporary directory,
//! the bucket on the moto server at `TEST_S3_ENDPOINT`, the OpenSSH server
//! at `TEST_SFTP_*`), in the spirit of
//! restic's `internal/backend/test`. Each bucket test gets its own bucket,
//! so the tests run in parallel. Also a few bucket-only checks (list pagination, `check`, the sweep of
//! incomplete uploads) and, ignored by default, the throughput measurements
//! of the bucket and of the SFTP server (the latter next to OpenSSH's
//! `sftp`).

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

/// Throughput of a 500 MB upload and download through the SFTP target,
/// side by side with OpenSSH's `sftp` moving the same file to and from the
/// same server in the same run, and the peak memory of our transfers. Run
/// by `scripts/bench-sftp.sh` or by hand: `cargo test --release --test it
/// -- --ignored sftp_throughput --nocapture` (`SELMAI_BENCH_MB` changes the
/// size, `SELMAI_BENCH_SFTP_CONCURRENCY` the requests in flight,
/// `SELMAI_BENCH_SFTP_DELAY_MS` puts a delay each way between the clients
/// and the server, see [`delay_proxy`]).
///
/// The file is pseudo-random, incompressible like a gzip backup. Our upload
/// reads it from the local disk and writes it through `create`/`commit`
/// (which `fsync`s on the server before the rename), so OpenSSH's upload is
/// timed twice: `put -f` (the same `fsync`) and plain `put`. Each transfer
/// opens its own connection, and its time includes it. Besides the wall
/// time, the CPU time (user + system) of the client process: ours from
/// `/proc/self/stat`, `sftp`'s from GNU time. The figures are printed
/// (`bench-sftp` lines for the script, then a table), never asserted; the
/// contents of all five copies are checked against the source's SHA-256,
/// so a broken transfer fails the test.
///
/// Memory: the peak RSS of this process is reset (`/proc/self/clear_refs`)
/// right before our upload and read right after it, and again around our
/// download; the OpenSSH transfers run in their own processes and the test's
/// buffers are allocated before the reset. The figure includes the test
/// binary's own resident memory (shown as "at start").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check"]
async fn sftp_throughput() {
    let env = sshd::sftp_env();
    let mb = bench_var("SELMAI_BENCH_MB", 500);
    let size = mb * 1_000_000;
    let (remote, remote_local) = env.fresh_dir("sftp_throughput");
    let delay_ms = bench_var("SELMAI_BENCH_SFTP_DELAY_MS", 0);
    let local = tempfile::tempdir().unwrap();
    let link = if delay_ms == 0 {
        Link {
            port: env.port,
            known_hosts: env.known_hosts.clone(),
        }
    } else {
        let port = delay_proxy(env.port, Duration::from_millis(delay_ms)).await;
        let known_hosts = local.path().join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[{}]:{port} {}\n", env.host, env.host_key),
        )
        .unwrap();
        Link { port, known_hosts }
    };
    let mut settings = env.settings_on(link.port, &remote);
    settings.concurrency =
        bench_var("SELMAI_BENCH_SFTP_CONCURRENCY", settings.concurrency as u64) as usize;
    let source = local.path().join("source.sql.gz");
    let digest = write_incompressible(&source, size);
    let mut buf = vec![0u8; MIB];

    // Ours, up: from the local file through create / write / commit.
    let rss_up_start = reset_peak_rss_kib();
    let clock = Clock::start();
    let target = SftpTarget::new(&settings).unwrap();
    let mut up = target.create("ours.sql.gz").await.unwrap();
    let mut file = tokio::fs::File::open(&source).await.unwrap();
    loop {
        let n = file.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        up.write_all(&buf[..n]).await.unwrap();
    }
    let info = up.commit().await.unwrap();
    let ours_up = clock.stop();
    let rss_up_peak = peak_rss_kib();
    drop(target);
    assert_eq!(info.size, size);

    let put_f = openssh_sftp(
        &env,
        &link,
        format!("put -f {} {remote}/theirs-f.sql.gz", source.display()),
    )
    .await;
    let put = openssh_sftp(
        &env,
        &link,
        format!("put {} {remote}/theirs.sql.gz", source.display()),
    )
    .await;

    // Ours, down: the file our upload wrote, to a local file as `get` does.
    let ours_copy = local.path().join("ours.down");
    let rss_down_start = reset_peak_rss_kib();
    let clock = Clock::start();
    let target = SftpTarget::new(&settings).unwrap();
    let mut r = target.open("ours.sql.gz").await.unwrap();
    let mut out = tokio::fs::File::create(&ours_copy).await.unwrap();
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).await.unwrap();
    }
    out.flush().await.unwrap();
    drop(out);
    let ours_down = clock.stop();
    let rss_down_peak = peak_rss_kib();
    drop(target);

    let theirs_copy = local.path().join("theirs.down");
    let get = openssh_sftp(
        &env,
        &link,
        format!("get {remote}/ours.sql.gz {}", theirs_copy.display()),
    )
    .await;

    for (what, path) in [
        ("our upload", remote_local.join("ours.sql.gz")),
        ("sftp put -f", remote_local.join("theirs-f.sql.gz")),
        ("sftp put", remote_local.join("theirs.sql.gz")),
        ("our download", ours_copy),
        ("sftp get", theirs_copy),
    ] {
        assert_eq!(
            sha256_file(&path),
            digest,
            "{what}: {} differs from the source",
            path.display()
        );
    }
    std::fs::remove_dir_all(&remote_local).unwrap();

    let rate = |t: &Took| format!("{:.1}", size as f64 / 1e6 / t.wall);
    let ratio = |ours: &Took, theirs: &Took| format!("{:.2}x", theirs.wall / ours.wall);
    let cpu = |t: &Took| format!("{:.2}", t.cpu);
    let mib = |kib: u64| kib as f64 / 1024.0;
    let rows = [
        (
            "requests in flight (writes and reads of 128 KiB)",
            settings.concurrency.to_string(),
        ),
        ("delay each way, ms", delay_ms.to_string()),
        ("upload, selmai-backup, MB/s", rate(&ours_up)),
        ("upload, sftp put -f, MB/s", rate(&put_f)),
        ("upload, sftp put, MB/s", rate(&put)),
        ("upload, selmai-backup / put -f", ratio(&ours_up, &put_f)),
        ("upload, selmai-backup / put", ratio(&ours_up, &put)),
        ("download, selmai-backup, MB/s", rate(&ours_down)),
        ("download, sftp get, MB/s", rate(&get)),
        ("download, selmai-backup / get", ratio(&ours_down, &get)),
        ("upload, selmai-backup, client CPU s", cpu(&ours_up)),
        ("upload, sftp put -f, client CPU s", cpu(&put_f)),
        ("upload, sftp put, client CPU s", cpu(&put)),
        ("download, selmai-backup, client CPU s", cpu(&ours_down)),
        ("download, sftp get, client CPU s", cpu(&get)),
        (
            "peak RSS during our upload, MiB (at start)",
            format!("{:.1} ({:.1})", mib(rss_up_peak), mib(rss_up_start)),
        ),
        (
            "peak RSS during our download, MiB (at start)",
            format!("{:.1} ({:.1})", mib(rss_down_peak), mib(rss_down_start)),
        ),
    ];
    for (what, value) in &rows {
        println!("bench-sftp\t{what}\t{value}");
    }
    println!("\n{mb} MB\n\n| what | value |\n|---|---:|");
    for (what, value) in &rows {
        println!("| {what} | {value} |");
    }
}

/// Wall and CPU seconds of one transfer.
struct Took {
    wall: f64,
    cpu: f64,
}

/// Times a transfer made by this process.
struct Clock {
    wall: Instant,
    cpu: f64,
}

impl Clock {
    fn start() -> Clock {
        Clock {
            wall: Instant::now(),
            cpu: own_cpu_secs(),
        }
    }

    fn stop(self) -> Took {
        Took {
            wall: self.wall.elapsed().as_secs_f64(),
            cpu: own_cpu_secs() - self.cpu,
        }
    }
}

/// User + system time of this process (all its threads) so far, from
/// `/proc/self/stat`.
fn own_cpu_secs() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .expect("running getconf CLK_TCK");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("getconf CLK_TCK prints a number")
    });
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // The fields after the command name, which is in parentheses; utime
    // and stime are fields 14 and 15 of the whole line.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let utime: f64 = fields[11].parse().unwrap();
    let stime: f64 = fields[12].parse().unwrap();
    (utime + stime) / ticks
}

/// A whole number from the environment, or `default`.
fn bench_var(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Writes `size` pseudo-random bytes (xorshift: no repeats, so nothing to
/// compress) to `path`; returns their SHA-256.
fn write_incompressible(path: &std::path::Path, size: u64) -> Vec<u8> {
    use sha2::Digest;
    use std::io::Write;
    let mut file = std::io::BufWriter::with_capacity(MIB, std::fs::File::create(path).unwrap());
    let mut hash = sha2::Sha256::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; MIB];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(MIB as u64) as usize;
        hash.update(&block[..n]);
        file.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    file.flush().unwrap();
    hash.finalize().to_vec()
}

fn sha256_file(path: &std::path::Path) -> Vec<u8> {
    use sha2::Digest;
    let mut file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
    let mut hash = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hash).unwrap();
    hash.finalize().to_vec()
}

/// Runs one batch command in OpenSSH's `sftp` on the shared server, under
/// GNU time for its CPU time; the wall time is the whole process's
/// (connection included).
async fn openssh_sftp(env: &sshd::SftpEnv, link: &Link, command: String) -> Took {
    let sftp = env.sftp_batch(link.port, &link.known_hosts);
    tokio::task::spawn_blocking(move || {
        use std::io::Write;
        use std::process::Stdio;
        let times = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = std::process::Command::new("/usr/bin/time");
        cmd.args(["-f", "%U %S", "-o"])
            .arg(times.path())
            .arg(sftp.get_program())
            .args(sftp.get_args());
        let start = Instant::now();
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running sftp under /usr/bin/time (apt-get install time openssh-client)");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{command}\n").as_bytes()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        let wall = start.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "sftp {command:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let times = std::fs::read_to_string(times.path()).unwrap();
        let cpu = times
            .split_whitespace()
            .map(|v| {
                v.parse::<f64>()
                    .unwrap_or_else(|_| panic!("GNU time wrote {times:?}"))
            })
            .sum();
        Took { wall, cpu }
    })
    .await
    .unwrap()
}

/// Where the clients reach the server: its port, or a [`delay_proxy`]'s,
/// with the known_hosts file for that port.
struct Link {
    port: u16,
    known_hosts: std::path::PathBuf,
}

/// A TCP proxy on 127.0.0.1 to the server's `port` that holds every byte
/// for `delay` in each direction, as a long link would (a round trip of
/// twice `delay`), with no limit of bandwidth: it reads as fast as the
/// sender writes, so only the protocols' own windows and requests in
/// flight bound what is on the way. Returns its port. It runs on the
/// test's runtime, so during a delayed run this process's CPU time and
/// peak RSS include its work and the bytes it holds.
async fn delay_proxy(port: u16, delay: Duration) -> u16 {
    use tokio::net::{TcpListener, TcpStream};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(("127.0.0.1", port)).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (client_r, client_w) = client.into_split();
                let (server_r, server_w) = server.into_split();
                tokio::join!(
                    delayed(client_r, server_w, delay),
                    delayed(server_r, client_w, delay)
                );
            });
        }
    });
    own
}

/// Copies `from` to `to`, each piece `delay` after it was read.
async fn delayed(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if tx
                .send((tokio::time::Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((due, piece)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&piece).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// Resets the peak resident memory of this process to its current resident
/// memory (Linux 4.0 and later) and returns it, in KiB.
fn reset_peak_rss_kib() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5")
        .unwrap_or_else(|e| panic!("resetting the peak RSS through /proc/self/clear_refs: {e}"));
    peak_rss_kib()
}
