//! Reading `.gpg` files made by the old runbook
//! (`gpg --symmetric --cipher-algo AES256`), with rPGP (the `pgp` crate,
//! pure Rust).
//!
//! rPGP reads synchronously, so the decryption runs on a blocking thread:
//! the encrypted bytes come in through `SyncIoBridge`, the plaintext goes out
//! through a bounded channel, and memory stays constant whatever the file
//! size. SEIPDv1 (what gpg 2.2 writes) is read in rPGP's streaming mode: its
//! integrity check (MDC) covers the whole file and is only known at the end,
//! so plaintext is released before it is verified and a damaged file fails on
//! the last read. Callers that act on the data (restore) must read to the
//! end first, which `verify` and the restore's pre-pass do anyway. rPGP's
//! default mode instead buffers the whole message in memory (up to 1 GiB)
//! before releasing anything, which a multi-gigabyte backup cannot afford.
//!
//! Not responsible for: writing OpenPGP (we only read the old files), public
//! key encryption, legacy unprotected (SED) packets.

use std::io::{self, BufReader, Read};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use pgp::composed::{DecryptionOptions, Message, TheRing};
use pgp::types::{Password, Seipdv1ReadMode};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::SyncIoBridge;

use super::CryptoError;
use crate::codec::BoxRead;
use crate::config::Secret;

/// Plaintext chunk size handed across the channel.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the decrypting thread and the reader.
const CHANNEL_DEPTH: usize = 4;

/// Does `first_bytes` look like a binary OpenPGP message starting with an
/// encrypted session key packet (what `gpg --symmetric` writes), or an
/// ASCII-armored message?
pub fn is_gpg(first_bytes: &[u8]) -> bool {
    if first_bytes.starts_with(b"-----BEGIN PGP MESSAGE-----") {
        return true;
    }
    let Some(&b) = first_bytes.first() else {
        return false;
    };
    if b & 0x80 == 0 {
        return false;
    }
    let tag = if b & 0x40 != 0 {
        b & 0x3f // new packet format
    } else {
        (b >> 2) & 0x0f // old packet format
    };
    // 3: symmetric-key encrypted session key; 1: public-key one (recognised
    // so that we can say it is not supported, rather than "not encrypted").
    tag == 3 || tag == 1
}

/// Wrap `inner` (a `.gpg` file from its first byte) so that reads return the
/// plaintext. Fails here for a wrong passphrase or an unsupported file;
/// damage later in the file fails a later read, at the latest the last one.
pub async fn gpg_decrypt_reader(
    inner: BoxRead,
    passphrase: &Secret,
) -> Result<BoxRead, CryptoError> {
    if passphrase.expose().is_empty() {
        return Err(CryptoError::MissingPassphrase);
    }
    let password = Password::from(passphrase.expose());
    let source = BufReader::with_capacity(CHUNK, Source(SyncIoBridge::new(inner)));
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let (opened_tx, opened_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut msg = match open(source, &password) {
            Ok(m) => {
                let _ = opened_tx.send(Ok(()));
                m
            }
            Err(e) => {
                let _ = opened_tx.send(Err(e));
                return;
            }
        };
        pump(&mut msg, &tx);
    });
    match opened_rx.await {
        Ok(Ok(())) => Ok(Box::new(ChannelReader {
            rx,
            current: Bytes::new(),
            done: false,
            failed: None,
        })),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(CryptoError::GpgCorrupt {
            detail: "the OpenPGP decryption thread stopped unexpectedly".into(),
        }),
    }
}

/// `SyncIoBridge` is not `Debug`, which rPGP's reader bound asks for.
struct Source(SyncIoBridge<BoxRead>);

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("gpg source")
    }
}

impl Read for Source {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

/// Parse the packets up to the encrypted data, derive the key, and open the
/// literal data. Runs on the blocking thread.
fn open(source: BufReader<Source>, password: &Password) -> Result<Message<'static>, CryptoError> {
    let (msg, _armor) = Message::from_reader(source).map_err(|e| CryptoError::GpgUnsupported {
        detail: format!("not a readable OpenPGP message ({e})"),
    })?;
    let Message::Encrypted { esk, .. } = &msg else {
        return Err(CryptoError::GpgUnsupported {
            detail: "the OpenPGP message is not encrypted".into(),
        });
    };
    let symmetric = esk
        .iter()
        .any(|e| matches!(e, pgp::composed::Esk::SymKeyEncryptedSessionKey(_)));
    if !symmetric {
        return Err(CryptoError::GpgUnsupported {
            detail: "it is encrypted to a public key, not with a passphrase".into(),
        });
    }
    let ring = TheRing {
        message_password: vec![password],
        decrypt_options: DecryptionOptions::new()
            .enable_gnupg_aead()
            .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming),
        ..Default::default()
    };
    // gpg's symmetric mode uses the passphrase-derived key directly, and
    // rPGP (rightly, RFC 9580 §13.4) ignores the two "quick check" bytes, so
    // a wrong passphrase shows up as garbage where the first inner packet
    // header should be: any failure here is reported as a wrong passphrase.
    let (msg, _) = msg
        .decrypt_the_ring(ring, true)
        .map_err(|_| CryptoError::GpgWrongPassphrase)?;
    let msg = if msg.is_compressed() {
        msg.decompress()
            .map_err(|_| CryptoError::GpgWrongPassphrase)?
    } else {
        msg
    };
    if !msg.is_literal() {
        return Err(CryptoError::GpgUnsupported {
            detail: "the decrypted message holds no literal data (signed or nested messages are not read)".into(),
        });
    }
    Ok(msg)
}

enum Item {
    Data(Bytes),
    Failed(CryptoError),
    End,
}

/// Read plaintext until the end (where rPGP checks the MDC and trailing
/// packets) and send it; stop early if the reader went away.
fn pump(msg: &mut Message<'static>, tx: &mpsc::Sender<Item>) {
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let item = match msg.read(&mut chunk) {
            Ok(0) => Item::End,
            Ok(n) => {
                chunk.truncate(n);
                Item::Data(Bytes::from(chunk))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => Item::Failed(classify_read_error(e)),
        };
        let last = !matches!(item, Item::Data(_));
        if tx.blocking_send(item).is_err() || last {
            return;
        }
    }
}

fn classify_read_error(e: io::Error) -> CryptoError {
    if let Some(c) = CryptoError::from_io(&e) {
        return c.clone();
    }
    let is_mdc = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<pgp::errors::Error>())
        .is_some_and(|pe| matches!(pe, pgp::errors::Error::MdcError));
    let detail = if is_mdc {
        "the integrity check (MDC) at the end of the file failed".to_string()
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        format!("the file ends early ({e})")
    } else {
        e.to_string()
    };
    CryptoError::GpgCorrupt { detail }
}

/// The async side of the channel. The decrypting thread always sends `End`
/// or `Failed` last; a channel that closes without either is an error, never
/// a silent end of file.
struct ChannelReader {
    rx: mpsc::Receiver<Item>,
    current: Bytes,
    done: bool,
    failed: Option<CryptoError>,
}

impl AsyncRead for ChannelReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(dst.remaining());
                dst.put_slice(&self.current.split_to(n));
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = &self.failed {
                return Poll::Ready(Err(e.clone().into()));
            }
            if self.done || dst.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.rx.poll_recv(cx)) {
                Some(Item::Data(b)) => self.current = b,
                Some(Item::End) => self.done = true,
                Some(Item::Failed(e)) => self.failed = Some(e),
                None => {
                    self.failed = Some(CryptoError::GpgCorrupt {
                        detail: "the OpenPGP decryption thread stopped before the end".into(),
                    })
                }
            }
        }
    }
}
