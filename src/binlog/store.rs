//! Closed segments to the targets, and the chain of segments back.
//!
//! A closed segment goes through the same stages as every backup: blocks
//! compressed on a blocking thread, then encryption when a passphrase is
//! set, into the volume (the primary target) under its final name, and its
//! manifest after it. Every other target (the bucket) gets a copy of the
//! stored bytes from the volume, data first, manifest last, so a segment
//! off-site is whole as soon as its manifest is there; a target that is down
//! is caught up by [`Copier`] later. The plain file on the volume is
//! removed only once the volume holds the stored segment and its manifest.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::segment::{self, SegmentManifest, Summary};
use super::status::OffsitePending;
use crate::backup::offsite::{copy_unit, Unit};
use crate::format::codec::Compression;
use crate::format::manifest::{self, EncryptionInfo};
use crate::secret::Secret;
use crate::target::{self, Target, TargetError, Upload};

/// Errors storing or reading segments.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A target failed.
    #[error(transparent)]
    Target(#[from] TargetError),
    /// The chain does not reach from where it must start to its end.
    #[error("binlog chain: {0}")]
    Gap(String),
    /// Reading the plain segment or compressing it failed.
    #[error("binlog segment {name}: {detail}")]
    Encode {
        /// Segment name.
        name: String,
        /// What failed.
        detail: String,
    },
}

/// How stored segments are encoded.
#[derive(Debug, Clone)]
pub struct Encoding {
    /// Compression of new segments (`BACKUP_COMPRESSION`).
    pub compression: Compression,
    /// Encryption passphrase, when set.
    pub passphrase: Option<Secret>,
}

/// A writer that hashes and counts what passes into an upload.
struct Hashing {
    up: Box<dyn Upload>,
    hash: Sha256,
    size: u64,
}

impl AsyncWrite for Hashing {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = &mut *self;
        match std::pin::Pin::new(&mut this.up).poll_write(cx, buf) {
            std::task::Poll::Ready(Ok(n)) => {
                this.hash.update(&buf[..n]);
                this.size += n as u64;
                std::task::Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.up).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.up).poll_shutdown(cx)
    }
}

fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Gzip(_) => "gzip",
        Compression::Zstd(_) => "zstd",
        Compression::None => "none",
    }
}

/// Encode the plain segment at `path` into `volume` and write its manifest
/// there. Returns the manifest. Nothing is visible under the final names
/// if this fails.
pub async fn store_on_volume(
    volume: &dyn Target,
    path: &Path,
    summary: &Summary,
    binlog_file: &str,
    prefix: &str,
    enc: &Encoding,
    follows: Option<String>,
) -> Result<SegmentManifest, StoreError> {
    let name = segment::segment_name(
        prefix,
        binlog_file,
        summary.start_position,
        enc.compression.extension(),
        enc.passphrase.is_some(),
    );
    let fail = |detail: String| StoreError::Encode {
        name: name.clone(),
        detail,
    };
    let raw_sha256 = {
        let p = path.to_owned();
        tokio::task::spawn_blocking(move || segment::sha256_file(&p))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(format!("reading {}: {e}", path.display())))?
    };
    let up = volume.create(&name).await?;
    let sink = Hashing {
        up,
        hash: Sha256::new(),
        size: 0,
    };
    let (encoded, encryption) = match encode_file(path, sink, enc).await {
        Ok(v) => v,
        Err((e, up)) => {
            if let Some(up) = up {
                let _ = up.abort().await;
            }
            return Err(fail(e));
        }
    };
    let Hashing { up, hash, size } = encoded;
    up.commit().await?;
    let m = SegmentManifest {
        format_version: segment::FORMAT_VERSION,
        kind: "binlog".into(),
        tool: format!("selmai-backup {}", env!("CARGO_PKG_VERSION")),
        file: name.clone(),
        size,
        sha256: hex::encode(hash.finalize()),
        compression: compression_name(enc.compression).into(),
        encryption,
        server_id: summary.server_id,
        binlog_file: binlog_file.to_owned(),
        start_position: summary.start_position,
        end_position: summary.end_position,
        header_len: summary.header_len,
        raw_size: summary.complete_len,
        raw_sha256,
        first_gtid: summary.first_gtid.map(|g| g.to_string()),
        last_gtid: summary.last_gtid.map(|g| g.to_string()),
        first_event_time: summary.first_time.map(segment::event_time),
        last_event_time: summary.last_time.map(segment::event_time),
        transactions: summary.transactions,
        file_complete: summary.ends_file,
        follows,
        closed_at: Utc::now(),
    };
    if let Err(e) = target::put_bytes(volume, &manifest::name_for(&name), &m.to_json()).await {
        let _ = volume.delete(&name).await;
        return Err(e.into());
    }
    Ok(m)
}

type EncodeFailure = (String, Option<Box<dyn Upload>>);

/// Compress `path` in 1 MiB blocks (each on a blocking thread) and write
/// them, encrypted when a passphrase is set, into `sink`; shut it down.
async fn encode_file(
    path: &Path,
    sink: Hashing,
    enc: &Encoding,
) -> Result<(Hashing, Option<EncryptionInfo>), EncodeFailure> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) => return Err((format!("opening {}: {e}", path.display()), Some(sink.up))),
    };
    enum Out {
        Plain(Hashing),
        Sealed(Box<crate::format::crypto::EncryptWriter<Hashing>>),
    }
    let (mut out, encryption) = match &enc.passphrase {
        Some(p) => {
            match crate::format::crypto::EncryptWriter::new(
                sink,
                p,
                crate::format::crypto::KdfParams::default(),
            )
            .await
            {
                Ok(w) => {
                    let info = EncryptionInfo::from(w.header_info());
                    (Out::Sealed(Box::new(w)), Some(info))
                }
                // The sink is gone with the failed writer; its upload was never
                // committed, so nothing is visible.
                Err(e) => return Err((format!("cannot encrypt: {e}"), None)),
            }
        }
        None => (Out::Plain(sink), None),
    };
    let compression = enc.compression;
    let result: std::io::Result<()> = async {
        loop {
            let mut block = Vec::with_capacity(1 << 20);
            (&mut file).take(1 << 20).read_to_end(&mut block).await?;
            if block.is_empty() {
                break;
            }
            let packed = tokio::task::spawn_blocking(move || compression.compress_block(&block))
                .await
                .map_err(std::io::Error::other)??;
            match &mut out {
                Out::Plain(w) => w.write_all(&packed).await?,
                Out::Sealed(w) => w.write_all(&packed).await?,
            }
        }
        match &mut out {
            Out::Plain(w) => w.shutdown().await,
            Out::Sealed(w) => w.shutdown().await,
        }
    }
    .await;
    let sink = match out {
        Out::Plain(w) => w,
        Out::Sealed(w) => w.into_inner(),
    };
    match result {
        Ok(()) => Ok((sink, encryption)),
        Err(e) => Err((e.to_string(), Some(sink.up))),
    }
}

/// The segments of `prefix` in `t` that have a manifest, with it, in chain
/// order (binlog file, then position). Segments without a manifest are
/// incomplete copies and are left out.
pub async fn list_chain(t: &dyn Target, prefix: &str) -> Result<Vec<SegmentManifest>, StoreError> {
    let objects = t.list(&segment::list_prefix(prefix)).await?;
    let names: std::collections::HashSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    let mut out = Vec::new();
    for o in &objects {
        let Some(data) = o.name.strip_suffix(manifest::SUFFIX) else {
            continue;
        };
        if segment::parse_segment_name(prefix, data).is_none() || !names.contains(data) {
            continue;
        }
        let bytes = target::get_bytes(t, &o.name).await?;
        let m = SegmentManifest::parse(&o.name, &bytes).map_err(|detail| StoreError::Encode {
            name: data.to_owned(),
            detail,
        })?;
        out.push(m);
    }
    sort_chain(&mut out);
    Ok(out)
}

/// Order segments by binlog file (numerically) and start position.
pub fn sort_chain(v: &mut [SegmentManifest]) {
    v.sort_by(|a, b| {
        (segment::file_index(&a.binlog_file), a.start_position)
            .cmp(&(segment::file_index(&b.binlog_file), b.start_position))
    });
}

/// Keeps the off-site targets (`targets[1..]`) level with the volume's
/// chain: copies what each lacks, oldest first, each segment's data before
/// its manifest ([`crate::backup::offsite::copy_unit`], as every backup),
/// so a segment off-site is whole once its manifest is there. Remembers what
/// each target held when last listed, to say what it lacks while it cannot
/// be listed. An outage is logged once as a warning when it starts and once
/// when it ends, not at every attempt.
pub struct Copier {
    targets: Vec<Arc<dyn Target>>,
    prefix: String,
    started: chrono::DateTime<Utc>,
    /// Per off-site target: the manifests it holds, `None` until listed once.
    present: HashMap<&'static str, Option<HashSet<String>>>,
    /// Targets whose last attempt failed.
    failing: HashSet<&'static str>,
}

impl Copier {
    /// A copier from `targets[0]` (the volume) to the others.
    pub fn new(targets: &[Arc<dyn Target>], prefix: &str) -> Self {
        Copier {
            targets: targets.to_vec(),
            prefix: prefix.to_owned(),
            started: Utc::now(),
            present: HashMap::new(),
            failing: HashSet::new(),
        }
    }

    /// Log a failed attempt on `label`: a warning the first time.
    fn failed(failing: &mut HashSet<&'static str>, label: &'static str, what: &str, error: &str) {
        if failing.insert(label) {
            tracing::warn!(target = label, error, "{what}; the archive keeps the segments on the volume and tries again every BINLOG_UPLOAD_SECONDS");
        } else {
            tracing::debug!(target = label, error, "{what}");
        }
    }

    /// Copy to every off-site target the segments of `volume_chain` it
    /// lacks, oldest first; on a target that fails, stop at its first
    /// failure (the rest waits for the next call). Returns what each target
    /// still lacks (nothing: every target is level with the volume).
    pub async fn sync(&mut self, volume_chain: &[SegmentManifest]) -> Vec<OffsitePending> {
        let Some((volume, rest)) = self.targets.split_first() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for t in rest {
            let label = t.label();
            let sizes: HashMap<String, u64> =
                match t.list(&segment::list_prefix(&self.prefix)).await {
                    Ok(objs) => objs.into_iter().map(|o| (o.name, o.size)).collect(),
                    Err(e) => {
                        Self::failed(
                            &mut self.failing,
                            label,
                            "cannot list the binlog segments off-site",
                            &e.to_string(),
                        );
                        // What it lacked when last listed, or (never listed)
                        // every segment stored since the archive started.
                        let known = self.present.get(label).cloned().flatten();
                        let missing: Vec<&SegmentManifest> = volume_chain
                            .iter()
                            .filter(|m| match &known {
                                Some(have) => !have.contains(&manifest::name_for(&m.file)),
                                None => m.closed_at >= self.started,
                            })
                            .collect();
                        out.extend(OffsitePending::of(label, &missing, &e.to_string()));
                        continue;
                    }
                };
            let mut have: HashSet<String> = sizes
                .keys()
                .filter(|n| n.ends_with(manifest::SUFFIX))
                .cloned()
                .collect();
            let mut missing = Vec::new();
            let mut failure: Option<String> = None;
            for m in volume_chain {
                let done = manifest::name_for(&m.file);
                if have.contains(&done) {
                    continue;
                }
                if failure.is_some() {
                    missing.push(m);
                    continue;
                }
                let unit = Unit::single(&m.file, m.closed_at);
                match copy_unit(volume.as_ref(), t.as_ref(), &unit, &sizes).await {
                    Ok(()) => {
                        tracing::info!(target = label, file = %m.file, "binlog segment copied");
                        have.insert(done);
                    }
                    // Retention removed it from the volume meanwhile: no
                    // kept dump needs it, nothing to copy.
                    Err(_) if matches!(volume.metadata(&m.file).await, Ok(None)) => {}
                    Err(e) => {
                        missing.push(m);
                        failure = Some(format!("{}: {e}", m.file));
                    }
                }
            }
            self.present.insert(label, Some(have));
            match failure {
                Some(why) => {
                    Self::failed(
                        &mut self.failing,
                        label,
                        "a binlog segment could not be copied off-site",
                        &why,
                    );
                    out.extend(OffsitePending::of(label, &missing, &why));
                }
                None => {
                    if self.failing.remove(label) {
                        tracing::info!(
                            target = label,
                            "the binlog segments off-site are level with the volume again"
                        );
                    }
                }
            }
        }
        out
    }
}

/// A stored segment opened for reading: the plain segment bytes, and the
/// size and SHA-256 of the stored bytes read so far (compare them with the
/// manifest once the reader reached its end).
pub struct OpenedSegment {
    /// The plain segment (decrypted, decompressed).
    pub reader: crate::format::codec::BoxRead,
    /// Stored bytes read.
    pub stored_bytes: crate::progress::Counter,
    /// SHA-256 of the stored bytes read.
    pub stored_sha256: crate::progress::SharedHash,
}

/// Open the stored segment `name` in `t` for reading its plain bytes.
pub async fn open_segment(
    t: &dyn Target,
    name: &str,
    passphrase: Option<&Secret>,
) -> Result<OpenedSegment, StoreError> {
    let raw = t.open(name).await?;
    let (metered, counter, hash) = crate::progress::MeteredReader::new(raw);
    let (plain, _) = crate::format::crypto::decrypt_any(Box::new(metered), passphrase)
        .await
        .map_err(|e| StoreError::Encode {
            name: name.to_owned(),
            detail: e.to_string(),
        })?;
    let reader = Compression::from_file_name(name)
        .decoder(tokio::io::BufReader::with_capacity(256 * 1024, plain));
    Ok(OpenedSegment {
        reader,
        stored_bytes: counter,
        stored_sha256: hash,
    })
}

/// Read a stored segment whole and check it against its manifest: stored
/// size and SHA-256, plain size and SHA-256, then every event's length,
/// position and CRC32. Returns the plain bytes.
pub async fn read_verified(
    t: &dyn Target,
    m: &SegmentManifest,
    passphrase: Option<&Secret>,
) -> Result<Vec<u8>, StoreError> {
    let fail = |detail: String| StoreError::Encode {
        name: m.file.clone(),
        detail,
    };
    let mut opened = open_segment(t, &m.file, passphrase).await?;
    let mut plain = Vec::with_capacity(m.raw_size as usize);
    opened
        .reader
        .read_to_end(&mut plain)
        .await
        .map_err(|e| fail(format!("reading: {e}")))?;
    let (size, sha) = (opened.stored_bytes.get(), opened.stored_sha256.hex());
    if size != m.size || sha != m.sha256 {
        return Err(fail(format!(
            "the manifest says {} stored bytes with SHA-256 {}, the {} holds {size} with {sha}",
            m.size,
            m.sha256,
            t.label()
        )));
    }
    let raw_sha = hex::encode(Sha256::digest(&plain));
    if plain.len() as u64 != m.raw_size || raw_sha != m.raw_sha256 {
        return Err(fail(format!(
            "the plain segment has {} bytes with SHA-256 {raw_sha}, the manifest says {} with {}",
            plain.len(),
            m.raw_size,
            m.raw_sha256
        )));
    }
    let s = segment::scan(&plain, m.start_position, true).map_err(|e| fail(e.to_string()))?;
    if s.end_position != m.end_position || s.header_len != m.header_len {
        return Err(fail(format!(
            "its events end at position {} (header {} bytes), the manifest says {} ({} bytes)",
            s.end_position, s.header_len, m.end_position, m.header_len
        )));
    }
    Ok(plain)
}

/// Whether a segment of `file` starting at `start` continues `prev`
/// without a hole: the same file where `prev` ended, or the next file from
/// its start when `prev` reached the end of its file.
pub fn continues(prev: &SegmentManifest, file: &str, start: u64) -> bool {
    (prev.binlog_file == file && prev.end_position == start)
        || (prev.file_complete
            && start == 4
            && segment::file_index(file) == segment::file_index(&prev.binlog_file) + 1)
}

/// Indexes `i` where `chain[i]` does not continue `chain[i - 1]`.
pub fn breaks(chain: &[SegmentManifest]) -> Vec<usize> {
    (1..chain.len())
        .filter(|&i| {
            !continues(
                &chain[i - 1],
                &chain[i].binlog_file,
                chain[i].start_position,
            )
        })
        .collect()
}

/// The index of the segment where replay from `file:position` starts: the
/// one whose range holds the position (or starts right there).
pub fn segment_at(chain: &[SegmentManifest], file: &str, position: u64) -> Option<usize> {
    chain
        .iter()
        .position(|m| {
            m.binlog_file == file && m.start_position <= position && position < m.end_position
        })
        .or_else(|| {
            // The snapshot is the end of a segment: replay starts with the
            // next one (or nothing happened since).
            chain
                .iter()
                .position(|m| m.binlog_file == file && m.end_position == position)
                .map(|i| (i + 1).min(chain.len() - 1))
        })
}

/// Whether the chain covers `file:position` to its end without a break.
pub fn unbroken_from(chain: &[SegmentManifest], file: &str, position: u64) -> bool {
    match segment_at(chain, file, position) {
        Some(i) => breaks(chain).iter().all(|&b| b <= i),
        None => false,
    }
}

/// What [`verify_chain`] read.
#[derive(Debug, Clone, Default)]
pub struct ChainReport {
    /// Segments read and found whole.
    pub segments: usize,
    /// Plain bytes in them.
    pub bytes: u64,
    /// Transactions in them.
    pub transactions: u64,
    /// Where the verified range starts and ends.
    pub from: Option<String>,
    /// Where it ends.
    pub to: Option<String>,
    /// Time stamp of the last event.
    pub last_event_time: Option<chrono::DateTime<Utc>>,
}

/// Read the chain in `t` from the segment holding `from` (every segment
/// when `None`) to its end: each segment against its manifest
/// ([`read_verified`]: SHA-256, encryption tags, sizes, every event's CRC32
/// and position), and the positions from one segment to the next. A break
/// or a start that no segment holds is [`StoreError::Gap`].
pub async fn verify_chain(
    t: &dyn Target,
    prefix: &str,
    passphrase: Option<&Secret>,
    from: Option<(&str, u64)>,
) -> Result<ChainReport, StoreError> {
    let chain = list_chain(t, prefix).await?;
    let start = match from {
        None => 0,
        Some((file, pos)) => segment_at(&chain, file, pos).ok_or_else(|| {
            StoreError::Gap(format!(
                "no segment in {} holds {file}:{pos}, where the newest dump's snapshot is",
                crate::target::the(t.label())
            ))
        })?,
    };
    let mut report = ChainReport::default();
    for (i, m) in chain.iter().enumerate().skip(start) {
        if i > start && !continues(&chain[i - 1], &m.binlog_file, m.start_position) {
            let p = &chain[i - 1];
            return Err(StoreError::Gap(format!(
                "gap between {} (ends at {}:{}) and {} (starts at {}:{})",
                p.file, p.binlog_file, p.end_position, m.file, m.binlog_file, m.start_position
            )));
        }
        read_verified(t, m, passphrase).await?;
        report.segments += 1;
        report.bytes += m.raw_size;
        report.transactions += m.transactions;
        if report.from.is_none() {
            report.from = Some(format!("{}:{}", m.binlog_file, m.start_position));
        }
        report.to = Some(format!("{}:{}", m.binlog_file, m.end_position));
        report.last_event_time = m.last_event_time.or(report.last_event_time);
    }
    Ok(report)
}

/// The times a point-in-time restore can reach with `chain`: from the
/// snapshot of the oldest dump (`(snapshot time, file, position)`, any
/// order) whose position the chain holds without a break to its end, to
/// the chain's last event. `None` when no dump is covered.
pub fn window(
    chain: &[SegmentManifest],
    dumps: &[(chrono::DateTime<Utc>, String, u64)],
) -> Option<(chrono::DateTime<Utc>, chrono::DateTime<Utc>)> {
    let end = chain.iter().rev().find_map(|m| m.last_event_time)?;
    let mut sorted: Vec<_> = dumps.iter().collect();
    sorted.sort_by_key(|d| d.0);
    sorted
        .into_iter()
        .find(|(_, file, pos)| unbroken_from(chain, file, *pos))
        .map(|(t, _, _)| (*t, end.max(*t)))
}
