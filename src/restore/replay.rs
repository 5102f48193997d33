//! Point-in-time restore: choosing the dump and the archived binlog
//! segments that lead from its snapshot to a target ([`plan`]), reading
//! every one of them against its manifest before anything is touched, and
//! replaying the transactions of one database into a restored copy of that
//! dump ([`Replay::run`], called by [`crate::restore::run`] after the dump
//! is applied, so that a failure rolls the replay back with the restore).
//!
//! # How events are replayed (natively, no client binary)
//! - Row events go to the server as `BINLOG '<base64>'` statements, as
//!   `mariadb-binlog` prints them: first the segment's format description,
//!   then, per statement, its `Table_map` events and its rows events up to
//!   the one flagged end-of-statement. This needs the `BINLOG REPLAY`
//!   privilege (MariaDB 10.5.2+; `SUPER` before).
//! - Statement events (`Query`, DDL mostly) are sent as SQL, preceded by
//!   their session context as `mariadb-binlog` prints it: the default
//!   database, `TIMESTAMP` (with microseconds), `pseudo_thread_id`,
//!   `sql_mode`, `foreign_key_checks`/`unique_checks`/`sql_auto_is_null`,
//!   `auto_increment_increment`/`_offset`, the character sets and
//!   collations, `time_zone`, `lc_time_names`, and `INSERT_ID`,
//!   `LAST_INSERT_ID`, the `RAND` seeds and the user variables the
//!   statement reads from their own events (a string variable names its
//!   collation, looked up by number on the server replayed into).
//! - Transactions are kept whole: a GTID group becomes `BEGIN` ... `COMMIT`
//!   (or the group's own `COMMIT`/`ROLLBACK`); a standalone group (DDL) is
//!   its one statement; a transaction of one row statement (an autocommit
//!   `INSERT`, ...) is that one `BINLOG` statement, which the server
//!   commits by itself (one round trip instead of three). One statement per
//!   round trip: the server does not answer a multi-statement packet that
//!   holds `BINLOG` statements in a way the client follows.
//! - Only the dump's database is replayed: `Table_map` events of other
//!   databases (and `mysql`) are dropped with their rows, and statements
//!   whose default database is another one (or none) are skipped, as
//!   `mariadb-binlog --database` does. A statement that names the dump's
//!   database explicitly while another (or no) database is the default is
//!   therefore not replayed; one that names another database while ours is
//!   the default is replayed as written.
//! - `--into NAME`: `Table_map` events are rewritten to the new name (event
//!   length and CRC32 recomputed) and statements run with the new name as
//!   their default database, as `mariadb-binlog --rewrite-db` does; a
//!   statement naming the old database explicitly still names it.
//! - `CREATE`/`ALTER DATABASE` are skipped (the restore chose the database,
//!   as a restore skips them); a `DROP DATABASE` of the replayed database
//!   refuses the plan (nothing touched): the target must be before it.
//!
//! # GTIDs
//! The archived GTIDs are deliberately not replayed: no `SET SESSION
//! gtid_domain_id/server_id/gtid_seq_no`. Each replayed transaction gets a
//! new GTID from the target server, in its own domain and sequence, so a
//! server with another GTID history, or with `gtid_strict_mode`, accepts
//! them (re-using the archived sequence numbers is what breaks strict mode
//! in other tools), and the target's own binlog (and archive) records the
//! replay like any other write.
//!
//! # Which transactions
//! A transaction's time is the time stamp of its last event (the commit;
//! whole seconds, as the binlog keeps them). `--to TIME` applies every
//! transaction whose commit is at or before TIME and stops at the first one
//! after it (commit order is binlog order); `--to-gtid` stops after that
//! transaction; `end` applies everything archived.
//!
//! Not responsible for restoring the dump, the safety snapshot or the app
//! (the one restore operation), nor for asking the operator (the command).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use mysql_async::prelude::Queryable;

use crate::binlog::event::{self, types, Format, Gtid, Header, Tracker, HEADER_LEN};
use crate::binlog::segment::{self, SegmentManifest};
use crate::binlog::store::{self, StoreError};
use crate::config::DbSettings;
use crate::db::{self, DbError};
use crate::format::catalog;
use crate::format::manifest::Manifest;
use crate::restore::open::{self, LocateError};
use crate::secret::Secret;
use crate::target::Target;

/// Where the replay stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// Every transaction committed at or before this time.
    Time(DateTime<Utc>),
    /// Up to and including this transaction.
    Gtid(Gtid),
    /// Every transaction ending at or before this binlog position (the
    /// next dump's snapshot, for the drill of the chain).
    Position(String, u64),
    /// Everything archived.
    End,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Time(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S UTC")),
            Stop::Gtid(g) => write!(f, "GTID {g}"),
            Stop::Position(file, pos) => write!(f, "binlog position {file}:{pos}"),
            Stop::End => write!(f, "the end of the archive"),
        }
    }
}

/// Read `--to` (RFC 3339, `YYYY-MM-DD HH:MM:SS` in the `TZ` of this
/// process, or `end`) or `--to-gtid` (`D-S-N`).
pub fn parse_stop(to: Option<&str>, gtid: Option<&str>) -> Result<Stop, String> {
    match (to, gtid) {
        (Some(_), Some(_)) => Err("give --to TIME or --to-gtid D-S-N, not both".into()),
        (None, None) => Err("give --to TIME (or end) or --to-gtid D-S-N".into()),
        (None, Some(g)) => parse_gtid(g).map(Stop::Gtid).ok_or_else(|| {
            format!("--to-gtid {g}: not a GTID; give domain-server-sequence, e.g. 0-1-4242")
        }),
        (Some(t), None) => parse_time(t, &chrono::Local).map(|t| t.map_or(Stop::End, Stop::Time)),
    }
}

/// `None` for `end`.
fn parse_time<Z: TimeZone>(t: &str, zone: &Z) -> Result<Option<DateTime<Utc>>, String> {
    let t = t.trim();
    if t.eq_ignore_ascii_case("end") {
        return Ok(None);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Ok(Some(d.with_timezone(&Utc)));
    }
    let naive = chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S").map_err(|_| {
        format!("--to {t}: not a time; give 2026-11-30T14:05:11+01:00, '2026-11-30 14:05:11' (read in TZ) or end")
    })?;
    match zone.from_local_datetime(&naive) {
        chrono::LocalResult::Single(d) => Ok(Some(d.with_timezone(&Utc))),
        chrono::LocalResult::Ambiguous(a, b) => Err(format!(
            "--to {t} happens twice in TZ (the clock went back): give it with its offset, {} or {}",
            a.with_timezone(&Utc).to_rfc3339(),
            b.with_timezone(&Utc).to_rfc3339()
        )),
        chrono::LocalResult::None => Err(format!(
            "--to {t} does not exist in TZ (the clock went forward): give a time with its offset"
        )),
    }
}

/// Parse `domain-server-sequence`.
pub fn parse_gtid(s: &str) -> Option<Gtid> {
    let mut it = s.trim().splitn(3, '-');
    Some(Gtid {
        domain: it.next()?.parse().ok()?,
        server: it.next()?.parse().ok()?,
        seq: it.next()?.parse().ok()?,
    })
}

/// Why a point-in-time restore cannot be planned or replayed.
#[derive(Debug, thiserror::Error)]
pub enum PitrError {
    /// The target is outside what the dumps and the archive can reach.
    #[error("{0}; nothing was touched")]
    Unreachable(String),
    /// Reading the archive failed (gap, damage, a target error).
    #[error("{0}; nothing was touched")]
    Store(#[from] StoreError),
    /// Reading a segment again while replaying failed (it changed since
    /// it was verified).
    #[error("reading the binlog archive again while replaying: {0}")]
    Reread(StoreError),
    /// Finding the dumps failed.
    #[error(transparent)]
    Locate(#[from] LocateError),
    /// An event the native replay cannot send.
    #[error("{0}")]
    Unsupported(String),
    /// The server refused a replayed statement.
    #[error("replaying {at} failed: {source}")]
    Statement {
        /// The transaction and its position.
        at: String,
        /// The server's error.
        #[source]
        source: DbError,
    },
    /// Connecting failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// One transaction (GTID group) of a segment.
#[derive(Debug, Clone)]
struct Group {
    gtid: Option<Gtid>,
    standalone: bool,
    /// Byte ranges of its events in the plain segment.
    events: Vec<(usize, usize)>,
    /// Time stamp of its last event.
    time: u32,
    /// Position in the binlog file just after it.
    end: u64,
}

/// A plain segment cut into transactions.
struct Parsed {
    /// The format description that applies to the events.
    fde: (usize, usize),
    format: Format,
    post: Vec<u8>,
    groups: Vec<Group>,
}

fn damaged(m: &SegmentManifest, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Encode {
        name: m.file.clone(),
        detail: detail.to_string(),
    }
}

/// Cut `plain` (a verified segment) into its transactions, leaving out
/// those ending at or before `from` in the segment's file.
fn parse(plain: &[u8], m: &SegmentManifest, from: Option<u64>) -> Result<Parsed, StoreError> {
    let mut off = 4usize;
    let mut fde = None;
    let mut format = None;
    let mut post = Vec::new();
    let mut tracker = Tracker::default();
    let mut groups = Vec::new();
    let mut open: Option<Group> = None;
    while off < plain.len() {
        let h = Header::parse(&plain[off..]).ok_or_else(|| damaged(m, "a torn event header"))?;
        let end = off + h.size as usize;
        if (h.size as usize) < HEADER_LEN || end > plain.len() {
            return Err(damaged(
                m,
                format!("an event of {} bytes at offset {off}", h.size),
            ));
        }
        let ev = &plain[off..end];
        let in_range = off as u64 >= m.header_len;
        let end_pos = m.start_position + (end as u64).saturating_sub(m.header_len);
        if h.kind == types::FORMAT_DESCRIPTION {
            let f =
                Format::parse(ev).ok_or_else(|| damaged(m, "an unreadable format description"))?;
            fde = Some((off, end));
            format = Some(f);
            post = ev
                .get(HEADER_LEN + 57..ev.len().saturating_sub(5))
                .unwrap_or_default()
                .to_vec();
            off = end;
            continue;
        }
        if !in_range {
            off = end;
            continue;
        }
        let f = format
            .as_ref()
            .ok_or_else(|| damaged(m, "events before any format description"))?;
        let (gtid, boundary) = tracker.observe(ev, &h, f);
        if h.kind == types::GTID {
            open = Some(Group {
                gtid,
                standalone: event::gtid_of(ev, &h).is_some_and(|(_, s)| s),
                events: Vec::new(),
                time: h.timestamp,
                end: end_pos,
            });
        } else if let Some(g) = open.as_mut() {
            g.events.push((off, end));
            g.time = h.timestamp;
            g.end = end_pos;
        } else if matches!(h.kind, types::QUERY | types::QUERY_COMPRESSED) {
            // A statement outside any GTID group: a group of its own.
            open = Some(Group {
                gtid: None,
                standalone: true,
                events: vec![(off, end)],
                time: h.timestamp,
                end: end_pos,
            });
        }
        if boundary
            || (open.as_ref().is_some_and(|g| g.gtid.is_none()) && !tracker.in_transaction())
        {
            if let Some(g) = open.take() {
                if from.is_none_or(|p| g.end > p) {
                    groups.push(g);
                }
            }
        }
        off = end;
    }
    let (Some(fde), Some(format)) = (fde, format) else {
        return Err(damaged(m, "no format description"));
    };
    Ok(Parsed {
        fde,
        format,
        post,
        groups,
    })
}

fn u16_at(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(i..i + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], i: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(i..i + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], i: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?))
}

const TABLE_MAP: u8 = 19;
const INTVAR: u8 = 5;
const RAND: u8 = 13;
const USER_VAR: u8 = 14;
/// Rows events: v1, v2, and MariaDB's compressed ones.
fn is_rows(kind: u8) -> bool {
    matches!(kind, 23..=25 | 30..=32 | 166..=171)
}
/// `STMT_END_F` in a rows event's flags.
const STMT_END: u16 = 1;

impl Parsed {
    fn post_len(&self, kind: u8) -> usize {
        usize::from(self.post.get(usize::from(kind) - 1).copied().unwrap_or(8))
    }

    fn table_id(&self, ev: &[u8], kind: u8) -> Option<u64> {
        let short = self.post_len(kind) == 6;
        let b = ev.get(HEADER_LEN..HEADER_LEN + if short { 4 } else { 6 })?;
        let mut id = [0u8; 8];
        id[..b.len()].copy_from_slice(b);
        Some(u64::from_le_bytes(id))
    }

    /// The database a `Table_map` event names, and where its length byte is.
    fn table_map_db<'e>(&self, ev: &'e [u8]) -> Option<(&'e [u8], usize)> {
        let at = HEADER_LEN + self.post_len(TABLE_MAP);
        let len = usize::from(*ev.get(at)?);
        Some((ev.get(at + 1..at + 1 + len)?, at))
    }

    fn rows_flags(&self, ev: &[u8], kind: u8) -> Option<u16> {
        let short = self.post_len(kind) == 6;
        u16_at(ev, HEADER_LEN + if short { 4 } else { 6 })
    }
}

/// The parts of a query event a replay needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Query {
    thread_id: u32,
    db: Vec<u8>,
    text: Vec<u8>,
    context: Context,
    micros: Option<u32>,
}

/// The session state a query event carries (its status variables).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Context {
    flags2: Option<u32>,
    sql_mode: Option<u64>,
    auto_increment: Option<(u16, u16)>,
    charset: Option<(u16, u16, u16)>,
    time_zone: Option<String>,
    lc_time_names: Option<u16>,
    charset_database: Option<u16>,
}

fn parse_query(ev: &[u8], kind: u8, f: &Format) -> Result<Query, String> {
    let bad = || "a malformed query event".to_owned();
    let p = HEADER_LEN;
    let thread_id = u32_at(ev, p).ok_or_else(bad)?;
    let db_len = usize::from(*ev.get(p + 8).ok_or_else(bad)?);
    let status_len = usize::from(u16_at(ev, p + 11).ok_or_else(bad)?);
    let vars_at = p + f.query_post_header;
    let vars = ev.get(vars_at..vars_at + status_len).ok_or_else(bad)?;
    let db_at = vars_at + status_len;
    let db = ev.get(db_at..db_at + db_len).ok_or_else(bad)?.to_vec();
    let body_end = ev.len() - if f.crc32 { 4 } else { 0 };
    let body = ev.get(db_at + db_len + 1..body_end).ok_or_else(bad)?;
    let text = if kind == types::QUERY_COMPRESSED {
        uncompress(body)?
    } else {
        body.to_vec()
    };
    let mut c = Context::default();
    let mut micros = None;
    let mut i = 0;
    let byte = |i: usize| vars.get(i).copied().map(usize::from).ok_or_else(bad);
    while i < vars.len() {
        let code = vars[i];
        i += 1;
        match code {
            0 => {
                c.flags2 = Some(u32_at(vars, i).ok_or_else(bad)?);
                i += 4;
            }
            1 => {
                c.sql_mode = Some(u64_at(vars, i).ok_or_else(bad)?);
                i += 8;
            }
            2 => i += 1 + byte(i)? + 1,
            3 => {
                c.auto_increment = Some((
                    u16_at(vars, i).ok_or_else(bad)?,
                    u16_at(vars, i + 2).ok_or_else(bad)?,
                ));
                i += 4;
            }
            4 => {
                c.charset = Some((
                    u16_at(vars, i).ok_or_else(bad)?,
                    u16_at(vars, i + 2).ok_or_else(bad)?,
                    u16_at(vars, i + 4).ok_or_else(bad)?,
                ));
                i += 6;
            }
            5 => {
                let n = byte(i)?;
                let tz = vars.get(i + 1..i + 1 + n).ok_or_else(bad)?;
                c.time_zone = Some(String::from_utf8_lossy(tz).into_owned());
                i += 1 + n;
            }
            6 => i += 1 + byte(i)?,
            7 => {
                c.lc_time_names = Some(u16_at(vars, i).ok_or_else(bad)?);
                i += 2;
            }
            8 => {
                c.charset_database = Some(u16_at(vars, i).ok_or_else(bad)?);
                i += 2;
            }
            9 => i += 8,
            10 => i += 4,
            11 => {
                let user = byte(i)?;
                let host = byte(i + 1 + user)?;
                i += 2 + user + host;
            }
            12 => {
                let n = byte(i)?;
                i += 1;
                if n <= 16 {
                    for _ in 0..n {
                        let len = vars[i..].iter().position(|&b| b == 0).ok_or_else(bad)?;
                        i += len + 1;
                    }
                }
            }
            13 | 128 => {
                let b = vars.get(i..i + 3).ok_or_else(bad)?;
                micros = Some(u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16);
                i += 3;
            }
            129 => i += 8,
            130 => i += 1,
            other => {
                return Err(format!(
                    "a query event with status variable {other}, which this selmai-backup does not know (a newer server?): replay this range with mariadb-binlog"
                ))
            }
        }
    }
    Ok(Query {
        thread_id,
        db,
        text,
        context: c,
        micros,
    })
}

/// A user variable a statement reads, as its `User_var` event gives it
/// (statement-based binlog: the server logs each variable the statement
/// uses just before it).
#[derive(Debug, Clone, PartialEq)]
struct UserVar {
    name: Vec<u8>,
    value: UserValue,
}

/// The value of a [`UserVar`], by the server's result type.
#[derive(Debug, Clone, PartialEq)]
enum UserValue {
    Null,
    /// The bytes and the number of their collation.
    String(Vec<u8>, u32),
    Real(f64),
    Int(i64),
    Unsigned(u64),
    /// As the server prints it: sign, digits, the scale's decimals.
    Decimal(String),
}

/// `Item_result` as the event writes it.
const STRING_RESULT: u8 = 0;
const REAL_RESULT: u8 = 1;
const INT_RESULT: u8 = 2;
const ROW_RESULT: u8 = 3;
const DECIMAL_RESULT: u8 = 4;
/// `User_var_log_event::UNSIGNED_F`.
const UNSIGNED_F: u8 = 1;

/// Decode a `User_var` event's data (after its header and empty post
/// header, without its checksum): name length and name, `is_null`, then
/// the result type, the collation number, the value's length and the value,
/// and a flags byte (unsigned) that servers since 5.5 append.
fn parse_user_var(data: &[u8]) -> Result<UserVar, String> {
    let bad = || "a malformed user variable event".to_owned();
    let name_len = u32_at(data, 0).ok_or_else(bad)? as usize;
    let name = data.get(4..4 + name_len).ok_or_else(bad)?.to_vec();
    let rest = &data[4 + name_len..];
    if *rest.first().ok_or_else(bad)? != 0 {
        return Ok(UserVar {
            name,
            value: UserValue::Null,
        });
    }
    let kind = *rest.get(1).ok_or_else(bad)?;
    let charset = u32_at(rest, 2).ok_or_else(bad)?;
    let len = u32_at(rest, 6).ok_or_else(bad)? as usize;
    let val = rest.get(10..10 + len).ok_or_else(bad)?;
    let flags = rest.get(10 + len).copied().unwrap_or(0);
    let value = match kind {
        STRING_RESULT => UserValue::String(val.to_vec(), charset),
        REAL_RESULT => UserValue::Real(f64::from_le_bytes(
            val.get(..8).ok_or_else(bad)?.try_into().map_err(|_| bad())?,
        )),
        INT_RESULT => {
            let v = u64_at(val, 0).ok_or_else(bad)?;
            if flags & UNSIGNED_F != 0 {
                UserValue::Unsigned(v)
            } else {
                UserValue::Int(v as i64)
            }
        }
        DECIMAL_RESULT => {
            let (precision, scale) = (
                *val.first().ok_or_else(bad)?,
                *val.get(1).ok_or_else(bad)?,
            );
            UserValue::Decimal(decimal_text(&val[2..], precision, scale).ok_or_else(bad)?)
        }
        ROW_RESULT => return Err("a user variable holding a row, which no statement can log; replay this range with mariadb-binlog".into()),
        other => {
            return Err(format!(
                "a user variable of result type {other}, which this selmai-backup does not know (a newer server?): replay this range with mariadb-binlog"
            ))
        }
    };
    Ok(UserVar { name, value })
}

/// A DECIMAL in the server's binary form (`decimal2bin`: groups of nine
/// digits in four bytes big-endian, the leftover digits of the integer part
/// first and of the fraction last in fewer bytes, the sign in the first
/// bit, every byte inverted for a negative number) as `decimal2string`
/// prints it.
fn decimal_text(bin: &[u8], precision: u8, scale: u8) -> Option<String> {
    const BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let (precision, scale) = (usize::from(precision), usize::from(scale));
    let intg = precision.checked_sub(scale)?;
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (scale / 9, scale % 9);
    let size = BYTES[intg0x] + intg0 * 4 + frac0 * 4 + BYTES[frac0x];
    let mut b = bin.get(..size)?.to_vec();
    if b.is_empty() {
        return Some("0".into());
    }
    let negative = b[0] & 0x80 == 0;
    b[0] ^= 0x80;
    if negative {
        b.iter_mut().for_each(|x| *x = !*x);
    }
    let mut at = 0;
    let mut group = |n: usize| {
        let v = b[at..at + n]
            .iter()
            .fold(0u64, |acc, &x| acc << 8 | u64::from(x));
        at += n;
        v
    };
    let mut int = String::new();
    if intg0x > 0 {
        int.push_str(&format!("{:0w$}", group(BYTES[intg0x]), w = intg0x));
    }
    for _ in 0..intg0 {
        int.push_str(&format!("{:09}", group(4)));
    }
    let mut frac = String::new();
    for _ in 0..frac0 {
        frac.push_str(&format!("{:09}", group(4)));
    }
    if frac0x > 0 {
        frac.push_str(&format!("{:0w$}", group(BYTES[frac0x]), w = frac0x));
    }
    // A digit group larger than its digits: not a decimal the server wrote.
    if int.len() != intg || frac.len() != scale {
        return None;
    }
    let int = int.trim_start_matches('0');
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    out.push_str(if int.is_empty() { "0" } else { int });
    if scale > 0 {
        out.push('.');
        out.push_str(&frac);
    }
    Some(out)
}

/// Collation number -> (character set, collation), as the server a replay
/// writes to names them.
type Collations = HashMap<u32, (String, String)>;

/// The collations of the server `conn` is connected to. MariaDB 10.10+
/// names the collations shared by several character sets (`uca1400_ai_ci`)
/// in full (`utf8mb4_uca1400_ai_ci`) only in
/// `COLLATION_CHARACTER_SET_APPLICABILITY`; older servers have no
/// `FULL_COLLATION_NAME` there, and `COLLATIONS` has every number.
async fn collations(conn: &mut mysql_async::Conn) -> Result<Collations, DbError> {
    let rows: Vec<(u32, String, String)> = match conn
        .query(
            "SELECT ID, CHARACTER_SET_NAME, FULL_COLLATION_NAME FROM information_schema.COLLATION_CHARACTER_SET_APPLICABILITY",
        )
        .await
    {
        Ok(rows) => rows,
        Err(_) => conn
            .query("SELECT ID, CHARACTER_SET_NAME, COLLATION_NAME FROM information_schema.COLLATIONS WHERE ID IS NOT NULL")
            .await
            .map_err(|e| DbError::query("reading the server's collations", e))?,
    };
    Ok(rows
        .into_iter()
        .map(|(id, cs, coll)| (id, (cs, coll)))
        .collect())
}

/// `SET @`name`:=value`, as `mariadb-binlog` prints a `User_var` event:
/// a string as a hex literal with its character set and collation (the
/// bytes travel unchanged whatever the connection's character set), an
/// integer signed or unsigned. Unlike `mariadb-binlog`, the variable
/// keeps its type and value: a REAL is written with every digit it needs
/// and an exponent (`%.14g` rounds, and without an exponent the literal is
/// a DECIMAL), a DECIMAL of scale 0 with its point (`7.`, not the integer
/// `7`).
fn user_var_statement(v: &UserVar, collations: Option<&Collations>) -> Result<Vec<u8>, String> {
    let mut out = b"SET @`".to_vec();
    for &c in &v.name {
        if c == b'`' {
            out.push(b'`');
        }
        out.push(c);
    }
    out.extend_from_slice(b"`:=");
    match &v.value {
        UserValue::Null => out.extend_from_slice(b"NULL"),
        UserValue::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        UserValue::Unsigned(u) => out.extend_from_slice(u.to_string().as_bytes()),
        UserValue::Decimal(d) => {
            out.extend_from_slice(d.as_bytes());
            // `7.` is a DECIMAL literal, `7` an integer one.
            if !d.contains('.') {
                out.push(b'.');
            }
        }
        UserValue::Real(r) => {
            if !r.is_finite() {
                return Err(format!(
                    "a user variable holding {r}, which no server writes"
                ));
            }
            out.extend_from_slice(format!("{r:e}").as_bytes());
        }
        UserValue::String(bytes, number) => {
            let hex = if bytes.is_empty() {
                "''".to_owned()
            } else {
                let mut h = String::with_capacity(2 + bytes.len() * 2);
                h.push_str("0x");
                for b in bytes {
                    h.push_str(&format!("{b:02x}"));
                }
                h
            };
            match collations {
                Some(names) => {
                    let (cs, coll) = names.get(number).ok_or_else(|| {
                        format!(
                            "a user variable in collation number {number}, which the server replayed into does not know; replay this range with mariadb-binlog into a server that has it"
                        )
                    })?;
                    out.extend_from_slice(
                        format!("_{cs} {hex} COLLATE {}", db::ident(coll)).as_bytes(),
                    );
                }
                // Planning: only whether the transaction touches the
                // database counts, nothing is sent.
                None => out.extend_from_slice(format!("_binary {hex}").as_bytes()),
            }
        }
    }
    Ok(out)
}

/// MariaDB's compressed query: a header byte (0x80 | count of length
/// bytes), the uncompressed length big-endian, then zlib.
fn uncompress(body: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let head = *body.first().ok_or("an empty compressed query")?;
    let lenlen = usize::from(head & 0x07);
    if head & 0x80 == 0 || head & 0x70 != 0 {
        return Err(format!(
            "a compressed query in an unknown format ({head:#x})"
        ));
    }
    let data = body.get(1 + lenlen..).ok_or("a torn compressed query")?;
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .read_to_end(&mut out)
        .map_err(|e| format!("a compressed query that does not uncompress: {e}"))?;
    Ok(out)
}

/// `BINLOG '<base64 of the events>'`.
fn binlog_statement(events: &[Vec<u8>]) -> Vec<u8> {
    let total: usize = events.iter().map(Vec::len).sum();
    let mut out = Vec::with_capacity(total * 4 / 3 + 16);
    out.extend_from_slice(b"BINLOG '");
    let all: Vec<u8> = events.concat();
    crate::base64::encode_into(&mut out, &all);
    out.push(b'\'');
    out
}

/// Set the header's size and, when the format has one, a new CRC32.
fn reseal(mut ev: Vec<u8>, crc: bool) -> Vec<u8> {
    let size = ev.len() as u32;
    ev[9..13].copy_from_slice(&size.to_le_bytes());
    if crc {
        let body = ev.len() - 4;
        let c = crc32fast::hash(&ev[..body]);
        ev[body..].copy_from_slice(&c.to_le_bytes());
    }
    ev
}

/// A `Table_map` event naming `to` instead of its database (whose length
/// byte is at `at`), as `mariadb-binlog --rewrite-db` writes it.
fn rewrite_table_map(ev: &[u8], at: usize, to: &str, crc: bool) -> Vec<u8> {
    let old = usize::from(ev[at]);
    let mut out = Vec::with_capacity(ev.len() + to.len());
    out.extend_from_slice(&ev[..at]);
    out.push(to.len() as u8);
    out.extend_from_slice(to.as_bytes());
    out.extend_from_slice(&ev[at + 1 + old..]);
    reseal(out, crc)
}

fn with_flags(ev: &[u8], at: usize, flags: u16, crc: bool) -> Vec<u8> {
    let mut out = ev.to_vec();
    out[at..at + 2].copy_from_slice(&flags.to_le_bytes());
    reseal(out, crc)
}

/// Statements about a whole database, which name it explicitly.
#[derive(Debug, PartialEq, Eq)]
enum DatabaseStatement {
    Drop,
    CreateOrAlter,
}

fn database_statement(text: &[u8]) -> Option<DatabaseStatement> {
    let t = super::tokens(text, 2);
    let second = t.get(1)?;
    if !(second.eq_ignore_ascii_case("DATABASE") || second.eq_ignore_ascii_case("SCHEMA")) {
        return None;
    }
    let first = t.first()?;
    if first.eq_ignore_ascii_case("DROP") {
        Some(DatabaseStatement::Drop)
    } else if first.eq_ignore_ascii_case("CREATE") || first.eq_ignore_ascii_case("ALTER") {
        Some(DatabaseStatement::CreateOrAlter)
    } else {
        None
    }
}

/// What one transaction becomes: the statements to send, or nothing when
/// it does not touch the database.
fn statements(
    plain: &[u8],
    p: &Parsed,
    g: &Group,
    from_db: &str,
    into: &str,
    session: &mut Session,
) -> Result<Vec<Vec<u8>>, String> {
    let mut body: Vec<Vec<u8>> = Vec::new();
    let mut touched = false;
    // Statements kept (a query counts as two: it never goes alone), and
    // whether an XID commits the group.
    let mut units = 0;
    let mut by_xid = false;
    let mut ours: HashSet<u64> = HashSet::new();
    // The rows statement being collected: its events, and whether the
    // last one kept ends it.
    let mut rows: Vec<Vec<u8>> = Vec::new();
    let mut last_rows_kept: Option<usize> = None;
    let mut pre: Vec<Vec<u8>> = Vec::new();
    let rename = from_db != into;
    let short = |kind: u8| p.post_len(kind) == 6;
    for &(a, b) in &g.events {
        let ev = &plain[a..b];
        let h = Header::parse(ev).ok_or("a torn event")?;
        match h.kind {
            TABLE_MAP => {
                let (db, at) = p.table_map_db(ev).ok_or("a malformed Table_map event")?;
                let id = p
                    .table_id(ev, TABLE_MAP)
                    .ok_or("a malformed Table_map event")?;
                if db == from_db.as_bytes() {
                    ours.insert(id);
                    rows.push(if rename {
                        rewrite_table_map(ev, at, into, p.format.crc32)
                    } else {
                        ev.to_vec()
                    });
                }
            }
            k if is_rows(k) => {
                let id = p.table_id(ev, k).ok_or("a malformed rows event")?;
                let flags = p.rows_flags(ev, k).ok_or("a malformed rows event")?;
                if ours.contains(&id) {
                    rows.push(ev.to_vec());
                    last_rows_kept = Some(rows.len() - 1);
                }
                if flags & STMT_END != 0 {
                    if let Some(i) = last_rows_kept {
                        // The statement's last rows event was another
                        // database's: end the statement on ours.
                        let kind = Header::parse(&rows[i]).map(|h| h.kind).unwrap_or(k);
                        let at = HEADER_LEN + if short(kind) { 4 } else { 6 };
                        let f = p.rows_flags(&rows[i], kind).unwrap_or(0);
                        if f & STMT_END == 0 {
                            rows[i] = with_flags(&rows[i], at, f | STMT_END, p.format.crc32);
                        }
                        session.format_description(plain, p, &mut body);
                        body.push(binlog_statement(&rows));
                        touched = true;
                        units += 1;
                    }
                    rows.clear();
                    ours.clear();
                    last_rows_kept = None;
                }
            }
            INTVAR => {
                let kind = *ev.get(HEADER_LEN).ok_or("a malformed INTVAR event")?;
                let v = u64_at(ev, HEADER_LEN + 1).ok_or("a malformed INTVAR event")?;
                let name = if kind == 1 {
                    "LAST_INSERT_ID"
                } else {
                    "INSERT_ID"
                };
                pre.push(format!("SET {name}={v}").into_bytes());
            }
            RAND => {
                let s1 = u64_at(ev, HEADER_LEN).ok_or("a malformed RAND event")?;
                let s2 = u64_at(ev, HEADER_LEN + 8).ok_or("a malformed RAND event")?;
                pre.push(format!("SET @@RAND_SEED1={s1}, @@RAND_SEED2={s2}").into_bytes());
            }
            USER_VAR => {
                let body_end = ev.len() - if p.format.crc32 { 4 } else { 0 };
                let data = ev
                    .get(HEADER_LEN + p.post_len(USER_VAR)..body_end)
                    .ok_or("a malformed user variable event")?;
                let v = parse_user_var(data)?;
                pre.push(user_var_statement(&v, session.collations.as_deref())?);
            }
            types::XA_PREPARE => {
                return Err("an XA transaction, which the native replay does not apply; replay this range with mariadb-binlog".into());
            }
            types::QUERY | types::QUERY_COMPRESSED => {
                let q = parse_query(ev, h.kind, &p.format)?;
                let text = q.text.trim_ascii();
                if text.eq_ignore_ascii_case(b"BEGIN") {
                    pre.clear();
                    continue;
                }
                if text.eq_ignore_ascii_case(b"COMMIT") || text.eq_ignore_ascii_case(b"ROLLBACK") {
                    body.push(text.to_vec());
                    continue;
                }
                if q.db != from_db.as_bytes() {
                    pre.clear();
                    continue;
                }
                match database_statement(text) {
                    Some(DatabaseStatement::Drop) => {
                        return Err(format!(
                            "a DROP DATABASE statement at {}: a point-in-time restore stops before it; give a time (or GTID) before this transaction",
                            segment::event_time(h.timestamp).format("%Y-%m-%d %H:%M:%S UTC")
                        ))
                    }
                    // The database exists (the dump was restored into the
                    // one the operator chose): as a restore, never another.
                    Some(DatabaseStatement::CreateOrAlter) => {
                        pre.clear();
                        continue;
                    }
                    None => {}
                }
                session.context(&q, h.timestamp, into, &mut body);
                body.append(&mut pre);
                body.push(q.text.clone());
                touched = true;
                units += 2;
            }
            types::XID => {
                body.push(b"COMMIT".to_vec());
                by_xid = true;
            }
            _ => {}
        }
    }
    if !touched {
        return Ok(Vec::new());
    }
    if !g.standalone && g.gtid.is_some() {
        if units == 1 && by_xid && body.last().is_some_and(|l| l == b"COMMIT") {
            // One row statement: in autocommit it is the whole transaction,
            // in one round trip instead of three.
            body.pop();
        } else {
            body.insert(0, b"BEGIN".to_vec());
        }
    }
    Ok(body)
}

/// What the server session was last told (so each setting is sent only
/// when it changes, as `mariadb-binlog` does).
#[derive(Default)]
struct Session {
    fde: Option<Vec<u8>>,
    context: Context,
    db: Option<String>,
    thread_id: Option<u32>,
    /// The names of the collations of the server replayed into; `None`
    /// while planning, when nothing is sent.
    collations: Option<Arc<Collations>>,
}

impl Session {
    fn format_description(&mut self, plain: &[u8], p: &Parsed, out: &mut Vec<Vec<u8>>) {
        let fde = &plain[p.fde.0..p.fde.1];
        if self.fde.as_deref() != Some(fde) {
            out.push(binlog_statement(&[fde.to_vec()]));
            self.fde = Some(fde.to_vec());
        }
    }

    fn context(&mut self, q: &Query, timestamp: u32, into: &str, out: &mut Vec<Vec<u8>>) {
        if self.db.as_deref() != Some(into) {
            out.push(format!("USE {}", db::ident(into)).into_bytes());
            self.db = Some(into.to_owned());
        }
        if self.thread_id != Some(q.thread_id) {
            out.push(format!("SET @@session.pseudo_thread_id={}", q.thread_id).into_bytes());
            self.thread_id = Some(q.thread_id);
        }
        out.push(
            match q.micros {
                Some(us) => format!("SET TIMESTAMP={timestamp}.{us:06}"),
                None => format!("SET TIMESTAMP={timestamp}"),
            }
            .into_bytes(),
        );
        let c = &q.context;
        let was = &mut self.context;
        if let Some(f) = c.flags2.filter(|f| was.flags2 != Some(*f)) {
            let on = |bit: u32| u8::from(f & bit != 0);
            out.push(
                format!(
                    "SET @@session.foreign_key_checks={}, @@session.sql_auto_is_null={}, @@session.unique_checks={}, @@session.autocommit=1",
                    1 - on(1 << 26),
                    on(1 << 14),
                    1 - on(1 << 27)
                )
                .into_bytes(),
            );
            was.flags2 = Some(f);
        }
        if let Some(m) = c.sql_mode.filter(|m| was.sql_mode != Some(*m)) {
            out.push(format!("SET @@session.sql_mode={m}").into_bytes());
            was.sql_mode = Some(m);
        }
        if let Some((inc, off)) = c.auto_increment.filter(|a| was.auto_increment != Some(*a)) {
            out.push(
                format!("SET @@session.auto_increment_increment={inc}, @@session.auto_increment_offset={off}")
                    .into_bytes(),
            );
            was.auto_increment = c.auto_increment;
        }
        if let Some((cl, conn, server)) = c.charset.filter(|x| was.charset != Some(*x)) {
            out.push(
                format!("SET @@session.character_set_client={cl}, @@session.collation_connection={conn}, @@session.collation_server={server}")
                    .into_bytes(),
            );
            was.charset = c.charset;
        }
        if let Some(tz) = c
            .time_zone
            .as_ref()
            .filter(|t| was.time_zone.as_ref() != Some(*t))
        {
            out.push(format!("SET @@session.time_zone={}", db::literal(tz)).into_bytes());
            was.time_zone = Some(tz.clone());
        }
        if let Some(l) = c.lc_time_names.filter(|l| was.lc_time_names != Some(*l)) {
            out.push(format!("SET @@session.lc_time_names={l}").into_bytes());
            was.lc_time_names = Some(l);
        }
        if let Some(cd) = c
            .charset_database
            .filter(|x| was.charset_database != Some(*x))
        {
            out.push(format!("SET @@session.collation_database={cd}").into_bytes());
            was.charset_database = Some(cd);
        }
    }
}

/// The last transaction a replay applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastApplied {
    /// Its GTID.
    pub gtid: Option<Gtid>,
    /// Its commit time.
    pub time: DateTime<Utc>,
    /// Its end in the source server's binlog.
    pub file: String,
    /// Position just after it.
    pub position: u64,
}

/// A planned point-in-time restore: everything read and checked, nothing
/// touched yet.
#[derive(Debug, Clone)]
pub struct PitrPlan {
    /// The dump restored first.
    pub dump: String,
    /// Its manifest.
    pub manifest: Manifest,
    /// The database the dump (and the replayed events) belong to.
    pub database: String,
    /// Where the replay starts (the dump's snapshot).
    pub start: (String, u64),
    /// Where the segments are read.
    pub target: Arc<dyn Target>,
    /// The segments read, in order, each verified.
    pub segments: Vec<SegmentManifest>,
    /// Transactions of the database that will be applied.
    pub transactions: u64,
    /// The last of them.
    pub last: Option<LastApplied>,
    /// The end of the last transaction (of any database) inside the
    /// target: nothing after it is read.
    pub stop: Option<(String, u64)>,
    /// What was asked.
    pub asked: Stop,
}

fn key(file: &str, pos: u64) -> (u64, u64) {
    (segment::file_index(file), pos)
}

fn ts(t: u32) -> DateTime<Utc> {
    segment::event_time(t)
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// One dump with a manifest and a binlog position.
struct Dump {
    name: String,
    manifest: Manifest,
}

impl Dump {
    fn snapshot(&self) -> Option<(String, u64)> {
        self.manifest
            .snapshot
            .as_ref()
            .map(|s| (s.file.clone(), s.position))
    }
    fn taken(&self) -> DateTime<Utc> {
        self.manifest.started_at
    }
}

/// Every dump of `prefix` with a manifest, in every target (the volume's
/// copy first), newest first.
async fn dumps(prefix: &str, targets: &[Arc<dyn Target>]) -> Result<Vec<Dump>, PitrError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for t in targets {
        for e in catalog::list_db(t.as_ref(), prefix)
            .await
            .map_err(LocateError::from)?
        {
            if !e.has_manifest || !seen.insert(e.name.clone()) {
                continue;
            }
            let s = open::source_at(t.clone(), &e.name).await?;
            if let Some(manifest) = s.manifest {
                out.push(Dump {
                    name: e.name,
                    manifest,
                });
            }
        }
    }
    out.sort_by_key(|d| std::cmp::Reverse(d.taken()));
    Ok(out)
}

/// Whether `d` is before `stop`: taken at or before the time, or its
/// snapshot's GTID state is before the GTID.
fn serves(d: &Dump, stop: &Stop) -> bool {
    if d.snapshot().is_none() {
        return false;
    }
    match stop {
        Stop::End => true,
        Stop::Position(file, pos) => d
            .snapshot()
            .is_some_and(|(f, p)| key(&f, p) <= key(file, *pos)),
        Stop::Time(t) => d.taken().timestamp() <= t.timestamp(),
        Stop::Gtid(g) => {
            let state = d
                .manifest
                .snapshot
                .as_ref()
                .and_then(|s| s.gtid.as_deref())
                .unwrap_or_default();
            state
                .split(',')
                .filter_map(parse_gtid)
                .filter(|s| s.domain == g.domain)
                .all(|s| s.seq < g.seq)
        }
    }
}

/// For the drill of the chain leading to `spec` (`latest` or a dump's
/// name): that dump's name and manifest, and the plan from the dump before
/// it (the newest older one with a binlog position) to its snapshot.
pub async fn chain_to(
    spec: &str,
    prefix: &str,
    targets: &[Arc<dyn Target>],
    passphrase: Option<&Secret>,
) -> Result<(String, Manifest, PitrPlan), PitrError> {
    let all = dumps(prefix, targets).await?;
    let with_position: Vec<&Dump> = all.iter().filter(|d| d.snapshot().is_some()).collect();
    let i = match spec {
        "latest" => (!with_position.is_empty()).then_some(0),
        name => with_position.iter().position(|d| d.name == name),
    }
    .ok_or_else(|| {
        PitrError::Unreachable(format!(
            "no dump {spec} with a manifest and a binlog position: the drill of the chain needs one"
        ))
    })?;
    let to = with_position[i];
    let from = with_position.get(i + 1).ok_or_else(|| {
        PitrError::Unreachable(format!(
            "{} is the oldest dump with a binlog position: the drill of the chain replays from the dump before it to its snapshot, and there is none",
            to.name
        ))
    })?;
    let (file, pos) = to.snapshot().expect("filtered on it");
    let plan = plan(
        &from.name,
        prefix,
        targets,
        passphrase,
        Stop::Position(file, pos),
    )
    .await?;
    Ok((to.name.clone(), to.manifest.clone(), plan))
}

/// Choose the dump (`spec`: `latest` or a dump's name) and the target whose
/// archive leads from its snapshot to `stop`, read every segment needed
/// against its manifest and count what will be applied. Touches nothing.
pub async fn plan(
    spec: &str,
    prefix: &str,
    targets: &[Arc<dyn Target>],
    passphrase: Option<&Secret>,
    stop: Stop,
) -> Result<PitrPlan, PitrError> {
    let all = dumps(prefix, targets).await?;
    let with_position: Vec<&Dump> = all.iter().filter(|d| d.snapshot().is_some()).collect();
    let Some(oldest) = with_position.last() else {
        return Err(PitrError::Unreachable(format!(
            "no dump in {} records a binlog position (binary logging was off when they were taken): there is nothing to replay from",
            targets.iter().map(|t| t.label()).collect::<Vec<_>>().join(" and ")
        )));
    };
    let serving = with_position.iter().find(|d| serves(d, &stop)).copied();
    let dump = if spec == "latest" {
        serving.ok_or_else(|| {
            PitrError::Unreachable(format!(
                "no dump was taken before {stop}: the oldest with a binlog position is {} (taken {}); choose a later target",
                oldest.name,
                when(oldest.taken())
            ))
        })?
    } else {
        let d = all.iter().find(|d| d.name == spec).ok_or_else(|| {
            PitrError::Unreachable(format!(
                "no dump named {spec} with a manifest: use `restore latest --to ...` or a name from `selmai-backup list`"
            ))
        })?;
        if !serves(d, &stop) {
            return Err(PitrError::Unreachable(match serving {
                Some(o) => format!(
                    "{} was taken at {}, after {stop}: the older dump {} (taken {}) serves it: restore {} --to ..., or latest",
                    d.name, when(d.taken()), o.name, when(o.taken()), o.name
                ),
                None => format!(
                    "{} was taken at {}, after {stop}, and no older dump serves it (the oldest with a binlog position is {}, taken {})",
                    d.name,
                    when(d.taken()),
                    oldest.name,
                    when(oldest.taken())
                ),
            }));
        }
        d
    };
    let start = dump.snapshot().expect("dumps that serve have a snapshot");
    let mut refusal = None;
    for t in targets {
        let chain = store::list_chain(t.as_ref(), prefix).await?;
        match covering(&chain, dump, &start, &stop, t.label()) {
            Ok(range) => {
                return read_plan(
                    dump,
                    &start,
                    t.clone(),
                    chain[range].to_vec(),
                    passphrase,
                    stop,
                )
                .await;
            }
            Err(why) => {
                refusal.get_or_insert(why);
            }
        }
    }
    Err(PitrError::Unreachable(refusal.unwrap_or_else(|| {
        "no target holds a binlog archive".to_owned()
    })))
}

/// The segments of `chain` from the one holding `start` to the one where
/// `stop` falls (the end for `End` and GTIDs), without a break; or why not,
/// naming the window this chain reaches.
fn covering(
    chain: &[SegmentManifest],
    dump: &Dump,
    start: &(String, u64),
    stop: &Stop,
    label: &str,
) -> Result<std::ops::Range<usize>, String> {
    let Some(first) = store::segment_at(chain, &start.0, start.1) else {
        let held = match (chain.first(), chain.last()) {
            (Some(a), Some(z)) => format!(
                "it holds {}:{} to {}:{}",
                a.binlog_file, a.start_position, z.binlog_file, z.end_position
            ),
            _ => "it is empty".to_owned(),
        };
        return Err(format!(
            "the binlog archive in the {label} does not hold {}:{}, where {} was taken: {held}",
            start.0, start.1, dump.name
        ));
    };
    // The first break after `first`: the reachable window ends before it.
    let broken = store::breaks(chain).into_iter().find(|&b| b > first);
    let usable_end = broken.unwrap_or(chain.len());
    let reach_end = chain[first..usable_end]
        .iter()
        .rev()
        .find_map(|m| m.last_event_time)
        .unwrap_or(dump.taken())
        .max(dump.taken());
    let window = format!(
        "the archive in the {label} reaches from {} ({}) to {}",
        when(dump.taken()),
        dump.name,
        when(reach_end)
    );
    let end = match stop {
        Stop::End | Stop::Gtid(_) => {
            if let Some(b) = broken {
                let (p, m) = (&chain[b - 1], &chain[b]);
                return Err(format!(
                    "gap in the binlog archive in the {label} between {}:{} and {}:{}: {window}",
                    p.binlog_file, p.end_position, m.binlog_file, m.start_position
                ));
            }
            chain.len()
        }
        Stop::Position(file, pos) => {
            let Some(last) = chain[first..]
                .iter()
                .position(|m| key(&m.binlog_file, m.end_position) >= key(file, *pos))
                .map(|i| first + i)
            else {
                return Err(format!(
                    "the binlog archive in the {label} ends before {file}:{pos}: {window}"
                ));
            };
            if let Some(b) = broken.filter(|&b| b <= last) {
                let (p, m) = (&chain[b - 1], &chain[b]);
                return Err(format!(
                    "gap in the binlog archive in the {label} between {}:{} and {}:{}: {window}",
                    p.binlog_file, p.end_position, m.binlog_file, m.start_position
                ));
            }
            last + 1
        }
        Stop::Time(t) => {
            let past = chain[first..]
                .iter()
                .position(|m| {
                    m.last_event_time
                        .is_some_and(|l| l.timestamp() > t.timestamp())
                })
                .map(|i| first + i + 1);
            match (past, broken) {
                (Some(p), Some(b)) if b < p => {
                    return Err(format!(
                        "{stop} is past a gap in the binlog archive: {window}"
                    ))
                }
                (None, Some(_)) => {
                    return Err(format!(
                        "{stop} is past a gap in the binlog archive: {window}"
                    ))
                }
                (None, None) => {
                    let last = chain.iter().rev().find_map(|m| m.last_event_time);
                    if last.is_none_or(|l| l.timestamp() < t.timestamp()) {
                        return Err(format!(
                            "{stop} is after the end of the archive (its last event is from {}): {window}; --to end replays everything archived",
                            last.map(when).unwrap_or_else(|| "-".into())
                        ));
                    }
                    chain.len()
                }
                (Some(p), _) => p,
            }
        }
    };
    Ok(first..end)
}

/// Read each segment against its manifest and find the last transaction
/// inside the target.
async fn read_plan(
    dump: &Dump,
    start: &(String, u64),
    target: Arc<dyn Target>,
    segments: Vec<SegmentManifest>,
    passphrase: Option<&Secret>,
    stop: Stop,
) -> Result<PitrPlan, PitrError> {
    let database = dump.manifest.database.name.clone();
    let mut out = PitrPlan {
        dump: dump.name.clone(),
        manifest: dump.manifest.clone(),
        database: database.clone(),
        start: start.clone(),
        target: target.clone(),
        segments: Vec::new(),
        transactions: 0,
        last: None,
        stop: None,
        asked: stop.clone(),
    };
    let mut done = false;
    let mut found_gtid = false;
    let mut session = Session::default();
    for m in segments {
        if done {
            break;
        }
        let plain = store::read_verified(target.as_ref(), &m, passphrase).await?;
        let from = (m.binlog_file == start.0).then_some(start.1);
        let p = parse(&plain, &m, from)?;
        for g in &p.groups {
            let past = match &stop {
                Stop::Time(t) => i64::from(g.time) > t.timestamp(),
                Stop::Position(file, pos) => key(&m.binlog_file, g.end) > key(file, *pos),
                _ => false,
            };
            if past {
                done = true;
                break;
            }
            let touches = !statements(&plain, &p, g, &database, &database, &mut session)
                .map_err(|e| unsupported(&m, g, e))?
                .is_empty();
            out.stop = Some((m.binlog_file.clone(), g.end));
            if touches {
                out.transactions += 1;
                out.last = Some(LastApplied {
                    gtid: g.gtid,
                    time: ts(g.time),
                    file: m.binlog_file.clone(),
                    position: g.end,
                });
            }
            if let Stop::Gtid(want) = &stop {
                if g.gtid.as_ref() == Some(want) {
                    found_gtid = true;
                    done = true;
                    break;
                }
            }
        }
        out.segments.push(m);
    }
    if let Stop::Gtid(g) = &stop {
        if !found_gtid {
            return Err(PitrError::Unreachable(format!(
                "GTID {g} is not in the binlog archive after {} (snapshot {}:{}); the archive in {} ends at {}",
                dump.name,
                start.0,
                start.1,
                crate::target::the(target.label()),
                out.segments
                    .last()
                    .and_then(|m| m.last_gtid.clone())
                    .unwrap_or_else(|| "-".into())
            )));
        }
    }
    Ok(out)
}

fn unsupported(m: &SegmentManifest, g: &Group, e: String) -> PitrError {
    PitrError::Unsupported(format!(
        "{} (transaction {} ending at {}:{}) holds {e}; nothing was touched",
        m.file,
        g.gtid.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
        m.binlog_file,
        g.end
    ))
}

/// What a replay did.
#[derive(Debug, Clone, Default)]
pub struct ReplaySummary {
    /// Transactions applied.
    pub transactions: u64,
    /// Statements sent.
    pub statements: u64,
}

/// The replay step of a restore: the plan and the passphrase of the archive.
pub struct Replay<'a> {
    /// The plan.
    pub plan: &'a PitrPlan,
    /// `BACKUP_PASSPHRASE`.
    pub passphrase: Option<&'a Secret>,
}

impl Replay<'_> {
    /// Apply the planned transactions to `into` (the dump is restored there).
    pub async fn run(&self, db: &DbSettings, into: &str) -> Result<ReplaySummary, PitrError> {
        let plan = self.plan;
        let mut summary = ReplaySummary::default();
        let Some(stop) = &plan.stop else {
            return Ok(summary);
        };
        let mut conn = db::connect(db, Some(into)).await?;
        let result = match collations(&mut conn).await {
            Ok(names) => {
                self.apply(&mut conn, into, stop, Arc::new(names), &mut summary)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        if result.is_err() {
            let _ = conn.query_drop("ROLLBACK").await;
        }
        let _ = conn.disconnect().await;
        result.map(|()| summary)
    }

    async fn apply(
        &self,
        conn: &mut mysql_async::Conn,
        into: &str,
        stop: &(String, u64),
        collations: Arc<Collations>,
        summary: &mut ReplaySummary,
    ) -> Result<(), PitrError> {
        let plan = self.plan;
        let mut session = Session {
            db: Some(into.to_owned()),
            collations: Some(collations),
            ..Session::default()
        };
        let limit = key(&stop.0, stop.1);
        for m in &plan.segments {
            let plain = store::read_verified(plan.target.as_ref(), m, self.passphrase)
                .await
                .map_err(PitrError::Reread)?;
            let from = (m.binlog_file == plan.start.0).then_some(plan.start.1);
            let p = parse(&plain, m, from).map_err(PitrError::Reread)?;
            for g in &p.groups {
                if key(&m.binlog_file, g.end) > limit {
                    break;
                }
                let sql = statements(&plain, &p, g, &plan.database, into, &mut session)
                    .map_err(|e| unsupported(m, g, e))?;
                if sql.is_empty() {
                    continue;
                }
                summary.transactions += 1;
                summary.statements += sql.len() as u64;
                for s in &sql {
                    conn.query_drop(s.as_slice())
                        .await
                        .map_err(|e| PitrError::Statement {
                            at: format!(
                                "transaction {} ending at {}:{}",
                                g.gtid.map(|g| g.to_string()).unwrap_or_else(|| "-".into()),
                                m.binlog_file,
                                g.end
                            ),
                            source: DbError::query("a replayed statement", e),
                        })?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_local_or_end() {
        let paris = chrono_tz::Europe::Paris;
        assert_eq!(parse_time("end", &paris).unwrap(), None);
        let a = parse_time("2026-11-30T14:05:11+01:00", &paris)
            .unwrap()
            .unwrap();
        let b = parse_time("2026-11-30 14:05:11", &paris).unwrap().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_rfc3339(), "2026-11-30T13:05:11+00:00");
        assert!(parse_time("yesterday", &paris)
            .unwrap_err()
            .contains("not a time"));
        assert!(parse_time("2026-10-25 02:30:00", &paris)
            .unwrap_err()
            .contains("twice"));
        assert_eq!(
            parse_stop(None, Some("0-1-42")).unwrap(),
            Stop::Gtid(Gtid {
                domain: 0,
                server: 1,
                seq: 42
            })
        );
        assert!(parse_stop(Some("end"), Some("0-1-2")).is_err());
        assert!(parse_stop(None, Some("0-1")).is_err());
    }

    #[test]
    fn statements_on_a_whole_database_are_recognised() {
        assert_eq!(
            database_statement(b"DROP DATABASE `shop`"),
            Some(DatabaseStatement::Drop)
        );
        assert_eq!(
            database_statement(b"/* x */ drop schema if exists shop"),
            Some(DatabaseStatement::Drop)
        );
        assert_eq!(
            database_statement(b"ALTER DATABASE shop CHARACTER SET utf8mb4"),
            Some(DatabaseStatement::CreateOrAlter)
        );
        assert_eq!(database_statement(b"DROP TABLE `database`"), None);
        assert_eq!(database_statement(b"CREATE TABLE t (a INT)"), None);
    }

    fn table_map(db: &str) -> Vec<u8> {
        table_map_id(db, 7)
    }

    fn table_map_id(db: &str, id: u8) -> Vec<u8> {
        let mut ev = vec![0u8; HEADER_LEN];
        ev[4] = TABLE_MAP;
        ev.extend_from_slice(&[id, 0, 0, 0, 0, 0, 1, 0]);
        ev.push(db.len() as u8);
        ev.extend_from_slice(db.as_bytes());
        ev.push(0);
        ev.extend_from_slice(b"\x01t\x00\x01\x03\x00");
        ev.extend_from_slice(&[0; 4]);
        reseal(ev, true)
    }

    #[test]
    fn a_rewritten_table_map_names_the_new_database_with_a_valid_length_and_checksum() {
        let ev = table_map("selmai");
        let out = rewrite_table_map(&ev, HEADER_LEN + 8, "scratch_db", true);
        assert!(event::checksum_ok(&out));
        let h = Header::parse(&out).unwrap();
        assert_eq!(h.size as usize, out.len());
        assert_eq!(out.len(), ev.len() + 4);
        assert_eq!(out[HEADER_LEN + 8], 10);
        assert_eq!(&out[HEADER_LEN + 9..HEADER_LEN + 19], b"scratch_db");
        assert_eq!(
            &out[HEADER_LEN + 19..out.len() - 4],
            &ev[HEADER_LEN + 15..ev.len() - 4]
        );
    }

    fn rows(table: u8, flags: u16) -> Vec<u8> {
        let mut ev = vec![0u8; HEADER_LEN];
        ev[4] = 30;
        ev.extend_from_slice(&[table, 0, 0, 0, 0, 0]);
        ev.extend_from_slice(&flags.to_le_bytes());
        ev.extend_from_slice(&[1, 2, 3, 0, 0, 0, 0]);
        reseal(ev, true)
    }

    fn group_of(events: &[Vec<u8>]) -> (Vec<u8>, Parsed, Group) {
        let mut plain = Vec::new();
        let mut ranges = Vec::new();
        for e in events {
            ranges.push((plain.len(), plain.len() + e.len()));
            plain.extend_from_slice(e);
        }
        let mut xid = vec![0u8; HEADER_LEN];
        xid[4] = types::XID;
        xid.extend_from_slice(&[0; 12]);
        let xid = reseal(xid, true);
        ranges.push((plain.len(), plain.len() + xid.len()));
        plain.extend_from_slice(&xid);
        let parsed = Parsed {
            fde: (0, 0),
            format: Format {
                crc32: true,
                query_post_header: 13,
            },
            post: Vec::new(),
            groups: Vec::new(),
        };
        let g = Group {
            gtid: Some(Gtid {
                domain: 0,
                server: 1,
                seq: 5,
            }),
            standalone: false,
            events: ranges,
            time: 0,
            end: 0,
        };
        (plain, parsed, g)
    }

    #[test]
    fn rows_of_other_databases_are_dropped_and_our_statement_still_ends() {
        let ours = table_map_id("shop", 1);
        let theirs = table_map_id("mysql", 2);
        let (plain, p, g) = group_of(&[ours.clone(), theirs, rows(1, 0), rows(2, STMT_END)]);
        let sql = statements(&plain, &p, &g, "shop", "shop", &mut Session::default()).unwrap();
        // The format description, then one BINLOG statement that is the
        // whole transaction (autocommit): our table map and our rows,
        // flagged as the end of the statement.
        assert_eq!(sql.len(), 2, "{sql:?}");
        let ended = with_flags(&rows(1, 0), HEADER_LEN + 6, STMT_END, true);
        assert!(event::checksum_ok(&ended));
        assert_eq!(sql[1], binlog_statement(&[ours, ended]));

        let theirs = table_map_id("other", 3);
        let (plain, p, g) = group_of(&[theirs, rows(3, STMT_END)]);
        let sql = statements(&plain, &p, &g, "shop", "shop", &mut Session::default()).unwrap();
        assert!(sql.is_empty(), "{sql:?}");

        // Two statements: one transaction, BEGIN ... COMMIT.
        let ours = table_map_id("shop", 1);
        let (plain, p, g) = group_of(&[ours.clone(), rows(1, STMT_END), ours, rows(1, STMT_END)]);
        let sql = statements(&plain, &p, &g, "shop", "scratch", &mut Session::default()).unwrap();
        assert_eq!(sql.first().map(Vec::as_slice), Some(&b"BEGIN"[..]));
        assert_eq!(sql.last().map(Vec::as_slice), Some(&b"COMMIT"[..]));
        assert_eq!(sql.len(), 5, "{sql:?}");
    }

    /// A `User_var` event's data as the server writes it.
    fn user_var_data(name: &str, value: Option<(u8, u32, &[u8])>, flags: Option<u8>) -> Vec<u8> {
        let mut d = (name.len() as u32).to_le_bytes().to_vec();
        d.extend_from_slice(name.as_bytes());
        match value {
            None => d.push(1),
            Some((kind, charset, val)) => {
                d.push(0);
                d.push(kind);
                d.extend_from_slice(&charset.to_le_bytes());
                d.extend_from_slice(&(val.len() as u32).to_le_bytes());
                d.extend_from_slice(val);
                d.extend(flags);
            }
        }
        d
    }

    fn set_of(data: &[u8], names: Option<&Collations>) -> String {
        let v = parse_user_var(data).unwrap();
        String::from_utf8(user_var_statement(&v, names).unwrap()).unwrap()
    }

    #[test]
    fn user_variables_of_every_type_become_the_set_mariadb_binlog_prints() {
        let names: Collations = [(224, ("utf8mb4".to_owned(), "utf8mb4_unicode_ci".to_owned()))]
            .into_iter()
            .collect();
        let names = Some(&names);
        let text = "déjà 😀";
        let s = user_var_data("s", Some((STRING_RESULT, 224, text.as_bytes())), Some(0));
        assert_eq!(
            set_of(&s, names),
            format!(
                "SET @`s`:=_utf8mb4 0x{} COLLATE `utf8mb4_unicode_ci`",
                text.bytes().map(|b| format!("{b:02x}")).collect::<String>()
            )
        );
        // Planning names no collation.
        assert!(set_of(&s, None).starts_with("SET @`s`:=_binary 0x64c3"));
        let empty = user_var_data("e", Some((STRING_RESULT, 224, b"")), Some(0));
        assert_eq!(
            set_of(&empty, names),
            "SET @`e`:=_utf8mb4 '' COLLATE `utf8mb4_unicode_ci`"
        );
        let unknown = user_var_data("u", Some((STRING_RESULT, 4242, b"x")), Some(0));
        let v = parse_user_var(&unknown).unwrap();
        assert!(user_var_statement(&v, names)
            .unwrap_err()
            .contains("collation number 4242"));

        assert_eq!(
            set_of(&user_var_data("n", None, None), names),
            "SET @`n`:=NULL"
        );
        let neg = user_var_data(
            "i",
            Some((INT_RESULT, 63, &(-42i64).to_le_bytes())),
            Some(0),
        );
        assert_eq!(set_of(&neg, names), "SET @`i`:=-42");
        let big = user_var_data(
            "u",
            Some((INT_RESULT, 63, &u64::MAX.to_le_bytes())),
            Some(UNSIGNED_F),
        );
        assert_eq!(set_of(&big, names), "SET @`u`:=18446744073709551615");
        // An old server's event without the flags byte: signed.
        let old = user_var_data("o", Some((INT_RESULT, 63, &u64::MAX.to_le_bytes())), None);
        assert_eq!(set_of(&old, names), "SET @`o`:=-1");
        // REAL: every digit, with an exponent (a DOUBLE literal).
        for r in [0.1f64, -1.0 / 3.0, 1e300, 6.02214076e23, 5e-324, 0.0] {
            let d = user_var_data("r", Some((REAL_RESULT, 63, &r.to_le_bytes())), Some(0));
            let set = set_of(&d, names);
            let lit = set.strip_prefix("SET @`r`:=").unwrap();
            assert!(lit.contains('e'), "{lit}");
            assert_eq!(lit.parse::<f64>().unwrap().to_bits(), r.to_bits(), "{lit}");
        }
        // A name with a backtick is quoted.
        let q = user_var_data("a`b", None, None);
        assert_eq!(set_of(&q, names), "SET @`a``b`:=NULL");
        // DECIMAL(14,4): the server's example of decimal2bin.
        let mut dec = vec![14, 4];
        dec.extend_from_slice(&[0x81, 0x0d, 0xfb, 0x38, 0xd2, 0x04, 0xd2]);
        let d = user_var_data("d", Some((DECIMAL_RESULT, 63, &dec)), Some(0));
        assert_eq!(set_of(&d, names), "SET @`d`:=1234567890.1234");
        let mut dec = vec![14, 4];
        dec.extend_from_slice(&[0x7e, 0xf2, 0x04, 0xc7, 0x2d, 0xfb, 0x2d]);
        let d = user_var_data("d", Some((DECIMAL_RESULT, 63, &dec)), Some(0));
        assert_eq!(set_of(&d, names), "SET @`d`:=-1234567890.1234");
        let d = user_var_data(
            "d",
            Some((DECIMAL_RESULT, 63, &[3, 0, 0x80, 0x07])),
            Some(0),
        );
        assert_eq!(set_of(&d, names), "SET @`d`:=7.");
        // A ROW never comes in a binlog; a torn event is refused.
        let row = user_var_data("r", Some((ROW_RESULT, 63, b"")), Some(0));
        assert!(parse_user_var(&row).is_err());
        assert!(parse_user_var(&s[..12]).is_err());
        assert!(parse_user_var(&s[..s.len() - 3]).is_err());
    }

    #[test]
    fn decimals_print_as_the_server_prints_them() {
        // (precision, scale, binary after the sign flip, text)
        let cases: [(u8, u8, &[u8], &str); 6] = [
            (5, 2, &[0x80, 0x00, 0x00], "0.00"),
            (5, 2, &[0x80, 0x7b, 0x2d], "123.45"),
            (3, 3, &[0x80, 0x00], "0.000"),
            (1, 1, &[0x85], "0.5"),
            (10, 0, &[0x80, 0x00, 0x00, 0x00, 0x07], "7"),
            (
                20,
                10,
                &[0x81, 0, 0, 0, 0, 0x3b, 0x9a, 0xc9, 0xff, 0x00],
                "1000000000.9999999990",
            ),
        ];
        for (precision, scale, bin, text) in cases {
            assert_eq!(
                decimal_text(bin, precision, scale).as_deref(),
                Some(text),
                "{precision},{scale}"
            );
        }
        // Too short for its precision: not a decimal.
        assert_eq!(decimal_text(&[0x80], 5, 2), None);
    }

    #[test]
    fn query_status_variables_give_the_session_context() {
        let mut vars = Vec::new();
        vars.push(0);
        vars.extend_from_slice(&(1u32 << 26).to_le_bytes());
        vars.push(1);
        vars.extend_from_slice(&0x5000_0000u64.to_le_bytes());
        vars.push(6);
        vars.extend_from_slice(b"\x03std");
        vars.push(4);
        vars.extend_from_slice(&[45, 0, 45, 0, 8, 0]);
        vars.push(5);
        vars.extend_from_slice(b"\x06+01:00");
        vars.push(128);
        vars.extend_from_slice(&[0x40, 0xe2, 0x01]);
        let mut ev = vec![0u8; HEADER_LEN];
        ev[4] = types::QUERY;
        ev.extend_from_slice(&9u32.to_le_bytes());
        ev.extend_from_slice(&0u32.to_le_bytes());
        ev.push(2);
        ev.extend_from_slice(&0u16.to_le_bytes());
        ev.extend_from_slice(&(vars.len() as u16).to_le_bytes());
        ev.extend_from_slice(&vars);
        ev.extend_from_slice(b"db\0ALTER TABLE t ADD c INT");
        ev.extend_from_slice(&[0; 4]);
        let ev = reseal(ev, true);
        let f = Format {
            crc32: true,
            query_post_header: 13,
        };
        let q = parse_query(&ev, types::QUERY, &f).unwrap();
        assert_eq!(q.thread_id, 9);
        assert_eq!(q.db, b"db");
        assert_eq!(q.text, b"ALTER TABLE t ADD c INT");
        assert_eq!(q.micros, Some(123_456));
        assert_eq!(q.context.charset, Some((45, 45, 8)));
        assert_eq!(q.context.time_zone.as_deref(), Some("+01:00"));
        let mut s = Session::default();
        let mut out = Vec::new();
        s.context(&q, 1_700_000_000, "other", &mut out);
        let text: Vec<String> = out
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect();
        assert_eq!(text[0], "USE `other`");
        assert!(text.contains(&"SET TIMESTAMP=1700000000.123456".to_owned()));
        assert!(text
            .iter()
            .any(|t| t.starts_with("SET @@session.foreign_key_checks=0,")));
        // Unchanged settings are not sent again.
        let mut again = Vec::new();
        s.context(&q, 1_700_000_001, "other", &mut again);
        assert_eq!(again.len(), 1);
    }
}
