//! The STREAM construction over AES-256-GCM as an `AsyncWrite` (encrypt)
//! and an `AsyncRead` (decrypt), segment by segment in bounded memory.
//!
//! Implemented here rather than with the `aead-stream` crate: the
//! construction is a nonce rule (prefix || BE32 counter || last flag), a few
//! lines, and owning it lets us (a) encrypt in place in one reusable buffer,
//! (b) try a segment as non-final and then as final, which tells truncation
//! from tampering and names the segment, and (c) pad the final segment to
//! full size (see `docs/FORMAT.md`). A test checks our segments are
//! byte-identical to RustCrypto's `StreamBE32`.
//!
//! Not responsible for the header fields or keys (see [`super::format`]).

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use aes_gcm::aead::AeadInOut;
use aes_gcm::{Nonce, Tag};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::format::{Header, KdfParams, Keys, DEFAULT_SEGMENT_SIZE, HEADER_LEN};
use super::CryptoError;
use crate::format::codec::BoxRead;
#[cfg(test)]
use crate::format::codec::BoxWrite;
use crate::secret::Secret;

/// First byte of the padding that fills the final segment to full size.
const PAD_START: u8 = 0x80;

/// Build a boxed encrypt writer with an explicit segment size (tests and
/// golden files use small segments to get many of them cheaply).
#[cfg(test)]
pub(crate) async fn encrypt_writer_with(
    inner: BoxWrite,
    passphrase: &Secret,
    params: KdfParams,
    segment_size: u32,
) -> Result<BoxWrite, CryptoError> {
    Ok(Box::new(
        EncryptWriter::with_segment_size(inner, passphrase, params, segment_size).await?,
    ))
}

/// What both directions hold: the keys, the header, and the one buffer of
/// `segment_size + 16` bytes the segment in flight lives in. Sealing and
/// opening a segment happen here; [`EncryptWriter`] and [`DecryptReader`]
/// only move bytes between it and their inner stream.
struct Segment {
    keys: Keys,
    header: Header,
    buf: Vec<u8>,
    /// Bytes of the current segment in `buf` (while `out` is empty).
    filled: usize,
    /// Bytes of `buf` ready to go out.
    out: std::ops::Range<usize>,
    /// Index of the current segment.
    index: u64,
}

impl Segment {
    /// An empty buffer at segment 0.
    fn new(keys: Keys, header: Header) -> Self {
        let buf = vec![0u8; header.wire_segment_len()];
        Segment {
            keys,
            header,
            buf,
            filled: 0,
            out: 0..0,
            index: 0,
        }
    }

    /// Seal the plaintext in `buf` in place (padded to full size when
    /// `last`), tag appended; the whole buffer is then ready to go out.
    fn seal(&mut self, last: bool) -> io::Result<()> {
        let seg = self.header.segment_size as usize;
        if last {
            // Invariant: filled < seg, so the padding always has room for 0x80.
            self.buf[self.filled] = PAD_START;
            self.buf[self.filled + 1..seg].fill(0);
        }
        let nonce = self
            .header
            .nonce(self.index, last)
            .ok_or(CryptoError::TooLong {
                segment_size: self.header.segment_size,
            })?;
        let tag = self
            .keys
            .payload
            .encrypt_inout_detached(
                &Nonce::from(nonce),
                &self.header.bytes,
                (&mut self.buf[..seg]).into(),
            )
            .map_err(|_| io::Error::other("AES-GCM refused to encrypt a segment"))?;
        self.buf[seg..].copy_from_slice(&tag);
        self.out = 0..self.buf.len();
        self.filled = 0;
        self.index += 1;
        Ok(())
    }

    /// Verify and decrypt the ciphertext in `buf` in place as a non-final
    /// or (`last`) final segment; `false` when the tag does not match.
    fn open(&mut self, last: bool) -> Result<bool, CryptoError> {
        let seg = self.header.segment_size as usize;
        let nonce = self
            .header
            .nonce(self.index, last)
            .ok_or(CryptoError::Malformed {
                segment: self.index,
                offset: self.header.segment_offset(self.index),
                detail: "more than 2^32 segments".into(),
            })?;
        let (body, tag) = self.buf.split_at_mut(seg);
        // On failure aes-gcm leaves `body` untouched (the tag is checked
        // before decrypting), so we can try the other flag on the same bytes.
        Ok(self
            .keys
            .payload
            .decrypt_inout_detached(
                &Nonce::from(nonce),
                &self.header.bytes,
                body.into(),
                &Tag::try_from(&*tag).expect("16-byte tag"),
            )
            .is_ok())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WState {
    /// Accepting plaintext.
    Open,
    /// The final segment is sealed; draining it, then shutting `inner` down.
    Closing,
    /// Shut down.
    Closed,
}

/// Encrypts into `inner` (format version 1). One buffer of `segment_size +
/// 16` bytes is filled with plaintext, sealed in place as soon as it is full
/// (a full segment is never the final one: the final one always carries
/// padding), then drained. `shutdown()` writes the final segment and shuts
/// `inner` down; a writer dropped without it leaves a file that reads as
/// truncated. Generic so that a caller can take `inner` back with
/// [`EncryptWriter::into_inner`] (to commit an upload); most callers use the
/// boxed [`super::encrypt_writer`].
pub struct EncryptWriter<W> {
    inner: W,
    /// `filled`: plaintext bytes (while `out` is empty); `out`: sealed bytes
    /// not yet written to `inner`; `index`: the segment being filled.
    seg: Segment,
    state: WState,
}

impl<W: AsyncWrite + Unpin> EncryptWriter<W> {
    /// Derive the per-file key (Argon2id on a blocking thread), write the
    /// header to `inner`, and return the writer (default segment size).
    pub async fn new(
        inner: W,
        passphrase: &Secret,
        params: KdfParams,
    ) -> Result<Self, CryptoError> {
        Self::with_segment_size(inner, passphrase, params, DEFAULT_SEGMENT_SIZE).await
    }

    pub(crate) async fn with_segment_size(
        mut inner: W,
        passphrase: &Secret,
        params: KdfParams,
        segment_size: u32,
    ) -> Result<Self, CryptoError> {
        let mut header = Header::new(params, segment_size)?;
        let keys = Keys::derive(&header, passphrase).await?;
        keys.seal_header(&mut header);
        inner
            .write_all(&header.bytes)
            .await
            .map_err(|e| CryptoError::io("writing the encrypted header", e))?;
        Ok(EncryptWriter {
            inner,
            seg: Segment::new(keys, header),
            state: WState::Open,
        })
    }

    /// The inner writer. Call after `shutdown()` succeeded: before it, the
    /// final segment (and maybe more) has not been written.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// The header's description (KDF parameters, segment size), for the manifest.
    pub fn header_info(&self) -> super::HeaderInfo {
        self.seg.header.info()
    }

    /// Write out the sealed segment, if any.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let seg = &mut self.seg;
        while !seg.out.is_empty() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &seg.buf[seg.out.clone()]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            seg.out.start += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for EncryptWriter<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.state != WState::Open {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write to an encrypted stream after shutdown",
            )));
        }
        ready!(this.poll_drain(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let s = &mut this.seg;
        let seg = s.header.segment_size as usize;
        let n = data.len().min(seg - s.filled);
        s.buf[s.filled..s.filled + n].copy_from_slice(&data[..n]);
        s.filled += n;
        if s.filled == seg {
            s.seal(false)?;
        }
        Poll::Ready(Ok(n))
    }

    /// Writes out sealed segments and flushes `inner`. A partly filled
    /// segment stays buffered: sealing it early would end the stream.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Seals the final (padded) segment, writes it, shuts `inner` down.
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.state {
                WState::Open => {
                    ready!(this.poll_drain(cx))?;
                    this.seg.seal(true)?;
                    this.state = WState::Closing;
                }
                WState::Closing => {
                    ready!(this.poll_drain(cx))?;
                    ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
                    this.state = WState::Closed;
                }
                WState::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}

/// Read and check the header, derive the key, check the key, and return the
/// segment reader.
pub(crate) async fn decrypt_reader(
    mut inner: BoxRead,
    passphrase: &Secret,
) -> Result<BoxRead, CryptoError> {
    let mut bytes = Vec::with_capacity(HEADER_LEN);
    (&mut inner)
        .take(HEADER_LEN as u64)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| CryptoError::io("reading the encrypted header", e))?;
    if bytes.is_empty() {
        return Err(CryptoError::Truncated {
            segment: 0,
            offset: 0,
            detail: "the file is empty".into(),
        });
    }
    let header = Header::parse(&bytes)?;
    let keys = Keys::derive(&header, passphrase).await?;
    keys.check_header(&header)?;
    Ok(Box::new(DecryptReader {
        inner,
        seg: Segment::new(keys, header),
        state: RState::Segments,
    }))
}

#[derive(Debug, Clone)]
enum RState {
    /// Reading segment `index`.
    Segments,
    /// The final segment verified with `len` data bytes; checking that
    /// nothing follows before releasing them.
    AfterLast { len: usize },
    /// End of the authenticated stream.
    Done,
    /// An error was reported; it is reported again on every later read.
    Failed(CryptoError),
}

/// Decrypts from `inner`. Reads whole segments into one buffer, verifies
/// each in place, and only then hands out its plaintext.
struct DecryptReader {
    inner: BoxRead,
    /// `filled`: ciphertext bytes of the current segment; `out`: verified
    /// plaintext not yet returned; `index`: the segment being read.
    seg: Segment,
    state: RState,
}

impl DecryptReader {
    /// Reads the next segment and verifies it; on success `out` or `state`
    /// says what to return next.
    fn poll_segment(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CryptoError>> {
        let s = &mut self.seg;
        let wire = s.buf.len();
        let mut eof = false;
        while s.filled < wire {
            let mut rb = ReadBuf::new(&mut s.buf[s.filled..]);
            ready!(Pin::new(&mut self.inner).poll_read(cx, &mut rb))
                .map_err(|e| CryptoError::io("reading an encrypted segment", e))?;
            let n = rb.filled().len();
            if n == 0 {
                eof = true;
                break;
            }
            s.filled += n;
        }
        let offset = s.header.segment_offset(s.index);
        if eof {
            let detail = match (s.filled, s.index) {
                (0, 0) => "no segment follows the header".to_string(),
                (0, i) => format!(
                    "the file ends after segment {} and the final segment is missing",
                    i - 1
                ),
                (n, _) => format!("segment {} is {n} of {wire} bytes", s.index),
            };
            return Poll::Ready(Err(CryptoError::Truncated {
                segment: s.index,
                offset: offset + s.filled as u64,
                detail,
            }));
        }
        s.filled = 0;
        let seg = s.header.segment_size as usize;
        if s.open(false)? {
            s.out = 0..seg;
            s.index += 1;
            return Poll::Ready(Ok(()));
        }
        if s.open(true)? {
            let plain = &s.buf[..seg];
            let len = match plain.iter().rposition(|&b| b != 0) {
                Some(i) if plain[i] == PAD_START => i,
                _ => {
                    return Poll::Ready(Err(CryptoError::Malformed {
                        segment: s.index,
                        offset,
                        detail: "the final segment's padding is invalid".into(),
                    }))
                }
            };
            self.state = RState::AfterLast { len };
            return Poll::Ready(Ok(()));
        }
        Poll::Ready(Err(CryptoError::Tampered {
            segment: s.index,
            offset,
        }))
    }
}

impl AsyncRead for DecryptReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let s = &mut this.seg;
            if !s.out.is_empty() {
                let n = s.out.len().min(dst.remaining());
                dst.put_slice(&s.buf[s.out.start..s.out.start + n]);
                s.out.start += n;
                return Poll::Ready(Ok(()));
            }
            if dst.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            let step = match this.state.clone() {
                RState::Done => return Poll::Ready(Ok(())),
                RState::Failed(e) => return Poll::Ready(Err(e.into())),
                RState::Segments => ready!(this.poll_segment(cx)),
                RState::AfterLast { len } => {
                    // The final segment is authentic; release it only once we
                    // know nothing was appended, so that EOF means success.
                    let mut probe = [0u8; 1];
                    let mut rb = ReadBuf::new(&mut probe);
                    match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb)) {
                        Err(e) => Err(CryptoError::io("reading after the final segment", e)),
                        Ok(()) if rb.filled().is_empty() => {
                            this.seg.out = 0..len;
                            this.state = RState::Done;
                            Ok(())
                        }
                        Ok(()) => Err(CryptoError::TrailingData {
                            offset: this.seg.header.segment_offset(this.seg.index + 1),
                        }),
                    }
                }
            };
            if let Err(e) = step {
                this.state = RState::Failed(e.clone());
                return Poll::Ready(Err(e.into()));
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::crypto::format::tests::crafted_header;
    use crate::format::crypto::SharedVec;
    use rstest::rstest;
    use std::time::{Duration, Instant};

    /// Small segments: many segments from little data, every boundary cheap.
    const SEG: u32 = 1024;
    const WIRE: usize = SEG as usize + 16;

    pub(crate) fn pass() -> Secret {
        Secret::new("correct horse battery staple")
    }

    /// xorshift64*: deterministic chunking without a rand dependency.
    pub(crate) struct Rng(u64);
    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
        }
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        pub(crate) fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    pub(crate) fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut r = Rng::new(seed);
        (0..len).map(|_| r.next() as u8).collect()
    }

    /// A reader that hands out random-sized pieces and is sometimes not
    /// ready, so the decrypt reader must resume mid-segment.
    struct Choppy {
        data: Vec<u8>,
        pos: usize,
        rng: Rng,
    }

    impl AsyncRead for Choppy {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            dst: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if self.rng.below(4) == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let max = 1 + self.rng.below(3 * WIRE);
            let n = max.min(dst.remaining()).min(self.data.len() - self.pos);
            let pos = self.pos;
            dst.put_slice(&self.data[pos..pos + n]);
            self.pos += n;
            Poll::Ready(Ok(()))
        }
    }

    /// A writer that accepts random-sized prefixes and is sometimes not ready.
    struct ChoppyWriter {
        sink: SharedVec,
        rng: Rng,
    }

    impl AsyncWrite for ChoppyWriter {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            if self.rng.below(4) == 0 {
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let n = buf.len().min(1 + self.rng.below(2 * WIRE));
            Pin::new(&mut self.sink).poll_write(cx, &buf[..n])
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// Encrypt `plain` with random write sizes and flushes.
    pub(crate) async fn encrypt(plain: &[u8], seg: u32, seed: u64) -> Vec<u8> {
        let sink = SharedVec::default();
        let w = ChoppyWriter {
            sink: sink.clone(),
            rng: Rng::new(seed),
        };
        let mut enc = encrypt_writer_with(Box::new(w), &pass(), KdfParams::for_tests(), seg)
            .await
            .unwrap();
        let mut rng = Rng::new(seed ^ 0xabc);
        let mut pos = 0;
        while pos < plain.len() {
            let end = plain.len().min(pos + 1 + rng.below(3 * seg as usize));
            enc.write_all(&plain[pos..end]).await.unwrap();
            if rng.below(5) == 0 {
                enc.flush().await.unwrap();
            }
            pos = end;
        }
        enc.shutdown().await.unwrap();
        sink.take()
    }

    /// Decrypt with random read sizes: the plaintext released, and the
    /// first error (as the `CryptoError` inside the `io::Error`).
    pub(crate) async fn decrypt(
        file: Vec<u8>,
        passphrase: &Secret,
        seed: u64,
    ) -> (Vec<u8>, Result<(), CryptoError>) {
        let src = Choppy {
            data: file,
            pos: 0,
            rng: Rng::new(seed),
        };
        let mut r = match decrypt_reader(Box::new(src), passphrase).await {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let mut rng = Rng::new(seed ^ 0x5eed);
        let mut out = Vec::new();
        let mut buf = vec![0u8; 3 * WIRE];
        loop {
            let n = 1 + rng.below(buf.len());
            match r.read(&mut buf[..n]).await {
                Ok(0) => return (out, Ok(())),
                Ok(k) => out.extend_from_slice(&buf[..k]),
                Err(e) => {
                    let c = CryptoError::from_io(&e)
                        .expect("a CryptoError inside")
                        .clone();
                    // A failed reader keeps failing; it never turns into EOF.
                    assert!(r.read(&mut buf).await.is_err());
                    return (out, Err(c));
                }
            }
        }
    }

    fn off(segment: u64) -> usize {
        HEADER_LEN + segment as usize * WIRE
    }

    #[rstest]
    #[case(SEG, 0)]
    #[case(SEG, 1)]
    #[case(SEG, SEG as usize - 1)]
    #[case(SEG, SEG as usize)]
    #[case(SEG, SEG as usize + 1)]
    #[case(SEG, 7 * SEG as usize)]
    #[case(DEFAULT_SEGMENT_SIZE, 0)]
    #[case(DEFAULT_SEGMENT_SIZE, 1)]
    #[case(DEFAULT_SEGMENT_SIZE, DEFAULT_SEGMENT_SIZE as usize - 1)]
    #[case(DEFAULT_SEGMENT_SIZE, DEFAULT_SEGMENT_SIZE as usize)]
    #[case(DEFAULT_SEGMENT_SIZE, DEFAULT_SEGMENT_SIZE as usize + 1)]
    #[case(DEFAULT_SEGMENT_SIZE, 3 * 1024 * 1024 + 7)]
    #[tokio::test]
    async fn round_trip(#[case] seg: u32, #[case] len: usize) {
        for seed in [1u64, 2] {
            let plain = data(len, seed + len as u64);
            let file = encrypt(&plain, seg, seed).await;
            // Every segment is full size; the final one holds 0..seg-1 bytes.
            let segments = len / seg as usize + 1;
            assert_eq!(file.len(), HEADER_LEN + segments * (seg as usize + 16));
            let (out, res) = decrypt(file, &pass(), seed).await;
            res.unwrap();
            assert!(out == plain, "len {len} seed {seed}");
        }
    }

    #[derive(Debug, Clone, Copy)]
    enum Damage {
        /// XOR 0x01 into byte `n` of the file.
        Flip(usize),
        /// XOR into byte `n` of segment `s`.
        FlipIn(u64, usize),
        /// XOR into the last byte of the file (the final tag).
        FlipLastTag,
        /// Keep only the first `n` bytes.
        CutAt(usize),
        /// Drop the final segment.
        DropFinal,
        /// Append `n` bytes.
        Append(usize),
        /// Append a copy of the final segment.
        AppendFinalAgain,
        /// Exchange two segments.
        Swap(u64, u64),
        /// Replace a segment by the same-index segment of another file made
        /// with the same passphrase from the same plaintext.
        Splice(u64),
        /// Replace segment `a` by segment `b` of the same file.
        Duplicate(u64, u64),
        /// Put the header of another file (same passphrase) in front.
        OtherHeader,
    }

    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Want {
        BadHeader,
        Tampered(u64),
        Truncated(u64),
        Trailing,
    }

    /// 5 full segments and a final one holding 100 bytes.
    const TAMPER_LEN: usize = 5 * SEG as usize + 100;
    const S: usize = SEG as usize;

    #[rstest]
    #[case::flip_magic_area(Damage::Flip(2), Want::BadHeader, 0)]
    #[case::flip_kdf_params(Damage::Flip(18), Want::BadHeader, 0)]
    #[case::flip_salt(Damage::Flip(30), Want::BadHeader, 0)]
    #[case::flip_nonce_prefix(Damage::Flip(47), Want::BadHeader, 0)]
    #[case::flip_header_mac(Damage::Flip(60), Want::BadHeader, 0)]
    #[case::flip_checksum(Damage::Flip(90), Want::BadHeader, 0)]
    #[case::flip_first_segment(Damage::FlipIn(0, 0), Want::Tampered(0), 0)]
    #[case::flip_middle_segment(Damage::FlipIn(2, 500), Want::Tampered(2), 2 * S)]
    #[case::flip_middle_tag(Damage::FlipIn(3, S + 3), Want::Tampered(3), 3 * S)]
    #[case::flip_final_data(Damage::FlipIn(5, 10), Want::Tampered(5), 5 * S)]
    #[case::flip_final_padding(Damage::FlipIn(5, 700), Want::Tampered(5), 5 * S)]
    #[case::flip_last_tag(Damage::FlipLastTag, Want::Tampered(5), 5 * S)]
    #[case::inside_header(Damage::CutAt(50), Want::Truncated(0), 0)]
    #[case::after_header(Damage::CutAt(HEADER_LEN), Want::Truncated(0), 0)]
    #[case::at_boundary(Damage::CutAt(off(4)), Want::Truncated(4), 4 * S)]
    #[case::mid_segment(Damage::CutAt(off(3) + 500), Want::Truncated(3), 3 * S)]
    #[case::mid_tag(Damage::CutAt(off(2) + S + 5), Want::Truncated(2), 2 * S)]
    #[case::final_minus_one(Damage::CutAt(off(6) - 1), Want::Truncated(5), 5 * S)]
    #[case::drop_final(Damage::DropFinal, Want::Truncated(5), 5 * S)]
    #[case::append_byte(Damage::Append(1), Want::Trailing, 5 * S)]
    #[case::append_garbage(Damage::Append(5000), Want::Trailing, 5 * S)]
    #[case::append_final_again(Damage::AppendFinalAgain, Want::Trailing, 5 * S)]
    #[case::swap_middle(Damage::Swap(1, 2), Want::Tampered(1), S)]
    #[case::swap_with_final(Damage::Swap(4, 5), Want::Tampered(4), 4 * S)]
    #[case::splice_other_file(Damage::Splice(2), Want::Tampered(2), 2 * S)]
    #[case::splice_final(Damage::Splice(5), Want::Tampered(5), 5 * S)]
    #[case::duplicate(Damage::Duplicate(3, 2), Want::Tampered(3), 3 * S)]
    #[case::other_header(Damage::OtherHeader, Want::Tampered(0), 0)]
    #[tokio::test]
    async fn damage_is_rejected(
        #[case] damage: Damage,
        #[case] want: Want,
        #[case] released: usize,
    ) {
        let plain = data(TAMPER_LEN, 7);
        let good = encrypt(&plain, SEG, 7).await;
        assert_eq!(good.len(), off(6));
        let seg = |f: &[u8], i: u64| f[off(i)..off(i + 1)].to_vec();
        let mut f = good.clone();
        match damage {
            Damage::Flip(n) => f[n] ^= 0x01,
            Damage::FlipIn(s, n) => f[off(s) + n] ^= 0x01,
            Damage::FlipLastTag => *f.last_mut().unwrap() ^= 0x01,
            Damage::CutAt(n) => f.truncate(n),
            Damage::DropFinal => f.truncate(off(5)),
            Damage::Append(n) => f.extend(data(n, 99)),
            Damage::AppendFinalAgain => f.extend(seg(&good, 5)),
            Damage::Swap(a, b) => {
                f[off(a)..off(a + 1)].copy_from_slice(&seg(&good, b));
                f[off(b)..off(b + 1)].copy_from_slice(&seg(&good, a));
            }
            Damage::Splice(s) => {
                let other = encrypt(&plain, SEG, 8).await;
                f[off(s)..off(s + 1)].copy_from_slice(&seg(&other, s));
            }
            Damage::Duplicate(a, b) => f[off(a)..off(a + 1)].copy_from_slice(&seg(&good, b)),
            Damage::OtherHeader => {
                let other = encrypt(&plain, SEG, 9).await;
                f[..HEADER_LEN].copy_from_slice(&other[..HEADER_LEN]);
            }
        }
        let (out, res) = decrypt(f, &pass(), 3).await;
        let err = res.expect_err("damaged file accepted");
        let got = match &err {
            CryptoError::BadHeader { .. } => Want::BadHeader,
            CryptoError::Tampered { segment, offset } => {
                assert_eq!(*offset as usize, off(*segment), "{err}");
                Want::Tampered(*segment)
            }
            CryptoError::Truncated { segment, .. } => Want::Truncated(*segment),
            CryptoError::TrailingData { offset } => {
                assert_eq!(*offset as usize, off(6), "{err}");
                Want::Trailing
            }
            other => panic!("unexpected error {other:?}"),
        };
        assert_eq!(got, want, "{err}");
        // Everything before the bad segment, and nothing of it or after it.
        assert_eq!(out.len(), released, "{err}");
        assert!(out == plain[..released]);
        let msg = err.to_string();
        if let Want::Tampered(s) | Want::Truncated(s) = want {
            assert!(msg.contains(&format!("segment {s}")), "{msg}");
        }
    }

    #[tokio::test]
    async fn wrong_passphrase_is_its_own_error() {
        let file = encrypt(b"secret rows", SEG, 1).await;
        let (out, res) = decrypt(file, &Secret::new("Correct horse battery staple"), 1).await;
        assert!(matches!(res, Err(CryptoError::WrongPassphrase)), "{res:?}");
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn empty_passphrase_is_missing() {
        let file = encrypt(b"x", SEG, 1).await;
        let (_, res) = decrypt(file, &Secret::new(""), 1).await;
        assert!(
            matches!(res, Err(CryptoError::MissingPassphrase)),
            "{res:?}"
        );
        let err = encrypt_writer_with(
            Box::new(tokio::io::sink()),
            &Secret::new(""),
            KdfParams::for_tests(),
            SEG,
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, CryptoError::MissingPassphrase));
    }

    #[rstest]
    #[case::four_tib(u32::MAX, 3, 4)]
    #[case::two_gib(2 * 1024 * 1024, 3, 4)]
    #[case::too_many_passes(65536, 1_000_000, 4)]
    #[case::too_many_lanes(65536, 3, 255)]
    #[tokio::test]
    async fn out_of_range_kdf_is_refused_before_running_it(
        #[case] memory_kib: u32,
        #[case] iterations: u32,
        #[case] parallelism: u32,
    ) {
        let kdf = KdfParams {
            memory_kib,
            iterations,
            parallelism,
        };
        let mut file = crafted_header(kdf).to_vec();
        file.extend(data(3 * WIRE, 1));
        let start = Instant::now();
        let (out, res) = decrypt(file, &pass(), 1).await;
        // Running Argon2id with any of these would take seconds or fail to
        // allocate; refusing takes microseconds.
        assert!(start.elapsed() < Duration::from_millis(200));
        assert!(
            matches!(res, Err(CryptoError::KdfOutOfRange { .. })),
            "{res:?}"
        );
        assert!(out.is_empty());
        // Writers refuse them too.
        let err = encrypt_writer_with(Box::new(tokio::io::sink()), &pass(), kdf, SEG)
            .await
            .err()
            .unwrap();
        assert!(matches!(err, CryptoError::KdfOutOfRange { .. }));
    }

    #[tokio::test]
    async fn same_input_twice_differs() {
        let plain = data(3 * S, 1);
        let a = encrypt(&plain, SEG, 1).await;
        let b = encrypt(&plain, SEG, 1).await;
        assert_eq!(a.len(), b.len());
        assert_ne!(a[28..44], b[28..44], "salt");
        assert_ne!(a[44..51], b[44..51], "nonce prefix");
        for i in 0..4 {
            assert_ne!(a[off(i)..off(i + 1)], b[off(i)..off(i + 1)], "segment {i}");
        }
    }

    #[tokio::test]
    async fn default_parameters_work() {
        let sink = SharedVec::default();
        let mut w = crate::format::crypto::encrypt_writer(
            Box::new(sink.clone()),
            &pass(),
            KdfParams::default(),
        )
        .await
        .unwrap();
        w.write_all(b"hello").await.unwrap();
        w.shutdown().await.unwrap();
        let file = sink.take();
        let info = crate::format::crypto::header_info(&file).unwrap();
        assert_eq!(info.kdf_params, KdfParams::default());
        assert_eq!(info.segment_size, DEFAULT_SEGMENT_SIZE);
        let (out, res) = decrypt(file, &pass(), 1).await;
        res.unwrap();
        assert_eq!(out, b"hello");
    }

    #[tokio::test]
    async fn writer_dropped_without_shutdown_reads_as_truncated() {
        let sink = SharedVec::default();
        let mut w =
            encrypt_writer_with(Box::new(sink.clone()), &pass(), KdfParams::for_tests(), SEG)
                .await
                .unwrap();
        w.write_all(&data(3 * S + 5, 1)).await.unwrap();
        w.flush().await.unwrap();
        drop(w);
        let (out, res) = decrypt(sink.take(), &pass(), 1).await;
        assert!(
            matches!(res, Err(CryptoError::Truncated { segment: 3, .. })),
            "{res:?}"
        );
        assert_eq!(out.len(), 3 * S);
    }

    #[tokio::test]
    async fn write_after_shutdown_fails() {
        let mut w = encrypt_writer_with(
            Box::new(tokio::io::sink()),
            &pass(),
            KdfParams::for_tests(),
            SEG,
        )
        .await
        .unwrap();
        w.shutdown().await.unwrap();
        w.shutdown().await.unwrap();
        assert!(w.write_all(b"late").await.is_err());
    }

    /// Our segments are exactly RustCrypto's STREAM (`StreamBE32`) with the
    /// header as AAD: an independent implementation decrypts them.
    #[tokio::test]
    async fn segments_match_rustcrypto_stream_be32() {
        use aead_stream::aead::Payload;
        use aead_stream::{NewStream, StreamBE32, StreamPrimitive};

        let plain = data(3 * S + 10, 4);
        let file = encrypt(&plain, SEG, 4).await;
        let header = Header::parse(&file).unwrap();
        let keys = Keys::derive(&header, &pass()).await.unwrap();
        let stream = StreamBE32::from_aead(keys.payload.clone(), &header.nonce_prefix.into());
        let mut out = Vec::new();
        for i in 0..4u32 {
            let seg = &file[off(i.into())..off(u64::from(i) + 1)];
            let pt = stream
                .decrypt(
                    i,
                    i == 3,
                    Payload {
                        msg: seg,
                        aad: &header.bytes,
                    },
                )
                .unwrap();
            out.extend(pt);
        }
        let mut want = plain.clone();
        want.push(PAD_START);
        want.resize(4 * S, 0);
        assert!(out == want);
    }
}
