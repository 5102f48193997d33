//! Prometheus metrics and `/healthz` over HTTP (`METRICS_LISTEN`, off by
//! default).
//!
//! [`Metrics`] holds the counters and gauges the job runner updates, as
//! prometheus-client metric families. [`Metrics::registry`] registers them
//! next to what is read at each scrape rather than counted ([`Observed`]:
//! the free space of `BACKUP_DIR` and the binlog archive's status file), and
//! [`encode`] writes the registry in the Prometheus text format (version
//! 0.0.4). [`serve`] answers `GET /metrics` and `GET /healthz` (200 or 503
//! with the same one-line verdict as `health`) with hyper, one request per
//! connection, until its shutdown future completes. A client gets 8 KiB and
//! 5 s for its request head and 30 s for the whole exchange, so a slow or
//! huge request cannot hold the daemon. This module does not run backups
//! and does not judge health (that is `daemon::health`).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{prometheus_text, DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::config::Settings;
use crate::daemon::health;
use crate::daemon::schedule::Kind;
use crate::daemon::state::{Outcome, Run, State};

/// The longest request head a client may send (hyper's smallest buffer).
const MAX_HEAD: usize = 8192;
/// How long a client may take to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one connection may last, request and response together: a
/// client that does not read its answer is dropped.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// How long a stop waits for the requests being answered.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The `kind` label of the per-kind families.
type KindLabel = [(&'static str, &'static str); 1];

fn label(kind: Kind) -> KindLabel {
    [("kind", kind.name())]
}

/// The daemon's counters, shared between the runner and the listener.
#[derive(Debug, Clone)]
pub struct Metrics {
    last_success: Family<KindLabel, Gauge>,
    last_duration: Family<KindLabel, Gauge<f64, AtomicU64>>,
    last_size: Family<KindLabel, Gauge<u64, AtomicU64>>,
    failures: Family<KindLabel, Counter>,
    successes: Family<KindLabel, Counter>,
    bytes_written: Family<KindLabel, Counter>,
}

impl Default for Metrics {
    /// Counters at zero for every kind, so a scrape shows `0` rather than
    /// nothing before the first run; no last-success gauges yet.
    fn default() -> Self {
        let m = Metrics {
            last_success: Family::default(),
            last_duration: Family::default(),
            last_size: Family::default(),
            failures: Family::default(),
            successes: Family::default(),
            bytes_written: Family::default(),
        };
        for kind in Kind::ALL {
            for family in [&m.failures, &m.successes, &m.bytes_written] {
                let _ = family.get_or_create(&label(kind));
            }
        }
        m
    }
}

impl Metrics {
    /// Counters primed with the last success of each kind recorded in
    /// `state`, so a restart does not reset "time since the last backup".
    pub fn from_state(state: &State) -> Self {
        let m = Metrics::default();
        for kind in Kind::ALL {
            if let Some(r) = state.last_success(kind) {
                m.set_last_success(r);
            }
        }
        m
    }

    /// Count a finished run.
    pub fn record(&self, run: &Run) {
        let kind = label(run.kind);
        match run.outcome {
            Outcome::Success => {
                self.successes.get_or_create(&kind).inc();
                self.bytes_written
                    .get_or_create(&kind)
                    .inc_by(run.size.unwrap_or(0));
                self.set_last_success(run);
            }
            Outcome::Failed => {
                self.failures.get_or_create(&kind).inc();
            }
            Outcome::Abandoned => {}
        }
    }

    fn set_last_success(&self, r: &Run) {
        let kind = label(r.kind);
        self.last_success
            .get_or_create(&kind)
            .set(r.finished.timestamp());
        self.last_duration
            .get_or_create(&kind)
            .set((r.finished - r.started).num_milliseconds() as f64 / 1000.0);
        match r.size {
            Some(size) => {
                self.last_size.get_or_create(&kind).set(size);
            }
            None => {
                self.last_size.remove(&kind);
            }
        }
    }

    /// A registry holding these metrics and, read at each scrape, what
    /// `observe` returns.
    pub fn registry(&self, observe: impl Fn() -> Observed + Send + Sync + 'static) -> Registry {
        // Help texts without their final period: `register` adds it.
        let mut r = Registry::default();
        r.register(
            "selmai_backup_last_success_timestamp_seconds",
            "When the last successful backup of the kind finished (Unix time)",
            self.last_success.clone(),
        );
        r.register(
            "selmai_backup_last_duration_seconds",
            "How long the last successful backup of the kind took",
            self.last_duration.clone(),
        );
        r.register(
            "selmai_backup_last_size_bytes",
            "Size of the last successful backup of the kind",
            self.last_size.clone(),
        );
        // Counter names without `_total`: the encoding appends it.
        r.register(
            "selmai_backup_failures",
            "Backups of the kind that failed since the daemon started",
            self.failures.clone(),
        );
        r.register(
            "selmai_backup_successes",
            "Backups of the kind that succeeded since the daemon started",
            self.successes.clone(),
        );
        r.register(
            "selmai_backup_bytes_written",
            "Bytes of backups of the kind written since the daemon started",
            self.bytes_written.clone(),
        );
        r.register_collector(Box::new(AtScrape(Box::new(observe))));
        r
    }
}

/// What a scrape reads instead of counting.
#[derive(Debug, Clone)]
pub struct Observed {
    /// Free space on `BACKUP_DIR`, when it could be read.
    pub free: Option<u64>,
    /// The binlog archive's status, when it runs.
    pub binlog: Option<crate::binlog::Status>,
    /// The time the binlog lag is measured at.
    pub now: DateTime<Utc>,
}

impl Observed {
    /// Read the free space of `BACKUP_DIR` and the binlog archive's status
    /// file (blocking file system calls).
    pub fn read(settings: &Settings) -> Self {
        Observed {
            free: health::free_bytes(&settings.backup_dir).ok(),
            binlog: crate::binlog::Status::read(&crate::daemon::binlog::work_dir(settings)),
            now: Utc::now(),
        }
    }
}

/// The registry's [`Collector`] for [`Observed`]: called at each encoding.
struct AtScrape(Box<dyn Fn() -> Observed + Send + Sync>);

impl std::fmt::Debug for AtScrape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AtScrape")
    }
}

impl Collector for AtScrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let seen = (self.0)();
        if let Some(free) = seen.free {
            gauge(
                &mut enc,
                "selmai_backup_free_bytes",
                "Free space on BACKUP_DIR.",
                free,
            )?;
        }
        if let Some(st) = &seen.binlog {
            encode_binlog(&mut enc, st, seen.now)?;
        }
        Ok(())
    }
}

fn gauge<N>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<N>: EncodeMetric,
{
    let g = ConstGauge::new(v);
    g.encode(enc.encode_descriptor(name, help, None, g.metric_type())?)
}

/// `name` without `_total`: the encoding appends it.
fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(enc.encode_descriptor(name, help, None, c.metric_type())?)
}

/// The binlog archive's metrics, from the status it writes every second.
fn encode_binlog(
    enc: &mut DescriptorEncoder,
    st: &crate::binlog::Status,
    now: DateTime<Utc>,
) -> Result<(), std::fmt::Error> {
    if let Some(lag) = st.lag_seconds(now) {
        gauge(
            enc,
            "selmai_backup_binlog_lag_seconds",
            "How far the binlog archive is behind the server.",
            lag,
        )?;
    }
    if let Some(t) = st.last_event_time {
        gauge(
            enc,
            "selmai_backup_binlog_last_event_timestamp_seconds",
            "Time stamp of the newest archived binlog event (Unix time).",
            t.timestamp(),
        )?;
    }
    counter(
        enc,
        "selmai_backup_binlog_bytes",
        "Binlog bytes archived since the daemon started.",
        st.bytes,
    )?;
    counter(
        enc,
        "selmai_backup_binlog_segments",
        "Binlog segments stored since the daemon started.",
        st.segments,
    )?;
    gauge(
        enc,
        "selmai_backup_binlog_connected",
        "1 while the replication stream is up.",
        i64::from(st.connected),
    )?;
    gauge(
        enc,
        "selmai_backup_binlog_gaps",
        "Gaps found in the binlog archive (binlogs purged before they were read).",
        st.gaps.len() as u64,
    )?;
    gauge(
        enc,
        "selmai_backup_binlog_offsite_pending_segments",
        "Stored binlog segments not yet copied to an off-site target (summed over targets)",
        st.offsite_pending.iter().map(|p| p.segments).sum::<usize>() as u64,
    )
}

/// `registry` in the Prometheus text format (version 0.0.4).
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail, nor can our collector.
    prometheus_text::encode(&mut text, registry).expect("encoding into a String");
    text
}

/// What the listener answers with: the registry and the health verdict.
struct App {
    registry: Registry,
    health: Box<dyn Fn() -> health::Verdict + Send + Sync>,
}

/// Answer HTTP requests on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    settings: Arc<Settings>,
    shutdown: impl Future,
) {
    let s = settings.clone();
    let app = App {
        registry: metrics.registry(move || Observed::read(&s)),
        health: Box::new(move || health::check(&settings, Utc::now())),
    };
    serve_app(listener, Arc::new(app), shutdown).await
}

async fn serve_app(listener: TcpListener, app: Arc<App>, shutdown: impl Future) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        .keep_alive(false);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let app = app.clone();
                    let service = hyper::service::service_fn(move |req| answer(app.clone(), req));
                    let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
                            Ok(Ok(())) => {}
                            Ok(Err(e)) => tracing::debug!(error = %e, "metrics request"),
                            Err(_) => tracing::debug!("metrics request: client too slow, dropped"),
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    if tokio::time::timeout(STOP_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("metrics listener: requests still open at stop, dropped");
    }
}

async fn answer(
    app: Arc<App>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    let (status, ctype, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            // The collector reads the file system: off the runtime's threads.
            let text = tokio::task::spawn_blocking(move || encode(&app.registry)).await;
            match text {
                Ok(text) => (StatusCode::OK, prometheus_text::CONTENT_TYPE, text),
                Err(e) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    PLAIN,
                    format!("metrics failed: {e}\n"),
                ),
            }
        }
        (&Method::GET, "/healthz") => {
            let verdict = tokio::task::spawn_blocking(move || (app.health)())
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match verdict {
                Ok(msg) => (StatusCode::OK, PLAIN, msg + "\n"),
                Err(msg) => (StatusCode::SERVICE_UNAVAILABLE, PLAIN, msg + "\n"),
            }
        }
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            PLAIN,
            "try /metrics or /healthz\n".into(),
        ),
        _ => (StatusCode::METHOD_NOT_ALLOWED, PLAIN, "GET only\n".into()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    if status == StatusCode::METHOD_NOT_ALLOWED {
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::schedule::Trigger;
    use crate::daemon::state::Offsite;
    use chrono::TimeZone;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    fn run(outcome: Outcome, size: u64) -> Run {
        let started = Utc.with_ymd_and_hms(2025, 1, 20, 2, 0, 0).unwrap();
        Run {
            kind: Kind::Db,
            trigger: Trigger::Schedule,
            started,
            finished: started + chrono::Duration::milliseconds(12_500),
            outcome,
            file: Some("f".into()),
            size: Some(size),
            offsite: Offsite::NotConfigured,
            error: None,
            warnings: Vec::new(),
        }
    }

    fn observed(free: Option<u64>, binlog: Option<crate::binlog::Status>) -> Observed {
        Observed {
            free,
            binlog,
            now: Utc::now(),
        }
    }

    /// The text a scrape gets, with `seen` as what it reads.
    fn scrape(m: &Metrics, seen: Observed) -> String {
        encode(&m.registry(move || seen.clone()))
    }

    #[test]
    fn renders_the_prometheus_text_format() {
        let m = Metrics::default();
        m.record(&run(Outcome::Success, 1000));
        m.record(&run(Outcome::Success, 500));
        m.record(&run(Outcome::Failed, 0));
        let text = scrape(&m, observed(Some(4096), None));
        for want in [
            "# TYPE selmai_backup_last_success_timestamp_seconds gauge",
            "selmai_backup_last_success_timestamp_seconds{kind=\"db\"} 1737338412",
            "selmai_backup_last_duration_seconds{kind=\"db\"} 12.5",
            "selmai_backup_last_size_bytes{kind=\"db\"} 500",
            "# HELP selmai_backup_failures_total Backups of the kind that failed since the daemon started.",
            "# TYPE selmai_backup_failures_total counter",
            "selmai_backup_failures_total{kind=\"db\"} 1",
            "selmai_backup_failures_total{kind=\"config\"} 0",
            "selmai_backup_successes_total{kind=\"db\"} 2",
            "selmai_backup_bytes_written_total{kind=\"db\"} 1500",
            "selmai_backup_free_bytes 4096",
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        // No sample for a kind that never succeeded.
        assert!(!text.contains("selmai_backup_last_size_bytes{kind=\"full\"}"));
    }

    #[test]
    fn a_restart_remembers_the_last_success() {
        let mut s = State::default();
        s.push(run(Outcome::Success, 777));
        let text = scrape(&Metrics::from_state(&s), observed(None, None));
        assert!(
            text.contains("selmai_backup_last_size_bytes{kind=\"db\"} 777"),
            "{text}"
        );
        assert!(!text.contains("selmai_backup_free_bytes"));
    }

    #[test]
    fn values_read_at_scrape_time_are_read_at_each_scrape() {
        let free = Arc::new(AtomicU64::new(1));
        let f = free.clone();
        let registry = Metrics::default()
            .registry(move || observed(Some(f.load(std::sync::atomic::Ordering::SeqCst)), None));
        assert!(encode(&registry).contains("\nselmai_backup_free_bytes 1\n"));
        free.store(2, std::sync::atomic::Ordering::SeqCst);
        let text = encode(&registry);
        assert!(text.contains("\nselmai_backup_free_bytes 2\n"), "{text}");
    }

    #[test]
    fn binlog_metrics_show_lag_bytes_segments_and_gaps() {
        let now = Utc::now();
        let st = crate::binlog::Status {
            caught_up_at: Some(now - chrono::Duration::seconds(7)),
            last_event_time: Some(now - chrono::Duration::seconds(9)),
            bytes: 1234,
            segments: 5,
            connected: true,
            ..Default::default()
        };
        let seen = Observed {
            free: None,
            binlog: Some(st),
            now,
        };
        let text = scrape(&Metrics::default(), seen);
        assert!(
            text.contains("selmai_backup_binlog_lag_seconds 7\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "selmai_backup_binlog_last_event_timestamp_seconds {}\n",
            (now - chrono::Duration::seconds(9)).timestamp()
        )));
        assert!(text.contains("selmai_backup_binlog_bytes_total 1234\n"));
        assert!(text.contains("selmai_backup_binlog_segments_total 5\n"));
        assert!(text.contains("selmai_backup_binlog_connected 1\n"));
        assert!(text.contains("selmai_backup_binlog_gaps 0\n"));
        assert!(text.contains("selmai_backup_binlog_offsite_pending_segments 0\n"));
        assert!(text.contains("# TYPE selmai_backup_binlog_bytes_total counter"));
    }

    /// A listener on a free port answering with `app`, stopped by the sender.
    async fn listen(
        app: App,
    ) -> (
        String,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_app(listener, Arc::new(app), async move {
            let _ = rx.await;
        }));
        (addr, tx, task)
    }

    fn app(verdict: health::Verdict) -> App {
        let m = Metrics::default();
        m.record(&run(Outcome::Success, 1000));
        App {
            registry: m.registry(|| observed(Some(4096), None)),
            health: Box::new(move || verdict.clone()),
        }
    }

    /// Send `request` and read the answer until the server closes.
    async fn exchange(addr: &str, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        String::from_utf8(resp).unwrap()
    }

    async fn get(addr: &str, path: &str) -> String {
        exchange(
            addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
        )
        .await
    }

    #[tokio::test]
    async fn serves_metrics_and_healthz_and_refuses_the_rest() {
        let (addr, stop, task) = listen(app(Err("unhealthy: no db backup".into()))).await;
        let resp = get(&addr, "/metrics?x=1").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(
            resp.contains("content-type: text/plain; version=0.0.4; charset=utf-8\r\n"),
            "{resp}"
        );
        assert!(resp.contains("\r\nconnection: close\r\n"), "{resp}");
        assert!(resp.contains("\nselmai_backup_last_size_bytes{kind=\"db\"} 1000\n"));
        assert!(resp.contains("\nselmai_backup_free_bytes 4096\n"), "{resp}");

        let resp = get(&addr, "/healthz").await;
        assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
        assert!(
            resp.ends_with("\r\n\r\nunhealthy: no db backup\n"),
            "{resp}"
        );
        assert!(get(&addr, "/nope").await.starts_with("HTTP/1.1 404 "));
        let resp = exchange(
            &addr,
            b"POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        assert!(resp.starts_with("HTTP/1.1 405 "), "{resp}");
        assert!(resp.contains("\r\nallow: GET\r\n"), "{resp}");

        stop.send(()).unwrap();
        task.await.unwrap();
        assert!(TcpStream::connect(&addr).await.is_err(), "still listening");
    }

    #[tokio::test]
    async fn a_healthy_verdict_is_200() {
        let (addr, _stop, _task) = listen(app(Ok("healthy: db 2h ago".into()))).await;
        let resp = get(&addr, "/healthz").await;
        assert!(resp.starts_with("HTTP/1.1 200 OK\r\n"), "{resp}");
        assert!(resp.ends_with("\r\n\r\nhealthy: db 2h ago\n"), "{resp}");
    }

    #[tokio::test]
    async fn a_huge_request_head_is_refused() {
        let (addr, _stop, _task) = listen(app(Ok("healthy".into()))).await;
        let big = format!(
            "GET /metrics HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(2 * MAX_HEAD)
        );
        let mut s = TcpStream::connect(&addr).await.unwrap();
        // The server may close before taking all of it.
        let _ = s.write_all(big.as_bytes()).await;
        let mut resp = Vec::new();
        let _ = s.read_to_end(&mut resp).await;
        let resp = String::from_utf8_lossy(&resp);
        assert!(resp.starts_with("HTTP/1.1 431 "), "{resp}");
        assert!(!resp.contains("selmai_backup_"), "{resp}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_finishes_its_request_is_dropped() {
        let (addr, _stop, _task) = listen(app(Ok("healthy".into()))).await;
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n")
            .await
            .unwrap();
        // Paused time runs ahead while everyone waits: the head timeout
        // fires, well before the connection's deadline would.
        let start = tokio::time::Instant::now();
        let mut resp = Vec::new();
        s.read_to_end(&mut resp).await.unwrap();
        let waited = start.elapsed();
        assert!(
            (HEAD_TIMEOUT..CONNECTION_DEADLINE).contains(&waited),
            "{waited:?}"
        );
        let resp = String::from_utf8_lossy(&resp);
        assert!(!resp.contains("selmai_backup_"), "{resp}");
    }
}
