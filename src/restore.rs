//! Executing a stream of SQL statements into one database.
//!
//! Responsible for: creating the target database when missing (with the
//! original character set), running statements one by one on a single
//! connection, skipping `USE` / `CREATE DATABASE` (a restore always goes into
//! the database the operator chose), and stopping at the first failing
//! statement with its number, line and an excerpt. Not responsible for
//! checking the file first (the pipeline verifies the whole file before this
//! runs) or for where the bytes come from.

use mysql_async::prelude::Queryable;
use mysql_async::Conn;
use tokio::io::AsyncRead;

use crate::db::{ident, DbError};
use crate::definer::Definer;
use crate::sql::{SplitError, Statement, StatementReader};

/// Errors while restoring.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// Connecting or preparing failed.
    #[error(transparent)]
    Db(#[from] DbError),
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
    /// The backup could not be decrypted (wrong or missing passphrase, damaged header ...).
    #[error("{name}: {source}")]
    Crypto {
        /// Backup name.
        name: String,
        /// What the decryption layer said.
        #[source]
        source: crate::crypto::CryptoError,
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
    /// Part of loading one table (`DROP`/`CREATE`/`ALTER TABLE t`, `INSERT
    /// INTO t`): runs in order on the connection that loads `t`, in parallel
    /// with other tables.
    Table(String),
    /// `SET @selmai_vN`: a large value being assembled for the next INSERT;
    /// goes to the connection of the table being loaded.
    LargeValue,
    /// A session setting (`SET NAMES`, `SET FOREIGN_KEY_CHECKS` ...): every
    /// connection runs it.
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
        [lock, tables, ..] if (eq(lock, "LOCK") || eq(lock, "UNLOCK")) && eq(tables, "TABLES") => {
            Route::Skip
        }
        [insert, into, table, ..]
            if (eq(insert, "INSERT") || eq(insert, "REPLACE")) && eq(into, "INTO") =>
        {
            Route::Table(table.to_string())
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
                    Job::Run(stmt) => run(&mut conn, &stmt).await?,
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

/// Run every statement from `reader`: table loads in parallel on `loaders`
/// (one table per connection, in file order within a table), everything else
/// on `conn` once the loads before it have finished. With no loaders,
/// everything runs on `conn` in file order.
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
    };
    let n = pool.workers.len();
    let mut table_worker: std::collections::HashMap<String, usize> =
        std::collections::HashMap::new();
    let mut current = 0usize;
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
            run(conn, &stmt)
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
                let next = table_worker.len() % n;
                current = *table_worker.entry(t).or_insert(next);
                pool.send(current, Job::Run(stmt)).await?;
            }
            Route::LargeValue => pool.send(current, Job::Run(stmt)).await?,
            Route::Session => {
                pool.barrier().await?;
                run(conn, &stmt).await?;
                for i in 0..n {
                    pool.send(i, Job::Run(stmt.clone())).await?;
                }
            }
            Route::Barrier => {
                pool.barrier().await?;
                run(conn, &stmt)
                    .await
                    .map_err(|e| definer_hint(e, definer, &stmt))?;
            }
        }
    }
    pool.finish().await?;
    Ok(summary)
}

async fn run(conn: &mut Conn, stmt: &Statement) -> Result<(), RestoreError> {
    conn.query_drop(&stmt.sql).await.map_err(|e| match e {
        mysql_async::Error::Server(se) => RestoreError::Statement {
            number: stmt.number,
            line: stmt.line,
            code: se.code,
            message: se.message,
            excerpt: stmt.excerpt(120),
        },
        other => RestoreError::Db(DbError::query(
            format!("executing statement {} (line {})", stmt.number, stmt.line),
            other,
        )),
    })
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
    #[case("INSERT INTO `t` (`a`) VALUES (1)", Route::Table("t".into()))]
    #[case("INSERT INTO t VALUES (1)", Route::Table("t".into()))]
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
    #[case("-- comment\nINSERT INTO `t` VALUES (1)", Route::Table("t".into()))]
    fn routes(#[case] sql: &str, #[case] want: Route) {
        assert_eq!(route(sql.as_bytes()), want);
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
