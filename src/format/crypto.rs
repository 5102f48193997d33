//! Encryption of backup files: the `.enc` container (format version 1) and
//! reading old `.gpg` files.
//!
//! Responsible for: turning a plaintext byte stream into an authenticated
//! encrypted one and back, deriving the per-file key from the passphrase,
//! recognising encrypted files by their first bytes, and describing the
//! header for the manifest. The byte layout is specified in `docs/FORMAT.md`;
//! `crypto/format.rs` is its only implementation, and the golden file
//! `tests/fixtures/golden_v1.sql.gz.enc` pins it.
//!
//! Not responsible for: compression (the [`crate::format::codec`] stage before us),
//! file names, where the bytes come from or go to, or the policy of verifying
//! a whole file before a restore executes anything. Like every stage, the
//! encrypt writer and decrypt reader know nothing of their neighbours.
//!
//! # Layout
//! - `crypto/format.rs`: header layout, KDF parameters, key schedule, nonces.
//! - `crypto/stream.rs`: the STREAM writer and reader (`AsyncWrite` / `AsyncRead`).
//! - `crypto/gpg.rs`: reading files made by `gpg --symmetric` (the old runbook).
//!
//! # Use
//! - Backup: `compression.encoder(encrypt_writer(target_writer, pass, KdfParams::default()).await?)`,
//!   then `shutdown()` (it writes the final segment); [`EncryptWriter`] when
//!   the target writer must be taken back to commit it.
//! - Restore, verify, decrypt: [`decrypt_any`] opens our format, `.gpg` and
//!   plaintext alike; then `compression.decoder(...)`.
//! - Manifest: [`header_info`] or [`EncryptWriter::header_info`].
//!
//! # Errors for callers
//! The readers report failures as `io::Error` (that is what `AsyncRead`
//! allows) wrapping a [`CryptoError`]; [`CryptoError::from_io`] gets it back,
//! so that `cmd/` can choose the exit code (for example one for
//! [`CryptoError::WrongPassphrase`] and another for tampering).

mod format;
mod gpg;
mod stream;

use std::io;
use std::sync::Arc;

use tokio::io::AsyncReadExt;
#[cfg(test)]
use tokio::io::AsyncWriteExt;

use crate::format::codec::{BoxRead, BoxWrite};
use crate::secret::Secret;

pub use format::{is_encrypted, HeaderInfo, KdfParams, DEFAULT_SEGMENT_SIZE, HEADER_LEN, MAGIC};
pub use gpg::{gpg_decrypt_reader, is_gpg};
pub use stream::EncryptWriter;

/// Everything that can go wrong while encrypting or decrypting. Each message
/// says what happened, where (segment, byte offset) and what to do; the
/// caller adds the file name.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CryptoError {
    /// The passphrase does not open this file.
    #[error("wrong passphrase: the key check in the header does not match, while the header checksum is intact, so the passphrase (not the file) is the likely problem; check BACKUP_PASSPHRASE or BACKUP_PASSPHRASE_FILE")]
    WrongPassphrase,
    /// The passphrase does not open this `.gpg` file (or its first bytes are damaged).
    #[error("wrong passphrase for the .gpg file (or its first bytes are damaged: gpg files carry no separate key check): check BACKUP_PASSPHRASE or BACKUP_PASSPHRASE_FILE")]
    GpgWrongPassphrase,
    /// The file is encrypted and no passphrase was given (or it is empty).
    #[error("the file is encrypted but no passphrase is set (or it is empty): set BACKUP_PASSPHRASE or BACKUP_PASSPHRASE_FILE")]
    MissingPassphrase,
    /// The header cannot be parsed or its checksum does not match.
    #[error("bad header: {detail}")]
    BadHeader {
        /// What is wrong, with the byte offset where it helps.
        detail: String,
    },
    /// The header asks for KDF parameters outside the accepted range. Checked
    /// before the KDF runs, so a crafted file cannot make us allocate gigabytes.
    #[error("KDF parameters out of range: {detail}; refusing to run the KDF (the file is damaged or was crafted)")]
    KdfOutOfRange {
        /// Which parameter, its value and the accepted range.
        detail: String,
    },
    /// A segment failed authentication: modified, swapped, or from another file.
    #[error("segment {segment} at byte offset {offset} failed authentication: the file was modified at or after that offset (a flipped byte, reordered segments or a segment from another file); no plaintext of that segment was released; use another copy of this backup")]
    Tampered {
        /// Index of the segment (0-based).
        segment: u64,
        /// Byte offset of the segment's first byte in the encrypted file.
        offset: u64,
    },
    /// The file ends before its final segment.
    #[error("file is truncated at byte offset {offset} (segment {segment}): {detail}; the copy or upload was probably interrupted: use another copy of this backup")]
    Truncated {
        /// Index of the segment that is missing or incomplete.
        segment: u64,
        /// Byte offset where the file ends.
        offset: u64,
        /// What exactly is missing.
        detail: String,
    },
    /// Bytes follow the final segment.
    #[error("unexpected data after the final segment, at byte offset {offset}: something was appended to the file; its authenticated content ends at that offset")]
    TrailingData {
        /// Byte offset of the first unexpected byte.
        offset: u64,
    },
    /// An authenticated segment whose content breaks the format (a writer bug).
    #[error("segment {segment} at byte offset {offset} is authentic but malformed: {detail}; this is a bug in the program that wrote the file")]
    Malformed {
        /// Index of the segment.
        segment: u64,
        /// Byte offset of the segment's first byte.
        offset: u64,
        /// What is wrong.
        detail: String,
    },
    /// A format version this build does not read.
    #[error("unsupported encrypted format version {found} (this build reads version {supported}): use a newer selmai-backup")]
    UnsupportedVersion {
        /// Version byte found in the header.
        found: u8,
        /// The newest version this build reads.
        supported: u8,
    },
    /// The stream is longer than the format can express.
    #[error("the stream is too long to encrypt: more than 2^32 segments of {segment_size} bytes")]
    TooLong {
        /// The segment size in use.
        segment_size: u32,
    },
    /// The KDF itself failed (should not happen with validated parameters).
    #[error("key derivation failed: {detail}")]
    Kdf {
        /// The library's message.
        detail: String,
    },
    /// Reading or writing the underlying stream failed.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The I/O error.
        #[source]
        source: Arc<io::Error>,
    },
    /// The `.gpg` file uses something we do not read.
    #[error("unsupported .gpg file: {detail}; decrypt it with `gpg --decrypt` instead")]
    GpgUnsupported {
        /// What was found.
        detail: String,
    },
    /// The `.gpg` file failed its integrity check (MDC) or is malformed.
    #[error("the .gpg file is damaged or was modified: {detail}; use another copy of this backup")]
    GpgCorrupt {
        /// The OpenPGP library's finding.
        detail: String,
    },
}

impl CryptoError {
    /// The [`CryptoError`] inside an `io::Error` returned by one of our
    /// readers or writers, if there is one.
    pub fn from_io(e: &io::Error) -> Option<&CryptoError> {
        e.get_ref()
            .and_then(|inner| inner.downcast_ref::<CryptoError>())
    }

    /// True for the passphrase errors (they get their own exit code).
    pub fn is_wrong_passphrase(&self) -> bool {
        matches!(
            self,
            CryptoError::WrongPassphrase | CryptoError::GpgWrongPassphrase
        )
    }

    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        // A CryptoError that travelled through an io::Error comes back as itself.
        if let Some(inner) = CryptoError::from_io(&source) {
            return inner.clone();
        }
        CryptoError::Io {
            context,
            source: Arc::new(source),
        }
    }
}

impl From<CryptoError> for io::Error {
    fn from(e: CryptoError) -> Self {
        let kind = match &e {
            CryptoError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            CryptoError::Io { source, .. } => source.kind(),
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// Whether AES runs on the CPU's AES instructions (AES-NI, VAES) here,
/// detected at run time (no build flags needed). Without them encryption is
/// roughly ten times slower: worth a warning at startup.
pub fn aes_hardware_accelerated() -> bool {
    aes_gcm::aes::hardware_accelerated()
}

/// Wrap `inner` so that bytes written to the result are encrypted into it
/// (format version 1, default segment size). Derives the per-file key with
/// Argon2id on a blocking thread, then writes the header. The final segment
/// is written by `shutdown()`: a writer dropped without it leaves a file that
/// readers reject as truncated, which is what an aborted backup should be.
pub async fn encrypt_writer(
    inner: BoxWrite,
    passphrase: &Secret,
    params: KdfParams,
) -> Result<BoxWrite, CryptoError> {
    Ok(Box::new(
        stream::EncryptWriter::new(inner, passphrase, params).await?,
    ))
}

/// Wrap `inner` (an encrypted file from its first byte) so that reads return
/// the plaintext. Reads and checks the header and derives the key before
/// returning, so a wrong passphrase or a bad header fails here; damage
/// further on fails the read that reaches it, and no byte of a segment is
/// returned before that segment's tag is verified.
pub async fn decrypt_reader(inner: BoxRead, passphrase: &Secret) -> Result<BoxRead, CryptoError> {
    stream::decrypt_reader(inner, passphrase).await
}

/// Parse and check a header (the first [`HEADER_LEN`] bytes of a file, more
/// are ignored) without the passphrase: for the manifest and for `list`.
pub fn header_info(bytes: &[u8]) -> Result<HeaderInfo, CryptoError> {
    format::Header::parse(bytes).map(|h| h.info())
}

/// How a stream opened by [`decrypt_any`] was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// Not encrypted: the bytes pass through unchanged.
    Plain,
    /// Our own format, with its header.
    Selmai(HeaderInfo),
    /// An OpenPGP (`gpg --symmetric`) file.
    Gpg,
}

/// Look at the first bytes of `inner` and open it accordingly: our format,
/// a `.gpg` file, or plaintext passed through. For `restore`, `verify` and
/// `decrypt`, which accept all three. An encrypted file without a passphrase
/// is [`CryptoError::MissingPassphrase`].
pub async fn decrypt_any(
    mut inner: BoxRead,
    passphrase: Option<&Secret>,
) -> Result<(BoxRead, Envelope), CryptoError> {
    let mut head = Vec::with_capacity(HEADER_LEN);
    (&mut inner)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut head)
        .await
        .map_err(|e| CryptoError::io("reading the first bytes of the file", e))?;
    let envelope = if is_encrypted(&head) {
        Envelope::Selmai(header_info(&head)?)
    } else if is_gpg(&head) {
        Envelope::Gpg
    } else {
        Envelope::Plain
    };
    let rejoined: BoxRead = Box::new(std::io::Cursor::new(head).chain(inner));
    let reader = match (&envelope, passphrase) {
        (Envelope::Plain, _) => rejoined,
        (_, None) => return Err(CryptoError::MissingPassphrase),
        (Envelope::Selmai(_), Some(p)) => decrypt_reader(rejoined, p).await?,
        (Envelope::Gpg, Some(p)) => gpg_decrypt_reader(rejoined, p).await?,
    };
    Ok((reader, envelope))
}

/// Write all of `data` through an encrypt writer and shut it down (tests).
#[cfg(test)]
pub(crate) async fn encrypt_to_vec(
    data: &[u8],
    passphrase: &Secret,
    params: KdfParams,
) -> Result<Vec<u8>, CryptoError> {
    let sink = SharedVec::default();
    let mut w = encrypt_writer(Box::new(sink.clone()), passphrase, params).await?;
    w.write_all(data)
        .await
        .map_err(|e| CryptoError::io("encrypting", e))?;
    w.shutdown()
        .await
        .map_err(|e| CryptoError::io("finishing the encrypted stream", e))?;
    Ok(sink.take())
}

/// An in-memory `AsyncWrite` whose bytes stay reachable after the writer is
/// boxed away (tests).
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct SharedVec(Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl SharedVec {
    pub(crate) fn take(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
impl tokio::io::AsyncWrite for SharedVec {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    /// The golden file of format version 1. It must decrypt forever: if this
    /// test fails, the change broke every backup written so far. Never
    /// regenerate it; add `golden_v2...` for a new version instead.
    const GOLDEN: &str = "tests/fixtures/golden_v1.sql.gz.enc";
    const GOLDEN_PASSPHRASE: &str = "selmai golden v1";
    const GOLDEN_PLAINTEXT_SHA256: &str =
        "971dbf6426c27683cee8cf059a17a81f65f6d05b811739bf305b070c2d8078aa";

    fn read(rel: &str) -> Vec<u8> {
        std::fs::read(format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    async fn read_all(mut r: BoxRead) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        r.read_to_end(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn golden_v1_decrypts() {
        let file = read(GOLDEN);
        let info = header_info(&file).unwrap();
        assert_eq!(
            info,
            HeaderInfo {
                version: 1,
                aead: "aes-256-gcm-stream-be32".into(),
                kdf: "argon2id-v19".into(),
                kdf_params: KdfParams::for_tests(),
                segment_size: 1024,
            }
        );
        let r = decrypt_reader(
            Box::new(std::io::Cursor::new(file)),
            &Secret::new(GOLDEN_PASSPHRASE),
        )
        .await
        .unwrap();
        let plain = read_all(r).await.unwrap();
        assert_eq!(hex::encode(Sha256::digest(&plain)), GOLDEN_PLAINTEXT_SHA256);
        assert_eq!(plain, read("tests/fixtures/golden_v1.sql.gz"));
    }

    /// Writes a new golden file to the temp dir; run by hand with
    /// `cargo test write_golden -- --ignored --nocapture` when adding a
    /// format version. Not for replacing an existing golden file.
    #[tokio::test]
    #[ignore]
    async fn write_golden() {
        let plain = read("tests/fixtures/golden_v1.sql.gz");
        let sink = SharedVec::default();
        let mut w = stream::encrypt_writer_with(
            Box::new(sink.clone()),
            &Secret::new(GOLDEN_PASSPHRASE),
            KdfParams::for_tests(),
            1024,
        )
        .await
        .unwrap();
        w.write_all(&plain).await.unwrap();
        w.shutdown().await.unwrap();
        let path = std::env::temp_dir().join("golden.enc");
        std::fs::write(&path, sink.take()).unwrap();
        println!("wrote {}", path.display());
    }

    #[tokio::test]
    async fn decrypt_any_opens_all_three_kinds() {
        let pass = Secret::new("selmai-fixture-passphrase");
        let sql = read("tests/fixtures/gpg/small.sql");
        // Ours.
        let enc = encrypt_to_vec(&sql, &pass, KdfParams::for_tests())
            .await
            .unwrap();
        let (r, env) = decrypt_any(Box::new(std::io::Cursor::new(enc)), Some(&pass))
            .await
            .unwrap();
        assert!(matches!(env, Envelope::Selmai(ref i) if i.version == 1));
        assert_eq!(read_all(r).await.unwrap(), sql);
        // gpg.
        let gpg = read("tests/fixtures/gpg/small.sql.gpg");
        let (r, env) = decrypt_any(Box::new(std::io::Cursor::new(gpg)), Some(&pass))
            .await
            .unwrap();
        assert_eq!(env, Envelope::Gpg);
        assert_eq!(read_all(r).await.unwrap(), sql);
        // Plain (also shorter than a header, and empty), with or without passphrase.
        for plain in [sql.clone(), b"-- x".to_vec(), Vec::new()] {
            for p in [None, Some(&pass)] {
                let (r, env) = decrypt_any(Box::new(std::io::Cursor::new(plain.clone())), p)
                    .await
                    .unwrap();
                assert_eq!(env, Envelope::Plain);
                assert_eq!(read_all(r).await.unwrap(), plain);
            }
        }
    }

    #[tokio::test]
    async fn decrypt_any_without_passphrase_is_missing() {
        for f in [read(GOLDEN), read("tests/fixtures/gpg/small.sql.gz.gpg")] {
            let err = decrypt_any(Box::new(std::io::Cursor::new(f)), None)
                .await
                .err()
                .unwrap();
            assert!(matches!(err, CryptoError::MissingPassphrase), "{err}");
        }
    }

    /// The stages compose as the backup and restore pipelines will use them:
    /// dump -> gzip -> encrypt -> target, and target -> decrypt -> gunzip.
    #[tokio::test]
    async fn composes_with_compression() {
        use crate::format::codec::Compression;
        let pass = Secret::new("pipeline");
        let sql = read("tests/fixtures/gpg/small.sql").repeat(50);
        let (w, r) = tokio::io::duplex(64 * 1024);
        let writer = {
            let (sql, pass) = (sql.clone(), pass.clone());
            tokio::spawn(async move {
                let enc = encrypt_writer(Box::new(w), &pass, KdfParams::for_tests())
                    .await
                    .unwrap();
                let mut enc = enc;
                let gz = Compression::Gzip(6).compress_block(&sql).unwrap();
                enc.write_all(&gz).await.unwrap();
                enc.shutdown().await.unwrap();
            })
        };
        let (dec, env) = decrypt_any(Box::new(r), Some(&pass)).await.unwrap();
        assert!(matches!(env, Envelope::Selmai(_)));
        let plain = read_all(Compression::Gzip(6).decoder(tokio::io::BufReader::new(dec)))
            .await
            .unwrap();
        writer.await.unwrap();
        assert!(plain == sql);
    }

    /// A caller can take its writer back after shutdown, to commit an upload.
    #[tokio::test]
    async fn into_inner_after_shutdown_has_the_whole_file() {
        let pass = Secret::new("p");
        let mut w = EncryptWriter::new(Vec::new(), &pass, KdfParams::for_tests())
            .await
            .unwrap();
        assert_eq!(w.header_info().kdf_params, KdfParams::for_tests());
        w.write_all(b"rows").await.unwrap();
        w.shutdown().await.unwrap();
        let file = w.into_inner();
        assert_eq!(
            file.len(),
            HEADER_LEN + format::DEFAULT_SEGMENT_SIZE as usize + 16
        );
        let r = decrypt_reader(Box::new(std::io::Cursor::new(file)), &pass)
            .await
            .unwrap();
        assert_eq!(read_all(r).await.unwrap(), b"rows");
    }

    #[tokio::test]
    async fn errors_survive_the_trip_through_io_error() {
        let e: io::Error = CryptoError::Tampered {
            segment: 3,
            offset: 4000,
        }
        .into();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(matches!(
            CryptoError::from_io(&e),
            Some(CryptoError::Tampered { segment: 3, .. })
        ));
        let back = CryptoError::io("reading", e);
        assert!(matches!(back, CryptoError::Tampered { segment: 3, .. }));
        assert!(CryptoError::WrongPassphrase.is_wrong_passphrase());
        assert!(CryptoError::GpgWrongPassphrase.is_wrong_passphrase());
    }
}
