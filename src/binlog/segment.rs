//! Segments: pieces of one server binlog file, their names, their
//! manifests, and the open segment on the volume.
//!
//! A segment holds the events of the byte range `[start_position,
//! end_position)` of one server binlog file, exactly as the server wrote
//! them, after a header that makes it a binlog file of its own for
//! `mariadb-binlog`: the magic `\xfebin`, then, when the range does not
//! start at position 4, the file's format description event as the server
//! sends it at the start of a stream (its `log_pos` is 0). A segment that
//! starts at position 4 is the server file's first bytes, format
//! description included. `header_len` in the manifest says where the range
//! begins. Events the server makes up for the stream (fake rotates,
//! heartbeats) are never archived.
//!
//! The open segment lives in `BACKUP_DIR/.binlog/` as
//! `FILE_POSITION.open` (plaintext, like the server's own files) and is
//! fsynced at least every second. It is cut only at transaction
//! boundaries; after a crash [`OpenSegment::recover`] scans it, drops a
//! trailing incomplete transaction or torn event, and the stream resumes
//! from the last complete transaction. This module does not upload.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::{self, Format, Gtid, Header, Tracker, HEADER_LEN, MAGIC};
use crate::format::manifest::EncryptionInfo;

/// Manifest format of segments written by this build.
pub const FORMAT_VERSION: u32 = 1;
/// The part of a segment's name after the backup prefix.
const TAG: &str = "_binlog_";

/// The stored name of the segment of `file` starting at `start`.
pub fn segment_name(
    prefix: &str,
    file: &str,
    start: u64,
    compression_ext: &str,
    encrypted: bool,
) -> String {
    format!(
        "{prefix}{TAG}{file}_{start:012}.bin{compression_ext}{}",
        if encrypted { ".enc" } else { "" }
    )
}

/// The binlog file and start position a stored segment name carries.
pub fn parse_segment_name(prefix: &str, name: &str) -> Option<(String, u64)> {
    let rest = name.strip_prefix(prefix)?.strip_prefix(TAG)?;
    let rest = rest.strip_suffix(".enc").unwrap_or(rest);
    let rest = [".bin.gz", ".bin.zst", ".bin"]
        .iter()
        .find_map(|e| rest.strip_suffix(e))?;
    let (file, pos) = rest.rsplit_once('_')?;
    if file.is_empty() || pos.len() != 12 {
        return None;
    }
    Some((file.to_owned(), pos.parse().ok()?))
}

/// The prefix every segment name of `prefix` starts with (for listing).
pub fn list_prefix(prefix: &str) -> String {
    format!("{prefix}{TAG}")
}

/// Everything recorded about one closed segment; written after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentManifest {
    /// Manifest format version.
    pub format_version: u32,
    /// Always `binlog`.
    pub kind: String,
    /// Tool and version that wrote it.
    pub tool: String,
    /// The stored segment's name.
    pub file: String,
    /// Stored size (after compression and encryption).
    pub size: u64,
    /// SHA-256 of the stored bytes, hex.
    pub sha256: String,
    /// `gzip`, `zstd` or `none`.
    pub compression: String,
    /// Present when the segment is encrypted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionInfo>,
    /// Server id in the events' headers (the source server).
    pub server_id: u32,
    /// The server's binlog file the events come from.
    pub binlog_file: String,
    /// Position in that file of the first archived event.
    pub start_position: u64,
    /// Position just after the last archived event.
    pub end_position: u64,
    /// Bytes before the range in the plain segment (magic, format description).
    pub header_len: u64,
    /// Plain segment size.
    pub raw_size: u64,
    /// SHA-256 of the plain segment.
    pub raw_sha256: String,
    /// GTID of the first transaction in the range.
    pub first_gtid: Option<String>,
    /// GTID of the last transaction in the range.
    pub last_gtid: Option<String>,
    /// Time stamp of the first event in the range.
    pub first_event_time: Option<DateTime<Utc>>,
    /// Time stamp of the last event in the range.
    pub last_event_time: Option<DateTime<Utc>>,
    /// Complete transactions in the range.
    pub transactions: u64,
    /// The range reaches the end of the server file (a rotate or stop event
    /// is its last event, or the server moved on to the next file).
    pub file_complete: bool,
    /// The segment this one continues, when the chain is unbroken.
    pub follows: Option<String>,
    /// When the segment was closed.
    pub closed_at: DateTime<Utc>,
}

impl SegmentManifest {
    /// JSON bytes, pretty-printed.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Parse a stored manifest named `name`.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Self, String> {
        let m: SegmentManifest = serde_json::from_slice(bytes)
            .map_err(|e| format!("binlog manifest {name} is unreadable: {e}"))?;
        if m.format_version > FORMAT_VERSION {
            return Err(format!(
                "binlog manifest {name} has format version {}, newer than this selmai-backup understands ({FORMAT_VERSION}): upgrade selmai-backup",
                m.format_version
            ));
        }
        Ok(m)
    }
}

/// What a scan of plain segment bytes found (see [`scan`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Source server id.
    pub server_id: u32,
    /// Bytes before the range.
    pub header_len: u64,
    /// Plain bytes up to the last transaction boundary.
    pub complete_len: u64,
    /// Position in the server file of the first archived event.
    pub start_position: u64,
    /// Position after the last complete transaction.
    pub end_position: u64,
    /// First and last GTID of complete transactions.
    pub first_gtid: Option<Gtid>,
    /// Last GTID.
    pub last_gtid: Option<Gtid>,
    /// First and last event time stamps (complete part).
    pub first_time: Option<u32>,
    /// Last event time stamp.
    pub last_time: Option<u32>,
    /// Complete transactions.
    pub transactions: u64,
    /// Events in the complete part (header excluded).
    pub events: u64,
    /// The last event ends the server file (rotate, stop).
    pub ends_file: bool,
    /// The format of the events.
    pub format: Option<Format>,
}

impl Summary {
    /// Count one event of `len` bytes appended after `complete_len`'s
    /// running total; at a boundary the running values become the
    /// complete part's (the caller keeps the two copies).
    pub fn observe(
        &mut self,
        h: &Header,
        len: u64,
        gtid: Option<Gtid>,
        boundary: bool,
        was_in: bool,
    ) {
        if gtid.is_some() {
            self.first_gtid = self.first_gtid.or(gtid);
            self.last_gtid = gtid;
        }
        self.first_time = self.first_time.or(Some(h.timestamp));
        self.last_time = Some(h.timestamp);
        self.events += 1;
        self.complete_len += len;
        self.end_position = u64::from(h.log_pos);
        if boundary {
            if was_in {
                self.transactions += 1;
            }
            self.ends_file = matches!(h.kind, event::types::ROTATE | event::types::STOP);
        }
    }
}

/// Why plain segment bytes are not a valid segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// The magic is missing.
    #[error("does not start with the binlog magic \\xfebin")]
    Magic,
    /// No format description after the magic.
    #[error("no format description event after the magic")]
    NoFormat,
    /// An event's checksum does not match.
    #[error("event at offset {offset} (server position {position}) fails its CRC32 check")]
    Checksum {
        /// Byte offset in the plain segment.
        offset: u64,
        /// Position in the server file.
        position: u64,
    },
    /// An event's position does not follow from the previous one.
    #[error("event at offset {offset} says it ends at position {found}, expected {expected}")]
    Position {
        /// Byte offset in the plain segment.
        offset: u64,
        /// Position the event header carries.
        found: u64,
        /// Position its offset gives.
        expected: u64,
    },
    /// The bytes end inside an event or a transaction.
    #[error("ends inside an event or a transaction after offset {offset}")]
    Truncated {
        /// Offset of the last boundary.
        offset: u64,
    },
}

/// Scan plain segment bytes that start at server position `start`: check
/// the magic, every event's length, CRC32 and position, and find the last
/// transaction boundary. With `strict`, anything after that boundary is an
/// error (a closed segment); without, it is what recovery cuts off.
pub fn scan(bytes: &[u8], start: u64, strict: bool) -> Result<Summary, ScanError> {
    if bytes.get(..4) != Some(&MAGIC[..]) {
        return Err(ScanError::Magic);
    }
    let fde_h = Header::parse(&bytes[4..]).ok_or(ScanError::NoFormat)?;
    if fde_h.kind != event::types::FORMAT_DESCRIPTION || 4 + fde_h.size as usize > bytes.len() {
        return Err(ScanError::NoFormat);
    }
    let fde = &bytes[4..4 + fde_h.size as usize];
    let format = Format::parse(fde).ok_or(ScanError::NoFormat)?;
    if format.crc32 && !event::checksum_ok(fde) {
        return Err(ScanError::Checksum {
            offset: 4,
            position: 4,
        });
    }
    let header_len = if start == 4 {
        4
    } else {
        4 + u64::from(fde_h.size)
    };
    let mut s = Summary {
        server_id: fde_h.server_id,
        header_len,
        complete_len: header_len,
        start_position: start,
        end_position: start,
        format: Some(format.clone()),
        ..Summary::default()
    };
    let mut tracker = Tracker::default();
    let mut running = s.clone();
    let mut off = header_len as usize;
    while off < bytes.len() {
        let position = start + (off as u64 - header_len);
        let Some(h) = Header::parse(&bytes[off..]) else {
            break;
        };
        let end = off + h.size as usize;
        if (h.size as usize) < HEADER_LEN || end > bytes.len() {
            break;
        }
        let ev = &bytes[off..end];
        if format.crc32 && !event::checksum_ok(ev) {
            if strict {
                return Err(ScanError::Checksum {
                    offset: off as u64,
                    position,
                });
            }
            break;
        }
        let expected = position + u64::from(h.size);
        if u64::from(h.log_pos) != expected {
            return Err(ScanError::Position {
                offset: off as u64,
                found: u64::from(h.log_pos),
                expected,
            });
        }
        let was_in = tracker.in_transaction();
        let (gtid, boundary) = tracker.observe(ev, &h, &format);
        running.observe(&h, ev.len() as u64, gtid, boundary, was_in);
        if boundary {
            s = running.clone();
        }
        off = end;
    }
    if strict && s.complete_len != bytes.len() as u64 {
        return Err(ScanError::Truncated {
            offset: s.complete_len,
        });
    }
    Ok(s)
}

/// A time stamp of an event header as a UTC time.
pub fn event_time(t: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(i64::from(t), 0)
        .single()
        .unwrap_or_default()
}

/// The segment being written on the volume.
#[derive(Debug)]
pub struct OpenSegment {
    path: PathBuf,
    file: std::fs::File,
    /// The server binlog file.
    pub binlog_file: String,
    /// The complete part: up to the last transaction boundary.
    pub summary: Summary,
    /// Everything written, complete or not.
    running: Summary,
    /// Time the first event of the range arrived, for the upload deadline.
    pub first_arrival: Option<std::time::Instant>,
    /// Bytes not yet fsynced.
    dirty: bool,
}

/// File name of the open segment of `file` starting at `start`.
fn open_name(file: &str, start: u64) -> String {
    format!("{file}_{start:012}.open")
}

/// Suffix of a plain segment closed and waiting to be stored; `.closed-eof`
/// when it ends its server file.
const CLOSED: &str = ".closed";
const CLOSED_EOF: &str = ".closed-eof";

/// A plain segment closed and waiting to be stored.
#[derive(Debug, Clone)]
pub struct Closed {
    /// Where its plain bytes are.
    pub path: PathBuf,
    /// The server binlog file.
    pub binlog_file: String,
    /// What it holds.
    pub summary: Summary,
    /// It reaches the end of its server file.
    pub file_complete: bool,
}

impl Closed {
    /// The closed segments left in `dir`, in chain order, each scanned
    /// strictly (they were whole when closed; one that is not is an error).
    pub fn pending(dir: &Path) -> io::Result<Vec<Closed>> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(out);
        };
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let (stem, eof) = if let Some(s) = name.strip_suffix(CLOSED_EOF) {
                (s, true)
            } else if let Some(s) = name.strip_suffix(CLOSED) {
                (s, false)
            } else {
                continue;
            };
            let Some((file, pos)) = stem.rsplit_once('_') else {
                continue;
            };
            let Ok(start) = pos.parse::<u64>() else {
                continue;
            };
            let bytes = std::fs::read(entry.path())?;
            let summary = scan(&bytes, start, true).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: {e}", entry.path().display()),
                )
            })?;
            out.push(Closed {
                path: entry.path(),
                binlog_file: file.to_owned(),
                summary,
                file_complete: eof,
            });
        }
        out.sort_by_key(|c| (file_index(&c.binlog_file), c.summary.start_position));
        Ok(out)
    }
}

impl OpenSegment {
    /// Start a new open segment in `dir` with the format description `fde`
    /// (written as the header unless the range starts at position 4).
    pub fn create(dir: &Path, binlog_file: &str, start: u64, fde: &[u8]) -> io::Result<Self> {
        let path = dir.join(open_name(binlog_file, start));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)?;
        file.write_all(&MAGIC)?;
        let header_len = if start == 4 {
            4
        } else {
            file.write_all(fde)?;
            4 + fde.len() as u64
        };
        file.sync_data()?;
        sync_dir(dir)?;
        let summary = Summary {
            server_id: Header::parse(fde).map_or(0, |h| h.server_id),
            header_len,
            complete_len: header_len,
            start_position: start,
            end_position: start,
            format: Format::parse(fde),
            ..Summary::default()
        };
        Ok(OpenSegment {
            path,
            file,
            binlog_file: binlog_file.to_owned(),
            running: summary.clone(),
            summary,
            first_arrival: None,
            dirty: false,
        })
    }

    /// The open segment left in `dir` by an earlier run, cut back to its
    /// last complete transaction; `None` when there is none. An open file
    /// that is not a segment at all (no magic, no format description) is
    /// removed: it holds no complete transaction.
    pub fn recover(dir: &Path) -> io::Result<Option<Self>> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Ok(None);
        };
        let mut found: Vec<(String, u64, PathBuf)> = Vec::new();
        for entry in rd.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".open") else {
                continue;
            };
            let Some((file, pos)) = stem.rsplit_once('_') else {
                continue;
            };
            if let Ok(pos) = pos.parse::<u64>() {
                found.push((file.to_owned(), pos, entry.path()));
            }
        }
        // Only one is ever open; should there be more, the newest counts.
        found.sort_by_key(|a| (file_index(&a.0), a.1));
        let Some((binlog_file, start, path)) = found.pop() else {
            return Ok(None);
        };
        for (_, _, stale) in found {
            std::fs::remove_file(stale)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let summary = match scan(&bytes, start, false) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "the open binlog segment is unusable; it is read again from the server");
                drop(file);
                std::fs::remove_file(&path)?;
                return Ok(None);
            }
        };
        if summary.complete_len < bytes.len() as u64 {
            tracing::info!(
                file = %path.display(),
                kept = summary.complete_len,
                dropped = bytes.len() as u64 - summary.complete_len,
                "cut the open binlog segment back to its last complete transaction"
            );
            file.set_len(summary.complete_len)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::Start(summary.complete_len))?;
        Ok(Some(OpenSegment {
            path,
            file,
            binlog_file,
            running: summary.clone(),
            first_arrival: (summary.events > 0).then(std::time::Instant::now),
            summary,
            dirty: false,
        }))
    }

    /// Append one event of the range (its header `h`, its GTID when it
    /// starts a group); `boundary` says the stream is at a transaction
    /// boundary after it, `was_in` that a group was open before it.
    pub fn append(
        &mut self,
        ev: &[u8],
        h: &Header,
        gtid: Option<Gtid>,
        boundary: bool,
        was_in: bool,
    ) -> io::Result<()> {
        self.file.write_all(ev)?;
        self.dirty = true;
        if self.first_arrival.is_none() {
            self.first_arrival = Some(std::time::Instant::now());
        }
        self.running
            .observe(h, ev.len() as u64, gtid, boundary, was_in);
        if boundary {
            self.summary = self.running.clone();
        }
        Ok(())
    }

    /// Position in the server file the next event must start at.
    pub fn next_position(&self) -> u64 {
        self.running.end_position
    }

    /// Plain bytes written, complete or not.
    pub fn written(&self) -> u64 {
        self.running.complete_len
    }

    /// Whether the last event written ends a transaction (or is outside one).
    pub fn at_boundary(&self) -> bool {
        self.running.complete_len == self.summary.complete_len
    }

    /// Drop what follows the last boundary (the stream was cut inside a
    /// transaction; it is read again from the transaction's start).
    pub fn rewind(&mut self) -> io::Result<()> {
        if !self.at_boundary() {
            self.file.set_len(self.summary.complete_len)?;
            self.file.seek(SeekFrom::Start(self.summary.complete_len))?;
            self.running = self.summary.clone();
            self.dirty = true;
        }
        Ok(())
    }

    /// Make what was written durable.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            self.file.sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Whether the complete part holds at least one event.
    pub fn has_events(&self) -> bool {
        self.summary.events > 0
    }

    /// Close: cut back to the last boundary, fsync, and rename to the
    /// closed name the uploader picks up (also after a restart).
    pub fn close(mut self, file_complete: bool) -> io::Result<Closed> {
        self.rewind()?;
        self.sync()?;
        let stem = open_name(&self.binlog_file, self.summary.start_position);
        let stem = stem.strip_suffix(".open").unwrap_or(&stem);
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let closed = dir.join(format!(
            "{stem}{}",
            if file_complete { CLOSED_EOF } else { CLOSED }
        ));
        std::fs::rename(&self.path, &closed)?;
        sync_dir(&dir)?;
        Ok(Closed {
            path: closed,
            binlog_file: self.binlog_file,
            summary: self.summary,
            file_complete,
        })
    }

    /// Where the plain bytes are.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Throw the open segment away (it holds no event of the range).
    pub fn discard(self) -> io::Result<()> {
        std::fs::remove_file(&self.path)
    }
}

/// SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// fsync a directory so that a file created or renamed in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The numeric suffix of a binlog file name (`binlog.000012` -> 12), to
/// order files whose counter outgrew its zero padding.
pub fn file_index(name: &str) -> u64 {
    name.rsplit_once('.')
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("selmai_binlog_binlog.000003_000000001234.bin.gz", Some(("binlog.000003", 1234)))]
    #[case("selmai_binlog_mysql_bin.000010_000000000004.bin.zst.enc", Some(("mysql_bin.000010", 4)))]
    #[case("selmai_binlog_binlog.000003_000000001234.bin", Some(("binlog.000003", 1234)))]
    #[case("selmai_binlog_binlog.000003_1234.bin.gz", None)]
    #[case("selmai_20250101_020000.sql.gz", None)]
    #[case("other_binlog_binlog.000003_000000001234.bin.gz", None)]
    fn names_round_trip(#[case] name: &str, #[case] want: Option<(&str, u64)>) {
        let got = parse_segment_name("selmai", name);
        assert_eq!(got, want.map(|(f, p)| (f.to_owned(), p)));
        if let Some((f, p)) = got {
            let enc = name.ends_with(".enc");
            let base = name.strip_suffix(".enc").unwrap_or(name);
            let ext = base.split_once(".bin").unwrap().1;
            assert_eq!(segment_name("selmai", &f, p, ext, enc), name);
        }
    }

    #[test]
    fn file_index_orders_past_the_padding() {
        assert!(file_index("binlog.999999") < file_index("binlog.1000000"));
    }
}
