//! The read path: a stored backup back into a database (or a directory).
//!
//! The folder owns the one restore operation ([`run`], in [`operation`]:
//! stop the app, safety snapshot, apply, start the app), opening a stored
//! backup ([`open`]: locate, fetch to the volume, verify against the
//! manifest), point-in-time replay of the binlog archive ([`replay`]),
//! `DEFINER` handling ([`definer`]), stopping and starting the app's
//! containers ([`docker`]), restore drills ([`drill`]), file archives
//! ([`archive`]) and full sets ([`full`]). It does not own writing backups (`crate::backup`,
//! whose safety snapshot a restore takes), the formats (`crate::format`)
//! or asking the operator (`crate::cmd::restore`).
//!
//! This file is the statement executor: creating the target database
//! when missing (with the original character set), running statements
//! over several connections (tables, and the rows of keyed InnoDB tables,
//! in parallel; everything else in file order, see [`execute`]), skipping
//! `USE` / `CREATE DATABASE` (a restore always goes into the database the
//! operator chose), and stopping at the first failing statement with its
//! number, line and an excerpt. It does not check the file first ([`open`]
//! verifies the whole file before this runs) or know where the bytes come
//! from. (It stays in the folder's root file so that its history follows
//! it.)

pub mod archive;
pub mod definer;
pub mod docker;
pub mod drill;
pub mod full;
pub mod open;
pub mod operation;
pub mod replay;

pub use operation::{run, Outcome, Plan, RunError, SafetySnapshot};

use std::collections::HashMap;

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::io::AsyncRead;

use crate::db::{ident, DbError};
use crate::restore::definer::Definer;
use crate::sql::{SplitError, Statement, StatementReader};

/// Errors while restoring.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Connecting or preparing failed.
    #[error(transparent)]
    Db(#[from] DbError),
    /// A file archive is damaged, unsafe, or could not be extracted.
    #[error(transparent)]
    Archive(#[from] crate::format::archive::ArchiveError),
    /// The SQL stream could not be read or split (corrupt, truncated, wrong key ...).
    #[error("the backup {name} cannot be read: {source}")]
    Unreadable {
        /// Backup name.
        name: String,
        /// What went wrong.
        #[source]
        source: SplitError,
    },
    /// The stored file does not match its manifest.
    #[error("{name} does not match its manifest ({detail}): the file is corrupt or was modified; restore another backup")]
    Integrity {
        /// Backup name.
        name: String,
        /// Expected vs found.
        detail: String,
    },
    /// A file without a manifest that does not start like a dump: nothing
    /// says it is a backup, and restoring it would run whatever it holds.
    #[error("{name} has no manifest and does not start like a dump (no mariadb-dump, mysqldump or selmai-backup header): it is not a backup, refusing it; give a backup of this tool or a mariadb-dump file")]
    NotADump {
        /// File name.
        name: String,
    },
    /// The backup could not be decrypted (wrong or missing passphrase, damaged header ...).
    #[error("{name}: {source}")]
    Crypto {
        /// Backup name.
        name: String,
        /// What the decryption layer said.
        #[source]
        source: crate::format::crypto::CryptoError,
    },
    /// A statement failed on the server.
    #[error("statement {number} (line {line}) failed: ERROR {code}: {message}\n  in: {excerpt}")]
    Statement {
        /// Statement number.
        number: u64,
        /// Line in the SQL file.
        line: u64,
        /// Server error code.
        code: u16,
        /// Server message.
        message: String,
        /// Start of the statement.
        excerpt: String,
    },
    /// A view, routine, trigger or event could not be created as its
    /// `DEFINER` (kept by `RESTORE_DEFINER=keep`): that account is missing
    /// (1449) or the restoring user may not create objects for another
    /// account (1227, no `SET USER`/`SUPER`).
    #[error("statement {number} (line {line}) failed: ERROR {code}: {message}; the backup names a DEFINER this user cannot create objects for: set RESTORE_DEFINER=rewrite (the objects then belong to the restoring user) or strip, and restore again\n  in: {excerpt}")]
    Definer {
        /// Statement number.
        number: u64,
        /// Line in the SQL file.
        line: u64,
        /// Server error code.
        code: u16,
        /// Server message.
        message: String,
        /// Start of the statement.
        excerpt: String,
    },
}

/// ER_SPECIFIC_ACCESS_DENIED_ERROR: `SET USER`/`SUPER` needed for another DEFINER.
const SPECIFIC_ACCESS_DENIED: u16 = 1227;
/// ER_NO_SUCH_USER: the DEFINER account does not exist.
const NO_SUCH_USER: u16 = 1449;

/// What an execution did.
#[derive(Debug, Clone, Default)]
pub struct ExecSummary {
    /// Statements executed.
    pub statements: u64,
    /// Statements skipped (`USE`, `CREATE DATABASE`).
    pub skipped: u64,
}

/// Create `database` if missing (with `charset`/`collation` when known) and select it.
pub async fn prepare_database(
    conn: &mut Conn,
    database: &str,
    charset: Option<&str>,
    collation: Option<&str>,
) -> Result<(), DbError> {
    let mut sql = format!("CREATE DATABASE IF NOT EXISTS {}", ident(database));
    if let Some(cs) = charset.filter(|c| is_word(c)) {
        sql.push_str(&format!(" CHARACTER SET {cs}"));
    }
    if let Some(co) = collation.filter(|c| is_word(c)) {
        sql.push_str(&format!(" COLLATE {co}"));
    }
    conn.query_drop(&sql)
        .await
        .map_err(|e| DbError::query(format!("creating database `{database}`"), e))?;
    conn.query_drop(format!("USE {}", ident(database)))
        .await
        .map_err(|e| DbError::query(format!("selecting database `{database}`"), e))?;
    Ok(())
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How a statement may be scheduled when a restore runs on several connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// A table's definition (`DROP`/`CREATE`/`ALTER TABLE t`): runs in
    /// order on the connection that owns `t`, in parallel with other tables,
    /// once every row sent for `t` before it is in.
    Table(String),
    /// Rows of a table (`INSERT`/`REPLACE INTO t`): on the connection that
    /// owns `t`, or on any connection once `t` exists when it has a primary
    /// key (the rows' order then cannot change the table).
    Rows(String),
    /// `SET @selmai_vN`: a large value being assembled for the next INSERT,
    /// or freed after it; runs on the connection of that INSERT.
    LargeValue,
    /// A session setting (`SET NAMES`, `SET FOREIGN_KEY_CHECKS` ...) or
    /// transaction control (`COMMIT`): every connection runs it, in order
    /// with what it was sent before.
    Session,
    /// `LOCK TABLES` / `UNLOCK TABLES` of mariadb-dump files: a speed-up for
    /// one connection that would block the others; skipped.
    Skip,
    /// Anything else (views, routines, triggers, events, sequences): runs
    /// alone, once every table load before it has finished.
    Barrier,
}

/// Classify a statement for [`execute`].
pub fn route(sql: &[u8]) -> Route {
    let toks = tokens(sql, 5);
    let t: Vec<&str> = toks.iter().map(String::as_str).collect();
    let eq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    match t.as_slice() {
        [set, var, ..] if eq(set, "SET") && var.starts_with("@selmai_v") => Route::LargeValue,
        [set, ..] if eq(set, "SET") => Route::Session,
        [verb, ..] if eq(verb, "COMMIT") || eq(verb, "ROLLBACK") => Route::Session,
        // Not `BEGIN NOT ATOMIC ... END`, a compound statement.
        [begin] | [begin, _] if eq(begin, "BEGIN") && t.get(1).is_none_or(|w| eq(w, "WORK")) => {
            Route::Session
        }
        [start, transaction, ..] if eq(start, "START") && eq(transaction, "TRANSACTION") => {
            Route::Session
        }
        [lock, tables, ..] if (eq(lock, "LOCK") || eq(lock, "UNLOCK")) && eq(tables, "TABLES") => {
            Route::Skip
        }
        [insert, into, table, ..]
            if (eq(insert, "INSERT") || eq(insert, "REPLACE")) && eq(into, "INTO") =>
        {
            Route::Rows(table.to_string())
        }
        [drop, table, if_, exists, name, ..]
            if eq(drop, "DROP") && eq(table, "TABLE") && eq(if_, "IF") && eq(exists, "EXISTS") =>
        {
            Route::Table(name.to_string())
        }
        [verb, table, name, ..]
            if (eq(verb, "CREATE") || eq(verb, "ALTER") || eq(verb, "DROP"))
                && eq(table, "TABLE")
                && !eq(name, "IF") =>
        {
            Route::Table(name.to_string())
        }
        _ => Route::Barrier,
    }
}

/// The first `n` tokens of a statement: words, `@variables` and identifiers
/// (backticks removed), skipping plain comments and looking inside an
/// executable comment (`/*!40000 ALTER TABLE ...*/`).
fn tokens(sql: &[u8], n: usize) -> Vec<String> {
    let mut rest = sql;
    let mut out = Vec::new();
    while out.len() < n {
        let t = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[t..];
        if rest.is_empty() {
            break;
        }
        if rest.starts_with(b"/*!") || rest.starts_with(b"/*M!") {
            let skip = if rest[2] == b'M' { 4 } else { 3 };
            let digits = rest[skip..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            rest = &rest[skip + digits..];
            continue;
        }
        if rest.starts_with(b"/*") {
            match rest.windows(2).position(|w| w == b"*/") {
                Some(p) => rest = &rest[p + 2..],
                None => break,
            }
            continue;
        }
        if rest.starts_with(b"#") || rest.starts_with(b"-- ") {
            match rest.iter().position(|&b| b == b'\n') {
                Some(p) => rest = &rest[p + 1..],
                None => break,
            }
            continue;
        }
        if rest[0] == b'`' {
            let mut name = Vec::new();
            let mut i = 1;
            while i < rest.len() {
                if rest[i] == b'`' {
                    if rest.get(i + 1) == Some(&b'`') {
                        name.push(b'`');
                        i += 2;
                        continue;
                    }
                    break;
                }
                name.push(rest[i]);
                i += 1;
            }
            out.push(String::from_utf8_lossy(&name).into_owned());
            rest = &rest[(i + 1).min(rest.len())..];
            continue;
        }
        let end = rest
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'@' | b'$')))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = &rest[end..];
    }
    out
}

enum Job {
    Run(Statement),
    Barrier(tokio::sync::oneshot::Sender<()>),
}

struct Worker {
    tx: tokio::sync::mpsc::Sender<Job>,
    task: tokio::task::JoinHandle<Result<(), RestoreError>>,
}

impl Worker {
    fn spawn(mut conn: Conn) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Job>(8);
        let task = tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                match job {
                    Job::Run(stmt) => run_statement(&mut conn, &stmt).await?,
                    Job::Barrier(done) => {
                        let _ = done.send(());
                    }
                }
            }
            let _ = conn.disconnect().await;
            Ok(())
        });
        Worker { tx, task }
    }
}

/// Workers that load tables in parallel, and what they report when one stops.
struct Pool {
    workers: Vec<Worker>,
    /// Where [`Pool::idlest`] starts looking.
    turn: usize,
}

impl Pool {
    /// The error of a worker whose channel closed (it failed on a statement).
    async fn failure(&mut self, i: usize) -> RestoreError {
        let w = &mut self.workers[i];
        match (&mut w.task).await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => RestoreError::Db(DbError::query(
                "a restore connection stopped",
                mysql_async::Error::Other("worker stopped".into()),
            )),
            Err(e) => RestoreError::Db(DbError::query(
                "a restore connection panicked",
                mysql_async::Error::Other(e.to_string().into()),
            )),
        }
    }

    async fn send(&mut self, i: usize, job: Job) -> Result<(), RestoreError> {
        if self.workers[i].tx.send(job).await.is_err() {
            return Err(self.failure(i).await);
        }
        Ok(())
    }

    /// Wait until worker `i` has run everything sent to it.
    async fn drain(&mut self, i: usize) -> Result<(), RestoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(i, Job::Barrier(tx)).await?;
        if rx.await.is_err() {
            return Err(self.failure(i).await);
        }
        Ok(())
    }

    /// The worker with the shortest queue (the first of equals after the
    /// last one chosen, so that idle workers take turns).
    fn idlest(&mut self) -> usize {
        let n = self.workers.len();
        let start = self.turn;
        let best = (0..n)
            .map(|k| (start + k) % n)
            .max_by_key(|&i| {
                (
                    self.workers[i].tx.capacity(),
                    std::cmp::Reverse((i + n - start) % n),
                )
            })
            .unwrap_or(0);
        self.turn = (best + 1) % n;
        best
    }

    /// Wait until every worker has run everything sent to it.
    async fn barrier(&mut self) -> Result<(), RestoreError> {
        let mut waits = Vec::new();
        for i in 0..self.workers.len() {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.send(i, Job::Barrier(tx)).await?;
            waits.push(rx);
        }
        for (i, rx) in waits.into_iter().enumerate() {
            if rx.await.is_err() {
                return Err(self.failure(i).await);
            }
        }
        Ok(())
    }

    async fn finish(mut self) -> Result<(), RestoreError> {
        self.barrier().await?;
        for w in std::mem::take(&mut self.workers) {
            drop(w.tx);
            w.task.await.map_err(|e| {
                RestoreError::Db(DbError::query(
                    "a restore connection panicked",
                    mysql_async::Error::Other(e.to_string().into()),
                ))
            })??;
        }
        Ok(())
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        for w in &self.workers {
            w.task.abort();
        }
    }
}

/// How one table's statements are spread over the loaders.
struct Load {
    /// The connection that runs its definition, and its rows when not split.
    home: usize,
    /// Its rows may go to any connection: it has a primary key, so the
    /// order they are inserted in cannot show.
    split: bool,
    /// Rows were sent to other connections than `home` since its last
    /// definition statement.
    spread: bool,
}

impl Load {
    /// The load of table `t`, on the idlest loader if it is new.
    fn of<'a>(tables: &'a mut HashMap<String, Load>, t: &str, pool: &mut Pool) -> &'a mut Load {
        if !tables.contains_key(t) {
            let home = pool.idlest();
            tables.insert(
                t.to_owned(),
                Load {
                    home,
                    split: false,
                    spread: false,
                },
            );
        }
        tables.get_mut(t).expect("inserted above")
    }
}

/// Run every statement from `reader`: table loads in parallel on `loaders`,
/// everything else on `conn` once the loads before it have finished. With
/// no loaders, everything runs on `conn` in file order.
///
/// A table's definition runs on one loader; its rows go to the same loader,
/// in file order, unless the table has a primary key: then, once the table
/// exists, each INSERT goes to the loader with the shortest queue, so that
/// a large table keeps every connection busy. The next definition statement
/// of that table (`ENABLE KEYS` ...) waits for all of its rows.
/// `DEFINER` clauses are handled as `definer` says.
pub async fn execute<R: AsyncRead + Unpin>(
    conn: &mut Conn,
    loaders: Vec<Conn>,
    name: &str,
    reader: &mut StatementReader<R>,
    definer: Definer,
) -> Result<ExecSummary, RestoreError> {
    let mut summary = ExecSummary::default();
    let mut pool = Pool {
        workers: loaders.into_iter().map(Worker::spawn).collect(),
        turn: 0,
    };
    let n = pool.workers.len();
    let mut tables: HashMap<String, Load> = HashMap::new();
    // The table of the last definition or rows statement.
    let mut current: Option<String> = None;
    // The loader holding a large value for the next INSERT, and the one
    // that ran the last INSERT (whose large values are freed after it).
    let mut pending: Option<usize> = None;
    let mut last_rows = 0usize;
    let mut transactions = Transactions::default();
    while let Some(stmt) = reader
        .next()
        .await
        .map_err(|source| RestoreError::Unreadable {
            name: name.to_owned(),
            source,
        })?
    {
        if selects_database(&stmt.sql) {
            tracing::warn!(
                line = stmt.line,
                "skipping `{}`: the restore goes into the database chosen for it",
                stmt.excerpt(60)
            );
            summary.skipped += 1;
            continue;
        }
        let stmt = match definer.apply(&stmt.sql) {
            Some(sql) => Statement { sql, ..stmt },
            None => stmt,
        };
        summary.statements += 1;
        if n == 0 {
            run_statement(conn, &stmt)
                .await
                .map_err(|e| definer_hint(e, definer, &stmt))?;
            continue;
        }
        match route(&stmt.sql) {
            Route::Skip => {
                summary.statements -= 1;
                summary.skipped += 1;
            }
            Route::Table(t) => {
                let load = Load::of(&mut tables, &t, &mut pool);
                if load.spread {
                    pool.barrier().await?;
                    load.spread = false;
                }
                if is_create_table(&stmt.sql) {
                    load.split = rows_unordered(&stmt.sql);
                }
                pool.send(load.home, Job::Run(stmt)).await?;
                current = Some(t);
            }
            Route::Rows(t) => {
                let load = Load::of(&mut tables, &t, &mut pool);
                let w = if load.split && transactions.autocommit() {
                    if !load.spread {
                        // Its CREATE TABLE must have run before any other
                        // connection inserts.
                        pool.drain(load.home).await?;
                        load.spread = true;
                    }
                    pending.take().unwrap_or_else(|| pool.idlest())
                } else {
                    match pending.take() {
                        // A large value was assembled on another connection
                        // than the table's (a file whose rows follow another
                        // table's without a definition in between): run this
                        // INSERT there, alone, to keep the rows in order.
                        Some(w) if w != load.home => {
                            pool.barrier().await?;
                            pool.send(w, Job::Run(stmt)).await?;
                            pool.barrier().await?;
                            last_rows = w;
                            current = Some(t);
                            continue;
                        }
                        _ => load.home,
                    }
                };
                pool.send(w, Job::Run(stmt)).await?;
                last_rows = w;
                current = Some(t);
            }
            Route::LargeValue if frees_value(&stmt.sql) && pending.is_none() => {
                pool.send(last_rows, Job::Run(stmt)).await?
            }
            Route::LargeValue => {
                let w = match pending {
                    Some(w) => w,
                    None => {
                        let w = match current.as_ref().and_then(|t| tables.get(t)) {
                            Some(load) if load.spread => pool.idlest(),
                            Some(load) => load.home,
                            None => 0,
                        };
                        pending = Some(w);
                        w
                    }
                };
                pool.send(w, Job::Run(stmt)).await?
            }
            Route::Session => {
                transactions.follow(&stmt.sql);
                // Each connection runs its statements in order, so the
                // setting applies from here on everywhere without waiting.
                run_statement(conn, &stmt).await?;
                for i in 0..n {
                    pool.send(i, Job::Run(stmt.clone())).await?;
                }
            }
            Route::Barrier => {
                pool.barrier().await?;
                run_statement(conn, &stmt)
                    .await
                    .map_err(|e| definer_hint(e, definer, &stmt))?;
            }
        }
    }
    pool.finish().await?;
    Ok(summary)
}

/// Whether the restore's sessions commit each statement. Rows inserted in
/// a transaction stay locked until it commits (InnoDB even locks a whole
/// empty table for a transaction's first insert), so they are not spread
/// over connections: the ones waiting would wait for a `COMMIT` queued
/// behind them.
#[derive(Debug, Default)]
struct Transactions {
    /// `SET autocommit=0` is in force.
    manual: bool,
    /// `BEGIN` / `START TRANSACTION` without its `COMMIT` yet.
    open: bool,
    /// `manual` when `@OLD_AUTOCOMMIT` was saved.
    saved: bool,
}

fn position(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    position(haystack, needle).is_some()
}

impl Transactions {
    fn autocommit(&self) -> bool {
        !self.manual && !self.open
    }

    /// Take note of a session statement.
    fn follow(&mut self, sql: &[u8]) {
        let t = tokens(sql, 2);
        let first = t.first().map(|w| w.to_ascii_uppercase());
        match first.as_deref() {
            Some("BEGIN" | "START") => self.open = true,
            Some("COMMIT" | "ROLLBACK") => self.open = false,
            Some("SET") => {
                let text: Vec<u8> = sql
                    .iter()
                    .filter(|b| !b.is_ascii_whitespace())
                    .map(u8::to_ascii_lowercase)
                    .collect();
                // mariadb-dump --no-autocommit: `SET @OLD_AUTOCOMMIT=@@AUTOCOMMIT,
                // @@AUTOCOMMIT=0` before a table's rows, `SET
                // AUTOCOMMIT=@OLD_AUTOCOMMIT` after them.
                if contains(&text, b"=@@autocommit") {
                    self.saved = self.manual;
                }
                let mut rest = &text[..];
                while let Some(p) = position(rest, b"autocommit=") {
                    rest = &rest[p + b"autocommit=".len()..];
                    if rest.starts_with(b"0") || rest.starts_with(b"off") {
                        self.manual = true;
                    } else if rest.starts_with(b"1") || rest.starts_with(b"on") {
                        self.manual = false;
                    } else if rest.starts_with(b"@old_autocommit") {
                        self.manual = self.saved;
                    }
                }
            }
            _ => {}
        }
    }
}

/// `CREATE TABLE` (possibly after comments).
fn is_create_table(sql: &[u8]) -> bool {
    let t = tokens(sql, 2);
    matches!(t.as_slice(), [c, tb] if c.eq_ignore_ascii_case("CREATE") && tb.eq_ignore_ascii_case("TABLE"))
}

/// Whether the order rows are inserted in cannot show in a table: an
/// InnoDB table (stored in primary key order) with a primary key. Reads
/// `CREATE TABLE` as `SHOW CREATE TABLE` writes it, which is what we and
/// mariadb-dump store: the key on a line of its own starting with
/// `PRIMARY KEY (` (no column definition or comment can start a line so),
/// the engine on the last line. A table without a key, or on an engine that
/// stores rows in insertion order (MyISAM, Aria), keeps file order.
fn rows_unordered(sql: &[u8]) -> bool {
    let mut lines = sql.split(|&b| b == b'\n');
    let key = lines
        .clone()
        .any(|line| line.trim_ascii_start().starts_with(b"PRIMARY KEY ("));
    let innodb = lines.next_back().is_some_and(|last| {
        last.windows(b" ENGINE=InnoDB".len())
            .any(|w| w.eq_ignore_ascii_case(b" ENGINE=InnoDB"))
    });
    key && innodb
}

/// `SET @selmai_vN = NULL`: frees a large value after its INSERT.
fn frees_value(sql: &[u8]) -> bool {
    sql.trim_ascii_end()
        .strip_suffix(b";")
        .unwrap_or(sql.trim_ascii_end())
        .trim_ascii_end()
        .ends_with(b"= NULL")
}

async fn run_statement(conn: &mut Conn, stmt: &Statement) -> Result<(), RestoreError> {
    let result = conn.query_drop(&stmt.sql).await;
    let holders = match &result {
        Err(mysql_async::Error::Server(se)) if se.code == LOCK_WAIT_TIMEOUT => {
            lock_holders(conn).await
        }
        _ => String::new(),
    };
    result.map_err(|e| match e {
        mysql_async::Error::Server(se) => RestoreError::Statement {
            number: stmt.number,
            line: stmt.line,
            code: se.code,
            message: format!("{}{holders}", se.message),
            excerpt: stmt.excerpt(120),
        },
        other => RestoreError::Db(DbError::query(
            format!("executing statement {} (line {})", stmt.number, stmt.line),
            other,
        )),
    })
}

/// "Lock wait timeout exceeded" (the session's `lock_wait_timeout`, set
/// from `DB_LOCK_WAIT_TIMEOUT`).
const LOCK_WAIT_TIMEOUT: u16 = 1205;

/// After a lock wait ran out: who holds the lock, and what to do.
async fn lock_holders(conn: &mut Conn) -> String {
    let held = crate::db::lock::holders(conn, None, &[]).await;
    format!(" ({held}; DB_LOCK_WAIT_TIMEOUT ran out: end that transaction, or KILL that connection, then restore again; or raise DB_LOCK_WAIT_TIMEOUT)")
}

/// A statement error turned into [`RestoreError::Definer`] when it is the
/// kept `DEFINER` of a view, routine, trigger or event that failed.
fn definer_hint(e: RestoreError, definer: Definer, stmt: &Statement) -> RestoreError {
    match e {
        RestoreError::Statement {
            number,
            line,
            code,
            message,
            excerpt,
        } if definer == Definer::Keep
            && matches!(code, SPECIFIC_ACCESS_DENIED | NO_SUCH_USER)
            && Definer::Strip.apply(&stmt.sql).is_some() =>
        {
            RestoreError::Definer {
                number,
                line,
                code,
                message,
                excerpt,
            }
        }
        other => other,
    }
}

/// `USE x` or `CREATE DATABASE x`/`CREATE SCHEMA x` (possibly after comments).
pub fn selects_database(sql: &[u8]) -> bool {
    let words = tokens(sql, 2);
    match words.as_slice() {
        [w, ..] if w.eq_ignore_ascii_case("use") => true,
        [c, d]
            if c.eq_ignore_ascii_case("create")
                && (d.eq_ignore_ascii_case("database") || d.eq_ignore_ascii_case("schema")) =>
        {
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("INSERT INTO `t` (`a`) VALUES (1)", Route::Rows("t".into()))]
    #[case("INSERT INTO t VALUES (1)", Route::Rows("t".into()))]
    #[case("REPLACE INTO t VALUES (1)", Route::Rows("t".into()))]
    #[case("COMMIT", Route::Session)]
    #[case("commit", Route::Session)]
    #[case("START TRANSACTION", Route::Session)]
    #[case("BEGIN", Route::Session)]
    #[case("BEGIN NOT ATOMIC SELECT 1; END", Route::Barrier)]
    #[case("DROP TABLE IF EXISTS `we``ird`", Route::Table("we`ird".into()))]
    #[case("CREATE TABLE `t` (\n a int)", Route::Table("t".into()))]
    #[case("/*!40000 ALTER TABLE `t` DISABLE KEYS */", Route::Table("t".into()))]
    #[case("SET @selmai_v3 = 0x00ff", Route::LargeValue)]
    #[case("SET @selmai_v3 = CONCAT(@selmai_v3, 0x00)", Route::LargeValue)]
    #[case("SET NAMES utf8mb4", Route::Session)]
    #[case(
        "/*!40101 SET @OLD_SQL_MODE=@@SQL_MODE, SQL_MODE='NO_AUTO_VALUE_ON_ZERO' */",
        Route::Session
    )]
    #[case(
        "/*M!100616 SET @OLD_NOTE_VERBOSITY=@@NOTE_VERBOSITY, NOTE_VERBOSITY=0 */",
        Route::Session
    )]
    #[case("LOCK TABLES `t` WRITE", Route::Skip)]
    #[case("UNLOCK TABLES", Route::Skip)]
    #[case("DROP SEQUENCE IF EXISTS `s`", Route::Barrier)]
    #[case("DROP VIEW IF EXISTS `v`", Route::Barrier)]
    #[case("/*!50001 CREATE ALGORITHM=UNDEFINED */ /*!50013 DEFINER=`a`@`%` */ /*!50001 VIEW `v` AS select 1 */", Route::Barrier)]
    #[case(
        "CREATE DEFINER=`a`@`%` TRIGGER x BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1",
        Route::Barrier
    )]
    #[case("DO SETVAL(`s`, 5, 0)", Route::Barrier)]
    #[case("-- comment\nINSERT INTO `t` VALUES (1)", Route::Rows("t".into()))]
    fn routes(#[case] sql: &str, #[case] want: Route) {
        assert_eq!(route(sql.as_bytes()), want);
    }

    #[rstest]
    #[case("CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4", true)]
    #[case("CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`),\n  KEY `a` (`id`)\n) ENGINE=InnoDB AUTO_INCREMENT=5", true)]
    #[case("CREATE TABLE `t` (\n  `id` int(11) NOT NULL\n) ENGINE=InnoDB", false)]
    #[case(
        "CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=MyISAM",
        false
    )]
    #[case("CREATE TABLE `t` (\n  `id` int(11) NOT NULL,\n  PRIMARY KEY (`id`)\n) ENGINE=Aria PAGE_CHECKSUM=1", false)]
    #[case("CREATE TABLE `t` (\n  `id` int(11) NOT NULL COMMENT 'PRIMARY KEY (id)',\n  UNIQUE KEY `u` (`id`)\n) ENGINE=InnoDB", false)]
    #[case(
        "CREATE TABLE `t` (\n  `c` varchar(9) COMMENT ') ENGINE=InnoDB'\n) ENGINE=MyISAM",
        false
    )]
    fn rows_may_be_spread_only_when_their_order_cannot_show(#[case] sql: &str, #[case] want: bool) {
        assert_eq!(rows_unordered(sql.as_bytes()), want);
    }

    #[rstest]
    #[case(&[], true)]
    #[case(&["set autocommit=0"], false)]
    #[case(&["SET autocommit = 0", "COMMIT"], false)]
    #[case(&["set autocommit=0", "commit", "SET AUTOCOMMIT=1"], true)]
    #[case(&["SET SESSION autocommit=OFF"], false)]
    #[case(&["START TRANSACTION"], false)]
    #[case(&["BEGIN", "COMMIT"], true)]
    #[case(&["SET NAMES utf8mb4", "SET @a = 'autocommit=0'"], false)]
    #[case(&["SET @OLD_AUTOCOMMIT=@@AUTOCOMMIT, @@AUTOCOMMIT=0"], false)]
    #[case(&["SET @OLD_AUTOCOMMIT=@@AUTOCOMMIT, @@AUTOCOMMIT=0", "commit", "SET AUTOCOMMIT=@OLD_AUTOCOMMIT"], true)]
    #[case(&["SET autocommit=0", "SET @OLD_AUTOCOMMIT=@@AUTOCOMMIT, @@AUTOCOMMIT=0", "SET AUTOCOMMIT=@OLD_AUTOCOMMIT"], false)]
    fn rows_are_spread_only_outside_transactions(#[case] stmts: &[&str], #[case] want: bool) {
        let mut t = Transactions::default();
        for s in stmts {
            t.follow(s.as_bytes());
        }
        assert_eq!(t.autocommit(), want);
    }

    #[rstest]
    #[case("SET @selmai_v3 = NULL;", true)]
    #[case("SET @selmai_v3 = NULL", true)]
    #[case("SET @selmai_v3 = 0x4e554c4c", false)]
    #[case("SET @selmai_v3 = CONCAT(@selmai_v3, 'x = NULL')", false)]
    fn freeing_a_large_value(#[case] sql: &str, #[case] want: bool) {
        assert_eq!(frees_value(sql.as_bytes()), want);
    }

    #[rstest]
    #[case("USE `x`", true)]
    #[case("use x", true)]
    #[case("/* c */ USE x", true)]
    #[case("CREATE DATABASE /*!32312 IF NOT EXISTS*/ `x`", true)]
    #[case("create schema x", true)]
    #[case("CREATE TABLE x (a int)", false)]
    #[case("INSERT INTO used VALUES (1)", false)]
    #[case("/*!40101 SET NAMES utf8mb4 */", false)]
    #[case("users", false)]
    fn database_selection(#[case] sql: &str, #[case] want: bool) {
        assert_eq!(selects_database(sql.as_bytes()), want);
    }
}
