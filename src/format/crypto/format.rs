//! Format version 1 of the encrypted container: header layout, KDF
//! parameters and their bounds, the key schedule and segment nonces.
//!
//! `docs/FORMAT.md` is the specification; this file is its implementation and
//! must change only together with it (and with a new version number: files
//! written today must stay readable forever, see the golden-file test).
//! Not responsible for streaming (see [`super::stream`]).

use std::fmt;

use aes_gcm::{Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::CryptoError;
use crate::secret::Secret;

/// First bytes of every encrypted file: 0x89 "SELMAI" LF. The high byte
/// keeps it from looking like text (or SQL, gzip, zstd, OpenPGP); the LF
/// catches transfers that rewrite line ends.
pub const MAGIC: [u8; 8] = *b"\x89SELMAI\n";
/// The format version written by this build (and the newest it reads).
pub const VERSION: u8 = 1;
/// Length of the version-1 header in bytes.
pub const HEADER_LEN: usize = 91;
/// Plaintext bytes per segment written by default (64 KiB).
pub const DEFAULT_SEGMENT_SIZE: u32 = 64 * 1024;
/// Smallest segment size a reader accepts.
pub const MIN_SEGMENT_SIZE: u32 = 1024;
/// Largest segment size a reader accepts (it bounds the reader's buffer).
pub const MAX_SEGMENT_SIZE: u32 = 16 * 1024 * 1024;
/// AES-GCM tag length; every segment on disk is `segment_size + TAG_LEN` bytes.
pub const TAG_LEN: usize = 16;
/// Length of the random nonce prefix (12-byte GCM nonce minus counter and flag).
pub const NONCE_PREFIX_LEN: usize = 7;
/// Length of the random Argon2id salt.
pub const SALT_LEN: usize = 16;

/// Algorithm id 1: AES-256-GCM with STREAM-BE32 nonces.
const AEAD_AES256GCM_STREAM: u8 = 1;
/// KDF id 1: Argon2id, version 0x13.
const KDF_ARGON2ID: u8 = 1;

const OFF_VERSION: usize = 8;
const OFF_AEAD: usize = 9;
const OFF_KDF: usize = 10;
const OFF_FLAGS: usize = 11;
const OFF_SEGMENT: usize = 12;
const OFF_MEMORY: usize = 16;
const OFF_ITER: usize = 20;
const OFF_PAR: usize = 24;
const OFF_SALT: usize = 28;
const OFF_PREFIX: usize = OFF_SALT + SALT_LEN; // 44
const OFF_MAC: usize = OFF_PREFIX + NONCE_PREFIX_LEN; // 51
const MAC_LEN: usize = 32;
const OFF_CHECKSUM: usize = OFF_MAC + MAC_LEN; // 83
const CHECKSUM_LEN: usize = 8;
const _: () = assert!(OFF_CHECKSUM + CHECKSUM_LEN == HEADER_LEN);

const INFO_HEADER_KEY: &[u8] = b"selmai-backup v1 header key";
const INFO_PAYLOAD_KEY: &[u8] = b"selmai-backup v1 payload key";

/// Argon2id cost parameters; stored in the header of every file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB (`m`).
    pub memory_kib: u32,
    /// Passes over memory (`t`).
    pub iterations: u32,
    /// Lanes (`p`).
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 46 MiB, t=4, p=4: the memory of OWASP's first Argon2id
    /// recommendation with four passes instead of one, so that a guess
    /// costs as much memory-time (184 MiB-passes) as RFC 9106's
    /// memory-constrained option (64 MiB, t=3), about a quarter of a
    /// second per file on one core, while a backup's peak memory stays
    /// under 64 MiB (the KDF's memory is most of it). Files written with
    /// other parameters (64 MiB, t=3 before) read the same: they are in the
    /// header.
    fn default() -> Self {
        KdfParams {
            memory_kib: 46 * 1024,
            iterations: 4,
            parallelism: 4,
        }
    }
}

impl KdfParams {
    /// Accepted memory, KiB: 8 MiB ..= 1 GiB.
    pub const MEMORY_KIB: std::ops::RangeInclusive<u32> = 8 * 1024..=1024 * 1024;
    /// Accepted iterations.
    pub const ITERATIONS: std::ops::RangeInclusive<u32> = 1..=10;
    /// Accepted parallelism.
    pub const PARALLELISM: std::ops::RangeInclusive<u32> = 1..=16;

    /// The cheapest parameters still in range (8 MiB, t=1, p=1): for tests.
    pub fn for_tests() -> Self {
        KdfParams {
            memory_kib: *Self::MEMORY_KIB.start(),
            iterations: 1,
            parallelism: 1,
        }
    }

    /// Refuse parameters outside the bounds. Readers call this before
    /// running the KDF; writers too, so we never write a file we would refuse.
    pub fn validate(&self) -> Result<(), CryptoError> {
        let check = |name: &str, v: u32, r: std::ops::RangeInclusive<u32>| {
            if r.contains(&v) {
                Ok(())
            } else {
                Err(CryptoError::KdfOutOfRange {
                    detail: format!(
                        "Argon2id {name} is {v}, accepted {}..={}",
                        r.start(),
                        r.end()
                    ),
                })
            }
        };
        check("memory (KiB)", self.memory_kib, Self::MEMORY_KIB)?;
        check("iterations", self.iterations, Self::ITERATIONS)?;
        check("parallelism", self.parallelism, Self::PARALLELISM)
    }
}

impl fmt::Display for KdfParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "argon2id m={} KiB t={} p={}",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

/// What the header says, without any secret: for the manifest and `list`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderInfo {
    /// Format version (1).
    pub version: u8,
    /// AEAD and nonce scheme, `"aes-256-gcm-stream-be32"`.
    pub aead: String,
    /// Key derivation function, `"argon2id-v19"`.
    pub kdf: String,
    /// The KDF cost parameters.
    pub kdf_params: KdfParams,
    /// Plaintext bytes per segment.
    pub segment_size: u32,
}

/// Does `first_bytes` (the start of a file) begin with our magic?
pub fn is_encrypted(first_bytes: &[u8]) -> bool {
    first_bytes.starts_with(&MAGIC)
}

/// A parsed version-1 header. Checked for syntax, checksum and ranges; the
/// MAC can only be checked with the key ([`Keys::check_header`]).
#[derive(Clone)]
pub struct Header {
    /// The header bytes exactly as in the file: the AAD of every segment.
    pub bytes: [u8; HEADER_LEN],
    /// KDF parameters.
    pub kdf: KdfParams,
    /// Plaintext bytes per segment.
    pub segment_size: u32,
    /// Argon2id salt.
    pub salt: [u8; SALT_LEN],
    /// Nonce prefix of every segment.
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn checksum(bytes: &[u8]) -> [u8; CHECKSUM_LEN] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&digest[..CHECKSUM_LEN]);
    out
}

fn bad(detail: impl Into<String>) -> CryptoError {
    CryptoError::BadHeader {
        detail: detail.into(),
    }
}

impl Header {
    /// A new header with a fresh random salt and nonce prefix. The MAC is
    /// filled in by [`Keys::seal_header`].
    pub fn new(kdf: KdfParams, segment_size: u32) -> Result<Header, CryptoError> {
        Header::with_random(kdf, segment_size, |buf| {
            getrandom::fill(buf).map_err(|e| CryptoError::Kdf {
                detail: format!("the operating system's random generator failed: {e}"),
            })
        })
    }

    fn with_random(
        kdf: KdfParams,
        segment_size: u32,
        mut fill: impl FnMut(&mut [u8]) -> Result<(), CryptoError>,
    ) -> Result<Header, CryptoError> {
        kdf.validate()?;
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(bad(format!(
                "segment size {segment_size} is out of range {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}"
            )));
        }
        let mut salt = [0u8; SALT_LEN];
        let mut nonce_prefix = [0u8; NONCE_PREFIX_LEN];
        fill(&mut salt)?;
        fill(&mut nonce_prefix)?;
        let mut b = [0u8; HEADER_LEN];
        b[..OFF_VERSION].copy_from_slice(&MAGIC);
        b[OFF_VERSION] = VERSION;
        b[OFF_AEAD] = AEAD_AES256GCM_STREAM;
        b[OFF_KDF] = KDF_ARGON2ID;
        b[OFF_FLAGS] = 0;
        b[OFF_SEGMENT..OFF_SEGMENT + 4].copy_from_slice(&segment_size.to_be_bytes());
        b[OFF_MEMORY..OFF_MEMORY + 4].copy_from_slice(&kdf.memory_kib.to_be_bytes());
        b[OFF_ITER..OFF_ITER + 4].copy_from_slice(&kdf.iterations.to_be_bytes());
        b[OFF_PAR..OFF_PAR + 4].copy_from_slice(&kdf.parallelism.to_be_bytes());
        b[OFF_SALT..OFF_PREFIX].copy_from_slice(&salt);
        b[OFF_PREFIX..OFF_MAC].copy_from_slice(&nonce_prefix);
        Ok(Header {
            bytes: b,
            kdf,
            segment_size,
            salt,
            nonce_prefix,
        })
    }

    /// Parse the first [`HEADER_LEN`] bytes of `bytes`. Order of checks:
    /// magic, version, length, checksum (so accidental damage anywhere in the
    /// header is reported as such), ids and flags, segment size, KDF bounds.
    /// Nothing expensive runs here.
    pub fn parse(bytes: &[u8]) -> Result<Header, CryptoError> {
        if !is_encrypted(bytes) {
            return Err(bad(
                "the file does not start with the selmai-backup magic bytes: it is not an encrypted selmai-backup file",
            ));
        }
        match bytes.get(OFF_VERSION) {
            None => {
                return Err(CryptoError::Truncated {
                    segment: 0,
                    offset: bytes.len() as u64,
                    detail: format!("the header is {} of {HEADER_LEN} bytes", bytes.len()),
                })
            }
            Some(&VERSION) => {}
            Some(&found) => {
                return Err(CryptoError::UnsupportedVersion {
                    found,
                    supported: VERSION,
                })
            }
        }
        if bytes.len() < HEADER_LEN {
            return Err(CryptoError::Truncated {
                segment: 0,
                offset: bytes.len() as u64,
                detail: format!("the header is {} of {HEADER_LEN} bytes", bytes.len()),
            });
        }
        let b: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().expect("length checked");
        if checksum(&b[..OFF_CHECKSUM]) != b[OFF_CHECKSUM..] {
            return Err(bad(format!(
                "header checksum mismatch (bytes 0..{HEADER_LEN}): the header is damaged, the file cannot be decrypted; use another copy"
            )));
        }
        if b[OFF_AEAD] != AEAD_AES256GCM_STREAM {
            return Err(bad(format!(
                "unknown algorithm id {} at byte {OFF_AEAD}",
                b[OFF_AEAD]
            )));
        }
        if b[OFF_KDF] != KDF_ARGON2ID {
            return Err(bad(format!(
                "unknown KDF id {} at byte {OFF_KDF}",
                b[OFF_KDF]
            )));
        }
        if b[OFF_FLAGS] != 0 {
            return Err(bad(format!(
                "unknown flags {:#04x} at byte {OFF_FLAGS}",
                b[OFF_FLAGS]
            )));
        }
        let segment_size = be32(&b, OFF_SEGMENT);
        if !(MIN_SEGMENT_SIZE..=MAX_SEGMENT_SIZE).contains(&segment_size) {
            return Err(bad(format!(
                "segment size {segment_size} is out of range {MIN_SEGMENT_SIZE}..={MAX_SEGMENT_SIZE}"
            )));
        }
        let kdf = KdfParams {
            memory_kib: be32(&b, OFF_MEMORY),
            iterations: be32(&b, OFF_ITER),
            parallelism: be32(&b, OFF_PAR),
        };
        kdf.validate()?;
        Ok(Header {
            kdf,
            segment_size,
            salt: b[OFF_SALT..OFF_PREFIX].try_into().expect("fixed"),
            nonce_prefix: b[OFF_PREFIX..OFF_MAC].try_into().expect("fixed"),
            bytes: b,
        })
    }

    /// The secret-free description.
    pub fn info(&self) -> HeaderInfo {
        HeaderInfo {
            version: VERSION,
            aead: "aes-256-gcm-stream-be32".into(),
            kdf: "argon2id-v19".into(),
            kdf_params: self.kdf,
            segment_size: self.segment_size,
        }
    }

    /// Bytes of one segment on disk.
    pub fn wire_segment_len(&self) -> usize {
        self.segment_size as usize + TAG_LEN
    }

    /// Byte offset of segment `index` in the file.
    pub fn segment_offset(&self, index: u64) -> u64 {
        HEADER_LEN as u64 + index * self.wire_segment_len() as u64
    }

    /// The 12-byte GCM nonce of segment `index`: prefix || BE32(index) ||
    /// last flag, as RustCrypto's `StreamBE32`. `None` past 2^32 segments.
    pub fn nonce(&self, index: u64, last: bool) -> Option<[u8; 12]> {
        let counter = u32::try_from(index).ok()?;
        let mut n = [0u8; 12];
        n[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        n[NONCE_PREFIX_LEN..11].copy_from_slice(&counter.to_be_bytes());
        n[11] = u8::from(last);
        Some(n)
    }
}

/// The per-file keys, derived from the passphrase and the header.
pub struct Keys {
    header_key: Zeroizing<[u8; 32]>,
    /// The AEAD for the segments (its key schedule is zeroized on drop).
    pub payload: Aes256Gcm,
}

impl Keys {
    /// Argon2id(passphrase, salt) with the header's parameters, then
    /// HKDF-Expand-SHA256 into the header key and the payload key. CPU- and
    /// memory-heavy: runs on a blocking thread.
    pub async fn derive(header: &Header, passphrase: &Secret) -> Result<Keys, CryptoError> {
        if passphrase.expose().is_empty() {
            return Err(CryptoError::MissingPassphrase);
        }
        // Re-checked here so that no caller can reach the KDF with a header
        // that skipped `parse`.
        header.kdf.validate()?;
        let pass = Zeroizing::new(passphrase.expose().as_bytes().to_vec());
        let (kdf, salt) = (header.kdf, header.salt);
        tokio::task::spawn_blocking(move || Keys::derive_blocking(&pass, &salt, kdf))
            .await
            .map_err(|e| CryptoError::Kdf {
                detail: format!("the KDF thread failed: {e}"),
            })?
    }

    fn derive_blocking(
        pass: &[u8],
        salt: &[u8; SALT_LEN],
        kdf: KdfParams,
    ) -> Result<Keys, CryptoError> {
        let kdf_err = |e: argon2::Error| CryptoError::Kdf {
            detail: e.to_string(),
        };
        let params = argon2::Params::new(kdf.memory_kib, kdf.iterations, kdf.parallelism, Some(32))
            .map_err(kdf_err)?;
        let argon =
            argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut master = Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(pass, salt, master.as_mut())
            .map_err(kdf_err)?;
        // Argon2 output is uniformly random, so it serves directly as the
        // HKDF pseudo-random key (Expand only, no Extract).
        let hk = Hkdf::<Sha256>::from_prk(master.as_ref()).expect("32 bytes is a valid PRK");
        let mut header_key = Zeroizing::new([0u8; 32]);
        let mut payload_key = Zeroizing::new([0u8; 32]);
        hk.expand(INFO_HEADER_KEY, header_key.as_mut())
            .expect("32 bytes is a valid length");
        hk.expand(INFO_PAYLOAD_KEY, payload_key.as_mut())
            .expect("32 bytes is a valid length");
        let payload = Aes256Gcm::new_from_slice(payload_key.as_ref()).expect("32-byte key");
        Ok(Keys {
            header_key,
            payload,
        })
    }

    fn mac(&self, header: &[u8; HEADER_LEN]) -> Hmac<Sha256> {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(self.header_key.as_ref()).expect("any key size");
        mac.update(&header[..OFF_MAC]);
        mac
    }

    /// Fill in the MAC and the checksum of a new header.
    pub fn seal_header(&self, header: &mut Header) {
        let tag = self.mac(&header.bytes).finalize().into_bytes();
        header.bytes[OFF_MAC..OFF_CHECKSUM].copy_from_slice(&tag);
        let sum = checksum(&header.bytes[..OFF_CHECKSUM]);
        header.bytes[OFF_CHECKSUM..].copy_from_slice(&sum);
    }

    /// Verify the header MAC. The checksum has already passed, so the header
    /// is as written; a mismatch means another passphrase derived this key.
    pub fn check_header(&self, header: &Header) -> Result<(), CryptoError> {
        self.mac(&header.bytes)
            .verify_slice(&header.bytes[OFF_MAC..OFF_CHECKSUM])
            .map_err(|_| CryptoError::WrongPassphrase)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rstest::rstest;

    /// The README tells operators the parameters new files are written
    /// with; it must say what `KdfParams::default()` really does.
    #[test]
    fn readme_states_the_default_kdf_parameters() {
        let readme = include_str!("../../../README.md");
        let d = KdfParams::default();
        let said = format!(
            "Argon2id ({} MiB, t={}, p={})",
            d.memory_kib / 1024,
            d.iterations,
            d.parallelism
        );
        assert!(
            readme.contains(&said),
            "README.md does not say {said:?} in its Encryption section"
        );
    }

    /// A syntactically valid header (correct checksum) with any KDF
    /// parameters, as an attacker would craft it.
    pub(crate) fn crafted_header(kdf: KdfParams) -> [u8; HEADER_LEN] {
        let mut b = Header::new(KdfParams::for_tests(), DEFAULT_SEGMENT_SIZE)
            .unwrap()
            .bytes;
        b[OFF_MEMORY..OFF_MEMORY + 4].copy_from_slice(&kdf.memory_kib.to_be_bytes());
        b[OFF_ITER..OFF_ITER + 4].copy_from_slice(&kdf.iterations.to_be_bytes());
        b[OFF_PAR..OFF_PAR + 4].copy_from_slice(&kdf.parallelism.to_be_bytes());
        let sum = checksum(&b[..OFF_CHECKSUM]);
        b[OFF_CHECKSUM..].copy_from_slice(&sum);
        b
    }

    #[rstest]
    #[case(KdfParams::default(), true)]
    #[case(KdfParams::for_tests(), true)]
    #[case(KdfParams { memory_kib: 1024 * 1024, iterations: 10, parallelism: 16 }, true)]
    #[case(KdfParams { memory_kib: 8 * 1024 - 1, iterations: 3, parallelism: 4 }, false)]
    #[case(KdfParams { memory_kib: 1024 * 1024 + 1, iterations: 3, parallelism: 4 }, false)]
    #[case(KdfParams { memory_kib: u32::MAX, iterations: 3, parallelism: 4 }, false)]
    #[case(KdfParams { memory_kib: 65536, iterations: 0, parallelism: 4 }, false)]
    #[case(KdfParams { memory_kib: 65536, iterations: 11, parallelism: 4 }, false)]
    #[case(KdfParams { memory_kib: 65536, iterations: 3, parallelism: 0 }, false)]
    #[case(KdfParams { memory_kib: 65536, iterations: 3, parallelism: 17 }, false)]
    fn kdf_bounds(#[case] p: KdfParams, #[case] ok: bool) {
        assert_eq!(p.validate().is_ok(), ok, "{p}");
        let parsed = Header::parse(&crafted_header(p));
        match (ok, parsed) {
            (true, Ok(h)) => assert_eq!(h.kdf, p),
            (false, Err(CryptoError::KdfOutOfRange { .. })) => {}
            (_, other) => panic!("{p}: {:?}", other.map(|h| h.kdf)),
        }
    }

    #[test]
    fn layout_offsets_match_the_spec() {
        let h = Header::new(KdfParams::default(), DEFAULT_SEGMENT_SIZE).unwrap();
        let b = h.bytes;
        assert_eq!(&b[0..8], b"\x89SELMAI\n");
        assert_eq!(b[8..12], [1, 1, 1, 0]);
        assert_eq!(b[12..16], 65536u32.to_be_bytes());
        assert_eq!(b[16..20], 47104u32.to_be_bytes());
        assert_eq!(b[20..24], 4u32.to_be_bytes());
        assert_eq!(b[24..28], 4u32.to_be_bytes());
        assert_eq!(b[28..44], h.salt);
        assert_eq!(b[44..51], h.nonce_prefix);
        let n = h.nonce(0x0102_0304, true).unwrap();
        assert_eq!(&n[..7], &h.nonce_prefix);
        assert_eq!(n[7..], [1, 2, 3, 4, 1]);
        assert!(h.nonce(u64::from(u32::MAX) + 1, false).is_none());
    }

    #[rstest]
    #[case(&b"\x89SELMAI\n"[..], true)]
    #[case(&b"\x89SELMAI\n\x01rest"[..], true)]
    #[case(&b"\x89SELMAI"[..], false)]
    #[case(&b"\x1f\x8b\x08\x00"[..], false)]
    #[case(&b"-- MariaDB dump"[..], false)]
    #[case(&b""[..], false)]
    fn magic(#[case] bytes: &[u8], #[case] want: bool) {
        assert_eq!(is_encrypted(bytes), want);
    }

    #[test]
    fn header_parse_errors() {
        let good = crafted_header(KdfParams::for_tests());
        assert!(Header::parse(&good).is_ok());
        assert!(matches!(
            Header::parse(&good[..50]),
            Err(CryptoError::Truncated { .. })
        ));
        let mut v = good;
        v[8] = 2;
        assert!(matches!(
            Header::parse(&v),
            Err(CryptoError::UnsupportedVersion { found: 2, .. })
        ));
        for i in 9..HEADER_LEN {
            let mut x = good;
            x[i] ^= 0x40;
            assert!(
                matches!(Header::parse(&x), Err(CryptoError::BadHeader { .. })),
                "byte {i}"
            );
        }
    }
}
