//! Preflight: can this database user, on this server, with this much disk,
//! actually do the backup (at `run` start) or the restore (before anything
//! is touched)? The answer is a [`Report`] of one-line findings, each
//! saying what a problem costs and what to do about it.
//!
//! What is checked, and why exactly that:
//!
//! 1. **Privileges**, from `SHOW GRANTS` (the user's grants, its active role's
//!    and `PUBLIC`'s), compared with what [`crate::dump`] and
//!    [`crate::restore`] really run. For a backup: `SELECT` (without it
//!    nothing can be read: fatal); `SHOW VIEW` (`SHOW CREATE VIEW` fails
//!    without it, so every backup of a database with views fails: fatal
//!    when there are views); `TRIGGER` and `EVENT` (without them the server
//!    hides triggers and events from `information_schema`, so backups
//!    silently leave them out); `SELECT` on `mysql.proc` or `SHOW CREATE
//!    ROUTINE` (without either, routines defined by another account are
//!    hidden, or listed with no body, which fails the backup). The binlog
//!    position comes from session status variables that need no privilege,
//!    and the dumper takes no lock, so `RELOAD`, `LOCK TABLES` and `BINLOG
//!    MONITOR` are not needed. For a restore into a database: `CREATE`,
//!    `DROP` and `INSERT` (fatal without), `CREATE VIEW`, `CREATE ROUTINE`
//!    and `ALTER ROUTINE`, `TRIGGER`, `EVENT` for the objects the manifest
//!    lists (fatal: the restore would stop half way), `ALTER` for the
//!    `ALTER TABLE ... DISABLE KEYS` of `mariadb-dump` files, and `SUPER` or
//!    `SET USER` when `RESTORE_DEFINER=keep` (needed to create an object
//!    whose `DEFINER` is another account). With binary logging on and
//!    `log_bin_trust_function_creators` off, the server also wants `SUPER`
//!    for every trigger and stored function (error 1419), whatever the
//!    `DEFINER`. Database-level patterns (`sel%`,
//!    `sel\_db`) are matched, and all grants that match are combined, which
//!    is what the server does in the usual case of one matching grant.
//!    Table-level grants count only to explain what is missing.
//! 2. **`max_allowed_packet`**, as the server reports it to this session.
//!    Statements of our dumps stay near 1 MiB, but a value larger than that
//!    is assembled in a user variable with `CONCAT`, and the server returns
//!    NULL (with a mere warning) for a `CONCAT` longer than
//!    `max_allowed_packet`: such a value would restore as NULL. So what is
//!    compared is the largest single BLOB/TEXT value with the packet size.
//!    Finding it costs a scan, so only tables with BLOB/TEXT columns are
//!    read, smallest first, within [`SCAN_BUDGET`] bytes of table data and
//!    a few seconds per table; the others are named as not checked. The
//!    dumper records the exact largest value in the manifest
//!    (`largest_value`), and a restore compares that with the target
//!    server's `max_allowed_packet` (fatal when larger: the value would be
//!    lost).
//! 3. **Free space** on `BACKUP_DIR`: for a backup, at least the size of
//!    the last one ([`crate::daemon::health::space_for_backup`]; a warning)
//!    and at least `HEALTH_MIN_FREE_MB` when set (fatal); before a restore,
//!    room for the safety snapshot, which is about the size of the backup
//!    being restored (and at most about the database's data size).
//! 4. **Server version**: MariaDB older than [`TESTED_SINCE`], or MySQL,
//!    which selmai-backup is not tested against.
//! 5. **Views whose DEFINER is gone** (backups): MariaDB's `SHOW CREATE
//!    VIEW` then names the view's own database in its columns, so the
//!    dumped view restores only into a database of that name, and drills
//!    fail on it (1054).
//! 6. **History of system-versioned tables** (restores): the backup's
//!    history rows go in with their ROW START and ROW END under
//!    `system_versioning_insert_history`, which exists from MariaDB 10.11
//!    and which `secure_timestamp` governs (`NO`: anyone; `SUPER` and
//!    `REPLICATION`: SUPER or BINLOG REPLAY; `YES`: nobody). Fatal when the
//!    server or the user cannot, since the restore would stop at the first
//!    such table.
//! 7. **`BACKUP_DIR` is writable**, first and before the database is waited
//!    for, by creating and removing a probe file: free space said nothing
//!    about it, and a bind mount Docker created is root's while the image
//!    runs as uid 10001. Fatal, with the `chown` that fixes it.
//! 8. **The restore drill's privileges** (backups, while `DRILL_SCHEDULE`
//!    is on): the drill creates and drops a scratch database named
//!    [`SCRATCH_PREFIX`]`...`, which a user granted only on `DB_NAME` may
//!    not (ERROR 1044). A warning with the GRANT: backups work without it.
//!
//! Gathering the facts talks to the server; judging them is pure
//! ([`judge_backup`], [`judge_restore`]), so the rules are unit tested.
//! This module neither backs up nor restores.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use mysql_async::Conn;

use crate::config::{ConfigError, DbSettings, Settings};
use crate::daemon::health::{self, SpaceError};
use crate::daemon::schedule::Kind;
use crate::daemon::state::State;
use crate::db::{self, literal, query_strings, DbError};
use crate::progress::human_bytes;
use crate::restore::definer::Definer;
use crate::restore::drill::SCRATCH_PREFIX;

/// Oldest MariaDB release (major, minor) the test suite runs against.
pub const TESTED_SINCE: (u32, u32) = (10, 5);

/// Bytes of table data (`DATA_LENGTH`) the largest-value scan may read.
pub const SCAN_BUDGET: u64 = 256 << 20;

/// Seconds one table's largest-value scan may take before it is abandoned.
const SCAN_SECONDS: u32 = 5;

/// Statements of our dumps reach about 1 MiB plus one row whose values are
/// each at most 1 MiB (2 MiB as hex): below this, restores may fail.
const STATEMENT_NEED: u64 = 4 << 20;

/// Errors of the preflight.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// The facts could not be gathered (connection, query).
    #[error(transparent)]
    Db(#[from] DbError),
    /// The database settings are incomplete (no `DB_USER` ...).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A database problem makes the job impossible (privileges ...).
    #[error("preflight: {0}")]
    Database(String),
    /// There is not enough room on `BACKUP_DIR`.
    #[error("preflight: {0}")]
    Space(String),
}

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// All good; said for the record.
    Ok,
    /// The job runs, but something is lost or at risk.
    Warning,
    /// The job cannot succeed: it is refused.
    Fatal,
}

/// What a finding is about (decides the exit code of a fatal one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Grants.
    Privileges,
    /// `max_allowed_packet` and value sizes.
    Packet,
    /// Free space on `BACKUP_DIR`.
    Space,
    /// Server brand and version.
    Version,
    /// Definitions that will not restore as expected.
    Objects,
    /// The server settings and grants the binlog archive needs.
    Binlog,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How serious.
    pub severity: Severity,
    /// About what.
    pub area: Area,
    /// What was found, what it costs, what to do.
    pub message: String,
}

impl Finding {
    fn new(severity: Severity, area: Area, message: impl Into<String>) -> Self {
        Finding {
            severity,
            area,
            message: message.into(),
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tag = match self.severity {
            Severity::Ok => "ok",
            Severity::Warning => "warning",
            Severity::Fatal => "FATAL",
        };
        write!(f, "{tag}: {}", self.message)
    }
}

/// Everything the preflight found, in check order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The findings of at least `severity`.
    pub fn at_least(&self, severity: Severity) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.severity >= severity)
    }

    /// Log every finding: ok as info, warnings as warn, fatal as error.
    pub fn log(&self, job: &str) {
        for f in &self.findings {
            match f.severity {
                Severity::Ok => tracing::info!("preflight for {job}: {}", f.message),
                Severity::Warning => tracing::warn!("preflight for {job}: {}", f.message),
                Severity::Fatal => tracing::error!("preflight for {job}: {}", f.message),
            }
        }
    }

    /// `Err` with the first fatal finding (and how many more there are).
    pub fn into_result(self) -> Result<Report, PreflightError> {
        let fatal: Vec<&Finding> = self.at_least(Severity::Fatal).collect();
        let Some(first) = fatal.first() else {
            return Ok(self);
        };
        let mut msg = first.message.clone();
        if fatal.len() > 1 {
            msg.push_str(&format!(" (and {} more fatal findings)", fatal.len() - 1));
        }
        Err(match first.area {
            Area::Space => PreflightError::Space(msg),
            _ => PreflightError::Database(msg),
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for finding in &self.findings {
            writeln!(f, "{finding}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------- grants

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `*.*`
    Global,
    /// `db`.* (the name may hold `%` and `_` wildcards, `\` escapes them).
    Database(String),
    /// `db`.`table`
    Table(String, String),
    /// Anything else (`PROCEDURE db.p`, `PROXY`): not used by the checks.
    Other,
}

/// One `GRANT ... ON ... TO ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Where.
    pub scope: Scope,
    /// Upper-case privilege names (`SELECT`, `SHOW VIEW` ...); column
    /// privileges (`SELECT (a)`) are left out.
    pub privileges: BTreeSet<String>,
    /// `ALL PRIVILEGES`.
    pub all: bool,
}

/// The parsed output of `SHOW GRANTS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Privilege grants.
    pub grants: Vec<Grant>,
    /// Roles granted (`GRANT role TO user`); their privileges count only
    /// when the role is active, and `SHOW GRANTS` then lists them as grants.
    pub roles: Vec<String>,
}

impl Grants {
    /// Parse `SHOW GRANTS` lines; lines that are not grants are ignored.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Grants {
        let mut out = Grants::default();
        for line in lines {
            let line = line.as_ref().trim();
            let Some(rest) = strip_word(line, "GRANT") else {
                continue;
            };
            let Some(to) = find_word(rest, "TO") else {
                continue;
            };
            let head = &rest[..to];
            match find_word(head, "ON") {
                None => out.roles.push(unquote(head.trim())),
                Some(on) => {
                    let (all, privileges) = parse_privileges(&head[..on]);
                    let scope = parse_scope(head[on + 2..].trim());
                    out.grants.push(Grant {
                        scope,
                        privileges,
                        all,
                    });
                }
            }
        }
        out
    }

    /// Whether `privilege` is granted on `*.*`.
    pub fn global(&self, privilege: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.scope == Scope::Global && (g.all || g.privileges.contains(privilege)))
    }

    /// Whether `privilege` (a database-level one) applies to every table of
    /// `database`: granted on `*.*` or on a database pattern matching it.
    pub fn on_database(&self, database: &str, privilege: &str) -> bool {
        self.grants.iter().any(|g| {
            let applies = match &g.scope {
                Scope::Global => true,
                Scope::Database(pattern) => db_matches(pattern, database),
                _ => false,
            };
            applies && (g.all || g.privileges.contains(privilege))
        })
    }

    /// Whether `privilege` is granted on the table `database`.`table` (or above).
    pub fn on_table(&self, database: &str, table: &str, privilege: &str) -> bool {
        self.on_database(database, privilege)
            || self.grants.iter().any(|g| {
                matches!(&g.scope, Scope::Table(d, t) if d == database && t == table)
                    && (g.all || g.privileges.contains(privilege))
            })
    }

    /// Tables of `database` with `privilege` granted on the table itself.
    pub fn tables_with(&self, database: &str, privilege: &str) -> Vec<String> {
        self.grants
            .iter()
            .filter_map(|g| match &g.scope {
                Scope::Table(d, t)
                    if d == database && (g.all || g.privileges.contains(privilege)) =>
                {
                    Some(t.clone())
                }
                _ => None,
            })
            .collect()
    }
}

/// `s` after a leading case-insensitive `word` and whitespace.
fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    let next = s[word.len()..].chars().next();
    (head.eq_ignore_ascii_case(word) && next.is_some_and(char::is_whitespace))
        .then(|| s[word.len()..].trim_start())
}

/// Byte offset of the first ` word ` outside quotes and parentheses.
fn find_word(s: &str, word: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut depth = 0i32;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if c == b'\\' && q != b'`' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                b'`' | b'\'' | b'"' => quote = Some(c),
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ if depth == 0
                    && (i == 0 || b[i - 1].is_ascii_whitespace())
                    && b.len() >= i + word.len()
                    && b[i..i + word.len()].eq_ignore_ascii_case(word.as_bytes())
                    && b.get(i + word.len()).is_some_and(u8::is_ascii_whitespace) =>
                {
                    return Some(i);
                }
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// `SELECT, SHOW VIEW, UPDATE (a, b)` -> (all, {SELECT, SHOW VIEW}).
fn parse_privileges(list: &str) -> (bool, BTreeSet<String>) {
    let mut set = BTreeSet::new();
    let mut all = false;
    let mut depth = 0i32;
    let mut current = String::new();
    let mut column_level = false;
    let mut flush = |current: &mut String, column_level: &mut bool| {
        let name = current.split_whitespace().collect::<Vec<_>>().join(" ");
        let name = name.to_ascii_uppercase();
        if !*column_level && !name.is_empty() {
            if name == "ALL" || name == "ALL PRIVILEGES" {
                all = true;
            } else {
                set.insert(name);
            }
        }
        current.clear();
        *column_level = false;
    };
    for c in list.chars() {
        match c {
            '(' => {
                depth += 1;
                column_level = true;
            }
            ')' => depth -= 1,
            ',' if depth == 0 => flush(&mut current, &mut column_level),
            _ if depth == 0 => current.push(c),
            _ => {}
        }
    }
    flush(&mut current, &mut column_level);
    (all, set)
}

/// `*.*`, `` `db`.* ``, `` `db`.`t` ``, `PROCEDURE ...`.
fn parse_scope(s: &str) -> Scope {
    if s == "*.*" {
        return Scope::Global;
    }
    let parts = split_dot(s);
    match parts.as_slice() {
        [db, star] if star == "*" => Scope::Database(db.clone()),
        [db, table] if !db.contains(' ') => Scope::Table(db.clone(), table.clone()),
        _ => Scope::Other,
    }
}

/// Split `a.b` on the dot outside backticks, unquoting each part.
fn split_dot(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' if in_quote && chars.peek() == Some(&'`') => {
                cur.push('`');
                chars.next();
            }
            '`' => in_quote = !in_quote,
            '.' if !in_quote => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

/// A name without its backticks or quotes.
fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['`', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            let doubled: String = [q, q].iter().collect();
            return s[1..s.len() - 1].replace(&doubled, &q.to_string());
        }
    }
    s.to_owned()
}

/// Whether the grant pattern `pattern` (`%`, `_`, `\` escapes, as stored
/// by the server) matches the database name `name`.
pub fn db_matches(pattern: &str, name: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Lit(char),
        One,
        Any,
    }
    let mut pat = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // SHOW GRANTS may print the escape doubled (`test\\_%`).
            '\\' => {
                while chars.peek() == Some(&'\\') {
                    chars.next();
                }
                if let Some(n) = chars.next() {
                    pat.push(P::Lit(n));
                }
            }
            '%' => pat.push(P::Any),
            '_' => pat.push(P::One),
            c => pat.push(P::Lit(c)),
        }
    }
    let name: Vec<char> = name.chars().collect();
    // Classic wildcard matching with backtracking on the last `%`.
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pat.get(p) {
            Some(P::Lit(c)) if *c == name[n] => {
                p += 1;
                n += 1;
            }
            Some(P::One) => {
                p += 1;
                n += 1;
            }
            Some(P::Any) => {
                star = Some((p, n));
                p += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|x| *x == P::Any)
}

// ----------------------------------------------------------------- facts

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
async fn self_qualified_views(conn: &mut Conn, database: &str) -> Vec<String> {
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
async fn scan_values(conn: &mut Conn, database: &str, facts: &mut Facts) -> Result<(), DbError> {
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

// ---------------------------------------------------------------- judges

/// What a backup preflight needs besides the facts.
#[derive(Debug, Clone)]
pub struct BackupContext {
    /// The database backed up.
    pub database: String,
    /// Free space on `BACKUP_DIR` against the last backup, as
    /// [`health::space_for_backup`] judged it.
    pub space: Result<u64, String>,
    /// Whether `space` failed so that no backup can start (the directory is
    /// unusable, or below `HEALTH_MIN_FREE_MB`: fatal) or is only short (warning).
    pub space_unusable: bool,
    /// Whether the restore drill is scheduled (`DRILL_SCHEDULE` is not `off`).
    pub drill: bool,
}

/// How many objects of each kind a backup holds (from its manifest).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Objects {
    /// Views.
    pub views: usize,
    /// Stored procedures.
    pub procedures: usize,
    /// Stored functions.
    pub functions: usize,
    /// Triggers.
    pub triggers: usize,
    /// Events.
    pub events: usize,
    /// System-versioned tables whose history (or ROW START) the backup
    /// holds, which a restore inserts under `system_versioning_insert_history`.
    pub history_tables: usize,
}

impl Objects {
    /// Of the manifest of a database backup.
    pub fn of(m: &crate::format::manifest::Manifest) -> Objects {
        let functions = m
            .routines
            .iter()
            .filter(|r| r.starts_with("FUNCTION "))
            .count();
        Objects {
            views: m.views.len(),
            procedures: m.routines.len() - functions,
            functions,
            triggers: m.triggers.len(),
            events: m.events.len(),
            history_tables: m
                .tables
                .iter()
                .filter(|t| t.history_rows.is_some() && t.rows + t.history_rows.unwrap_or(0) > 0)
                .count(),
        }
    }

    fn total(&self) -> usize {
        self.views + self.procedures + self.functions + self.triggers + self.events
    }
}

/// What a restore preflight needs besides the facts.
#[derive(Debug, Clone)]
pub struct RestoreContext {
    /// The database restored into.
    pub database: String,
    /// `RESTORE_DEFINER`.
    pub definer: Definer,
    /// Objects the manifest lists; `None` without a manifest (a
    /// `mariadb-dump` file ...).
    pub objects: Option<Objects>,
    /// Size of the backup file, when known.
    pub backup_bytes: Option<u64>,
    /// The largest value in the backup, when its manifest records it.
    pub largest_value: Option<u64>,
    /// Whether a safety snapshot will be taken.
    pub snapshot: bool,
    /// Free bytes on `BACKUP_DIR`.
    pub free: Result<u64, String>,
}

/// `'user'@'host'` from `user@host`, for GRANT lines.
fn account(current_user: &str) -> String {
    match current_user.rsplit_once('@') {
        Some((u, h)) => format!("'{u}'@'{h}'"),
        None => format!("'{current_user}'"),
    }
}

/// When privileges are missing and roles are granted: a role's privileges
/// count only when it is the default role (selmai-backup never runs `SET
/// ROLE`, and `SHOW GRANTS` lists only the active role's privileges).
fn inactive_roles(g: &Grants, current_user: &str) -> Option<String> {
    let role = g.roles.first()?;
    Some(format!(
        "{current_user} has the roles {}: if the missing privileges are granted to one of them, make it the default role (SET DEFAULT ROLE `{role}` FOR {}), since selmai-backup does not SET ROLE",
        g.roles.iter().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", "),
        account(current_user)
    ))
}

/// Judge the facts for a backup of `ctx.database`.
pub fn judge_backup(facts: &Facts, ctx: &BackupContext) -> Report {
    let mut r = Report::default();
    r.findings.push(version(&facts.version));
    let g = Grants::parse(&facts.grants);
    let db = &ctx.database;
    let who = account(&facts.current_user);
    let grant = |p: &str| format!("GRANT {p} ON {}.* TO {who}", db::ident(db));
    let mut push = |s: Severity, m: String| r.findings.push(Finding::new(s, Area::Privileges, m));
    if !facts.database_exists {
        push(
            Severity::Warning,
            format!("database `{db}` does not exist (or is invisible to {}): backups fail until it does; check DB_NAME", facts.current_user),
        );
    }
    let mut missing = false;
    if !g.on_database(db, "SELECT") {
        missing = true;
        let some = g.tables_with(db, "SELECT");
        if some.is_empty() {
            push(
                Severity::Fatal,
                format!(
                    "{} has no SELECT on `{db}`: nothing can be backed up; {}",
                    facts.current_user,
                    grant("SELECT, SHOW VIEW, TRIGGER, EVENT")
                ),
            );
        } else {
            push(
                Severity::Warning,
                format!("{} has SELECT only on some tables of `{db}` ({}): the others are invisible to it and left out of backups without an error; {}", facts.current_user, some.join(", "), grant("SELECT")),
            );
        }
    }
    if !g.on_database(db, "SHOW VIEW") {
        missing = true;
        if facts.views > 0 {
            push(
                Severity::Fatal,
                format!("missing SHOW VIEW on `{db}`, which has {} views: SHOW CREATE VIEW is refused, so every backup fails; {}", facts.views, grant("SHOW VIEW")),
            );
        } else {
            push(
                Severity::Warning,
                format!("missing SHOW VIEW on `{db}`: once the database has a view, every backup fails; {}", grant("SHOW VIEW")),
            );
        }
    }
    if !g.on_database(db, "TRIGGER") {
        missing = true;
        push(
            Severity::Warning,
            format!("missing TRIGGER on `{db}`: triggers are invisible to this user and left out of backups without an error; {}", grant("TRIGGER")),
        );
    }
    if !g.on_database(db, "EVENT") {
        missing = true;
        push(
            Severity::Warning,
            format!("missing EVENT on `{db}`: events are invisible to this user and left out of backups without an error; {}", grant("EVENT")),
        );
    }
    let reads_routines =
        g.on_table("mysql", "proc", "SELECT") || g.on_database(db, "SHOW CREATE ROUTINE");
    if !reads_routines {
        missing = true;
        push(
            Severity::Warning,
            format!("missing SELECT on mysql.proc: stored routines defined by another account are left out of backups (or fail them when this user may EXECUTE them); GRANT SELECT ON `mysql`.`proc` TO {who}"),
        );
    }
    if !missing {
        push(
            Severity::Ok,
            format!(
                "{} may read every table, view, routine, trigger and event of `{db}`",
                facts.current_user
            ),
        );
    } else if let Some(note) = inactive_roles(&g, &facts.current_user) {
        push(Severity::Warning, note);
    }
    if ctx.drill {
        r.findings.push(drill_privileges(&g, &facts.current_user));
    }
    if !facts.self_qualified_views.is_empty() {
        r.findings.push(Finding::new(
            Severity::Warning,
            Area::Objects,
            format!("views {} name database `{db}` in their definitions (MariaDB shows them so when their DEFINER account no longer exists): they restore only into a database named `{db}`, and restore drills fail on them (ERROR 1054); create the DEFINER account again, or recreate the views with an existing DEFINER", facts.self_qualified_views.iter().map(|v| format!("`{v}`")).collect::<Vec<_>>().join(", ")),
        ));
    }
    r.findings.extend(packet_for_backup(facts));
    r.findings.push(match &ctx.space {
        Ok(free) => Finding::new(
            Severity::Ok,
            Area::Space,
            format!("{} free on BACKUP_DIR", human_bytes(*free)),
        ),
        Err(e) if ctx.space_unusable => Finding::new(Severity::Fatal, Area::Space, e.clone()),
        Err(e) => Finding::new(Severity::Warning, Area::Space, e.clone()),
    });
    r
}

/// What a restore of one of our backups runs into its database, and what
/// the drill adds (reading the tables back, dropping the database): the
/// drill's GRANT on its scratch databases.
const DRILL_PRIVILEGES: &[&str] = &[
    "SELECT",
    "INSERT",
    "CREATE",
    "DROP",
    "ALTER",
    "CREATE VIEW",
    "SHOW VIEW",
    "CREATE ROUTINE",
    "ALTER ROUTINE",
    "TRIGGER",
    "EVENT",
];

/// The grant pattern matching every scratch database of the drill.
fn drill_pattern() -> String {
    format!("{}%", SCRATCH_PREFIX.replace('_', "\\_"))
}

/// Can the restore drill create, fill, read and drop its scratch database?
fn drill_privileges(g: &Grants, current_user: &str) -> Finding {
    // A name of the drill's form: grants on a pattern (`selmai\_drill\_%`)
    // or on `*.*` match it, a grant on `DB_NAME` alone does not.
    let sample = format!("{SCRATCH_PREFIX}20250101000000_00000000");
    let pattern = db::ident(&drill_pattern());
    let lacking: Vec<&str> = DRILL_PRIVILEGES
        .iter()
        .copied()
        .filter(|p| !g.on_database(&sample, p))
        .collect();
    if lacking.is_empty() {
        return Finding::new(
            Severity::Ok,
            Area::Privileges,
            format!("{current_user} may run the restore drill in scratch databases {pattern}"),
        );
    }
    Finding::new(
        Severity::Warning,
        Area::Privileges,
        format!(
            "{current_user} lacks {} on the restore drill's scratch databases {pattern}: backups work, but the drill (DRILL_SCHEDULE) fails at every run (ERROR 1044); GRANT {} ON {pattern}.* TO {}, or set DRILL_SCHEDULE=off",
            lacking.join(", "),
            DRILL_PRIVILEGES.join(", "),
            account(current_user)
        ),
    )
}

/// Create and remove a probe file in `dir`: permission bits alone do not
/// say whether this process may write there (ACLs, read-only mounts, user
/// namespaces).
pub fn probe_writable(dir: &Path) -> Result<(), String> {
    let mut random = [0u8; 4];
    // Two containers may both run as PID 1: the random part keeps their
    // probes apart; without randomness the name is still unlikely to be taken.
    let _ = getrandom::fill(&mut random);
    let probe = dir.join(format!(".selmai-backup-probe-{}", hex::encode(random)));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| e.to_string())?;
    std::fs::remove_file(&probe).map_err(|e| format!("removing {}: {e}", probe.display()))
}

/// This process's user and group (the owner of `/proc/self`), for the
/// `chown` a message suggests.
pub fn process_owner() -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .ok()
        .map(|m| (m.uid(), m.gid()))
}

/// Judge the probe of `dir` ([`probe_writable`]) run as `owner` (uid, gid).
pub fn judge_writable(
    dir: &Path,
    probe: &Result<(), String>,
    owner: Option<(u32, u32)>,
) -> Finding {
    match probe {
        Ok(()) => Finding::new(
            Severity::Ok,
            Area::Space,
            format!("BACKUP_DIR {} is writable", dir.display()),
        ),
        Err(e) => {
            let (who, chown) = match owner {
                Some((uid, gid)) => (format!("uid {uid}"), format!("{uid}:{gid}")),
                None => ("this user".to_owned(), "10001:10001".to_owned()),
            };
            Finding::new(
                Severity::Fatal,
                Area::Space,
                format!(
                    "BACKUP_DIR {} is not writable by {who} ({e}): nothing can be backed up or restored; give the directory mounted there to {who} on the host, e.g. mkdir -p backups && sudo chown {chown} backups for the ./backups of docker-compose.backup.yml (Docker creates a missing one as root's)",
                    dir.display()
                ),
            )
        }
    }
}

/// Judge the facts for a restore into `ctx.database`.
pub fn judge_restore(facts: &Facts, ctx: &RestoreContext) -> Report {
    let mut r = Report::default();
    r.findings.push(version(&facts.version));
    let g = Grants::parse(&facts.grants);
    let db = &ctx.database;
    let who = account(&facts.current_user);
    let grant = |p: &str| format!("GRANT {p} ON {}.* TO {who}", db::ident(db));
    let mut push = |s: Severity, m: String| r.findings.push(Finding::new(s, Area::Privileges, m));
    let lacking = |privs: &[&str]| -> Vec<String> {
        privs
            .iter()
            .filter(|p| !g.on_database(db, p))
            .map(|p| p.to_string())
            .collect()
    };
    let mut missing = false;
    let basic = lacking(&["CREATE", "DROP", "INSERT"]);
    if !basic.is_empty() {
        missing = true;
        push(
            Severity::Fatal,
            format!("{} lacks {} on `{db}`: tables cannot be replaced; {}", facts.current_user, basic.join(", "), grant("CREATE, DROP, INSERT, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT, SELECT")),
        );
    }
    // (kind, count in the manifest, privileges its statements need)
    let o = ctx.objects;
    let (views, routines, triggers, events) = (
        o.map(|o| o.views),
        o.map(|o| o.procedures + o.functions),
        o.map(|o| o.triggers),
        o.map(|o| o.events),
    );
    for (kind, count, privs) in [
        ("views", views, &["CREATE VIEW", "SELECT"][..]),
        (
            "routines",
            routines,
            &["CREATE ROUTINE", "ALTER ROUTINE"][..],
        ),
        ("triggers", triggers, &["TRIGGER"][..]),
        ("events", events, &["EVENT"][..]),
    ] {
        let lack = lacking(privs);
        if lack.is_empty() || count == Some(0) {
            continue;
        }
        missing = true;
        match count {
            Some(n) => push(
                Severity::Fatal,
                format!("missing {} on `{db}`, and the backup has {n} {kind}: the restore would stop half way at the first one; {}", lack.join(", "), grant(&lack.join(", "))),
            ),
            None => push(
                Severity::Warning,
                format!("missing {} on `{db}`: if the file has {kind}, the restore stops half way at the first one; {}", lack.join(", "), grant(&lack.join(", "))),
            ),
        }
    }
    // With binary logging, the server refuses triggers and stored functions
    // from users without SUPER unless it trusts function creators (1419).
    let binlogged = o.map(|o| o.triggers + o.functions);
    if facts.log_bin && !facts.trust_function_creators && !g.global("SUPER") && binlogged != Some(0)
    {
        missing = true;
        let fix = "SET GLOBAL log_bin_trust_function_creators = 1 on the server (and log_bin_trust_function_creators=1 in its configuration), or restore as a user with SUPER";
        match binlogged {
            Some(n) => push(
                Severity::Fatal,
                format!("binary logging is on and {} lacks SUPER: the server refuses the backup's {n} triggers and stored functions (ERROR 1419), so the restore would stop half way; {fix}", facts.current_user),
            ),
            None => push(
                Severity::Warning,
                format!("binary logging is on and {} lacks SUPER: if the file has triggers or stored functions, the server refuses them (ERROR 1419) and the restore stops half way; {fix}", facts.current_user),
            ),
        }
    }
    if o.is_none() && !g.on_database(db, "ALTER") {
        missing = true;
        push(
            Severity::Warning,
            format!("missing ALTER on `{db}`: the `ALTER TABLE ... DISABLE KEYS` of mariadb-dump files fails; {}", grant("ALTER")),
        );
    }
    let programs = o.is_none_or(|o| o.total() > 0);
    if ctx.definer == Definer::Keep && programs && !g.global("SUPER") && !g.global("SET USER") {
        missing = true;
        push(
            Severity::Warning,
            format!("{} has neither SET USER nor SUPER: with RESTORE_DEFINER=keep, a view, routine, trigger or event whose DEFINER is another account fails to restore (ERROR 1227); set RESTORE_DEFINER=rewrite to make them this user's", facts.current_user),
        );
    }
    if let Some(n) = o.map(|o| o.history_tables).filter(|n| *n > 0) {
        match history_needs(facts, &g, n) {
            Some((severity, message)) => {
                missing |= severity == Severity::Fatal;
                push(severity, message);
            }
            None => push(
                Severity::Ok,
                format!("the backup holds the history of {n} system-versioned tables: this server restores it (system_versioning_insert_history, secure_timestamp={})", facts.secure_timestamp),
            ),
        }
    }
    if !missing {
        push(
            Severity::Ok,
            format!(
                "{} may create every object of the backup in `{db}`",
                facts.current_user
            ),
        );
    } else if let Some(note) = inactive_roles(&g, &facts.current_user) {
        push(Severity::Warning, note);
    }
    let packet = facts.max_allowed_packet;
    r.findings.push(match ctx.largest_value {
        Some(l) if l > packet => Finding::new(
            Severity::Fatal,
            Area::Packet,
            format!("the backup's largest value is {}, more than this server's max_allowed_packet ({}): it would be assembled in a user variable the server caps at max_allowed_packet and restore as NULL; raise max_allowed_packet on the server to more than {} and restore again", human_bytes(l), human_bytes(packet), human_bytes(l)),
        ),
        _ if packet < STATEMENT_NEED => Finding::new(
            Severity::Warning,
            Area::Packet,
            format!("max_allowed_packet is only {}: statements of up to about {} fail, and larger values restore as NULL; raise it on the server (--max-allowed-packet=64M)", human_bytes(packet), human_bytes(STATEMENT_NEED)),
        ),
        Some(l) => Finding::new(
            Severity::Ok,
            Area::Packet,
            format!("max_allowed_packet is {}, the backup's largest value is {}", human_bytes(packet), human_bytes(l)),
        ),
        None => Finding::new(
            Severity::Ok,
            Area::Packet,
            format!("max_allowed_packet is {}: values up to that size restore", human_bytes(packet)),
        ),
    });
    r.findings.push(restore_space(facts, ctx));
    r
}

/// What stops restoring the history of `n` system-versioned tables (their
/// rows go in with their ROW START and ROW END under
/// `system_versioning_insert_history`, which `secure_timestamp` governs).
fn history_needs(facts: &Facts, g: &Grants, n: usize) -> Option<(Severity, String)> {
    let lost = format!("the backup holds the history of {n} system-versioned tables (every row with its ROW START and ROW END)");
    if !facts.insert_history {
        return Some((
            Severity::Fatal,
            format!("{lost}, and this server ({}) cannot insert history rows (system_versioning_insert_history is MariaDB 10.11 and later): the restore would stop at the first one; restore into MariaDB 10.11 or later", facts.version),
        ));
    }
    let privileged = g.global("SUPER") || g.global("BINLOG REPLAY");
    match facts.secure_timestamp.to_ascii_uppercase().as_str() {
        "YES" => Some((
            Severity::Fatal,
            format!("{lost}, and secure_timestamp=YES on this server forbids setting them: the restore would stop at the first one; start the server with secure_timestamp=NO (or SUPER, and restore as a user with SUPER or BINLOG REPLAY)"),
        )),
        v @ ("SUPER" | "REPLICATION") if !privileged => Some((
            Severity::Fatal,
            format!("{lost}, and with secure_timestamp={v} only a user with SUPER or BINLOG REPLAY may set them: the restore would stop at the first one; GRANT BINLOG REPLAY ON *.* TO {} (or start the server with secure_timestamp=NO)", account(&facts.current_user)),
        )),
        _ => None,
    }
}

fn restore_space(facts: &Facts, ctx: &RestoreContext) -> Finding {
    let free = match &ctx.free {
        Ok(f) => *f,
        Err(e) => {
            return Finding::new(
                if ctx.snapshot {
                    Severity::Fatal
                } else {
                    Severity::Warning
                },
                Area::Space,
                format!("cannot measure free space on BACKUP_DIR: {e}"),
            )
        }
    };
    if !ctx.snapshot || !facts.database_exists || facts.database_bytes == 0 {
        return Finding::new(
            Severity::Ok,
            Area::Space,
            format!("{} free on BACKUP_DIR", human_bytes(free)),
        );
    }
    let data = facts.database_bytes;
    let estimate = ctx.backup_bytes.unwrap_or(data).min(data.max(1));
    if free < estimate {
        Finding::new(
            Severity::Fatal,
            Area::Space,
            format!("only {} free on BACKUP_DIR, and the safety snapshot of `{}` needs about {}: free space, or pass --no-safety-snapshot", human_bytes(free), ctx.database, human_bytes(estimate)),
        )
    } else if free < data {
        Finding::new(
            Severity::Warning,
            Area::Space,
            format!("{} free on BACKUP_DIR, less than the {} of data in `{}`: the safety snapshot fits only if it compresses as well as this backup", human_bytes(free), human_bytes(data), ctx.database),
        )
    } else {
        Finding::new(
            Severity::Ok,
            Area::Space,
            format!(
                "{} free on BACKUP_DIR, room for the safety snapshot of `{}` ({} of data)",
                human_bytes(free),
                ctx.database,
                human_bytes(data)
            ),
        )
    }
}

fn packet_for_backup(facts: &Facts) -> Vec<Finding> {
    let packet = facts.max_allowed_packet;
    let mut out = Vec::new();
    match &facts.largest_value {
        Some(l) if l.bytes > packet => out.push(Finding::new(
            Severity::Warning,
            Area::Packet,
            format!("the largest value, `{}`.`{}` ({}), is larger than max_allowed_packet ({}): a restore assembles it in a user variable, which the server caps at max_allowed_packet, so it would come back as NULL; raise max_allowed_packet on the server to more than {}", l.table, l.column, human_bytes(l.bytes), human_bytes(packet), human_bytes(l.bytes)),
        )),
        Some(l) => out.push(Finding::new(
            Severity::Ok,
            Area::Packet,
            format!("max_allowed_packet is {}, the largest value is {} (`{}`.`{}`)", human_bytes(packet), human_bytes(l.bytes), l.table, l.column),
        )),
        None if packet < STATEMENT_NEED => out.push(Finding::new(
            Severity::Warning,
            Area::Packet,
            format!("max_allowed_packet is only {}: restores of statements up to about {} fail; raise it on the server (--max-allowed-packet=64M)", human_bytes(packet), human_bytes(STATEMENT_NEED)),
        )),
        None => out.push(Finding::new(
            Severity::Ok,
            Area::Packet,
            format!("max_allowed_packet is {}", human_bytes(packet)),
        )),
    }
    if !facts.unscanned.is_empty() {
        out.push(Finding::new(
            Severity::Ok,
            Area::Packet,
            format!(
                "value sizes not checked in {} (too large to scan at start)",
                facts.unscanned.join(", ")
            ),
        ));
    }
    out
}

/// The server version finding.
pub fn version(v: &str) -> Finding {
    let nums: Vec<u32> = v
        .split(|c: char| !c.is_ascii_digit())
        .take(2)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    let (major, minor) = (
        nums.first().copied().unwrap_or(0),
        nums.get(1).copied().unwrap_or(0),
    );
    if !v.to_ascii_lowercase().contains("mariadb") {
        return Finding::new(
            Severity::Warning,
            Area::Version,
            format!("server {v} is not MariaDB: selmai-backup is tested against MariaDB only; run a restore drill (verify --restore-test) before relying on its backups"),
        );
    }
    if (major, minor) < TESTED_SINCE {
        return Finding::new(
            Severity::Warning,
            Area::Version,
            format!("MariaDB {v} is older than {}.{}, the oldest release selmai-backup is tested against; upgrade, or run a restore drill (verify --restore-test) before relying on its backups", TESTED_SINCE.0, TESTED_SINCE.1),
        );
    }
    Finding::new(Severity::Ok, Area::Version, format!("server MariaDB {v}"))
}

// ---------------------------------------------------------------- entry points

/// The preflight of a daemon start: connect, gather, judge for a backup of
/// `DB_NAME`. An unwritable `BACKUP_DIR` is the whole report: it is fatal
/// whatever the database says, so the database is not waited for.
pub async fn for_backup(settings: &Settings) -> Result<Report, PreflightError> {
    let db = settings.db()?;
    let dir = dir_finding(&settings.backup_dir);
    if dir.severity == Severity::Fatal {
        return Ok(Report {
            findings: vec![dir],
        });
    }
    let facts = connect_and_gather(&db, &db.name, true).await?;
    let state = State::load(&settings.backup_dir).unwrap_or_default();
    let (space, unusable) = match health::space_for_backup(
        &settings.backup_dir,
        &state,
        Kind::Db,
        settings.health.min_free_bytes,
    ) {
        Ok(free) => (Ok(free), false),
        // Below HEALTH_MIN_FREE_MB every backup refuses to start: as fatal
        // as a directory that cannot be used.
        Err(e @ (SpaceError::Io { .. } | SpaceError::BelowMinimum { .. })) => {
            (Err(e.to_string()), true)
        }
        Err(e) => (Err(e.to_string()), false),
    };
    let mut report = judge_backup(
        &facts,
        &BackupContext {
            database: db.name.clone(),
            space,
            space_unusable: unusable,
            drill: settings.schedule.of(Kind::Drill).is_some(),
        },
    );
    report.findings.insert(0, dir);
    Ok(report)
}

/// The preflight of a restore of `source` into `into`.
pub async fn for_restore(
    settings: &Settings,
    db: &DbSettings,
    into: &str,
    source: &crate::restore::open::Source,
    snapshot: bool,
) -> Result<Report, PreflightError> {
    let dir = dir_finding(&settings.backup_dir);
    if dir.severity == Severity::Fatal {
        return Ok(Report {
            findings: vec![dir],
        });
    }
    let facts = connect_and_gather(db, into, false).await?;
    let objects = source.manifest.as_ref().map(Objects::of);
    let mut report = judge_restore(
        &facts,
        &RestoreContext {
            database: into.to_owned(),
            definer: settings.restore_definer,
            objects,
            backup_bytes: source.size.or(source.manifest.as_ref().map(|m| m.size)),
            largest_value: source.manifest.as_ref().and_then(|m| m.largest_value),
            snapshot,
            free: free(&settings.backup_dir),
        },
    );
    report.findings.insert(0, dir);
    Ok(report)
}

/// The preflight of a point-in-time restore's replay into `into`: the
/// `BINLOG REPLAY` privilege (MariaDB 10.5.2+; `SUPER` before) that
/// `BINLOG` statements and the replayed session settings need, and
/// `UPDATE` and `DELETE` on the database for the replayed rows. Run after
/// [`for_restore`], which checks what restoring the dump needs.
pub async fn for_replay(db: &DbSettings, into: &str) -> Result<Report, PreflightError> {
    let facts = connect_and_gather(db, into, false).await?;
    Ok(judge_replay(&facts, into))
}

/// The findings of [`for_replay`] from gathered facts.
pub fn judge_replay(facts: &Facts, into: &str) -> Report {
    let mut r = Report::default();
    let g = Grants::parse(&facts.grants);
    let who = account(&facts.current_user);
    if !g.global("BINLOG REPLAY") && !g.global("SUPER") {
        r.findings.push(Finding::new(
            Severity::Fatal,
            Area::Privileges,
            format!("{} lacks BINLOG REPLAY on *.*: the archived row changes are replayed as BINLOG statements, which need it; GRANT BINLOG REPLAY ON *.* TO {who}", facts.current_user),
        ));
    }
    let lacking: Vec<&str> = ["UPDATE", "DELETE"]
        .into_iter()
        .filter(|p| !g.on_database(into, p))
        .collect();
    if !lacking.is_empty() {
        r.findings.push(Finding::new(
            Severity::Fatal,
            Area::Privileges,
            format!(
                "{} lacks {} on `{into}`: the archived changes cannot be replayed; GRANT {} ON {}.* TO {who}",
                facts.current_user,
                lacking.join(", "),
                lacking.join(", "),
                db::ident(into)
            ),
        ));
    }
    r
}

fn dir_finding(dir: &Path) -> Finding {
    judge_writable(dir, &probe_writable(dir), process_owner())
}

fn free(dir: &Path) -> Result<u64, String> {
    health::free_bytes(dir).map_err(|e| format!("{}: {e}", dir.display()))
}

// ---------------------------------------------------------------- binlog

/// What the binlog archive needs to know about the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BinlogFacts {
    /// `CURRENT_USER()`.
    pub current_user: String,
    /// `SHOW GRANTS` lines.
    pub grants: Vec<String>,
    /// `@@log_bin`.
    pub log_bin: bool,
    /// `@@binlog_format`.
    pub binlog_format: String,
    /// `@@server_id`.
    pub server_id: u64,
    /// `@@binlog_expire_logs_seconds` (0: kept until purged by hand).
    pub expire_seconds: u64,
}

/// Binlogs kept for less than this make a gap likely after an ordinary
/// outage of the sidecar (a weekend, a failed host).
const MIN_BINLOG_KEEP_SECONDS: u64 = 2 * 86_400;

/// Judge whether the binlog archive can run as replica `our_id`. Fatal
/// findings mean it cannot (no binary logging, no grant, a clashing id).
pub fn judge_binlog(f: &BinlogFacts, our_id: u32) -> Report {
    let mut r = Report::default();
    let who = account(&f.current_user);
    let mut push = |s: Severity, m: String| r.findings.push(Finding::new(s, Area::Binlog, m));
    if !f.log_bin {
        push(
            Severity::Fatal,
            "binary logging is off on the server: there is no binlog to archive; start MariaDB with --log-bin --server-id=1 --binlog-format=ROW".into(),
        );
        return r;
    }
    if f.server_id == 0 {
        push(
            Severity::Fatal,
            "the server has server_id=0, which refuses every replica: start MariaDB with --server-id=1".into(),
        );
    } else if f.server_id == u64::from(our_id) {
        push(
            Severity::Fatal,
            format!("the server's server_id is {our_id}, the id the binlog archive uses as a replica: set BINLOG_SERVER_ID to another value"),
        );
    }
    let g = Grants::parse(&f.grants);
    let mut missing = Vec::new();
    if !g.global("REPLICATION SLAVE") {
        missing.push("REPLICATION SLAVE");
    }
    if !g.global("BINLOG MONITOR") && !g.global("REPLICATION CLIENT") && !g.global("SUPER") {
        missing.push("BINLOG MONITOR");
    }
    if !missing.is_empty() {
        push(
            Severity::Fatal,
            format!(
                "{} lacks {} on *.*: it cannot read the binlog as a replica; GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO {who}",
                f.current_user,
                missing.join(" and ")
            ),
        );
    }
    if !f.binlog_format.eq_ignore_ascii_case("ROW") {
        push(
            Severity::Warning,
            format!(
                "binlog_format is {}: a point-in-time restore replays statements, and statements such as NOW(), UUID() or UPDATE ... LIMIT can give other rows than they did; ROW records the rows themselves: start MariaDB with --binlog-format=ROW",
                f.binlog_format
            ),
        );
    }
    match f.expire_seconds {
        0 => push(
            Severity::Ok,
            "the server keeps its binlogs until they are purged by hand".into(),
        ),
        s if s < MIN_BINLOG_KEEP_SECONDS => push(
            Severity::Warning,
            format!(
                "the server deletes binlogs after {}: if the sidecar is down longer, the archive has a gap and needs a new dump; keep them at least 2 days (binlog_expire_logs_seconds={MIN_BINLOG_KEEP_SECONDS})",
                crate::daemon::schedule::human_duration(chrono::Duration::seconds(s as i64))
            ),
        ),
        s => push(
            Severity::Ok,
            format!(
                "the server keeps its binlogs {}",
                crate::daemon::schedule::human_duration(chrono::Duration::seconds(s as i64))
            ),
        ),
    }
    r
}

/// Gather [`BinlogFacts`] and judge them for replica `our_id`.
pub async fn for_binlog(db: &DbSettings, our_id: u32) -> Result<Report, PreflightError> {
    let mut conn = db::connect(db, None).await?;
    let facts = async {
        let rows = query_strings(
            &mut conn,
            "SELECT CURRENT_USER(), @@log_bin, @@binlog_format, @@server_id, @@binlog_expire_logs_seconds",
        )
        .await?;
        let row = rows.into_iter().next().unwrap_or_default();
        let get = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        let grants: Vec<String> = query_strings(&mut conn, "SHOW GRANTS")
            .await?
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect();
        Ok::<_, DbError>(BinlogFacts {
            current_user: get(0),
            grants,
            log_bin: get(1) == "1",
            binlog_format: get(2),
            server_id: get(3).parse().unwrap_or(0),
            expire_seconds: get(4).parse().unwrap_or(0),
        })
    }
    .await;
    let _ = conn.disconnect().await;
    Ok(judge_binlog(&facts?, our_id))
}

async fn connect_and_gather(db: &DbSettings, database: &str, scan: bool) -> Result<Facts, DbError> {
    // Without a default database: a restore target may not exist yet.
    let mut conn = db::connect(db, None).await?;
    let facts = gather(&mut conn, database, scan).await;
    let _ = conn.disconnect().await;
    facts
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const USAGE: &str = "GRANT USAGE ON *.* TO `backup`@`%` IDENTIFIED BY PASSWORD '*D821809F681A40A6E379B50D0463EFAE20BDD122'";

    #[rstest]
    #[case::all_global(
        &["GRANT ALL PRIVILEGES ON *.* TO `selmai_test`@`localhost` IDENTIFIED BY PASSWORD '*C8EF' WITH GRANT OPTION"],
        "selmai", "SHOW VIEW", true
    )]
    #[case::usage_only(&[USAGE], "selmai", "SELECT", false)]
    #[case::db_level(
        &[USAGE, "GRANT SELECT, SHOW VIEW, TRIGGER ON `selmai`.* TO `backup`@`%`"],
        "selmai", "SHOW VIEW", true
    )]
    #[case::other_db(
        &[USAGE, "GRANT SELECT ON `selmai_old`.* TO `backup`@`%`"],
        "selmai", "SELECT", false
    )]
    #[case::db_all(
        &[USAGE, "GRANT ALL PRIVILEGES ON `selmai`.* TO `backup`@`%`"],
        "selmai", "EVENT", true
    )]
    #[case::wildcard(
        &[USAGE, "GRANT SELECT ON `sel%`.* TO `backup`@`%`"],
        "selmai", "SELECT", true
    )]
    #[case::wildcard_miss(
        &[USAGE, "GRANT SELECT ON `sel%`.* TO `backup`@`%`"],
        "other", "SELECT", false
    )]
    #[case::underscore_is_one_char(
        &[USAGE, "GRANT SELECT ON `app_db`.* TO `backup`@`%`"],
        "appxdb", "SELECT", true
    )]
    #[case::escaped_underscore(
        &[USAGE, "GRANT SELECT ON `app\\_db`.* TO `backup`@`%`"],
        "appxdb", "SELECT", false
    )]
    #[case::escaped_underscore_matches_itself(
        &[USAGE, "GRANT SELECT ON `app\\_db`.* TO `backup`@`%`"],
        "app_db", "SELECT", true
    )]
    #[case::public_doubled_escape(
        &[USAGE, "GRANT SELECT, INSERT, CREATE VIEW, SHOW VIEW ON `test\\\\_%`.* TO PUBLIC"],
        "test_x", "SHOW VIEW", true
    )]
    #[case::backtick_in_name(
        &[USAGE, "GRANT SELECT ON `we``ird`.* TO `backup`@`%`"],
        "we`ird", "SELECT", true
    )]
    #[case::table_level_is_not_database_level(
        &[USAGE, "GRANT SELECT ON `selmai`.`users` TO `backup`@`%`"],
        "selmai", "SELECT", false
    )]
    #[case::column_level_ignored(
        &[USAGE, "GRANT SELECT (`id`, `name`), INSERT ON `selmai`.* TO `backup`@`%`"],
        "selmai", "SELECT", false
    )]
    #[case::after_column_level(
        &[USAGE, "GRANT SELECT (`id`, `name`), INSERT ON `selmai`.* TO `backup`@`%`"],
        "selmai", "INSERT", true
    )]
    #[case::lower_case(
        &[USAGE, "grant select, show view on `selmai`.* to `backup`@`%`"],
        "selmai", "SHOW VIEW", true
    )]
    #[case::routine_grant_ignored(
        &[USAGE, "GRANT EXECUTE ON PROCEDURE `selmai`.`p` TO `backup`@`%`"],
        "selmai", "EXECUTE", false
    )]
    fn database_privileges(
        #[case] lines: &[&str],
        #[case] db: &str,
        #[case] privilege: &str,
        #[case] want: bool,
    ) {
        let g = Grants::parse(lines);
        assert_eq!(g.on_database(db, privilege), want, "{g:?}");
    }

    #[test]
    fn global_only_privileges_need_star_star() {
        let g = Grants::parse(&[USAGE, "GRANT ALL PRIVILEGES ON `selmai`.* TO `backup`@`%`"]);
        assert!(!g.global("SUPER"));
        assert!(!g.global("SET USER"));
        let g = Grants::parse(&["GRANT SELECT, SET USER ON *.* TO `r`@`%`"]);
        assert!(g.global("SET USER"));
        assert!(!g.global("SUPER"));
    }

    #[test]
    fn tables_roles_and_proxy() {
        let g = Grants::parse(&[
            USAGE,
            "GRANT SELECT ON `mysql`.`proc` TO `backup`@`%`",
            "GRANT SELECT, INSERT ON `selmai`.`users` TO `backup`@`%`",
            "GRANT `backup_role` TO `backup`@`%`",
            "GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION",
            "SET DEFAULT ROLE `backup_role` FOR `backup`@`%`",
        ]);
        assert!(g.on_table("mysql", "proc", "SELECT"));
        assert!(!g.on_table("mysql", "user", "SELECT"));
        assert_eq!(g.tables_with("selmai", "SELECT"), ["users"]);
        assert_eq!(g.roles, ["backup_role"]);
        assert_eq!(g.grants.last().unwrap().scope, Scope::Other);
    }

    #[rstest]
    #[case("abc", "abc", true)]
    #[case("abc", "abcd", false)]
    #[case("a%", "a", true)]
    #[case("%c", "abc", true)]
    #[case("a%c%e", "abxcdde", true)]
    #[case("a%c%e", "abxcdd", false)]
    #[case("a_c", "abc", true)]
    #[case("a_c", "ac", false)]
    #[case("a\\%", "a%", true)]
    #[case("a\\%", "ab", false)]
    fn db_patterns(#[case] pattern: &str, #[case] name: &str, #[case] want: bool) {
        assert_eq!(db_matches(pattern, name), want);
    }

    fn facts(grants: &[&str]) -> Facts {
        Facts {
            version: "10.11.19-MariaDB-0+deb12u1".into(),
            current_user: "backup@%".into(),
            grants: grants.iter().map(|s| s.to_string()).collect(),
            max_allowed_packet: 64 << 20,
            log_bin: false,
            trust_function_creators: false,
            database_exists: true,
            views: 0,
            database_bytes: 10 << 20,
            largest_value: None,
            unscanned: Vec::new(),
            self_qualified_views: Vec::new(),
            insert_history: true,
            secure_timestamp: "NO".into(),
        }
    }

    fn backup_ctx() -> BackupContext {
        BackupContext {
            database: "selmai".into(),
            space: Ok(1 << 30),
            space_unusable: false,
            drill: false,
        }
    }

    fn messages(r: &Report, s: Severity) -> Vec<String> {
        r.findings
            .iter()
            .filter(|f| f.severity == s)
            .map(|f| f.message.clone())
            .collect()
    }

    #[test]
    fn backup_with_select_only_warns_naming_each_cost() {
        let f = facts(&[USAGE, "GRANT SELECT ON `selmai`.* TO `backup`@`%`"]);
        let r = judge_backup(&f, &backup_ctx());
        let w = messages(&r, Severity::Warning);
        assert_eq!(w.len(), 4, "{r}");
        assert!(w[0].starts_with("missing SHOW VIEW on `selmai`: once the database has a view, every backup fails; GRANT SHOW VIEW ON `selmai`.* TO 'backup'@'%'"), "{r}");
        assert!(
            w[1].contains("missing TRIGGER on `selmai`: triggers are invisible"),
            "{r}"
        );
        assert!(
            w[2].contains("missing EVENT on `selmai`: events are invisible"),
            "{r}"
        );
        assert!(
            w[3].contains("GRANT SELECT ON `mysql`.`proc` TO 'backup'@'%'"),
            "{r}"
        );
        assert!(r.clone().into_result().is_ok());
    }

    #[test]
    fn granted_roles_are_named_when_privileges_are_missing() {
        let f = facts(&[
            USAGE,
            "GRANT SELECT ON `selmai`.* TO `backup`@`%`",
            "GRANT `backup_role` TO `backup`@`%`",
        ]);
        let w = messages(&judge_backup(&f, &backup_ctx()), Severity::Warning);
        assert!(
            w.last()
                .unwrap()
                .contains("SET DEFAULT ROLE `backup_role` FOR 'backup'@'%'"),
            "{w:?}"
        );
    }

    #[test]
    fn backup_with_views_and_no_show_view_is_fatal() {
        let mut f = facts(&[USAGE, "GRANT SELECT ON `selmai`.* TO `backup`@`%`"]);
        f.views = 3;
        let err = judge_backup(&f, &backup_ctx()).into_result().unwrap_err();
        assert!(matches!(err, PreflightError::Database(_)));
        assert!(
            err.to_string()
                .contains("which has 3 views: SHOW CREATE VIEW is refused, so every backup fails"),
            "{err}"
        );
    }

    #[test]
    fn backup_without_select_is_fatal() {
        let f = facts(&[USAGE]);
        let err = judge_backup(&f, &backup_ctx()).into_result().unwrap_err();
        assert!(err.to_string().starts_with("preflight: backup@% has no SELECT on `selmai`: nothing can be backed up; GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `selmai`.* TO 'backup'@'%'"), "{err}");
    }

    #[test]
    fn backup_with_everything_is_ok() {
        let mut f = facts(&[
            USAGE,
            "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `selmai`.* TO `backup`@`%`",
            "GRANT SELECT ON `mysql`.`proc` TO `backup`@`%`",
        ]);
        f.largest_value = Some(LargestValue {
            table: "files".into(),
            column: "data".into(),
            bytes: 3 << 20,
        });
        let r = judge_backup(&f, &backup_ctx());
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
        assert!(
            r.to_string().contains(
                "ok: max_allowed_packet is 67.1 MB, the largest value is 3.1 MB (`files`.`data`)"
            ),
            "{r}"
        );
    }

    #[test]
    fn views_naming_their_own_database_are_a_warning() {
        let mut f = facts(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"]);
        f.self_qualified_views = vec!["v".into(), "w".into()];
        let w = messages(&judge_backup(&f, &backup_ctx()), Severity::Warning);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("views `v`, `w` name database `selmai` in their definitions"),
            "{w:?}"
        );
        assert!(
            w[0].contains("restore drills fail on them (ERROR 1054)"),
            "{w:?}"
        );
    }

    #[test]
    fn a_value_larger_than_the_packet_is_a_warning() {
        let mut f = facts(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"]);
        f.max_allowed_packet = 16 << 20;
        f.largest_value = Some(LargestValue {
            table: "files".into(),
            column: "data".into(),
            bytes: 20 << 20,
        });
        f.unscanned = vec!["huge".into()];
        let r = judge_backup(&f, &backup_ctx());
        let w = messages(&r, Severity::Warning);
        assert_eq!(w.len(), 1, "{r}");
        assert!(
            w[0].contains("`files`.`data` (21.0 MB), is larger than max_allowed_packet (16.8 MB)"),
            "{r}"
        );
        assert!(
            r.to_string().contains("value sizes not checked in huge"),
            "{r}"
        );
    }

    const BACKUP_GRANTS: &str =
        "GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `selmai`.* TO `backup`@`%`";

    /// The drill finding of a backup preflight with the drill on, if any.
    fn drill_finding(grants: &[&str]) -> Option<Finding> {
        let mut ctx = backup_ctx();
        ctx.drill = true;
        judge_backup(&facts(grants), &ctx)
            .findings
            .into_iter()
            .find(|f| f.message.contains("restore drill"))
    }

    #[rstest]
    // The official image's grant to the app's user: not the drill's databases.
    #[case::database_only(&[USAGE, "GRANT ALL PRIVILEGES ON `selmai`.* TO `backup`@`%`"], Severity::Warning)]
    // As SHOW GRANTS prints the README's GRANT (escapes doubled).
    #[case::drill_pattern(
        &[USAGE, BACKUP_GRANTS, "GRANT ALL PRIVILEGES ON `selmai\\\\_drill\\\\_%`.* TO `backup`@`%`"],
        Severity::Ok
    )]
    #[case::drill_pattern_listed(
        &[USAGE, BACKUP_GRANTS, "GRANT SELECT, INSERT, CREATE, DROP, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT ON `selmai\\\\_drill\\\\_%`.* TO `backup`@`%`"],
        Severity::Ok
    )]
    #[case::wider_pattern(&[USAGE, "GRANT ALL PRIVILEGES ON `selmai%`.* TO `backup`@`%`"], Severity::Ok)]
    #[case::global(&["GRANT ALL PRIVILEGES ON *.* TO `backup`@`%`"], Severity::Ok)]
    #[case::no_drop(
        &[USAGE, BACKUP_GRANTS, "GRANT SELECT, INSERT, CREATE, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT ON `selmai\\\\_drill\\\\_%`.* TO `backup`@`%`"],
        Severity::Warning
    )]
    fn drill_privileges_are_judged_on_its_scratch_databases(
        #[case] grants: &[&str],
        #[case] want: Severity,
    ) {
        let f = drill_finding(grants).expect("a drill finding");
        assert_eq!(f.severity, want, "{f}");
        assert_eq!(f.area, Area::Privileges);
        if want == Severity::Warning {
            assert!(f.message.contains("DRILL_SCHEDULE"), "{f}");
            assert!(
                f.message.contains("GRANT SELECT, INSERT, CREATE, DROP, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT ON `selmai\\_drill\\_%`.* TO 'backup'@'%', or set DRILL_SCHEDULE=off"),
                "{f}"
            );
        } else {
            assert!(!f.message.contains("DRILL_SCHEDULE"), "{f}");
        }
    }

    #[test]
    fn drill_privileges_name_what_is_missing_and_are_not_judged_when_it_is_off() {
        let f = drill_finding(&[USAGE, BACKUP_GRANTS, "GRANT SELECT, INSERT, CREATE, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT ON `selmai\\\\_drill\\\\_%`.* TO `backup`@`%`"]).unwrap();
        assert!(
            f.message.starts_with("backup@% lacks DROP on the restore drill's scratch databases `selmai\\_drill\\_%`: backups work"),
            "{f}"
        );
        let r = judge_backup(&facts(&[USAGE, BACKUP_GRANTS]), &backup_ctx());
        assert!(!r.to_string().contains("drill"), "{r}");
        // Never fatal: backups work without the drill's privileges.
        let mut ctx = backup_ctx();
        ctx.drill = true;
        let r = judge_backup(
            &facts(&[
                USAGE,
                BACKUP_GRANTS,
                "GRANT SELECT ON `mysql`.`proc` TO `backup`@`%`",
            ]),
            &ctx,
        );
        assert!(r.clone().into_result().is_ok(), "{r}");
    }

    #[test]
    fn an_unwritable_backup_dir_is_fatal_and_says_which_chown() {
        let dir = Path::new("/backups");
        let f = judge_writable(
            dir,
            &Err("Permission denied (os error 13)".into()),
            Some((10001, 10001)),
        );
        assert_eq!((f.severity, f.area), (Severity::Fatal, Area::Space));
        assert_eq!(
            f.message,
            "BACKUP_DIR /backups is not writable by uid 10001 (Permission denied (os error 13)): nothing can be backed up or restored; give the directory mounted there to uid 10001 on the host, e.g. mkdir -p backups && sudo chown 10001:10001 backups for the ./backups of docker-compose.backup.yml (Docker creates a missing one as root's)"
        );
        // Fatal for space: exit 8, like a full disk.
        let err = Report { findings: vec![f] }.into_result().unwrap_err();
        assert!(matches!(err, PreflightError::Space(_)), "{err}");
        let f = judge_writable(dir, &Ok(()), Some((10001, 10001)));
        assert_eq!(
            (f.severity, f.message.as_str()),
            (Severity::Ok, "BACKUP_DIR /backups is writable")
        );
    }

    #[test]
    fn the_probe_writes_and_removes_one_file() {
        let tmp = tempfile::tempdir().unwrap();
        probe_writable(tmp.path()).unwrap();
        assert_eq!(
            std::fs::read_dir(tmp.path()).unwrap().count(),
            0,
            "the probe file was left"
        );
        let err = probe_writable(&tmp.path().join("missing")).unwrap_err();
        assert!(err.contains("No such file or directory"), "{err}");
        // A file is no directory to write in.
        let file = tmp.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(probe_writable(&file).is_err());
    }

    #[test]
    fn space_findings_of_a_backup() {
        let f = facts(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"]);
        let mut ctx = backup_ctx();
        ctx.space = Err("only 1 MB free".into());
        assert_eq!(
            messages(&judge_backup(&f, &ctx), Severity::Warning),
            ["only 1 MB free"]
        );
        ctx.space_unusable = true;
        let err = judge_backup(&f, &ctx).into_result().unwrap_err();
        assert!(matches!(err, PreflightError::Space(_)), "{err}");
    }

    #[rstest]
    #[case("10.11.19-MariaDB-0+deb12u1", Severity::Ok)]
    #[case("11.4.2-MariaDB", Severity::Ok)]
    #[case("10.5.0-MariaDB", Severity::Ok)]
    #[case("10.4.32-MariaDB-log", Severity::Warning)]
    #[case("8.0.36", Severity::Warning)]
    #[case("8.4.0-commercial", Severity::Warning)]
    fn versions(#[case] v: &str, #[case] want: Severity) {
        assert_eq!(version(v).severity, want, "{}", version(v).message);
    }

    fn objs(views: usize, procedures: usize, triggers: usize, events: usize) -> Option<Objects> {
        Some(Objects {
            views,
            procedures,
            functions: 0,
            triggers,
            events,
            history_tables: 0,
        })
    }

    fn restore_ctx(definer: Definer, objects: Option<Objects>) -> RestoreContext {
        RestoreContext {
            database: "selmai".into(),
            definer,
            objects,
            backup_bytes: Some(1 << 20),
            largest_value: None,
            snapshot: true,
            free: Ok(1 << 30),
        }
    }

    const RESTORER: &str = "GRANT SELECT, INSERT, CREATE, DROP, INDEX, ALTER, LOCK TABLES, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER ON `selmai`.* TO `backup`@`%`";

    #[test]
    fn restore_without_insert_is_fatal() {
        let f = facts(&[
            USAGE,
            "GRANT SELECT, CREATE, DROP ON `selmai`.* TO `backup`@`%`",
        ]);
        let err = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 0, 0)))
            .into_result()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("backup@% lacks INSERT on `selmai`: tables cannot be replaced"),
            "{err}"
        );
    }

    #[test]
    fn restore_of_views_without_create_view_is_fatal_only_when_there_are_views() {
        let f = facts(&[
            USAGE,
            "GRANT SELECT, INSERT, CREATE, DROP ON `selmai`.* TO `backup`@`%`",
        ]);
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(2, 0, 0, 0)));
        let fatal = messages(&r, Severity::Fatal);
        assert_eq!(fatal.len(), 1, "{r}");
        assert!(
            fatal[0].starts_with("missing CREATE VIEW on `selmai`, and the backup has 2 views"),
            "{r}"
        );
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 0, 0)));
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
        // Without a manifest nothing is known: warnings, ALTER included.
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, None));
        assert_eq!(messages(&r, Severity::Fatal).len(), 0, "{r}");
        assert_eq!(messages(&r, Severity::Warning).len(), 5, "{r}");
    }

    #[test]
    fn restore_keeping_definers_without_set_user_warns() {
        let f = facts(&[USAGE, RESTORER]);
        let r = judge_restore(&f, &restore_ctx(Definer::Keep, objs(1, 1, 0, 0)));
        let w = messages(&r, Severity::Warning);
        assert_eq!(w.len(), 1, "{r}");
        assert!(
            w[0].contains("RESTORE_DEFINER=keep") && w[0].contains("RESTORE_DEFINER=rewrite"),
            "{r}"
        );
        for (definer, objects) in [
            (Definer::Rewrite, objs(1, 1, 0, 0)),
            (Definer::Strip, None),
            (Definer::Keep, objs(0, 0, 0, 0)),
        ] {
            let r = judge_restore(&f, &restore_ctx(definer, objects));
            assert_eq!(r.at_least(Severity::Warning).count(), 0, "{definer:?}: {r}");
        }
        let f = facts(&[USAGE, RESTORER, "GRANT SET USER ON *.* TO `backup`@`%`"]);
        let r = judge_restore(&f, &restore_ctx(Definer::Keep, objs(1, 1, 0, 0)));
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
    }

    #[test]
    fn restore_of_triggers_with_binary_logging_needs_super_or_trust() {
        let mut f = facts(&[USAGE, RESTORER]);
        f.log_bin = true;
        let err = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 2, 0)))
            .into_result()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("refuses the backup's 2 triggers and stored functions (ERROR 1419)"),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("SET GLOBAL log_bin_trust_function_creators = 1"),
            "{err}"
        );
        // Procedures alone are fine; a file without manifest only warns.
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 3, 0, 0)));
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, None));
        assert!(
            messages(&r, Severity::Warning)
                .iter()
                .any(|m| m.contains("ERROR 1419")),
            "{r}"
        );
        // Trusted creators, or SUPER, or no binary log: fine.
        f.trust_function_creators = true;
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 2, 0)));
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
        let mut f = facts(&[USAGE, RESTORER, "GRANT SUPER ON *.* TO `backup`@`%`"]);
        f.log_bin = true;
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 2, 0)));
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
    }

    #[test]
    fn restore_of_a_value_larger_than_the_packet_is_refused() {
        let mut f = facts(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"]);
        f.max_allowed_packet = 16 << 20;
        let mut ctx = restore_ctx(Definer::Keep, objs(0, 0, 0, 0));
        ctx.largest_value = Some(20 << 20);
        let err = judge_restore(&f, &ctx).into_result().unwrap_err();
        assert!(matches!(err, PreflightError::Database(_)));
        assert!(err.to_string().contains("the backup's largest value is 21.0 MB, more than this server's max_allowed_packet (16.8 MB)"), "{err}");
        ctx.largest_value = Some(16 << 20);
        let r = judge_restore(&f, &ctx);
        assert!(
            r.to_string().contains(
                "ok: max_allowed_packet is 16.8 MB, the backup's largest value is 16.8 MB"
            ),
            "{r}"
        );
        f.max_allowed_packet = 1 << 20;
        ctx.largest_value = Some(1000);
        assert_eq!(
            messages(&judge_restore(&f, &ctx), Severity::Warning).len(),
            1
        );
    }

    #[test]
    fn restore_of_history_needs_insert_history_and_a_secure_timestamp_that_allows_it() {
        let mut objects = objs(0, 0, 0, 0);
        objects.as_mut().unwrap().history_tables = 2;
        let ctx = restore_ctx(Definer::Rewrite, objects);
        let mut f = facts(&[USAGE, RESTORER]);
        let r = judge_restore(&f, &ctx);
        assert!(
            r.to_string()
                .contains("ok: the backup holds the history of 2 system-versioned tables"),
            "{r}"
        );
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
        // No history in the backup: nothing said.
        let r = judge_restore(&f, &restore_ctx(Definer::Rewrite, objs(0, 0, 0, 0)));
        assert!(!r.to_string().contains("system-versioned"), "{r}");

        f.insert_history = false;
        f.version = "10.6.20-MariaDB".into();
        let err = judge_restore(&f, &ctx).into_result().unwrap_err();
        assert!(err.to_string().contains("MariaDB 10.11 and later"), "{err}");

        f.insert_history = true;
        f.secure_timestamp = "YES".into();
        let err = judge_restore(&f, &ctx).into_result().unwrap_err();
        assert!(err.to_string().contains("secure_timestamp=YES"), "{err}");

        f.secure_timestamp = "SUPER".into();
        let err = judge_restore(&f, &ctx).into_result().unwrap_err();
        assert!(
            err.to_string()
                .contains("GRANT BINLOG REPLAY ON *.* TO 'backup'@'%'"),
            "{err}"
        );
        let f = Facts {
            secure_timestamp: "SUPER".into(),
            ..facts(&[
                USAGE,
                RESTORER,
                "GRANT BINLOG REPLAY ON *.* TO `backup`@`%`",
            ])
        };
        let r = judge_restore(&f, &ctx);
        assert_eq!(r.at_least(Severity::Warning).count(), 0, "{r}");
    }

    #[test]
    fn restore_space_for_the_safety_snapshot() {
        let f = facts(&["GRANT ALL PRIVILEGES ON *.* TO `root`@`%`"]);
        let mut ctx = restore_ctx(Definer::Keep, objs(0, 0, 0, 0));
        ctx.free = Ok(512 << 10);
        let err = judge_restore(&f, &ctx).into_result().unwrap_err();
        assert!(matches!(err, PreflightError::Space(_)));
        assert!(err.to_string().contains("the safety snapshot of `selmai` needs about 1.0 MB: free space, or pass --no-safety-snapshot"), "{err}");
        ctx.free = Ok(5 << 20);
        assert_eq!(
            messages(&judge_restore(&f, &ctx), Severity::Warning).len(),
            1
        );
        ctx.snapshot = false;
        ctx.free = Ok(512 << 10);
        assert_eq!(
            judge_restore(&f, &ctx).at_least(Severity::Warning).count(),
            0
        );
    }

    #[test]
    fn replay_needs_binlog_replay_or_super_and_update_delete_on_the_database() {
        let ok = facts(&[
            "GRANT BINLOG REPLAY ON *.* TO `backup`@`%`",
            "GRANT ALL PRIVILEGES ON `selmai`.* TO `backup`@`%`",
        ]);
        assert!(judge_replay(&ok, "selmai").into_result().is_ok());
        let old = facts(&[
            "GRANT SUPER ON *.* TO `backup`@`%`",
            "GRANT ALL PRIVILEGES ON `selmai`.* TO `backup`@`%`",
        ]);
        assert!(judge_replay(&old, "selmai").into_result().is_ok());
        let none = facts(&["GRANT SELECT, INSERT ON `selmai`.* TO `backup`@`%`"]);
        let text: Vec<String> = judge_replay(&none, "selmai")
            .at_least(Severity::Fatal)
            .map(|f| f.to_string())
            .collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(
            text[0].contains("GRANT BINLOG REPLAY ON *.* TO 'backup'@'%'"),
            "{text:?}"
        );
        assert!(
            text[1].contains("GRANT UPDATE, DELETE ON `selmai`.*"),
            "{text:?}"
        );
    }

    fn binlog_facts(grants: &[&str]) -> BinlogFacts {
        BinlogFacts {
            current_user: "backup@%".into(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
            log_bin: true,
            binlog_format: "ROW".into(),
            server_id: 1,
            expire_seconds: 0,
        }
    }

    #[test]
    fn binlog_archive_needs_log_bin_both_grants_and_its_own_server_id() {
        let ok = binlog_facts(&["GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `backup`@`%`"]);
        assert!(judge_binlog(&ok, 4242).into_result().is_ok());
        let all = binlog_facts(&["GRANT ALL PRIVILEGES ON *.* TO `backup`@`%`"]);
        assert!(judge_binlog(&all, 4242).into_result().is_ok());

        let no_slave = binlog_facts(&["GRANT BINLOG MONITOR ON *.* TO `backup`@`%`"]);
        let e = judge_binlog(&no_slave, 4242)
            .into_result()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("REPLICATION SLAVE")
                && e.contains("GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.*"),
            "{e}"
        );

        let off = BinlogFacts {
            log_bin: false,
            ..ok.clone()
        };
        let e = judge_binlog(&off, 4242)
            .into_result()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--log-bin --server-id=1 --binlog-format=ROW"),
            "{e}"
        );

        let clash = BinlogFacts {
            server_id: 4242,
            ..ok.clone()
        };
        let e = judge_binlog(&clash, 4242)
            .into_result()
            .unwrap_err()
            .to_string();
        assert!(e.contains("BINLOG_SERVER_ID"), "{e}");

        let stmt = BinlogFacts {
            binlog_format: "MIXED".into(),
            expire_seconds: 3600,
            ..ok
        };
        let r = judge_binlog(&stmt, 4242);
        let warnings: Vec<&Finding> = r.at_least(Severity::Warning).collect();
        assert_eq!(warnings.len(), 2, "{r}");
        assert!(r.to_string().contains("ROW records the rows"), "{r}");
        assert!(r.to_string().contains("deletes binlogs after"), "{r}");
        assert!(r.into_result().is_ok());
    }
}
