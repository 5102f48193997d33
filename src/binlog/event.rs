//! Reading the few things the archive needs out of a raw binlog event:
//! its header, its checksum, whether it ends a transaction, its GTID. The
//! bytes are never changed here.
//!
//! A MariaDB transaction starts with a GTID event and ends with an XID
//! event (InnoDB), a `COMMIT`/`ROLLBACK` query (non-transactional engines),
//! an `XA PREPARE` event, or, for a GTID flagged standalone (DDL), with its
//! one query. Events outside a GTID group (format description, rotate,
//! GTID list, binlog checkpoint, stop) are boundaries by themselves.

/// Length of the common event header.
pub const HEADER_LEN: usize = 19;
/// The four bytes every binlog file starts with.
pub const MAGIC: [u8; 4] = [0xFE, b'b', b'i', b'n'];

/// Event type codes (MariaDB's `Log_event_type`).
pub mod types {
    /// A statement (DDL, `COMMIT` of a non-transactional group, ...).
    pub const QUERY: u8 = 2;
    /// The server stopped.
    pub const STOP: u8 = 3;
    /// The server switched to the next binlog file.
    pub const ROTATE: u8 = 4;
    /// The format description at the start of every file.
    pub const FORMAT_DESCRIPTION: u8 = 15;
    /// The commit of an InnoDB transaction.
    pub const XID: u8 = 16;
    /// A keep-alive the server sends while idle (never in a file).
    pub const HEARTBEAT: u8 = 27;
    /// `XA PREPARE`.
    pub const XA_PREPARE: u8 = 38;
    /// The statement text of the row events that follow.
    pub const ANNOTATE_ROWS: u8 = 160;
    /// The oldest binlog file crash recovery needs.
    pub const BINLOG_CHECKPOINT: u8 = 161;
    /// The start of a transaction: domain, server and sequence number.
    pub const GTID: u8 = 162;
    /// The GTID state at the start of a file.
    pub const GTID_LIST: u8 = 163;
    /// A compressed statement.
    pub const QUERY_COMPRESSED: u8 = 165;
}

/// `LOG_EVENT_BINLOG_IN_USE_F`: set in a file's format description while
/// the server writes the file, cleared (without a new checksum) when closed.
const IN_USE_FLAG: u16 = 0x1;
/// `LOG_EVENT_ARTIFICIAL_F`: made up for the stream, not in any file.
const ARTIFICIAL_FLAG: u16 = 0x20;
/// `FL_STANDALONE` in a GTID event: the group is one statement, no commit.
const GTID_STANDALONE: u8 = 0x1;

/// The common header of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Seconds since the epoch when the statement started.
    pub timestamp: u32,
    /// Event type code.
    pub kind: u8,
    /// Server id of the server that wrote it first.
    pub server_id: u32,
    /// Length of the whole event, header and checksum included.
    pub size: u32,
    /// Position just after this event in its file; 0 for events the server
    /// makes up for the stream.
    pub log_pos: u32,
    /// Event flags.
    pub flags: u16,
}

impl Header {
    /// Parse the first [`HEADER_LEN`] bytes of `ev`.
    pub fn parse(ev: &[u8]) -> Option<Header> {
        let h = ev.get(..HEADER_LEN)?;
        let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        Some(Header {
            timestamp: u32_at(0),
            kind: h[4],
            server_id: u32_at(5),
            size: u32_at(9),
            log_pos: u32_at(13),
            flags: u16::from_le_bytes([h[17], h[18]]),
        })
    }

    /// Made up by the server for the stream: not part of any file.
    pub fn is_artificial(&self) -> bool {
        self.log_pos == 0 || self.flags & ARTIFICIAL_FLAG != 0
    }
}

/// What a format description event says about the events after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    /// Events carry a CRC32 in their last four bytes.
    pub crc32: bool,
    /// Post-header length of query events.
    pub query_post_header: usize,
}

impl Format {
    /// Read a format description event (the whole event).
    pub fn parse(fde: &[u8]) -> Option<Format> {
        // version (2), server version (50), created (4), header length (1),
        // then one post-header length per event type; the checksum
        // algorithm byte and the CRC close the event.
        let post = HEADER_LEN + 57;
        let alg = *fde.get(fde.len().checked_sub(5)?)?;
        let query_post_header = usize::from(*fde.get(post + usize::from(types::QUERY) - 1)?);
        Some(Format {
            crc32: alg == 1,
            query_post_header,
        })
    }
}

/// Whether the CRC32 in the last four bytes of `ev` matches its content
/// (the in-use flag of a format description is not covered, see above).
pub fn checksum_ok(ev: &[u8]) -> bool {
    let Some(body_len) = ev.len().checked_sub(4) else {
        return false;
    };
    if ev.len() < HEADER_LEN + 4 {
        return false;
    }
    let mut hasher = crc32fast::Hasher::new();
    let flags = u16::from_le_bytes([ev[17], ev[18]]);
    if flags & IN_USE_FLAG != 0 {
        hasher.update(&ev[..17]);
        hasher.update(&(flags & !IN_USE_FLAG).to_le_bytes());
        hasher.update(&ev[HEADER_LEN..body_len]);
    } else {
        hasher.update(&ev[..body_len]);
    }
    let stored = u32::from_le_bytes([
        ev[body_len],
        ev[body_len + 1],
        ev[body_len + 2],
        ev[body_len + 3],
    ]);
    hasher.finalize() == stored
}

/// A MariaDB GTID `domain-server-sequence`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gtid {
    /// Replication domain.
    pub domain: u32,
    /// Server that wrote it.
    pub server: u32,
    /// Sequence number.
    pub seq: u64,
}

impl std::fmt::Display for Gtid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}-{}", self.domain, self.server, self.seq)
    }
}

/// The GTID of a GTID event, and whether its group is standalone.
pub fn gtid_of(ev: &[u8], h: &Header) -> Option<(Gtid, bool)> {
    let b = ev.get(HEADER_LEN..HEADER_LEN + 13)?;
    let seq = u64::from_le_bytes(b[..8].try_into().ok()?);
    let domain = u32::from_le_bytes(b[8..12].try_into().ok()?);
    Some((
        Gtid {
            domain,
            server: h.server_id,
            seq,
        },
        b[12] & GTID_STANDALONE != 0,
    ))
}

/// The statement text of a (plain) query event.
pub fn query_text<'a>(ev: &'a [u8], format: &Format) -> Option<&'a [u8]> {
    let post = ev.get(HEADER_LEN..)?;
    // thread id (4), exec time (4), db length (1), error (2), status length (2)
    let db_len = usize::from(*post.get(8)?);
    let status_len = usize::from(u16::from_le_bytes([*post.get(11)?, *post.get(12)?]));
    let start = HEADER_LEN + format.query_post_header + status_len + db_len + 1;
    let end = ev.len() - if format.crc32 { 4 } else { 0 };
    ev.get(start..end)
}

/// Follows transaction boundaries through a stream of file events.
#[derive(Debug, Clone, Default)]
pub struct Tracker {
    in_group: bool,
    standalone: bool,
}

impl Tracker {
    /// Whether an event group is open (a transaction not yet committed).
    pub fn in_transaction(&self) -> bool {
        self.in_group
    }

    /// Forget an open group (the stream was cut; it is read again).
    pub fn reset(&mut self) {
        *self = Tracker::default();
    }

    /// Take one event from a file; returns its GTID when it starts a group,
    /// and whether the stream is at a boundary after it.
    pub fn observe(&mut self, ev: &[u8], h: &Header, format: &Format) -> (Option<Gtid>, bool) {
        match h.kind {
            types::GTID => {
                let parsed = gtid_of(ev, h);
                self.in_group = true;
                self.standalone = parsed.is_some_and(|(_, s)| s);
                (parsed.map(|(g, _)| g), false)
            }
            _ if !self.in_group => (None, true),
            types::XID | types::XA_PREPARE => {
                self.in_group = false;
                (None, true)
            }
            types::QUERY | types::QUERY_COMPRESSED if self.standalone => {
                self.in_group = false;
                (None, true)
            }
            types::QUERY => {
                let text = query_text(ev, format).unwrap_or_default();
                let ends =
                    text.eq_ignore_ascii_case(b"COMMIT") || text.eq_ignore_ascii_case(b"ROLLBACK");
                if ends {
                    self.in_group = false;
                }
                (None, ends)
            }
            _ => (None, false),
        }
    }
}

/// The next file name and position a rotate event names.
pub fn rotate_target(ev: &[u8], format: Option<&Format>) -> Option<(String, u64)> {
    let pos = u64::from_le_bytes(ev.get(HEADER_LEN..HEADER_LEN + 8)?.try_into().ok()?);
    // A fake rotate opens a stream before any format description: it may
    // carry a checksum or not, so one that is CRC-clean loses its last four.
    let mut end = ev.len();
    if format.is_some_and(|f| f.crc32) || (format.is_none() && checksum_ok(ev)) {
        end -= 4;
    }
    let name = ev.get(HEADER_LEN + 8..end)?;
    Some((String::from_utf8_lossy(name).into_owned(), pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u8, log_pos: u32, flags: u16, body: &[u8], crc: bool) -> Vec<u8> {
        let size = (HEADER_LEN + body.len() + if crc { 4 } else { 0 }) as u32;
        let mut ev = Vec::new();
        ev.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        ev.push(kind);
        ev.extend_from_slice(&7u32.to_le_bytes());
        ev.extend_from_slice(&size.to_le_bytes());
        ev.extend_from_slice(&log_pos.to_le_bytes());
        ev.extend_from_slice(&flags.to_le_bytes());
        ev.extend_from_slice(body);
        if crc {
            let c = crc32fast::hash(&ev);
            ev.extend_from_slice(&c.to_le_bytes());
        }
        ev
    }

    fn query(text: &str) -> Vec<u8> {
        let mut b = vec![0u8; 13];
        b[8] = 2; // db length
        b.extend_from_slice(b"db\0");
        b.extend_from_slice(text.as_bytes());
        event(types::QUERY, 100, 0, &b, true)
    }

    fn gtid(seq: u64, standalone: bool) -> Vec<u8> {
        let mut b = seq.to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(u8::from(standalone));
        b.extend_from_slice(&[0; 6]);
        event(types::GTID, 50, 0, &b, true)
    }

    const FORMAT: Format = Format {
        crc32: true,
        query_post_header: 13,
    };

    #[test]
    fn checksum_detects_a_flipped_byte_and_ignores_the_in_use_flag() {
        let ev = event(types::XID, 10, 0, &[1, 2, 3, 4, 5, 6, 7, 8], true);
        assert!(checksum_ok(&ev));
        let mut bad = ev.clone();
        bad[HEADER_LEN] ^= 1;
        assert!(!checksum_ok(&bad));
        let mut in_use = ev.clone();
        in_use[17] |= 1;
        assert!(checksum_ok(&in_use));
    }

    #[test]
    fn header_fields_and_artificial_events() {
        let ev = event(
            types::ROTATE,
            0,
            0x20,
            b"\x04\0\0\0\0\0\0\0binlog.000002",
            false,
        );
        let h = Header::parse(&ev).unwrap();
        assert_eq!(
            (h.kind, h.server_id, h.size as usize),
            (types::ROTATE, 7, ev.len())
        );
        assert!(h.is_artificial());
        assert_eq!(rotate_target(&ev, None), Some(("binlog.000002".into(), 4)));
        let crc = event(
            types::ROTATE,
            0,
            0x20,
            b"\x04\0\0\0\0\0\0\0binlog.000002",
            true,
        );
        assert_eq!(rotate_target(&crc, None), Some(("binlog.000002".into(), 4)));
    }

    #[test]
    fn transactions_end_at_xid_commit_or_the_standalone_statement() {
        let mut t = Tracker::default();
        let h = |ev: &[u8]| Header::parse(ev).unwrap();
        let g = gtid(5, false);
        let (got, boundary) = t.observe(&g, &h(&g), &FORMAT);
        assert_eq!(got.unwrap().to_string(), "0-7-5");
        assert!(!boundary && t.in_transaction());
        let rows = event(23, 200, 0, &[0; 10], true);
        assert!(!t.observe(&rows, &h(&rows), &FORMAT).1);
        let begin = query("BEGIN");
        assert!(!t.observe(&begin, &h(&begin), &FORMAT).1);
        let xid = event(types::XID, 300, 0, &[0; 8], true);
        assert!(t.observe(&xid, &h(&xid), &FORMAT).1);

        let g = gtid(6, false);
        t.observe(&g, &h(&g), &FORMAT);
        let commit = query("COMMIT");
        assert!(t.observe(&commit, &h(&commit), &FORMAT).1);

        let g = gtid(7, true);
        t.observe(&g, &h(&g), &FORMAT);
        let ddl = query("CREATE TABLE t (a int)");
        assert!(t.observe(&ddl, &h(&ddl), &FORMAT).1);
        assert!(!t.in_transaction());

        let list = event(types::GTID_LIST, 400, 0, &[0; 4], true);
        assert!(t.observe(&list, &h(&list), &FORMAT).1);
    }
}
