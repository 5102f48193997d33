//! Metering a byte stream: counting (for progress lines) and hashing (for
//! the manifest's SHA-256) as a pass-through stage, plus the periodic
//! progress reporter. A meter never changes the bytes it sees.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

/// `1.5 MB`-style sizes (powers of 1000, as `df -H` and `ls --si`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A shared byte counter that a reporter can read while a stage runs.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Bytes counted so far.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    /// Add `n` bytes.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
}

/// A running SHA-256 that can be read once the stream ends.
#[derive(Debug, Clone, Default)]
pub struct SharedHash(Arc<Mutex<Sha256>>);

impl SharedHash {
    /// Feed bytes.
    pub fn update(&self, b: &[u8]) {
        self.0.lock().expect("hash lock").update(b);
    }
    /// Hex digest of everything fed so far.
    pub fn hex(&self) -> String {
        hex::encode(self.0.lock().expect("hash lock").clone().finalize())
    }
}

/// An `AsyncRead` pass-through that counts and hashes what is read.
pub struct MeteredReader<R> {
    inner: R,
    counter: Counter,
    hash: SharedHash,
}

impl<R> MeteredReader<R> {
    /// Wrap `inner`; read the counter and hash through the returned handles.
    pub fn new(inner: R) -> (Self, Counter, SharedHash) {
        let counter = Counter::default();
        let hash = SharedHash::default();
        (
            MeteredReader {
                inner,
                counter: counter.clone(),
                hash: hash.clone(),
            },
            counter,
            hash,
        )
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for MeteredReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let new = &buf.filled()[before..];
            self.hash.update(new);
            self.counter.add(new.len() as u64);
        }
        r
    }
}

/// Logs `label: done / total (pct), rate` every `every` until dropped.
pub struct Reporter {
    task: tokio::task::JoinHandle<()>,
}

impl Reporter {
    /// Start reporting on `counter`; `total` enables the percentage.
    pub fn start(
        label: &'static str,
        counter: Counter,
        total: Option<u64>,
        every: Duration,
    ) -> Self {
        let task = tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let done = counter.get();
                let rate = done as f64 / start.elapsed().as_secs_f64().max(0.001);
                match total {
                    Some(t) if t > 0 => tracing::info!(
                        "{label}: {} / {} ({:.0}%), {}/s",
                        human_bytes(done),
                        human_bytes(t),
                        (done as f64 * 100.0 / t as f64).min(100.0),
                        human_bytes(rate as u64)
                    ),
                    _ => tracing::info!(
                        "{label}: {}, {}/s",
                        human_bytes(done),
                        human_bytes(rate as u64)
                    ),
                }
            }
        });
        Reporter { task }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn sizes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500_000), "1.5 MB");
    }

    #[tokio::test]
    async fn metered_reader_counts_and_hashes() {
        let data = b"hello world".repeat(1000);
        let (mut r, c, h) = MeteredReader::new(&data[..]);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, data);
        assert_eq!(c.get(), data.len() as u64);
        assert_eq!(h.hex(), hex::encode(Sha256::digest(&data)));
    }
}
