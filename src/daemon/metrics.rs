//! Prometheus metrics and `/healthz` over a tiny HTTP/1.1 listener
//! (`METRICS_LISTEN`, off by default).
//!
//! [`Metrics`] holds the counters the job runner updates; [`Metrics::render`]
//! is the text exposition format. [`serve`] answers `GET /metrics` and
//! `GET /healthz` (200 or 503 with the same one-line verdict as `health`),
//! one request per connection, until its shutdown future completes. It is
//! deliberately minimal: no keep-alive, no chunking, 8 KiB of request head
//! at most, 5 s to send it. This module does not run backups.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::config::Settings;
use crate::daemon::health;
use crate::daemon::schedule::Kind;
use crate::daemon::state::{Outcome, Run, State};

#[derive(Debug, Default, Clone)]
struct PerKind {
    last_success: Option<f64>,
    last_duration: Option<f64>,
    last_size: Option<u64>,
    failures: u64,
    successes: u64,
    bytes_written: u64,
}

/// The daemon's counters, shared between the runner and the listener.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<BTreeMap<Kind, PerKind>>>,
}

impl Metrics {
    /// Counters primed with the last success of each kind recorded in
    /// `state`, so a restart does not reset "time since the last backup".
    pub fn from_state(state: &State) -> Self {
        let m = Metrics::default();
        {
            let mut inner = m.inner.lock().expect("metrics lock");
            for kind in Kind::ALL {
                if let Some(r) = state.last_success(kind) {
                    let e = inner.entry(kind).or_default();
                    e.last_success = Some(r.finished.timestamp() as f64);
                    e.last_duration = Some(duration_of(r));
                    e.last_size = r.size;
                }
            }
        }
        m
    }

    /// Count a finished run.
    pub fn record(&self, run: &Run) {
        let mut inner = self.inner.lock().expect("metrics lock");
        let e = inner.entry(run.kind).or_default();
        match run.outcome {
            Outcome::Success => {
                e.successes += 1;
                e.last_success = Some(run.finished.timestamp() as f64);
                e.last_duration = Some(duration_of(run));
                e.last_size = run.size;
                e.bytes_written += run.size.unwrap_or(0);
            }
            Outcome::Failed => e.failures += 1,
            Outcome::Abandoned => {}
        }
    }

    /// The Prometheus text format; `free` is the free space of `BACKUP_DIR`.
    pub fn render(&self, free: Option<u64>) -> String {
        let inner = self.inner.lock().expect("metrics lock").clone();
        let mut out = String::new();
        let mut family =
            |name: &str, help: &str, kind: &str, f: &dyn Fn(&PerKind) -> Option<f64>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                for k in Kind::ALL {
                    let v = inner.get(&k).cloned().unwrap_or_default();
                    if let Some(x) = f(&v) {
                        let _ = writeln!(out, "{name}{{kind=\"{k}\"}} {x}");
                    }
                }
            };
        family(
            "selmai_backup_last_success_timestamp_seconds",
            "When the last successful backup of the kind finished (Unix time).",
            "gauge",
            &|v| v.last_success,
        );
        family(
            "selmai_backup_last_duration_seconds",
            "How long the last successful backup of the kind took.",
            "gauge",
            &|v| v.last_duration,
        );
        family(
            "selmai_backup_last_size_bytes",
            "Size of the last successful backup of the kind.",
            "gauge",
            &|v| v.last_size.map(|s| s as f64),
        );
        family(
            "selmai_backup_failures_total",
            "Backups of the kind that failed since the daemon started.",
            "counter",
            &|v| Some(v.failures as f64),
        );
        family(
            "selmai_backup_successes_total",
            "Backups of the kind that succeeded since the daemon started.",
            "counter",
            &|v| Some(v.successes as f64),
        );
        family(
            "selmai_backup_bytes_written_total",
            "Bytes of backups of the kind written since the daemon started.",
            "counter",
            &|v| Some(v.bytes_written as f64),
        );
        if let Some(free) = free {
            let name = "selmai_backup_free_bytes";
            let _ = writeln!(
                out,
                "# HELP {name} Free space on BACKUP_DIR.\n# TYPE {name} gauge\n{name} {free}"
            );
        }
        out
    }
}

fn duration_of(r: &Run) -> f64 {
    (r.finished - r.started).num_milliseconds() as f64 / 1000.0
}

/// Answer HTTP requests on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    settings: Arc<Settings>,
    shutdown: impl Future,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = shutdown.as_mut() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let (m, s) = (metrics.clone(), settings.clone());
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &m, &s).await {
                            tracing::debug!(error = %e, "metrics request");
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
}

async fn answer(
    mut stream: TcpStream,
    metrics: &Metrics,
    settings: &Settings,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "request head too slow")
        })??;
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let dir = settings.backup_dir.clone();
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => {
            let free = tokio::task::spawn_blocking(move || health::free_bytes(&dir).ok())
                .await
                .unwrap_or(None);
            let status = crate::binlog::Status::read(&crate::daemon::binlog::work_dir(settings));
            let mut text = metrics.render(free);
            if let Some(st) = status {
                text.push_str(&render_binlog(&st, Utc::now()));
            }
            ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text)
        }
        ("GET", "/healthz") => {
            let s = settings.clone();
            let v = tokio::task::spawn_blocking(move || health::check(&s, Utc::now()))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match v {
                Ok(msg) => ("200 OK", "text/plain; charset=utf-8", msg + "\n"),
                Err(msg) => (
                    "503 Service Unavailable",
                    "text/plain; charset=utf-8",
                    msg + "\n",
                ),
            }
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /healthz\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "GET only\n".into()),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(resp.as_bytes()).await?;
    stream.shutdown().await
}

/// The binlog archive's metrics, from the status it writes every second.
pub fn render_binlog(st: &crate::binlog::Status, now: chrono::DateTime<Utc>) -> String {
    let mut out = String::new();
    let mut one = |name: &str, help: &str, kind: &str, v: Option<f64>| {
        if let Some(v) = v {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}"
            );
        }
    };
    one(
        "selmai_backup_binlog_lag_seconds",
        "How far the binlog archive is behind the server.",
        "gauge",
        st.lag_seconds(now).map(|l| l as f64),
    );
    one(
        "selmai_backup_binlog_last_event_timestamp_seconds",
        "Time stamp of the newest archived binlog event (Unix time).",
        "gauge",
        st.last_event_time.map(|t| t.timestamp() as f64),
    );
    one(
        "selmai_backup_binlog_bytes_total",
        "Binlog bytes archived since the daemon started.",
        "counter",
        Some(st.bytes as f64),
    );
    one(
        "selmai_backup_binlog_segments_total",
        "Binlog segments stored since the daemon started.",
        "counter",
        Some(st.segments as f64),
    );
    one(
        "selmai_backup_binlog_connected",
        "1 while the replication stream is up.",
        "gauge",
        Some(if st.connected { 1.0 } else { 0.0 }),
    );
    one(
        "selmai_backup_binlog_gaps",
        "Gaps found in the binlog archive (binlogs purged before they were read).",
        "gauge",
        Some(st.gaps.len() as f64),
    );
    one(
        "selmai_backup_binlog_offsite_pending_segments",
        "Stored binlog segments not yet copied to an off-site target (summed over targets).",
        "gauge",
        Some(st.offsite_pending.iter().map(|p| p.segments).sum::<usize>() as f64),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::schedule::Trigger;
    use crate::daemon::state::Offsite;
    use chrono::TimeZone;

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

    #[test]
    fn renders_the_prometheus_text_format() {
        let m = Metrics::default();
        m.record(&run(Outcome::Success, 1000));
        m.record(&run(Outcome::Success, 500));
        m.record(&run(Outcome::Failed, 0));
        let text = m.render(Some(4096));
        for want in [
            "# TYPE selmai_backup_last_success_timestamp_seconds gauge",
            "selmai_backup_last_success_timestamp_seconds{kind=\"db\"} 1737338412",
            "selmai_backup_last_duration_seconds{kind=\"db\"} 12.5",
            "selmai_backup_last_size_bytes{kind=\"db\"} 500",
            "selmai_backup_failures_total{kind=\"db\"} 1",
            "selmai_backup_failures_total{kind=\"config\"} 0",
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
        let text = Metrics::from_state(&s).render(None);
        assert!(
            text.contains("selmai_backup_last_size_bytes{kind=\"db\"} 777"),
            "{text}"
        );
        assert!(!text.contains("selmai_backup_free_bytes"));
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
        let text = render_binlog(&st, now);
        assert!(
            text.contains("selmai_backup_binlog_lag_seconds 7\n"),
            "{text}"
        );
        assert!(text.contains("selmai_backup_binlog_bytes_total 1234\n"));
        assert!(text.contains("selmai_backup_binlog_segments_total 5\n"));
        assert!(text.contains("selmai_backup_binlog_connected 1\n"));
        assert!(text.contains("selmai_backup_binlog_gaps 0\n"));
        assert!(text.contains("selmai_backup_binlog_offsite_pending_segments 0\n"));
        assert!(text.contains("# TYPE selmai_backup_binlog_bytes_total counter"));
    }
}
