//! The bucket target under faults (RELIABILITY.md items 13 and 15): a small
//! HTTP proxy in front of moto answers 5xx or 403 to chosen requests, stalls
//! them, or cuts connections in the middle of a part or of a download.
//! Shows that retries succeed with a byte-identical object, that a failure
//! outlasting the retries fails the upload and leaves no incomplete
//! multipart upload and no object, that credentials which may put but not
//! delete get their own error on delete, and that configuration mistakes
//! (missing bucket, bad credentials, unreachable endpoint) say what to fix.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use s3::Bucket;
use selmai_backup::config::S3Settings;
use selmai_backup::target::s3::S3Target;
use selmai_backup::target::{Target, TargetError};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::support::bucket::{
    create_bucket, download, open_uploads, pattern, raw_bucket, raw_exists, s3_endpoint,
    s3_settings, unique_bucket, upload, TEST_PART,
};

// ---------------------------------------------------------------------------
// The proxy

/// What a request is, as far as the faults care.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Initiate,
    UploadPart,
    Complete,
    AbortUpload,
    PutObject,
    DeleteObject,
    GetObject,
    HeadObject,
    List,
    Other,
}

fn classify(method: &str, target: &str) -> Kind {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let has = |k: &str| {
        query
            .split('&')
            .any(|p| p == k || p.starts_with(&format!("{k}=")))
    };
    // Path style: /bucket, /bucket/ (lists) or /bucket/key...
    let object = path
        .trim_start_matches('/')
        .split_once('/')
        .is_some_and(|(_, key)| !key.is_empty());
    match method {
        "PUT" if has("partNumber") => Kind::UploadPart,
        "PUT" if object => Kind::PutObject,
        "POST" if has("uploadId") => Kind::Complete,
        "POST" if has("uploads") => Kind::Initiate,
        "DELETE" if has("uploadId") => Kind::AbortUpload,
        "DELETE" if object => Kind::DeleteObject,
        "GET" if object => Kind::GetObject,
        "GET" => Kind::List,
        "HEAD" if object => Kind::HeadObject,
        _ => Kind::Other,
    }
}

/// What the proxy does to a request.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answer this status with this S3 error code, without asking moto.
    Status(u16, &'static str),
    /// Answer this status, S3 error code and message, without asking moto.
    Said(u16, &'static str, &'static str),
    /// Forward the head and this many body bytes, then close both sides.
    CutRequest(usize),
    /// Forward; pass this many bytes of the answer, then close.
    CutResponse(usize),
    /// Forward; pass this many bytes of the answer, then send nothing more.
    StallResponse(usize),
    /// Read the request and never answer.
    Stall,
}

/// Requests `from..from + count` (1-based, counted per kind) get `fault`.
#[derive(Debug, Clone, Copy)]
struct Rule {
    kind: Kind,
    from: usize,
    count: usize,
    fault: Fault,
}

fn rule(kind: Kind, from: usize, count: usize, fault: Fault) -> Rule {
    Rule {
        kind,
        from,
        count,
        fault,
    }
}

#[derive(Default)]
struct Seen {
    per_kind: HashMap<Kind, usize>,
    faults: Vec<(Kind, usize, String)>,
    /// Bodies whose Content-MD5 matched / did not match / was absent.
    md5: (usize, usize, usize),
}

/// A one-request-per-connection HTTP proxy to moto with injected faults.
struct Proxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl Proxy {
    async fn start(rules: Vec<Rule>) -> Proxy {
        let upstream: SocketAddr = s3_endpoint()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .expect("TEST_S3_ENDPOINT as http://ip:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let rules = Arc::new(rules);
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (s, rules) = (s.clone(), rules.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, upstream, &rules, &s).await;
                });
            }
        });
        Proxy { addr, seen }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn count(&self, kind: Kind) -> usize {
        *self.seen.lock().unwrap().per_kind.get(&kind).unwrap_or(&0)
    }

    fn faults(&self) -> Vec<(Kind, usize, String)> {
        self.seen.lock().unwrap().faults.clone()
    }

    fn md5(&self) -> (usize, usize, usize) {
        self.seen.lock().unwrap().md5
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Read until the end of the head; returns (head, bytes after it).
async fn read_head(conn: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            return Ok(Some((head, buf[end + 4..].to_vec())));
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The head with `Connection: close`, so neither side reuses the connection.
fn closing(head: &str) -> String {
    let mut out: Vec<&str> = head
        .split("\r\n")
        .filter(|l| {
            let k = l.split(':').next().unwrap_or("").trim();
            !k.eq_ignore_ascii_case("connection") && !k.eq_ignore_ascii_case("keep-alive")
        })
        .collect();
    out.push("Connection: close");
    out.join("\r\n") + "\r\n\r\n"
}

async fn serve(
    mut conn: TcpStream,
    upstream: SocketAddr,
    rules: &[Rule],
    seen: &Mutex<Seen>,
) -> std::io::Result<()> {
    let Some((head, mut body)) = read_head(&mut conn).await? else {
        return Ok(());
    };
    let mut first = head.lines().next().unwrap_or("").split(' ');
    let (method, target) = (first.next().unwrap_or(""), first.next().unwrap_or(""));
    let kind = classify(method, target);
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fault = {
        let mut s = seen.lock().unwrap();
        let n = s.per_kind.entry(kind).or_default();
        *n += 1;
        let n = *n;
        let fault = rules
            .iter()
            .find(|r| r.kind == kind && n >= r.from && n < r.from + r.count)
            .map(|r| r.fault);
        if let Some(f) = fault {
            s.faults.push((kind, n, format!("{f:?}")));
        }
        fault
    };
    if let Some(Fault::CutRequest(k)) = fault {
        let mut up = TcpStream::connect(upstream).await?;
        up.write_all(closing(&head).as_bytes()).await?;
        while body.len() < k.min(len) {
            let mut chunk = vec![0u8; 64 * 1024];
            let n = conn.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
        up.write_all(&body[..body.len().min(k)]).await?;
        // Dropping both sockets: the client sees its connection die mid-body.
        return Ok(());
    }
    // Read the whole body.
    while body.len() < len {
        let mut chunk = vec![0u8; 256 * 1024];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let said = match fault {
        Some(Fault::Status(status, code)) => Some((status, code, "injected by the test proxy")),
        Some(Fault::Said(status, code, message)) => Some((status, code, message)),
        _ => None,
    };
    match fault {
        Some(Fault::Status(..) | Fault::Said(..)) => {
            let (status, code, message) = said.expect("a status fault");
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
            );
            let body = if method == "HEAD" { "" } else { xml.as_str() };
            let resp = format!(
                "HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            conn.write_all(resp.as_bytes()).await?;
            conn.shutdown().await?;
            return Ok(());
        }
        Some(Fault::Stall) => {
            // Hold the connection until the client gives up.
            let mut sink = [0u8; 1024];
            while conn.read(&mut sink).await? > 0 {}
            return Ok(());
        }
        _ => {}
    }
    if matches!(kind, Kind::UploadPart | Kind::PutObject) {
        let mut s = seen.lock().unwrap();
        match header(&head, "content-md5") {
            Some(v) if v == base64(&md5::compute(&body).0) => s.md5.0 += 1,
            Some(_) => s.md5.1 += 1,
            None => s.md5.2 += 1,
        }
    }
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(closing(&head).as_bytes()).await?;
    up.write_all(&body).await?;
    let mut resp = Vec::new();
    up.read_to_end(&mut resp).await?;
    let resp = match find(&resp, b"\r\n\r\n") {
        Some(end) => {
            let mut r = closing(&String::from_utf8_lossy(&resp[..end])).into_bytes();
            r.extend_from_slice(&resp[end + 4..]);
            r
        }
        None => resp,
    };
    let keep = match fault {
        Some(Fault::CutResponse(k) | Fault::StallResponse(k)) => k.min(resp.len()),
        _ => resp.len(),
    };
    conn.write_all(&resp[..keep]).await?;
    if let Some(Fault::StallResponse(_)) = fault {
        let mut sink = [0u8; 1024];
        while conn.read(&mut sink).await? > 0 {}
    }
    conn.shutdown().await
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Helpers

/// A fresh bucket, reached through `proxy`, with `retries` retries.
async fn through(proxy: &Proxy, tag: &str, retries: u32) -> (S3Target, Box<Bucket>, S3Settings) {
    let name = unique_bucket(tag);
    create_bucket(&name).await;
    let mut s = s3_settings(&proxy.endpoint(), &name, "faults/");
    s.retries = retries;
    (S3Target::new(&s).unwrap(), raw_bucket(&name), s)
}

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// 17 MiB: parts of 5, 5, 5 and 2 MiB.
fn payload(seed: u64) -> Vec<u8> {
    pattern(3 * TEST_PART + 2 * 1024 * 1024, seed)
}

async fn assert_clean(raw: &Bucket, key: &str) {
    // Clean-up may run in a spawned task: give it a moment.
    for _ in 0..100 {
        if open_uploads(raw).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        open_uploads(raw).await.is_empty(),
        "incomplete uploads left"
    );
    assert!(
        !raw_exists(raw, key).await,
        "{key} exists after a failed upload"
    );
}

// ---------------------------------------------------------------------------
// Retries that succeed

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_and_a_cut_part_are_retried_to_an_identical_object() {
    let proxy = Proxy::start(vec![
        rule(Kind::Initiate, 1, 1, Fault::Status(503, "SlowDown")),
        rule(Kind::UploadPart, 2, 2, Fault::Status(500, "InternalError")),
        rule(Kind::UploadPart, 5, 1, Fault::CutRequest(1024 * 1024)),
        rule(Kind::Complete, 1, 1, Fault::Status(500, "InternalError")),
    ])
    .await;
    let (t, raw, _) = through(&proxy, "retry-ok", 3).await;
    let data = payload(1);
    let info = upload(&t, "db.sql.gz", &data).await.unwrap();
    assert_eq!(info.size, data.len() as u64);

    // Byte-identical, read straight from moto.
    let stored = raw.get_object(t.key_of("db.sql.gz")).await.unwrap();
    assert_eq!(sha(stored.as_slice()), sha(&data));
    assert_eq!(proxy.faults().len(), 5, "{:?}", proxy.faults());
    // 4 parts, 3 of them sent twice.
    assert_eq!(proxy.count(Kind::UploadPart), 7);
    assert_eq!(proxy.count(Kind::Complete), 2);
    // Every part that reached moto carried a matching Content-MD5.
    assert_eq!(proxy.md5(), (4, 0, 0));
    assert!(open_uploads(&raw).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_part_times_out_and_is_retried() {
    let proxy = Proxy::start(vec![rule(Kind::UploadPart, 1, 1, Fault::Stall)]).await;
    let (_, raw, mut s) = through(&proxy, "stall", 2).await;
    s.request_timeout = Duration::from_secs(2);
    let t = S3Target::new(&s).unwrap();
    let data = pattern(TEST_PART + 10, 2);
    upload(&t, "db.sql.gz", &data).await.unwrap();
    assert_eq!(proxy.count(Kind::UploadPart), 3);
    assert_eq!(sha(&download(&t, "db.sql.gz").await.unwrap()), sha(&data));
    assert!(open_uploads(&raw).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_objects_use_one_put_with_content_md5_and_are_retried() {
    let proxy = Proxy::start(vec![rule(Kind::PutObject, 1, 1, Fault::Status(502, ""))]).await;
    let (t, _raw, _) = through(&proxy, "small-put", 2).await;
    upload(&t, "m.json", b"{\"ok\":true}").await.unwrap();
    assert_eq!(proxy.count(Kind::Initiate), 0);
    assert_eq!(proxy.count(Kind::PutObject), 2);
    assert_eq!(proxy.md5(), (1, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_resume_after_cut_connections_and_server_errors() {
    let proxy = Proxy::start(vec![
        rule(Kind::GetObject, 1, 1, Fault::CutResponse(300 * 1024)),
        rule(Kind::GetObject, 2, 1, Fault::Status(503, "SlowDown")),
        rule(Kind::GetObject, 3, 1, Fault::CutResponse(4 * 1024 * 1024)),
    ])
    .await;
    // Two retries suffice: progress renews them.
    let (t, _raw, _) = through(&proxy, "download", 2).await;
    let data = pattern(2 * TEST_PART + 77, 3);
    upload(&t, "db.sql.gz", &data).await.unwrap();
    let back = download(&t, "db.sql.gz").await.unwrap();
    assert_eq!(sha(&back), sha(&data));
    // One GET, resumed three times.
    assert_eq!(proxy.count(Kind::GetObject), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_download_times_out_and_resumes() {
    let proxy = Proxy::start(vec![rule(
        Kind::GetObject,
        1,
        1,
        Fault::StallResponse(1024 * 1024),
    )])
    .await;
    let (_, _raw, mut s) = through(&proxy, "download-stall", 1).await;
    s.request_timeout = Duration::from_secs(2);
    let t = S3Target::new(&s).unwrap();
    let data = pattern(TEST_PART + 5, 10);
    upload(&t, "db.sql.gz", &data).await.unwrap();
    assert_eq!(sha(&download(&t, "db.sql.gz").await.unwrap()), sha(&data));
    assert_eq!(proxy.count(Kind::GetObject), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_that_keeps_failing_is_an_error_not_a_short_file() {
    // The first GET is cut after 1 MiB; every resumption fails.
    let proxy = Proxy::start(vec![
        rule(Kind::GetObject, 1, 1, Fault::CutResponse(1024 * 1024)),
        rule(
            Kind::GetObject,
            2,
            1000,
            Fault::Status(500, "InternalError"),
        ),
    ])
    .await;
    let (t, _raw, _) = through(&proxy, "download-fail", 1).await;
    upload(&t, "db.sql.gz", &pattern(TEST_PART + 5, 11))
        .await
        .unwrap();
    let err = download(&t, "db.sql.gz").await.unwrap_err().to_string();
    assert!(
        err.contains("db.sql.gz") && err.contains("HTTP 500") && err.contains("after 2 attempts"),
        "{err}"
    );
    // The cut GET made progress, so it did not use up the one retry;
    // the resumption that failed did.
    assert_eq!(proxy.count(Kind::GetObject), 2);
}

// ---------------------------------------------------------------------------
// Failures that outlast the retries

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lasting_server_errors_fail_the_upload_and_leave_nothing() {
    let proxy = Proxy::start(vec![rule(
        Kind::UploadPart,
        2,
        1000,
        Fault::Status(500, "InternalError"),
    )])
    .await;
    let (t, raw, _) = through(&proxy, "retry-fail", 2).await;
    let err = upload(&t, "db.sql.gz", &payload(4)).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("db.sql.gz")
            && msg.contains("HTTP 500 InternalError")
            && msg.contains("after 3 attempts"),
        "{msg}"
    );
    assert!(proxy.count(Kind::AbortUpload) >= 1);
    assert_clean(&raw, &t.key_of("db.sql.gz")).await;
    assert!(t.list("").await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_cut_every_time_fail_cleanly_and_leave_nothing() {
    let proxy = Proxy::start(vec![rule(
        Kind::UploadPart,
        1,
        1000,
        Fault::CutRequest(64 * 1024),
    )])
    .await;
    let (t, raw, _) = through(&proxy, "cut-fail", 1).await;
    let err = upload(&t, "db.sql.gz", &payload(5)).await.unwrap_err();
    assert!(matches!(err, TargetError::Remote { .. }), "{err}");
    assert_clean(&raw, &t.key_of("db.sql.gz")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_complete_aborts_the_upload() {
    let proxy = Proxy::start(vec![rule(
        Kind::Complete,
        1,
        1000,
        Fault::Status(503, "ServiceUnavailable"),
    )])
    .await;
    let (t, raw, _) = through(&proxy, "complete-fail", 1).await;
    upload(&t, "db.sql.gz", &payload(6)).await.unwrap_err();
    assert_clean(&raw, &t.key_of("db.sql.gz")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_dropped_after_a_failed_write_is_cleaned_up() {
    let proxy = Proxy::start(vec![rule(
        Kind::UploadPart,
        1,
        1000,
        Fault::Status(500, "InternalError"),
    )])
    .await;
    let (t, raw, _) = through(&proxy, "drop-fail", 0).await;
    let mut up = t.create("db.sql.gz").await.unwrap();
    // Two parts fit in flight; the third write of a full part waits for a
    // slot, and learns of the failure instead of buffering on.
    let piece = pattern(64 * 1024, 7);
    let failed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if up.write_all(&piece).await.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(
        failed.is_ok(),
        "writes went on after a part failed for good"
    );
    drop(up);
    assert_clean(&raw, &t.key_of("db.sql.gz")).await;
}

// ---------------------------------------------------------------------------
// Put without delete

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_that_cannot_delete_get_their_own_error() {
    let proxy = Proxy::start(vec![rule(
        Kind::DeleteObject,
        1,
        1000,
        Fault::Status(403, "AccessDenied"),
    )])
    .await;
    let (t, raw, _) = through(&proxy, "no-delete", 2).await;
    // Uploads work: aborting an upload is not a delete.
    upload(&t, "old.sql.gz", b"old").await.unwrap();
    let mut up = t.create("aborted.sql.gz").await.unwrap();
    up.write_all(&pattern(TEST_PART + 1, 8)).await.unwrap();
    up.abort().await.unwrap();

    let err = t.delete("old.sql.gz").await.unwrap_err();
    assert!(matches!(err, TargetError::Denied { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("old.sql.gz") && msg.contains("not delete"),
        "{msg}"
    );
    // Not retried: a 403 will not change.
    assert_eq!(proxy.count(Kind::DeleteObject), 1);
    assert!(raw_exists(&raw, &t.key_of("old.sql.gz")).await);
    assert!(open_uploads(&raw).await.is_empty());
}

// ---------------------------------------------------------------------------
// Configuration mistakes say what to fix

#[tokio::test]
async fn missing_bucket_is_named_with_the_endpoint() {
    let name = unique_bucket("never-created");
    let t = S3Target::new(&s3_settings(&s3_endpoint(), &name, "")).unwrap();
    let msg = t.check().await.unwrap_err().to_string();
    assert!(
        msg.contains(&format!(
            "bucket {name} does not exist at {}",
            s3_endpoint()
        )) && msg.contains("S3_BUCKET"),
        "{msg}"
    );
}

#[tokio::test]
async fn rejected_credentials_name_the_variables() {
    let proxy = Proxy::start(
        [Kind::List, Kind::Initiate, Kind::PutObject]
            .into_iter()
            .map(|k| rule(k, 1, 1000, Fault::Status(403, "InvalidAccessKeyId")))
            .collect(),
    )
    .await;
    let (t, _raw, _) = through(&proxy, "bad-creds", 2).await;
    let err = t.check().await.unwrap_err();
    assert!(matches!(err, TargetError::Denied { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("S3_ACCESS_KEY_ID") && msg.contains("S3_SECRET_ACCESS_KEY"),
        "{msg}"
    );
    assert_eq!(proxy.count(Kind::List), 1, "a 403 is not retried");
}

// Garage answers a wrong secret and an unknown key id with AccessDenied
// and says which in the message: both words reach the operator, with the
// variable to check, and neither is retried.
#[rstest::rstest]
#[case("Forbidden: Invalid signature", "S3_SECRET_ACCESS_KEY")]
#[case(
    "Forbidden: No such key: GK0123456789abcdef01234567",
    "S3_ACCESS_KEY_ID"
)]
#[tokio::test]
async fn a_403_keeps_the_servers_code_and_message(
    #[case] message: &'static str,
    #[case] variable: &str,
) {
    let proxy = Proxy::start(vec![rule(
        Kind::List,
        1,
        1000,
        Fault::Said(403, "AccessDenied", message),
    )])
    .await;
    let (t, _raw, _) = through(&proxy, "garage-403", 3).await;
    let err = t.check().await.unwrap_err();
    assert!(matches!(err, TargetError::Denied { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("AccessDenied: {message}"))
            && msg.contains(&format!("check {variable}"))
            && !msg.contains("s3:ListBucket"),
        "{msg}"
    );
    assert_eq!(proxy.count(Kind::List), 1, "a 403 is not retried");
}

#[tokio::test]
async fn a_policy_denial_keeps_the_servers_message_and_lists_the_permissions() {
    let proxy = Proxy::start(vec![rule(
        Kind::PutObject,
        1,
        1000,
        Fault::Said(403, "AccessDenied", "Access Denied by bucket policy"),
    )])
    .await;
    let (t, _raw, _) = through(&proxy, "policy-403", 3).await;
    let msg = upload(&t, "small.sql.gz", b"tiny")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("AccessDenied: Access Denied by bucket policy")
            && msg.contains("s3:PutObject")
            && !msg.contains("S3_SECRET_ACCESS_KEY"),
        "{msg}"
    );
    assert_eq!(proxy.count(Kind::PutObject), 1, "a 403 is not retried");
}

// A host name that does not resolve will not resolve a second later:
// one attempt, and the message names the variable (issue: 125 s of
// retries before a message with no hint).
#[tokio::test]
async fn a_host_that_does_not_resolve_is_not_retried() {
    for (endpoint, path_style, hint) in [
        // A single-label name (a compose service): path style by itself.
        ("http://selmai-no-such-service:9000", false, false),
        // A dotted name with virtual-host addressing: say which variable.
        ("http://s3.selmai-test.invalid:9000", false, true),
        ("http://s3.selmai-test.invalid:9000", true, false),
    ] {
        let mut s = s3_settings(endpoint, "any-bucket", "");
        s.path_style = path_style;
        s.retries = 5;
        s.retry_delay = Duration::from_secs(1);
        let t = S3Target::new(&s).unwrap();
        let started = std::time::Instant::now();
        let msg = t.check().await.unwrap_err().to_string();
        // Retried, it would take 1 + 2 + 4 + 8 + 16 s; the bound leaves
        // room for a slow resolver.
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{endpoint}: retried for {:?}: {msg}",
            started.elapsed()
        );
        assert!(
            msg.contains(&format!("cannot resolve the host of {endpoint}"))
                && msg.contains("S3_ENDPOINT")
                && !msg.contains("attempts"),
            "{msg}"
        );
        assert_eq!(msg.contains("S3_PATH_STYLE=true"), hint, "{msg}");
    }
}

// `http://127.0.0.1:9000` cannot take the bucket in its host name: path
// style is used without S3_PATH_STYLE, as the AWS SDKs do.
#[tokio::test]
async fn an_ip_address_endpoint_works_without_path_style() {
    let name = unique_bucket("ip-endpoint");
    create_bucket(&name).await;
    let mut s = s3_settings(&s3_endpoint(), &name, "ip/");
    s.path_style = false;
    let t = S3Target::new(&s).unwrap();
    t.check().await.unwrap();
    upload(&t, "a.sql.gz", b"by address").await.unwrap();
    assert_eq!(download(&t, "a.sql.gz").await.unwrap(), b"by address");
    assert!(raw_exists(&raw_bucket(&name), "ip/a.sql.gz").await);
}

#[tokio::test]
async fn unreachable_endpoint_is_named() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let mut s = s3_settings(&endpoint, "any-bucket", "");
    s.retries = 1;
    let t = S3Target::new(&s).unwrap();
    let msg = t.check().await.unwrap_err().to_string();
    assert!(
        msg.contains(&format!("cannot connect to {endpoint}"))
            && msg.contains("after 2 attempts")
            && msg.contains("S3_ENDPOINT"),
        "{msg}"
    );
}

#[test]
fn settings_mistakes_are_config_errors() {
    let mut s = s3_settings("127.0.0.1:9000", "b", "");
    let err = S3Target::new(&s).unwrap_err().to_string();
    assert!(
        err.contains("S3_ENDPOINT") && err.contains("https://"),
        "{err}"
    );
    s.endpoint = Some(s3_endpoint());
    s.secret_access_key = None;
    let err = S3Target::new(&s).unwrap_err().to_string();
    assert!(err.contains("S3_SECRET_ACCESS_KEY"), "{err}");
}

#[test]
fn proxy_classifies_requests() {
    assert_eq!(
        classify("PUT", "/b/k?partNumber=2&uploadId=x"),
        Kind::UploadPart
    );
    assert_eq!(classify("POST", "/b/k?uploads"), Kind::Initiate);
    assert_eq!(classify("POST", "/b/k?uploadId=x"), Kind::Complete);
    assert_eq!(classify("DELETE", "/b/k?uploadId=x"), Kind::AbortUpload);
    assert_eq!(classify("DELETE", "/b/k"), Kind::DeleteObject);
    assert_eq!(classify("GET", "/b?list-type=2&prefix=a"), Kind::List);
    assert_eq!(classify("GET", "/b/?uploads"), Kind::List);
    assert_eq!(classify("GET", "/b/p/k"), Kind::GetObject);
    assert_eq!(base64(&md5::compute(b"").0), "1B2M2Y8AsgTpgAmY7PhCfg==");
}
