//! Encoding stages between the dump and the targets: compression now,
//! encryption in `crypto`. Each stage wraps an `AsyncWrite` (backup) or an
//! `AsyncRead` (restore) and knows nothing of what is before or after it.

use std::fmt;

use async_compression::tokio::bufread::{GzipDecoder, ZstdDecoder};
use async_compression::tokio::write::{GzipEncoder, ZstdEncoder};
use async_compression::Level;
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite};

/// A boxed writer stage.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
/// A boxed reader stage.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// Compression of a backup stream, with its level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip (a standard `.gz` that `gunzip` reads), level 1-9.
    Gzip(i32),
    /// zstd, level 1-19.
    Zstd(i32),
    /// Plain SQL.
    None,
}

impl Compression {
    /// Parse `BACKUP_COMPRESSION` and the optional level; the error says what is accepted.
    pub fn parse(name: &str, level: Option<i32>) -> Result<Self, String> {
        let (c, range) = match name.to_ascii_lowercase().as_str() {
            "gzip" | "gz" => (Compression::Gzip(level.unwrap_or(6)), 1..=9),
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

    /// Wrap `inner` so that bytes written are compressed into it.
    pub fn encoder(self, inner: BoxWrite) -> BoxWrite {
        match self {
            Compression::Gzip(l) => Box::new(GzipEncoder::with_quality(inner, Level::Precise(l))),
            Compression::Zstd(l) => Box::new(ZstdEncoder::with_quality(inner, Level::Precise(l))),
            Compression::None => inner,
        }
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};

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
    #[case(Compression::Gzip(1))]
    #[case(Compression::Zstd(3))]
    #[case(Compression::None)]
    #[tokio::test]
    async fn round_trip(#[case] c: Compression) {
        let data: Vec<u8> = (0..200_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let (w, r) = tokio::io::duplex(64 * 1024);
        let writer = {
            let data = data.clone();
            tokio::spawn(async move {
                let mut enc = c.encoder(Box::new(w));
                enc.write_all(&data).await.unwrap();
                enc.shutdown().await.unwrap();
            })
        };
        let mut out = Vec::new();
        c.decoder(BufReader::new(r))
            .read_to_end(&mut out)
            .await
            .unwrap();
        writer.await.unwrap();
        assert_eq!(out, data);
    }
}
