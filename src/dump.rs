//! The native dumper: one consistent snapshot of one database, written as
//! plain SQL that the stock `mariadb` client (and our `restore`) replays
//! into a database of any name.
//!
//! Responsible for: the snapshot (REPEATABLE READ + `START TRANSACTION WITH
//! CONSISTENT SNAPSHOT`) and its binlog coordinates; every object (tables,
//! sequences, data, routines, views, triggers, events) in an order that
//! restores; bit-exact values (binary as hex, FLOAT read as DOUBLE so no
//! digit is lost, invisible columns included, generated columns left out);
//! bounded INSERT statements, with values larger than a statement passed
//! through user variables in chunks; the history of system-versioned tables
//! (every row `FOR SYSTEM_TIME ALL` with its ROW START and ROW END, written
//! back under `system_versioning_insert_history`, MariaDB 10.11+). Not
//! responsible for: compression,
//! encryption, where the bytes go (it writes to any `AsyncWrite`).

mod value;

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::db::{self, ident, literal, query_strings, DbError};
use value::{ColumnEncoding, RowEncoder};

/// Limits on the SQL we write.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    /// An extended INSERT is closed once it passes this many bytes.
    pub statement_bytes: usize,
    /// Values larger than this (raw bytes) go through a user variable, in
    /// chunks of this size, so no statement needs a large `max_allowed_packet`.
    pub large_value_bytes: usize,
    /// How often progress is logged.
    pub progress_every: Duration,
}

impl Default for DumpOptions {
    fn default() -> Self {
        DumpOptions {
            statement_bytes: 1 << 20,
            large_value_bytes: 1 << 20,
            progress_every: Duration::from_secs(5),
        }
    }
}

/// Test and instrumentation hooks called while dumping.
#[async_trait]
pub trait DumpHooks: Send + Sync {
    /// Called before the rows of `table` are read.
    async fn before_table_data(&self, _table: &str) {}
}

/// Hooks that do nothing.
pub struct NoHooks;

#[async_trait]
impl DumpHooks for NoHooks {}

/// Binary log coordinates of the snapshot, for point-in-time recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BinlogPosition {
    /// Binlog file name.
    pub file: String,
    /// Byte position in that file.
    pub position: u64,
    /// `BINLOG_GTID_POS` of that position (MariaDB GTID list), when known.
    pub gtid: Option<String>,
}

/// One table or sequence and the rows dumped from it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    /// Table name.
    pub name: String,
    /// `table` or `sequence`.
    pub kind: String,
    /// Rows written (0 for a sequence); for a system-versioned table, its
    /// current rows.
    pub rows: u64,
    /// For a system-versioned table whose history was dumped: its history
    /// rows (those whose period has ended), written with their ROW START
    /// and ROW END; the fingerprint then covers every row `FOR SYSTEM_TIME
    /// ALL` with its period values. Absent for other tables and in
    /// manifests older than this field (whose fingerprints cover the
    /// current rows only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_rows: Option<u64>,
    /// Content fingerprint of the rows, read inside the snapshot (see
    /// [`Fingerprint`]); absent in manifests older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// An order-independent fingerprint of a table's rows: the wrapping sum of
/// the xxh3-128 of each row's values (length-prefixed, NULL distinct from
/// empty), as read with the dump's own SELECT. Restoring the table and
/// reading it again gives the same value; a changed, missing or extra row
/// changes it. It detects damage and mistakes, not a forger (who could
/// rewrite the manifest as well).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fingerprint {
    sum: u128,
}

impl Fingerprint {
    /// Fold one row in.
    pub fn add_row(&mut self, values: &[Option<mysql_async::Value>]) {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        for v in values {
            match v {
                Some(mysql_async::Value::Bytes(b)) => {
                    h.update(&(b.len() as u64).to_le_bytes());
                    h.update(b);
                }
                Some(mysql_async::Value::NULL) | None => h.update(&u64::MAX.to_le_bytes()),
                Some(other) => {
                    let s = other.as_sql(false);
                    h.update(&(s.len() as u64).to_le_bytes());
                    h.update(s.as_bytes());
                }
            }
        }
        self.sum = self.sum.wrapping_add(h.digest128());
    }

    /// Hex form stored in the manifest.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.sum)
    }
}

/// What a finished dump saw.
#[derive(Debug, Clone)]
pub struct DumpSummary {
    /// `VERSION()` of the server.
    pub server_version: String,
    /// Database dumped.
    pub database: String,
    /// Its default character set.
    pub charset: String,
    /// Its default collation.
    pub collation: String,
    /// Snapshot coordinates, when binary logging is on.
    pub binlog: Option<BinlogPosition>,
    /// Tables and sequences, in dump order.
    pub tables: Vec<TableStats>,
    /// View names.
    pub views: Vec<String>,
    /// Routines as `FUNCTION name` / `PROCEDURE name`.
    pub routines: Vec<String>,
    /// Trigger names.
    pub triggers: Vec<String>,
    /// Event names.
    pub events: Vec<String>,
    /// When the snapshot was taken.
    pub started_at: DateTime<Utc>,
    /// When the last byte was written.
    pub finished_at: DateTime<Utc>,
    /// Bytes of SQL written.
    pub sql_bytes: u64,
    /// Length of the largest single value dumped (a restore server's
    /// `max_allowed_packet` must be at least this; see [`crate::preflight`]).
    pub largest_value: u64,
}

/// Errors while dumping.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// Talking to the server failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The database is not on the server.
    #[error("database `{0}` does not exist on the server; check DB_NAME")]
    NoDatabase(String),
    /// Reading rows of a table failed (connection lost, table dropped ...).
    #[error("reading rows of table `{table}` failed after {rows} rows: {source}{}", db::lost_hint(.source))]
    Table {
        /// The table.
        table: String,
        /// Rows already read.
        rows: u64,
        /// The driver's error.
        #[source]
        source: mysql_async::Error,
    },
    /// The output refused bytes (disk full, upload failed).
    #[error("writing the dump failed: {0}")]
    Write(#[source] std::io::Error),
    /// A lock another connection holds outlasted `DB_LOCK_WAIT_TIMEOUT`.
    #[error("{cause} ({held}; DB_LOCK_WAIT_TIMEOUT ran out: end that transaction or unlock those tables, or KILL that connection, then back up again; or raise DB_LOCK_WAIT_TIMEOUT)")]
    LockWait {
        /// The error the wait ended with.
        cause: Box<DumpError>,
        /// Who holds the lock, in words.
        held: String,
    },
}

impl DumpError {
    /// The server's error code, when the server refused a query.
    fn server_code(&self) -> Option<u16> {
        let driver = match self {
            DumpError::Table { source, .. } => source,
            DumpError::Db(DbError::Query { driver, .. }) => driver,
            _ => return None,
        };
        match driver {
            mysql_async::Error::Server(se) => Some(se.code),
            _ => None,
        }
    }
}

/// Buffered SQL output that counts what it writes.
struct SqlOut<W> {
    inner: W,
    buf: Vec<u8>,
    written: u64,
}

impl<W: AsyncWrite + Unpin> SqlOut<W> {
    const FLUSH_AT: usize = 256 * 1024;

    fn new(inner: W) -> Self {
        SqlOut {
            inner,
            buf: Vec::with_capacity(Self::FLUSH_AT * 2),
            written: 0,
        }
    }

    fn push(&mut self, s: &[u8]) {
        self.buf.extend_from_slice(s);
    }

    fn push_str(&mut self, s: &str) {
        self.buf.extend_from_slice(s.as_bytes());
    }

    async fn maybe_flush(&mut self) -> Result<(), DumpError> {
        if self.buf.len() >= Self::FLUSH_AT {
            self.flush_buf().await?;
        }
        Ok(())
    }

    async fn flush_buf(&mut self) -> Result<(), DumpError> {
        self.inner
            .write_all(&self.buf)
            .await
            .map_err(DumpError::Write)?;
        self.written += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    async fn finish(mut self) -> Result<u64, DumpError> {
        self.flush_buf().await?;
        self.inner.shutdown().await.map_err(DumpError::Write)?;
        Ok(self.written)
    }
}

/// Dump `database` over `conn` as SQL into `out`, then shut `out` down.
///
/// The connection is left inside a finished (rolled back) transaction.
pub async fn dump<W: AsyncWrite + Unpin + Send>(
    conn: &mut Conn,
    database: &str,
    out: W,
    opts: &DumpOptions,
    hooks: &dyn DumpHooks,
) -> Result<DumpSummary, DumpError> {
    let mut out = SqlOut::new(out);
    let q = |what: &'static str| move |e| DbError::query(what, e);

    // Session settings that make SHOW CREATE and the row text exact and stable.
    conn.query_drop(
        "SET SESSION sql_mode = '', SESSION time_zone = '+00:00', NAMES utf8mb4, \
         SESSION sql_quote_show_create = 1, SESSION net_write_timeout = 3600, \
         SESSION max_statement_time = 0",
    )
    .await
    .map_err(q("preparing the dump session"))?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(q("preparing the dump session"))?;
    conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
        .await
        .map_err(q("starting the consistent snapshot"))?;
    let started_at = Utc::now();

    let binlog = snapshot_position(conn).await?;
    let server_version = first_string(conn, "SELECT VERSION()")
        .await?
        .unwrap_or_default();
    let schema = query_strings(
        conn,
        &format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {}",
            literal(database)
        ),
    )
    .await?;
    let Some(schema_row) = schema.into_iter().next() else {
        return Err(DumpError::NoDatabase(database.to_owned()));
    };
    let charset = schema_row[0].clone().unwrap_or_else(|| "utf8mb4".into());
    let collation = schema_row[1].clone().unwrap_or_default();

    let objects = query_strings(
        conn,
        &format!(
            "SELECT TABLE_NAME, TABLE_TYPE, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} ORDER BY TABLE_NAME",
            literal(database)
        ),
    )
    .await?;
    let mut tables = Vec::new();
    let mut sequences = Vec::new();
    let mut views = Vec::new();
    let mut versioned = std::collections::HashSet::new();
    for row in objects {
        let name = row[0].clone().unwrap_or_default();
        match row[1].as_deref() {
            Some("VIEW") => views.push(name),
            Some("SEQUENCE") => sequences.push(name),
            kind => {
                if kind == Some(VERSIONED) {
                    versioned.insert(name.clone());
                }
                if let Some(engine) = row[2].as_deref() {
                    if !matches!(engine, "InnoDB" | "Aria" | "MEMORY" | "BLACKHOLE") {
                        tracing::warn!(table = %name, engine, "table engine is not transactional: its rows are read outside the consistent snapshot");
                    }
                }
                tables.push(name);
            }
        }
    }

    write_header(&mut out, database, &server_version, &binlog, started_at);
    let mut stats = Vec::new();
    let mut progress = Progress::new(opts.progress_every, tables.len());
    let mut largest_value = 0u64;

    for name in &sequences {
        let create = show_create(conn, "SEQUENCE", name, 1).await?;
        let next = first_string(
            conn,
            &format!("SELECT next_not_cached_value FROM {}", ident(name)),
        )
        .await?
        .unwrap_or_else(|| "1".into());
        out.push_str(&format!(
            "\n--\n-- Sequence {0}\n--\nDROP SEQUENCE IF EXISTS {0};\nDROP TABLE IF EXISTS {0};\n{1};\nDO SETVAL({0}, {2}, 0);\n",
            ident(name),
            create,
            next
        ));
        stats.push(TableStats {
            name: name.clone(),
            kind: "sequence".into(),
            rows: 0,
            history_rows: None,
            fingerprint: None,
        });
    }

    for (i, name) in tables.iter().enumerate() {
        let create = show_create(conn, "TABLE", name, 1).await?;
        out.push_str(&format!(
            "\n--\n-- Table {0}\n--\nDROP TABLE IF EXISTS {0};\n{1};\n",
            ident(name),
            create
        ));
        out.maybe_flush().await?;
        hooks.before_table_data(name).await;
        progress.table(i, name);
        let read = dump_rows(
            conn,
            database,
            name,
            versioned.contains(name),
            &mut out,
            opts,
            &mut progress,
            &mut largest_value,
        )
        .await?;
        stats.push(TableStats {
            name: name.clone(),
            kind: "table".into(),
            rows: read.rows,
            history_rows: read.history_rows,
            fingerprint: Some(read.fingerprint.hex()),
        });
    }

    let mut routines = Vec::new();
    for kind in ["FUNCTION", "PROCEDURE"] {
        let names = query_strings(
            conn,
            &format!(
                "SELECT ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {} AND ROUTINE_TYPE = {} ORDER BY ROUTINE_NAME",
                literal(database),
                literal(kind)
            ),
        )
        .await?;
        for row in names {
            let name = row[0].clone().unwrap_or_default();
            let r = show_create_row(conn, kind, &name).await?;
            // SHOW CREATE FUNCTION: name, sql_mode, create, cs_client, collation_connection, db collation
            write_compound(&mut out, kind, &name, &r[1], &r[2], &r[3], &r[4], None);
            routines.push(format!("{kind} {name}"));
        }
    }

    if !views.is_empty() {
        // Stand-ins first, so a view on a view always has something to refer
        // to; then the views in dependency order, so that each is created
        // over the real views it reads, never over a stand-in (which is not
        // updatable: a view WITH CHECK OPTION over it is refused, ERROR 1368).
        let definitions: std::collections::HashMap<String, String> = query_strings(
            conn,
            &format!(
                "SELECT TABLE_NAME, VIEW_DEFINITION FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {}",
                literal(database)
            ),
        )
        .await?
        .into_iter()
        .filter_map(|r| Some((r[0].clone()?, r[1].clone().unwrap_or_default())))
        .collect();
        let ordered = view_order(database, &views, &definitions);
        out.push_str("\n--\n-- Stand-ins for views, replaced below\n--\n");
        for name in &views {
            let cols = query_strings(
                conn,
                &format!(
                    "SELECT COLUMN_NAME FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
                    literal(database),
                    literal(name)
                ),
            )
            .await?;
            let mut list: Vec<String> = cols
                .into_iter()
                .map(|c| format!("1 AS {}", ident(c[0].as_deref().unwrap_or("x"))))
                .collect();
            if list.is_empty() {
                list.push("1 AS `selmai_stand_in`".into());
            }
            out.push_str(&format!(
                "DROP TABLE IF EXISTS {0};\nDROP VIEW IF EXISTS {0};\nCREATE VIEW {0} AS SELECT {1};\n",
                ident(name),
                list.join(", ")
            ));
        }
        for name in &ordered {
            let r = show_create_row(conn, "VIEW", name).await?;
            // SHOW CREATE VIEW: name, create, cs_client, collation_connection
            out.push_str(&format!(
                "\n--\n-- View {0}\n--\nDROP VIEW IF EXISTS {0};\nSET @selmai_cs_client = @@character_set_client, @selmai_cs_results = @@character_set_results, @selmai_col_conn = @@collation_connection;\nSET character_set_client = {1}, character_set_results = {1}, collation_connection = {2};\n{3};\nSET character_set_client = @selmai_cs_client, character_set_results = @selmai_cs_results, collation_connection = @selmai_col_conn;\n",
                ident(name),
                r[2],
                r[3],
                r[1]
            ));
        }
    }
    out.maybe_flush().await?;

    let trigger_rows = query_strings(
        conn,
        &format!(
            "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {} ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER",
            literal(database)
        ),
    )
    .await?;
    let mut triggers = Vec::new();
    for row in trigger_rows {
        let name = row[0].clone().unwrap_or_default();
        let r = show_create_row(conn, "TRIGGER", &name).await?;
        // SHOW CREATE TRIGGER: name, sql_mode, statement, cs_client, collation_connection, db collation, created
        write_compound(&mut out, "TRIGGER", &name, &r[1], &r[2], &r[3], &r[4], None);
        triggers.push(name);
    }

    let event_rows = query_strings(
        conn,
        &format!(
            "SELECT EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {} ORDER BY EVENT_NAME",
            literal(database)
        ),
    )
    .await?;
    let mut events = Vec::new();
    for row in event_rows {
        let name = row[0].clone().unwrap_or_default();
        let r = show_create_row(conn, "EVENT", &name).await?;
        // SHOW CREATE EVENT: name, sql_mode, time_zone, create, cs_client, collation_connection, db collation
        write_compound(
            &mut out,
            "EVENT",
            &name,
            &r[1],
            &r[3],
            &r[4],
            &r[5],
            Some(&r[2]),
        );
        events.push(name);
    }

    conn.query_drop("ROLLBACK")
        .await
        .map_err(q("ending the snapshot"))?;
    let finished_at = Utc::now();
    write_footer(&mut out, finished_at);
    let sql_bytes = out.finish().await?;
    progress.done(sql_bytes);
    Ok(DumpSummary {
        server_version,
        database: database.to_owned(),
        charset,
        collation,
        binlog,
        tables: stats,
        views,
        routines,
        triggers,
        events,
        started_at,
        finished_at,
        sql_bytes,
        largest_value,
    })
}

/// `views` in an order that creates every view after the views it reads:
/// the first by name whose dependencies are all created, again and again.
/// A view reads another when the other's qualified name (`` `db`.`v` ``,
/// as `information_schema.VIEWS` writes every reference) appears in its
/// definition; a mention inside a string literal only adds an edge. Should
/// the edges ever form a cycle, the rest follows by name (the stand-ins
/// then stand in).
fn view_order(
    database: &str,
    views: &[String],
    definitions: &std::collections::HashMap<String, String>,
) -> Vec<String> {
    let qualified = |v: &str| format!("{}.{}", ident(database), ident(v));
    let reads = |a: &str, b: &str| {
        a != b
            && definitions
                .get(a)
                .is_some_and(|d| d.contains(&qualified(b)))
    };
    let mut sorted: Vec<&String> = views.iter().collect();
    sorted.sort();
    let mut left = sorted;
    let mut out = Vec::with_capacity(views.len());
    while !left.is_empty() {
        let next = left
            .iter()
            .position(|v| !left.iter().any(|w| reads(v, w)))
            .unwrap_or(0);
        out.push(left.remove(next).clone());
    }
    out
}

async fn first_string(conn: &mut Conn, sql: &str) -> Result<Option<String>, DbError> {
    Ok(query_strings(conn, sql)
        .await?
        .into_iter()
        .next()
        .and_then(|r| r.into_iter().next().flatten()))
}

/// The binlog coordinates matching the snapshot, without a global lock:
/// MariaDB reports them per transaction in `binlog_snapshot_file/position`.
async fn snapshot_position(conn: &mut Conn) -> Result<Option<BinlogPosition>, DbError> {
    if first_string(conn, "SELECT @@log_bin").await?.as_deref() != Some("1") {
        return Ok(None);
    }
    let rows = query_strings(conn, "SHOW STATUS LIKE 'binlog_snapshot_%'").await?;
    let get = |key: &str| {
        rows.iter()
            .find(|r| r[0].as_deref().is_some_and(|k| k.eq_ignore_ascii_case(key)))
            .and_then(|r| r[1].clone())
    };
    let (Some(file), Some(pos)) = (get("Binlog_snapshot_file"), get("Binlog_snapshot_position"))
    else {
        return Ok(None);
    };
    if file.is_empty() {
        return Ok(None);
    }
    let position: u64 = pos.parse().unwrap_or(0);
    let gtid = first_string(
        conn,
        &format!("SELECT BINLOG_GTID_POS({}, {})", literal(&file), position),
    )
    .await?;
    Ok(Some(BinlogPosition {
        file,
        position,
        gtid,
    }))
}

/// `SHOW CREATE <kind> name`, returning column `col` of the single row.
async fn show_create(
    conn: &mut Conn,
    kind: &str,
    name: &str,
    col: usize,
) -> Result<String, DbError> {
    let row = show_create_row(conn, kind, name).await?;
    Ok(row.get(col).cloned().unwrap_or_default())
}

async fn show_create_row(conn: &mut Conn, kind: &str, name: &str) -> Result<Vec<String>, DbError> {
    let sql = format!("SHOW CREATE {kind} {}", ident(name));
    let rows = query_strings(conn, &sql).await?;
    let row = rows.into_iter().next().unwrap_or_default();
    if row.len() < 2 || row.iter().skip(1).all(Option::is_none) {
        // A missing definition means we lack the privilege to see it
        // (SHOW VIEW, TRIGGER, or ownership of a routine): fail loudly rather
        // than write a backup without it.
        return Err(DbError::query(
            format!("{sql} returned no definition: grant the backup user the privileges to see it (SELECT, SHOW VIEW, TRIGGER, EVENT, and SELECT on mysql.proc)"),
            mysql_async::Error::Other("missing definition".into()),
        ));
    }
    Ok(row.into_iter().map(Option::unwrap_or_default).collect())
}

/// A routine, trigger or event: its own sql_mode and character set, between DELIMITER lines.
#[allow(clippy::too_many_arguments)]
fn write_compound<W: AsyncWrite + Unpin>(
    out: &mut SqlOut<W>,
    kind: &str,
    name: &str,
    sql_mode: &str,
    create: &str,
    cs_client: &str,
    collation: &str,
    time_zone: Option<&str>,
) {
    let drop = match kind {
        "TRIGGER" => format!("DROP TRIGGER IF EXISTS {};\n", ident(name)),
        other => format!("DROP {other} IF EXISTS {};\n", ident(name)),
    };
    let tz_set = time_zone
        .map(|tz| format!(", time_zone = {}", literal(tz)))
        .unwrap_or_default();
    let tz_save = if time_zone.is_some() {
        ", @selmai_tz = @@time_zone"
    } else {
        ""
    };
    let tz_back = if time_zone.is_some() {
        ", time_zone = @selmai_tz"
    } else {
        ""
    };
    out.push_str(&format!(
        "\n--\n-- {kind} {qname}\n--\n{drop}\
         SET @selmai_cs_client = @@character_set_client, @selmai_cs_results = @@character_set_results, @selmai_col_conn = @@collation_connection, @selmai_sql_mode = @@sql_mode{tz_save};\n\
         SET character_set_client = {cs}, character_set_results = {cs}, collation_connection = {col}, sql_mode = {mode}{tz_set};\n\
         DELIMITER ;;\n{create};;\nDELIMITER ;\n\
         SET character_set_client = @selmai_cs_client, character_set_results = @selmai_cs_results, collation_connection = @selmai_col_conn, sql_mode = @selmai_sql_mode{tz_back};\n",
        qname = ident(name),
        cs = cs_client,
        col = collation,
        mode = literal(sql_mode),
    ));
}

fn write_header<W: AsyncWrite + Unpin>(
    out: &mut SqlOut<W>,
    database: &str,
    server_version: &str,
    binlog: &Option<BinlogPosition>,
    started_at: DateTime<Utc>,
) {
    out.push_str(&format!(
        "-- selmai-backup {} dump of database {}\n-- Server version: {}\n-- Snapshot taken: {}\n",
        env!("CARGO_PKG_VERSION"),
        ident(database),
        server_version,
        started_at.format("%Y-%m-%d %H:%M:%S UTC")
    ));
    if let Some(b) = binlog {
        out.push_str(&format!(
            "-- Binlog position: {} {} GTID {}\n",
            b.file,
            b.position,
            b.gtid.as_deref().unwrap_or("-")
        ));
    }
    out.push_str(
        "-- Restore with: selmai-backup restore FILE, or: gunzip -c FILE | mariadb DBNAME\n\n\
         SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT, @OLD_CHARACTER_SET_RESULTS=@@CHARACTER_SET_RESULTS, @OLD_COLLATION_CONNECTION=@@COLLATION_CONNECTION;\n\
         SET NAMES utf8mb4;\n\
         SET @OLD_TIME_ZONE=@@TIME_ZONE, TIME_ZONE='+00:00';\n\
         SET @OLD_UNIQUE_CHECKS=@@UNIQUE_CHECKS, UNIQUE_CHECKS=0;\n\
         SET @OLD_FOREIGN_KEY_CHECKS=@@FOREIGN_KEY_CHECKS, FOREIGN_KEY_CHECKS=0;\n\
         SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO';\n\
         SET @OLD_SQL_NOTES=@@SQL_NOTES, SQL_NOTES=0;\n",
    );
}

fn write_footer<W: AsyncWrite + Unpin>(out: &mut SqlOut<W>, finished_at: DateTime<Utc>) {
    out.push_str(&format!(
        "\nSET SQL_NOTES=@OLD_SQL_NOTES;\n\
         SET SQL_MODE=@OLD_SQL_MODE;\n\
         SET FOREIGN_KEY_CHECKS=@OLD_FOREIGN_KEY_CHECKS;\n\
         SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS;\n\
         SET TIME_ZONE=@OLD_TIME_ZONE;\n\
         SET CHARACTER_SET_CLIENT=@OLD_CHARACTER_SET_CLIENT, CHARACTER_SET_RESULTS=@OLD_CHARACTER_SET_RESULTS, COLLATION_CONNECTION=@OLD_COLLATION_CONNECTION;\n\
         -- Dump completed {}\n",
        finished_at.format("%Y-%m-%d %H:%M:%S UTC")
    ));
}

/// `TABLE_TYPE` of a system-versioned table in `information_schema.TABLES`.
const VERSIONED: &str = "SYSTEM VERSIONED";

/// The ROW END of a current row: the largest TIMESTAMP of MariaDB before
/// 11.5, and of 11.5 and later on 64-bit systems (in UTC, the dump's time
/// zone). A plain SELECT reads the rows whose ROW END is this value.
const CURRENT_ROW_END: [&str; 2] = ["2038-01-19 03:14:07.999999", "2106-02-07 06:28:15.999999"];

/// How a table's rows are read exactly and written back: one SELECT and
/// INSERT head per part (the current rows; then, for a system-versioned
/// table with its history, the history rows).
struct RowQueries {
    parts: Vec<(String, String)>,
    /// The INSERTs give ROW START (and ROW END): they need
    /// `system_versioning_insert_history`.
    history: bool,
}

/// The queries of `table`; `None` when it has no storable column. With
/// `history`, a system-versioned table is read `FOR SYSTEM_TIME ALL`: the
/// current rows with their ROW START, the others with ROW START and ROW
/// END (ROW END of the current rows is left to the restoring server,
/// whose largest TIMESTAMP may differ).
async fn row_queries(
    conn: &mut Conn,
    database: &str,
    table: &str,
    history: bool,
) -> Result<Option<RowQueries>, DbError> {
    let cols = query_strings(
        conn,
        &format!(
            "SELECT COLUMN_NAME, DATA_TYPE, IS_GENERATED, GENERATION_EXPRESSION FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} ORDER BY ORDINAL_POSITION",
            literal(database),
            literal(table)
        ),
    )
    .await?;
    let period = if history {
        period_columns(conn, database, table, &cols).await?
    } else {
        None
    };
    // Generated columns are computed by the server on restore; INVISIBLE ones
    // are listed explicitly because `SELECT *` would silently skip them.
    let mut names: Vec<(String, String)> = cols
        .into_iter()
        .filter(|c| c[2].as_deref() != Some("ALWAYS"))
        .map(|c| {
            (
                c[0].clone().unwrap_or_default(),
                c[1].clone().unwrap_or_default(),
            )
        })
        .collect();
    if names.is_empty() && period.is_none() {
        return Ok(None);
    }
    let Some((start, end)) = period else {
        let (select, insert) = select_and_insert(table, &names, "");
        return Ok(Some(RowQueries {
            parts: vec![(select, insert)],
            history: false,
        }));
    };
    names.push((start, "timestamp".into()));
    let current = select_and_insert(table, &names, "");
    names.push((end.clone(), "timestamp".into()));
    let ended = CURRENT_ROW_END
        .iter()
        .map(|t| literal(t))
        .collect::<Vec<_>>()
        .join(", ");
    let past = select_and_insert(
        table,
        &names,
        &format!(
            " FOR SYSTEM_TIME ALL WHERE {} NOT IN ({ended})",
            ident(&end)
        ),
    );
    Ok(Some(RowQueries {
        parts: vec![current, past],
        history: true,
    }))
}

/// ROW START and ROW END of `table` when it is system-versioned by
/// timestamps (`None` otherwise). Implicit period columns are not in
/// `information_schema.COLUMNS` and are called `row_start` and `row_end`.
/// A table versioned by transaction ids (BIGINT period columns) has no
/// history that another server could take: its current rows are dumped,
/// with a warning.
async fn period_columns(
    conn: &mut Conn,
    database: &str,
    table: &str,
    cols: &[Vec<Option<String>>],
) -> Result<Option<(String, String)>, DbError> {
    let kind = first_string(
        conn,
        &format!(
            "SELECT TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {}",
            literal(database),
            literal(table)
        ),
    )
    .await?;
    if kind.as_deref() != Some(VERSIONED) {
        return Ok(None);
    }
    let find = |what: &str| {
        cols.iter()
            .find(|c| {
                c[2].as_deref() == Some("ALWAYS")
                    && c[3]
                        .as_deref()
                        .is_some_and(|g| g.eq_ignore_ascii_case(what))
            })
            .map(|c| {
                (
                    c[0].clone().unwrap_or_default(),
                    c[1].clone().unwrap_or_default(),
                )
            })
    };
    match (find("ROW START"), find("ROW END")) {
        (Some((start, ty)), Some((end, _))) => {
            if ty.eq_ignore_ascii_case("timestamp") {
                Ok(Some((start, end)))
            } else {
                tracing::warn!(table, "table is versioned by transaction ids: only its current rows are dumped (such history cannot be restored on another server)");
                Ok(None)
            }
        }
        _ => Ok(Some(("row_start".into(), "row_end".into()))),
    }
}

/// The exact SELECT of `cols` (with `tail` after the table name) and the
/// INSERT head that writes them back.
fn select_and_insert(table: &str, cols: &[(String, String)], tail: &str) -> (String, String) {
    let select: Vec<String> = cols
        .iter()
        .map(|(name, ty)| {
            if ty.eq_ignore_ascii_case("float") {
                // The text protocol prints FLOAT with 6 digits; as DOUBLE it is exact.
                format!("CAST({} AS DOUBLE)", ident(name))
            } else {
                ident(name)
            }
        })
        .collect();
    let insert_head = format!(
        "INSERT INTO {} ({}) VALUES ",
        ident(table),
        cols.iter()
            .map(|(n, _)| ident(n))
            .collect::<Vec<_>>()
            .join(", ")
    );
    (
        format!("SELECT {} FROM {}{tail}", select.join(", "), ident(table)),
        insert_head,
    )
}

/// What reading a table's rows found.
#[derive(Debug, Clone, Copy, Default)]
pub struct TableRead {
    /// Rows (the current ones, for a system-versioned table).
    pub rows: u64,
    /// History rows, when the history was read.
    pub history_rows: Option<u64>,
    /// Fingerprint of every row read, with the period values when the
    /// history was read.
    pub fingerprint: Fingerprint,
}

/// Rows and [`Fingerprint`] of a table as it is now (for restore drills),
/// read as the dump reads it: with `history`, a system-versioned table's
/// history rows and period values too (as manifests with `history_rows`
/// recorded them).
pub async fn table_fingerprint(
    conn: &mut Conn,
    database: &str,
    table: &str,
    history: bool,
) -> Result<TableRead, DbError> {
    let mut read = TableRead::default();
    let Some(queries) = row_queries(conn, database, table, history).await? else {
        return Ok(read);
    };
    conn.query_drop("SET SESSION time_zone = '+00:00', NAMES utf8mb4")
        .await
        .map_err(|e| DbError::query("preparing the session", e))?;
    let what = format!("reading table `{table}`");
    for (i, (sql, _)) in queries.parts.iter().enumerate() {
        let mut result = conn
            .query_iter(sql.as_str())
            .await
            .map_err(|e| DbError::query(what.clone(), e))?;
        let mut rows = 0u64;
        while let Some(row) = result
            .next()
            .await
            .map_err(|e| DbError::query(what.clone(), e))?
        {
            read.fingerprint.add_row(&row.unwrap_raw());
            rows += 1;
        }
        if i == 0 {
            read.rows = rows;
        } else {
            read.history_rows = Some(rows);
        }
    }
    Ok(read)
}

/// Stream the rows of one table as bounded extended INSERTs (with its
/// history when it is `versioned`); returns what was read, and raises
/// `largest` to the length of the largest value seen.
#[allow(clippy::too_many_arguments)]
async fn dump_rows<W: AsyncWrite + Unpin + Send>(
    conn: &mut Conn,
    database: &str,
    table: &str,
    versioned: bool,
    out: &mut SqlOut<W>,
    opts: &DumpOptions,
    progress: &mut Progress,
    largest: &mut u64,
) -> Result<TableRead, DumpError> {
    let mut read = TableRead::default();
    let Some(queries) = row_queries(conn, database, table, versioned).await? else {
        return Ok(read);
    };
    // Set only before the first row, and put back after the last: a file
    // whose versioned tables are empty still restores on servers older
    // than 10.11. The variable's name must not start with `@selmai_v`
    // (the large values' prefix, which restore routes differently).
    let mut history_on = false;
    for (i, (sql, insert_head)) in queries.parts.iter().enumerate() {
        let rows = dump_part(
            conn,
            table,
            sql,
            insert_head,
            out,
            opts,
            progress,
            largest,
            &mut read.fingerprint,
            || {
                (queries.history && !std::mem::replace(&mut history_on, true)).then_some(
                    "SET @selmai_old_insert_history = @@system_versioning_insert_history, @@system_versioning_insert_history = 1;\n",
                )
            },
        )
        .await?;
        if i == 0 {
            read.rows = rows;
        } else {
            read.history_rows = Some(rows);
        }
    }
    if history_on {
        out.push_str("SET @@system_versioning_insert_history = @selmai_old_insert_history;\n");
    }
    Ok(read)
}

/// One SELECT of a table written back as INSERTs; `before_first` gives
/// what to write before the first row. Returns the rows written.
#[allow(clippy::too_many_arguments)]
async fn dump_part<W: AsyncWrite + Unpin + Send>(
    conn: &mut Conn,
    table: &str,
    sql: &str,
    insert_head: &str,
    out: &mut SqlOut<W>,
    opts: &DumpOptions,
    progress: &mut Progress,
    largest: &mut u64,
    fingerprint: &mut Fingerprint,
    mut before_first: impl FnMut() -> Option<&'static str>,
) -> Result<u64, DumpError> {
    let mut rows_done: u64 = 0;
    let table_err = |rows: u64| {
        move |source| DumpError::Table {
            table: table.to_owned(),
            rows,
            source,
        }
    };
    let mut result = conn.query_iter(sql).await.map_err(table_err(0))?;
    let encodings: Vec<ColumnEncoding> = result
        .columns_ref()
        .iter()
        .map(ColumnEncoding::of)
        .collect();
    let mut enc = RowEncoder::new(&encodings, opts.large_value_bytes);
    let mut in_statement = 0usize; // bytes of the open INSERT, 0 = none open
    while let Some(row) = result.next().await.map_err(table_err(rows_done))? {
        if rows_done == 0 {
            if let Some(first) = before_first() {
                out.push_str(first);
            }
        }
        let values = row.unwrap_raw();
        fingerprint.add_row(&values);
        for v in &values {
            if let Some(mysql_async::Value::Bytes(b)) = v {
                *largest = (*largest).max(b.len() as u64);
            }
        }
        let encoded = enc.encode(values);
        if !encoded.prelude.is_empty() {
            // Large values travel in user variables: close any open INSERT,
            // set the variables, then insert this row alone.
            if in_statement > 0 {
                out.push(b";\n");
                in_statement = 0;
            }
            out.push(encoded.prelude);
            out.push_str(insert_head);
            out.push(encoded.tuple);
            out.push(b";\n");
            out.push(encoded.cleanup);
        } else {
            if in_statement > 0 && in_statement + encoded.tuple.len() > opts.statement_bytes {
                out.push(b";\n");
                in_statement = 0;
            }
            if in_statement == 0 {
                out.push_str(insert_head);
                in_statement = insert_head.len();
            } else {
                out.push(b",\n");
            }
            out.push(encoded.tuple);
            in_statement += encoded.tuple.len() + 2;
        }
        rows_done += 1;
        progress.row(out.written + out.buf.len() as u64);
        out.maybe_flush().await?;
    }
    if in_statement > 0 {
        out.push(b";\n");
    }
    drop(result);
    Ok(rows_done)
}

/// Periodic progress lines for long dumps.
struct Progress {
    every: Duration,
    last: Instant,
    tables: usize,
    current: (usize, String),
    rows: u64,
}

impl Progress {
    fn new(every: Duration, tables: usize) -> Self {
        Progress {
            every,
            last: Instant::now(),
            tables,
            current: (0, String::new()),
            rows: 0,
        }
    }

    fn table(&mut self, index: usize, name: &str) {
        self.current = (index + 1, name.to_owned());
    }

    fn row(&mut self, bytes: u64) {
        self.rows += 1;
        if self.rows.is_multiple_of(4096) && self.last.elapsed() >= self.every {
            self.last = Instant::now();
            tracing::info!(
                "dumping table {}/{} `{}`: {} rows so far, {} of SQL",
                self.current.0,
                self.tables,
                self.current.1,
                self.rows,
                crate::progress::human_bytes(bytes)
            );
        }
    }

    fn done(&self, bytes: u64) {
        tracing::debug!(rows = self.rows, bytes, "dump finished");
    }
}

/// Connect and dump in one call (what `backup` does).
pub async fn dump_database<W: AsyncWrite + Unpin + Send>(
    settings: &crate::config::DbSettings,
    out: W,
    opts: &DumpOptions,
    hooks: &dyn DumpHooks,
) -> Result<DumpSummary, DumpError> {
    let mut conn = db::connect(settings, Some(&settings.name))
        .await
        .map_err(|e| match e {
            DbError::UnknownDatabase { name, .. } => DumpError::NoDatabase(name),
            other => DumpError::Db(other),
        })?;
    let summary = {
        let _waits = db::lock::watch(settings, &settings.name, vec![conn.id()], "the backup");
        dump(&mut conn, &settings.name, out, opts, hooks).await
    };
    let summary = match summary {
        Err(e) if e.server_code() == Some(LOCK_WAIT_TIMEOUT) => Err(DumpError::LockWait {
            held: db::lock::holders(&mut conn, Some(&settings.name), &[]).await,
            cause: Box::new(e),
        }),
        other => other,
    };
    let _ = conn.disconnect().await;
    summary
}

/// "Lock wait timeout exceeded" (the session's `lock_wait_timeout`, set
/// from `DB_LOCK_WAIT_TIMEOUT`).
const LOCK_WAIT_TIMEOUT: u16 = 1205;

#[cfg(test)]
mod tests {
    use super::*;
    use mysql_async::Value;

    fn row(vals: &[Option<&[u8]>]) -> Vec<Option<Value>> {
        vals.iter()
            .map(|v| v.map(|b| Value::Bytes(b.to_vec())))
            .collect()
    }

    #[test]
    fn views_come_after_the_views_they_read_whatever_their_names() {
        let defs: std::collections::HashMap<String, String> = [
            ("a_tiny", "select `d`.`m_small`.`id` AS `id` from `d`.`m_small` where `d`.`m_small`.`qty` < 10"),
            ("m_small", "select `d`.`z_positive`.`id` AS `id` from `d`.`z_positive`"),
            ("z_positive", "select `d`.`stock`.`id` AS `id` from `d`.`stock`"),
            ("b_other", "select `d`.`stock`.`id` AS `z_positive` from `d`.`stock`"),
            ("c_cross", "select 1 AS `x` from `other`.`m_small`"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let views: Vec<String> = defs.keys().cloned().collect();
        assert_eq!(
            view_order("d", &views, &defs),
            ["b_other", "c_cross", "z_positive", "m_small", "a_tiny"]
        );
        // A cycle (impossible on the server, possible through a string
        // literal) still lists every view once.
        let cyclic: std::collections::HashMap<String, String> = [
            ("a", "select '`d`.`b`' AS `x`"),
            ("b", "select `d`.`a`.`x` AS `x` from `d`.`a`"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let views: Vec<String> = vec!["b".into(), "a".into()];
        assert_eq!(view_order("d", &views, &cyclic), ["a", "b"]);
    }

    #[test]
    fn fingerprint_ignores_row_order_but_sees_every_change() {
        let a = row(&[Some(b"1"), Some(b"x")]);
        let b = row(&[Some(b"2"), None]);
        let mut f1 = Fingerprint::default();
        f1.add_row(&a);
        f1.add_row(&b);
        let mut f2 = Fingerprint::default();
        f2.add_row(&b);
        f2.add_row(&a);
        assert_eq!(f1, f2);

        let variants = [
            row(&[Some(b"2"), Some(b"")]),     // NULL vs ''
            row(&[Some(b"2"), Some(b"NULL")]), // NULL vs 'NULL'
            row(&[Some(b"21"), None]),         // changed value
            row(&[Some(b"2"), None, None]),    // extra column
        ];
        for v in variants {
            let mut f3 = Fingerprint::default();
            f3.add_row(&a);
            f3.add_row(&v);
            assert_ne!(f1, f3, "{v:?}");
        }
        // A duplicated row counts twice.
        let mut f4 = f1;
        f4.add_row(&a);
        assert_ne!(f1, f4);
        // Value boundaries matter: ("ab","c") is not ("a","bc").
        let mut g1 = Fingerprint::default();
        g1.add_row(&row(&[Some(b"ab"), Some(b"c")]));
        let mut g2 = Fingerprint::default();
        g2.add_row(&row(&[Some(b"a"), Some(b"bc")]));
        assert_ne!(g1, g2);
    }
}
