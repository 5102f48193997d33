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

use aes::cipher::generic_array::GenericArray;
use aes::cipher::{BlockEncrypt, KeyInit};
use bytes::Bytes;
use pgp::composed::{
    decrypt_session_key_with_password, DecryptionOptions, Esk, Message, PlainSessionKey, TheRing,
};
use pgp::crypto::sym::SymmetricKeyAlgorithm;
use pgp::types::{Password, Seipdv1ReadMode};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::io::SyncIoBridge;

use super::CryptoError;
use crate::format::codec::BoxRead;
use crate::secret::Secret;

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

/// Bytes read ahead to find the start of the encrypted data for the quick check.
const HEAD: u64 = 4096;

/// Wrap `inner` (a `.gpg` file from its first byte) so that reads return the
/// plaintext. Fails here for a wrong passphrase or an unsupported file;
/// damage later in the file fails a later read, at the latest the last one.
pub async fn gpg_decrypt_reader(
    mut inner: BoxRead,
    passphrase: &Secret,
) -> Result<BoxRead, CryptoError> {
    if passphrase.expose().is_empty() {
        return Err(CryptoError::MissingPassphrase);
    }
    let password = Password::from(passphrase.expose());
    let mut head = Vec::with_capacity(HEAD as usize);
    (&mut inner)
        .take(HEAD)
        .read_to_end(&mut head)
        .await
        .map_err(|e| CryptoError::io("reading the start of the .gpg file", e))?;
    let rejoined: BoxRead = Box::new(AsyncReadExt::chain(
        std::io::Cursor::new(head.clone()),
        inner,
    ));
    let source = BufReader::with_capacity(CHUNK, Source(SyncIoBridge::new(rejoined)));
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let (opened_tx, opened_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let mut msg = match open(source, &head, &password) {
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

/// Parse the packets up to the encrypted data, find the session key, and
/// open the literal data. Runs on the blocking thread.
///
/// Telling a wrong passphrase from damage: gpg's symmetric mode uses the
/// passphrase-derived key as the session key, so nothing in the key packet
/// can be checked. SEIPDv1 data starts with a random block whose last two
/// bytes are repeated ("quick check", RFC 4880 5.13): we check those
/// ourselves (rPGP rightly does not, RFC 9580 13.4, because a decryption
/// service must not be an oracle; a local restore of our own files is not
/// one). A mismatch is a wrong passphrase (a false "match" has probability
/// 2^-16 and then reads as damage). When the check cannot be made (armored
/// input, a non-AES cipher, AEAD packets, where the first chunk's tag does
/// the same job) any failure before the data is reported as a wrong
/// passphrase.
fn open(
    source: BufReader<Source>,
    head: &[u8],
    password: &Password,
) -> Result<Message<'static>, CryptoError> {
    let (msg, _armor) = Message::from_reader(source).map_err(|e| CryptoError::GpgUnsupported {
        detail: format!("not a readable OpenPGP message ({e})"),
    })?;
    let Message::Encrypted { esk, .. } = &msg else {
        return Err(CryptoError::GpgUnsupported {
            detail: "the OpenPGP message is not encrypted".into(),
        });
    };
    let skesks: Vec<_> = esk
        .iter()
        .filter_map(|e| match e {
            Esk::SymKeyEncryptedSessionKey(s) => Some(s),
            Esk::PublicKeyEncryptedSessionKey(_) => None,
        })
        .collect();
    if skesks.is_empty() {
        return Err(CryptoError::GpgUnsupported {
            detail: "it is encrypted to a public key, not with a passphrase".into(),
        });
    }
    let options = || {
        DecryptionOptions::new()
            .enable_gnupg_aead()
            .set_seipdv1_read_mode(Seipdv1ReadMode::Streaming)
    };
    let checked_key = match seipd_v1_prefix(head) {
        Some(prefix) => {
            let mut verdict = None;
            for skesk in skesks {
                let Ok(key) = decrypt_session_key_with_password(skesk, password) else {
                    continue;
                };
                match quick_check(&key, &prefix) {
                    Some(true) => {
                        verdict = Some(Some(key));
                        break;
                    }
                    Some(false) => verdict = verdict.or(Some(None)),
                    None => {}
                }
            }
            match verdict {
                Some(None) => return Err(CryptoError::GpgWrongPassphrase),
                Some(Some(key)) => Some(key),
                None => None,
            }
        }
        None => None,
    };
    let (msg, on_error) = match checked_key {
        Some(key) => {
            let ring = TheRing {
                session_keys: vec![key],
                decrypt_options: options(),
                ..Default::default()
            };
            let corrupt = |e: pgp::errors::Error| CryptoError::GpgCorrupt {
                detail: format!("the data after the key check is unreadable ({e})"),
            };
            let (msg, _) = msg.decrypt_the_ring(ring, true).map_err(corrupt)?;
            (msg, corrupt as fn(pgp::errors::Error) -> CryptoError)
        }
        None => {
            let ring = TheRing {
                message_password: vec![password],
                decrypt_options: options(),
                ..Default::default()
            };
            let wrong = |_: pgp::errors::Error| CryptoError::GpgWrongPassphrase;
            let (msg, _) = msg.decrypt_the_ring(ring, true).map_err(wrong)?;
            (msg, wrong as fn(pgp::errors::Error) -> CryptoError)
        }
    };
    let msg = if msg.is_compressed() {
        msg.decompress().map_err(on_error)?
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

/// The 18 encrypted bytes that start a SEIPDv1 packet (the random block and
/// its two repeated bytes), found by walking the packet headers in `head`.
fn seipd_v1_prefix(head: &[u8]) -> Option<[u8; 18]> {
    let mut i = 0usize;
    loop {
        let b0 = *head.get(i)?;
        if b0 & 0x80 == 0 {
            return None; // armored or not OpenPGP
        }
        let byte = |k: usize| head.get(i + k).map(|&b| usize::from(b));
        // (tag, header length, body length; None = partial or indeterminate)
        let (tag, hdr, len) = if b0 & 0x40 != 0 {
            let o1 = byte(1)?;
            let (hdr, len) = match o1 {
                0..=191 => (2, Some(o1)),
                192..=223 => (3, Some(((o1 - 192) << 8) + byte(2)? + 192)),
                255 => (
                    6,
                    Some((byte(2)? << 24) | (byte(3)? << 16) | (byte(4)? << 8) | byte(5)?),
                ),
                _ => (2, None),
            };
            (b0 & 0x3f, hdr, len)
        } else {
            let (hdr, len) = match b0 & 3 {
                0 => (2, Some(byte(1)?)),
                1 => (3, Some((byte(1)? << 8) | byte(2)?)),
                2 => (
                    5,
                    Some((byte(1)? << 24) | (byte(2)? << 16) | (byte(3)? << 8) | byte(4)?),
                ),
                _ => (1, None),
            };
            ((b0 >> 2) & 0x0f, hdr, len)
        };
        if tag == 18 {
            let body = head.get(i + hdr..)?;
            // Version 1 only; version 2 (AEAD) authenticates its first chunk.
            return match body.first() {
                Some(1) => body.get(1..19)?.try_into().ok(),
                _ => None,
            };
        }
        i = i.checked_add(hdr)?.checked_add(len?)?;
    }
}

/// Decrypt the first 18 bytes (OpenPGP CFB, zero IV) and compare bytes
/// 14..16 with 16..18. `None` for ciphers other than AES.
fn quick_check(key: &PlainSessionKey, prefix: &[u8; 18]) -> Option<bool> {
    fn check<C: BlockEncrypt + KeyInit>(key: &[u8], c: &[u8; 18]) -> Option<bool> {
        let cipher = C::new_from_slice(key).ok()?;
        let mut b0 = GenericArray::clone_from_slice(&[0u8; 16]);
        cipher.encrypt_block(&mut b0);
        let mut b1 = GenericArray::clone_from_slice(&c[..16]);
        cipher.encrypt_block(&mut b1);
        let p14 = [c[14] ^ b0[14], c[15] ^ b0[15]];
        let p16 = [c[16] ^ b1[0], c[17] ^ b1[1]];
        Some(p14 == p16)
    }
    let PlainSessionKey::V3_4 { sym_alg, key } = key else {
        return None;
    };
    match sym_alg {
        SymmetricKeyAlgorithm::AES128 => check::<aes::Aes128>(key.as_ref(), prefix),
        SymmetricKeyAlgorithm::AES192 => check::<aes::Aes192>(key.as_ref(), prefix),
        SymmetricKeyAlgorithm::AES256 => check::<aes::Aes256>(key.as_ref(), prefix),
        _ => None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use sha2::{Digest, Sha256};

    const PASS: &str = "selmai-fixture-passphrase";

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/gpg/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn sha256_hex(b: &[u8]) -> String {
        hex::encode(Sha256::digest(b))
    }

    /// Decrypt from memory: the plaintext released and the outcome.
    async fn decrypt(file: Vec<u8>, pass: &str) -> (Vec<u8>, Result<(), CryptoError>) {
        let mut r = match gpg_decrypt_reader(
            Box::new(std::io::Cursor::new(file)),
            &Secret::new(pass),
        )
        .await
        {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 10_000];
        loop {
            match r.read(&mut buf).await {
                Ok(0) => return (out, Ok(())),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => return (out, Err(CryptoError::from_io(&e).unwrap().clone())),
            }
        }
    }

    fn small_sql() -> Vec<u8> {
        fixture("small.sql")
    }

    #[rstest]
    #[case::zip_packet("small.sql.gpg", small_sql())]
    #[case::bzip2_packet("small.sql.bzip2-packet.gpg", small_sql())]
    #[case::armored("small.sql.asc", small_sql())]
    #[case::gzipped_sql("small.sql.gz.gpg", fixture("small.sql.gz"))]
    #[case::partial_lengths_from_stdin("small-x8.sql.stdin.gpg", small_sql().repeat(8))]
    #[tokio::test]
    async fn gpg_fixtures_decrypt(#[case] name: &str, #[case] want: Vec<u8>) {
        let file = fixture(name);
        assert!(is_gpg(&file), "{name}");
        let (out, res) = decrypt(file, PASS).await;
        res.unwrap();
        assert_eq!(sha256_hex(&out), sha256_hex(&want), "{name}");
    }

    #[tokio::test]
    async fn gpg_uncompressed_random_data() {
        let (out, res) = decrypt(fixture("random-32k.bin.gpg"), PASS).await;
        res.unwrap();
        assert_eq!(
            sha256_hex(&out),
            "99f73627e408c5bc6fbf2d1f2e7b2b8e4427617cc6f7a24cf87fe8308317a1f2"
        );
    }

    #[rstest]
    #[case("small.sql.gpg")]
    #[case("small.sql.gz.gpg")]
    #[case("small.sql.bzip2-packet.gpg")]
    #[case("small-x8.sql.stdin.gpg")]
    #[case("random-32k.bin.gpg")]
    #[case("small.sql.asc")]
    #[tokio::test]
    async fn gpg_wrong_passphrase(#[case] name: &str) {
        let (out, res) = decrypt(fixture(name), "selmai-fixture-passphrasE").await;
        assert!(
            matches!(res, Err(CryptoError::GpgWrongPassphrase)),
            "{name}: {res:?}"
        );
        assert!(out.is_empty());
    }

    /// Without our quick check, about one wrong passphrase in 40 parsed as a
    /// "signed message" or failed late as "damaged".
    #[tokio::test]
    async fn gpg_many_wrong_passphrases_all_say_so() {
        let file = fixture("random-32k.bin.gpg");
        assert!(seipd_v1_prefix(&file).is_some());
        for i in 0..10 {
            let (out, res) = decrypt(file.clone(), &format!("wrong-{i}")).await;
            assert!(
                matches!(res, Err(CryptoError::GpgWrongPassphrase)),
                "{i}: {res:?}"
            );
            assert!(out.is_empty());
        }
    }

    #[rstest]
    #[case::flipped_after_the_quick_check(Some(40), None)]
    #[case::flipped_in_the_middle(Some(16_000), None)]
    #[case::flipped_near_the_end(Some(32_800), None)]
    #[case::truncated(None, Some(20_000))]
    #[case::truncated_mdc(None, Some(32_830))]
    #[tokio::test]
    async fn gpg_damage_fails_by_the_end(#[case] flip: Option<usize>, #[case] cut: Option<usize>) {
        let mut file = fixture("random-32k.bin.gpg");
        if let Some(i) = flip {
            file[i] ^= 0x01;
        }
        if let Some(n) = cut {
            file.truncate(n);
        }
        let (_, res) = decrypt(file, PASS).await;
        assert!(
            matches!(res, Err(CryptoError::GpgCorrupt { .. })),
            "{res:?}"
        );
    }

    #[tokio::test]
    async fn gpg_empty_passphrase_is_missing() {
        let (_, res) = decrypt(fixture("small.sql.gpg"), "").await;
        assert!(
            matches!(res, Err(CryptoError::MissingPassphrase)),
            "{res:?}"
        );
    }

    #[rstest]
    #[case(&[0x8c, 0x0d, 0x04, 0x09][..], true)] // gpg 2.2: old-format SKESK
    #[case(&[0xc3, 0x0d][..], true)] // new-format SKESK
    #[case(&[0x85, 0x01][..], true)] // old-format PKESK
    #[case(&b"-----BEGIN PGP MESSAGE-----\n"[..], true)]
    #[case(&[0x1f, 0x8b, 0x08][..], false)] // gzip
    #[case(&[0x28, 0xb5, 0x2f, 0xfd][..], false)] // zstd
    #[case(&b"\x89SELMAI\n"[..], false)] // ours
    #[case(&b"-- MariaDB dump"[..], false)]
    #[case(&[][..], false)]
    fn gpg_magic(#[case] bytes: &[u8], #[case] want: bool) {
        assert_eq!(is_gpg(bytes), want);
    }
}
