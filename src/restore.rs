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
}

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

/// Run every statement from `reader` on `conn`.
pub async fn execute<R: AsyncRead + Unpin>(
    conn: &mut Conn,
    name: &str,
    reader: &mut StatementReader<R>,
) -> Result<ExecSummary, RestoreError> {
    execute_with(conn, name, reader, Definer::Keep).await
}

/// [`execute`], handling `DEFINER` clauses as `definer` says.
pub async fn execute_with<R: AsyncRead + Unpin>(
    conn: &mut Conn,
    name: &str,
    reader: &mut StatementReader<R>,
    definer: Definer,
) -> Result<ExecSummary, RestoreError> {
    let mut summary = ExecSummary::default();
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
        run(conn, &stmt).await?;
        summary.statements += 1;
    }
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

/// `USE x` or `CREATE DATABASE x`/`CREATE SCHEMA x` (possibly after comments).
pub fn selects_database(sql: &[u8]) -> bool {
    let words = leading_words(sql, 2);
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

/// The first `n` words of a statement, skipping whitespace and plain comments.
fn leading_words(sql: &[u8], n: usize) -> Vec<String> {
    let mut rest = sql;
    let mut words = Vec::new();
    while words.len() < n {
        let t = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[t..];
        if rest.starts_with(b"/*") && !rest.starts_with(b"/*!") && !rest.starts_with(b"/*M!") {
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
        let end = rest
            .iter()
            .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        words.push(String::from_utf8_lossy(&rest[..end]).into_owned());
        rest = &rest[end..];
    }
    words
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

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
