//! Compression between the dump and the targets (encryption is `crypto`).
//!
//! Backups are compressed in independent blocks on several threads: each
//! block becomes a complete gzip member or zstd frame, and the members are
//! written in order. Both formats define a file of several members as the
//! concatenation of their contents, so `gunzip`, `zstd -d` and our own
//! decoders read the result as one stream, while compression uses every core.
//! Restores decompress through an `AsyncRead` adapter. This module knows
//! nothing of what is before or after it.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::sync::{mpsc, Arc, Mutex};

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite};

pub use crate::config::encoding::{Compression, DEFAULT_GZIP_LEVEL};

/// A boxed writer stage.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
/// A boxed reader stage.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

impl Compression {
    /// Parse `BACKUP_COMPRESSION` and the optional level; the error says what is accepted.
    pub fn parse(name: &str, level: Option<i32>) -> Result<Self, String> {
        let (c, range) = match name.to_ascii_lowercase().as_str() {
            "gzip" | "gz" => (
                Compression::Gzip(level.unwrap_or(DEFAULT_GZIP_LEVEL)),
                1..=9,
            ),
            "zstd" | "zst" => (Compression::Zstd(level.unwrap_or(3)), 1..=19),
            "none" => (Compression::None, 0..=0),
            other => return Err(format!("{other:?}: use gzip, zstd or none")),
        };
        if let (Some(l), false) = (level, c == Compression::None) {
            if !range.contains(&l) {
                return Err(format!(
                    "level {l} is out of range for {name} ({}-{})",
                    range.start(),
                    range.end()
                ));
            }
        }
        Ok(c)
    }

    /// File-name extension after `.sql` / `.tar` (`".gz"`, `".zst"`, `""`).
    pub fn extension(self) -> &'static str {
        match self {
            Compression::Gzip(_) => ".gz",
            Compression::Zstd(_) => ".zst",
            Compression::None => "",
        }
    }

    /// The compression a file name implies (`x.sql.gz`, `x.sql.gz.enc` ...).
    pub fn from_file_name(name: &str) -> Compression {
        let base = name
            .strip_suffix(".enc")
            .or_else(|| name.strip_suffix(".gpg"))
            .unwrap_or(name);
        if base.ends_with(".gz") {
            Compression::Gzip(6)
        } else if base.ends_with(".zst") {
            Compression::Zstd(3)
        } else {
            Compression::None
        }
    }

    /// Compress one block into a complete gzip member or zstd frame.
    pub fn compress_block(self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Compression::Gzip(l) => gzip_member(l, data),
            Compression::Zstd(l) => zstd::bulk::compress(data, l),
            Compression::None => Ok(data.to_vec()),
        }
    }

    /// Compress the blocks `input` yields on `threads` threads and hand the
    /// results to `output` in input order. At most `2 * threads` blocks are
    /// in flight, so memory stays bounded whatever the stream's length.
    pub fn compress_blocks<I, O>(
        self,
        threads: usize,
        mut input: I,
        mut output: O,
    ) -> io::Result<()>
    where
        I: FnMut() -> io::Result<Option<Vec<u8>>>,
        O: FnMut(Vec<u8>) -> io::Result<()>,
    {
        if self == Compression::None {
            while let Some(block) = input()? {
                output(block)?;
            }
            return Ok(());
        }
        let threads = threads.max(1);
        let lost = || io::Error::other("a compression thread stopped");
        std::thread::scope(|scope| {
            let (job_tx, job_rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(threads);
            let job_rx = Arc::new(Mutex::new(job_rx));
            let (done_tx, done_rx) = mpsc::channel::<(u64, io::Result<Vec<u8>>)>();
            for _ in 0..threads {
                let job_rx = Arc::clone(&job_rx);
                let done_tx = done_tx.clone();
                scope.spawn(move || loop {
                    let job = job_rx
                        .lock()
                        .map_err(|_| ())
                        .and_then(|rx| rx.recv().map_err(|_| ()));
                    let Ok((index, block)) = job else { break };
                    if done_tx.send((index, self.compress_block(&block))).is_err() {
                        break;
                    }
                });
            }
            drop(done_tx);
            let (mut sent, mut written) = (0u64, 0u64);
            let mut ready: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
            let mut eof = false;
            loop {
                while !eof && sent - written < 2 * threads as u64 {
                    match input()? {
                        Some(block) => {
                            job_tx.send((sent, block)).map_err(|_| lost())?;
                            sent += 1;
                        }
                        None => eof = true,
                    }
                }
                if written == sent {
                    break;
                }
                let (index, result) = done_rx.recv().map_err(|_| lost())?;
                ready.insert(index, result?);
                while let Some(block) = ready.remove(&written) {
                    output(block)?;
                    written += 1;
                }
            }
            drop(job_tx);
            Ok(())
        })
    }

    /// Wrap `inner` so that reads return decompressed bytes. Multi-member
    /// gzip (concatenated `.gz` files) is read to the end, as `gunzip` does.
    pub fn decoder<R: AsyncBufRead + Send + Unpin + 'static>(self, inner: R) -> BoxRead {
        match self {
            Compression::Gzip(_) => {
                let mut d = GzipDecoder::new(inner);
                d.multiple_members(true);
                Box::new(d)
            }
            Compression::Zstd(_) => {
                let mut d = ZstdDecoder::new(inner);
                d.multiple_members(true);
                Box::new(d)
            }
            Compression::None => Box::new(inner),
        }
    }
}

/// One gzip member holding `data`, by libdeflate at `level` (a compressor
/// per thread and level: it holds a few hundred KiB of tables).
fn gzip_member(level: i32, data: &[u8]) -> io::Result<Vec<u8>> {
    use libdeflater::{CompressionLvl, Compressor};
    thread_local! {
        static COMPRESSOR: std::cell::RefCell<Option<(i32, Compressor)>> =
            const { std::cell::RefCell::new(None) };
    }
    COMPRESSOR.with_borrow_mut(|slot| {
        let c = match slot {
            Some((l, c)) if *l == level => c,
            _ => {
                let lvl = CompressionLvl::new(level.clamp(1, 12)).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("gzip level {level}: {e:?}"),
                    )
                })?;
                &mut slot.insert((level, Compressor::new(lvl))).1
            }
        };
        let mut out = vec![0u8; c.gzip_compress_bound(data.len())];
        let n = c
            .gzip_compress(data, &mut out)
            .map_err(|e| io::Error::other(format!("gzip compression failed: {e}")))?;
        out.truncate(n);
        Ok(out)
    })
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Compression::Gzip(l) => write!(f, "gzip level {l}"),
            Compression::Zstd(l) => write!(f, "zstd level {l}"),
            Compression::None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::io::Write;
    use tokio::io::{AsyncReadExt, BufReader};

    #[rstest]
    #[case("a.sql.gz", Compression::Gzip(6))]
    #[case("a.sql.gz.enc", Compression::Gzip(6))]
    #[case("a.sql.zst", Compression::Zstd(3))]
    #[case("a.sql.zst.gpg", Compression::Zstd(3))]
    #[case("a.sql", Compression::None)]
    fn compression_from_name(#[case] name: &str, #[case] want: Compression) {
        assert_eq!(Compression::from_file_name(name), want);
    }

    #[rstest]
    #[case(Compression::Gzip(1), 1)]
    #[case(Compression::Gzip(6), 3)]
    #[case(Compression::Zstd(3), 2)]
    #[case(Compression::None, 2)]
    #[tokio::test]
    async fn parallel_blocks_decode_as_one_stream(#[case] c: Compression, #[case] threads: usize) {
        let data: Vec<u8> = (0..40_000u32)
            .flat_map(|i| format!("({i},'row {}',NULL),\n", i % 97).into_bytes())
            .collect();
        let mut blocks = data.chunks(50_000).map(<[u8]>::to_vec);
        let mut encoded = Vec::new();
        c.compress_blocks(
            threads,
            || Ok(blocks.next()),
            |b| {
                encoded.extend_from_slice(&b);
                Ok(())
            },
        )
        .unwrap();
        if c != Compression::None {
            assert!(
                encoded.len() < data.len() / 2,
                "compressed: {}",
                encoded.len()
            );
        }
        let mut out = Vec::new();
        c.decoder(BufReader::new(std::io::Cursor::new(encoded)))
            .read_to_end(&mut out)
            .await
            .unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn gzip_members_are_read_by_gunzip() {
        let data = b"INSERT INTO t VALUES (1);\n".repeat(20_000);
        let mut blocks = data.chunks(100_000).map(<[u8]>::to_vec);
        let mut encoded = Vec::new();
        Compression::Gzip(6)
            .compress_blocks(
                2,
                || Ok(blocks.next()),
                |b| {
                    encoded.extend_from_slice(&b);
                    Ok(())
                },
            )
            .unwrap();
        let mut child = std::process::Command::new("gunzip")
            .arg("-c")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(&encoded).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(out.stdout, data);
    }

    #[test]
    fn a_failing_output_stops_the_workers() {
        let mut n = 0;
        let err = Compression::Gzip(1)
            .compress_blocks(
                2,
                || {
                    n += 1;
                    Ok(Some(vec![b'x'; 10_000]))
                },
                |_| Err(io::Error::other("disk full")),
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "disk full");
    }
}
