//! Gathering the facts the judges need from the server: version, grants,
//! `max_allowed_packet` and the largest value, binary logging, objects,
//! sizes. The only part of the preflight that talks to the server (with
//! `binlog.rs` for the archive).

use mysql_async::Conn;

use super::*;
use crate::db::{self, literal, query_strings, DbError};

/// The largest BLOB/TEXT value found by the bounded scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LargestValue {
    /// Table.
    pub table: String,
    /// Column.
    pub column: String,
    /// Length in bytes.
    pub bytes: u64,
}

/// What the server and the disk said; the input of the judges.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// `VERSION()`.
    pub version: String,
    /// `CURRENT_USER()`, as `user@host`.
    pub current_user: String,
    /// `SHOW GRANTS` lines.
    pub grants: Vec<String>,
    /// `@@max_allowed_packet`.
    pub max_allowed_packet: u64,
    /// `@@log_bin`: binary logging is on.
    pub log_bin: bool,
    /// `@@log_bin_trust_function_creators`.
    pub trust_function_creators: bool,
    /// Whether the database exists.
    pub database_exists: bool,
    /// Views in the database (as this user sees them).
    pub views: u64,
    /// `DATA_LENGTH + INDEX_LENGTH` of the database's tables.
    pub database_bytes: u64,
    /// The largest value found, when any table was scanned.
    pub largest_value: Option<LargestValue>,
    /// Tables with BLOB/TEXT columns that were not scanned.
    pub unscanned: Vec<String>,
    /// Views whose `SHOW CREATE VIEW` names their own database (MariaDB
    /// does so when the view's DEFINER account no longer exists).
    pub self_qualified_views: Vec<String>,
    /// The server has `system_versioning_insert_history` (MariaDB 10.11+),
    /// which restoring the history of system-versioned tables needs.
    pub insert_history: bool,
    /// `@@secure_timestamp` (`NO`, `SUPER`, `REPLICATION`, `YES`): whether
    /// and for whom inserting ROW START and ROW END values is allowed.
    pub secure_timestamp: String,
}

/// Read the facts about `database` over `conn`; `scan` runs the
/// largest-value scan (backups only: a restore target's current values say
/// nothing about the backup's).
pub async fn gather(conn: &mut Conn, database: &str, scan: bool) -> Result<Facts, DbError> {
    let one = |rows: Vec<Vec<Option<String>>>| -> Option<String> {
        rows.into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    };
    let row = query_strings(
        conn,
        "SELECT VERSION(), CURRENT_USER(), @@max_allowed_packet, @@log_bin, @@log_bin_trust_function_creators",
    )
    .await?;
    let row = row.into_iter().next().unwrap_or_default();
    let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    let grants = query_strings(conn, "SHOW GRANTS")
        .await?
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
        .collect();
    let db = literal(database);
    let exists = one(query_strings(
        conn,
        &format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {db}"),
    )
    .await?);
    let sizes = query_strings(
        conn,
        &format!(
            "SELECT SUM(TABLE_TYPE = 'VIEW'), COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) \
             FROM information_schema.TABLES WHERE TABLE_SCHEMA = {db}"
        ),
    )
    .await?;
    let sizes = sizes.into_iter().next().unwrap_or_default();
    let num = |v: Option<&Option<String>>| -> u64 {
        v.cloned()
            .flatten()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    };
    let mut facts = Facts {
        version: get(0),
        current_user: get(1),
        max_allowed_packet: get(2).parse().unwrap_or(0),
        log_bin: get(3) == "1",
        trust_function_creators: get(4) == "1",
        grants,
        database_exists: exists.as_deref().is_some_and(|n| n != "0"),
        views: num(sizes.first()),
        database_bytes: num(sizes.get(1)),
        largest_value: None,
        unscanned: Vec::new(),
        self_qualified_views: Vec::new(),
        insert_history: false,
        secure_timestamp: String::new(),
    };
    // SHOW VARIABLES, not @@: the first variable is unknown before 10.11.
    for row in query_strings(
        conn,
        "SHOW VARIABLES WHERE Variable_name IN ('system_versioning_insert_history', 'secure_timestamp')",
    )
    .await?
    {
        match row.first().cloned().flatten().as_deref() {
            Some("system_versioning_insert_history") => facts.insert_history = true,
            Some("secure_timestamp") => {
                facts.secure_timestamp = row.get(1).cloned().flatten().unwrap_or_default()
            }
            _ => {}
        }
    }
    if scan {
        scan_values(conn, database, &mut facts).await?;
        if facts.views > 0 {
            facts.self_qualified_views = self_qualified_views(conn, database).await;
        }
    }
    Ok(facts)
}

/// Views of `database` whose definition, as the dump will read it, names
/// `database` itself; empty when that cannot be read (no SHOW VIEW: said
/// by the privilege check).
pub(super) async fn self_qualified_views(conn: &mut Conn, database: &str) -> Vec<String> {
    use mysql_async::prelude::Queryable;
    // The dump reads definitions with the database selected, which is
    // what leaves other views' names unqualified.
    if conn
        .query_drop(format!("USE {}", db::ident(database)))
        .await
        .is_err()
    {
        return Vec::new();
    }
    let names = query_strings(
        conn,
        &format!(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} AND TABLE_TYPE = 'VIEW' ORDER BY TABLE_NAME",
            literal(database)
        ),
    )
    .await
    .unwrap_or_default();
    let own = format!("{}.", db::ident(database));
    let mut out = Vec::new();
    for name in names
        .into_iter()
        .filter_map(|r| r.into_iter().next().flatten())
    {
        let Ok(rows) = query_strings(conn, &format!("SHOW CREATE VIEW {}", db::ident(&name))).await
        else {
            continue;
        };
        let text = rows
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().nth(1).flatten())
            .unwrap_or_default();
        if text.contains(&own) {
            out.push(name);
        }
    }
    out
}

/// The bounded largest-value scan (see the module doc).
pub(super) async fn scan_values(
    conn: &mut Conn,
    database: &str,
    facts: &mut Facts,
) -> Result<(), DbError> {
    let cols = query_strings(
        conn,
        &format!(
            "SELECT c.TABLE_NAME, c.COLUMN_NAME, COALESCE(t.DATA_LENGTH, 0) \
             FROM information_schema.COLUMNS c JOIN information_schema.TABLES t \
               ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA = {} AND t.TABLE_TYPE = 'BASE TABLE' \
               AND c.DATA_TYPE IN ('blob', 'mediumblob', 'longblob', 'text', 'mediumtext', 'longtext') \
               AND c.IS_GENERATED = 'NEVER' \
             ORDER BY 3, 1, c.ORDINAL_POSITION",
            literal(database)
        ),
    )
    .await?;
    // Group the columns by table, keeping the smallest-first order.
    let mut tables: Vec<(String, u64, Vec<String>)> = Vec::new();
    for c in cols {
        let (t, col) = (
            c[0].clone().unwrap_or_default(),
            c[1].clone().unwrap_or_default(),
        );
        let size: u64 = c[2].as_deref().and_then(|s| s.parse().ok()).unwrap_or(0);
        match tables.last_mut() {
            Some((name, _, cols)) if *name == t => cols.push(col),
            _ => tables.push((t, size, vec![col])),
        }
    }
    let mut spent = 0u64;
    for (table, size, cols) in tables {
        if spent + size > SCAN_BUDGET {
            facts.unscanned.push(table);
            continue;
        }
        spent += size;
        let select: Vec<String> = cols
            .iter()
            .map(|c| format!("MAX(LENGTH({}))", db::ident(c)))
            .collect();
        let sql = format!(
            "SET STATEMENT max_statement_time = {SCAN_SECONDS} FOR SELECT {} FROM {}.{}",
            select.join(", "),
            db::ident(database),
            db::ident(&table)
        );
        let Ok(rows) = query_strings(conn, &sql).await else {
            // Too slow, or not readable: say so rather than fail the preflight.
            facts.unscanned.push(table);
            continue;
        };
        let row = rows.into_iter().next().unwrap_or_default();
        for (col, v) in cols.iter().zip(row) {
            let bytes: u64 = v.and_then(|s| s.parse().ok()).unwrap_or(0);
            if facts.largest_value.as_ref().is_none_or(|l| bytes > l.bytes) {
                facts.largest_value = Some(LargestValue {
                    table: table.clone(),
                    column: col.clone(),
                    bytes,
                });
            }
        }
    }
    Ok(())
}
