//! Connecting to MariaDB, and turning its failures into errors an operator
//! can act on.
//!
//! An unreachable server is retried with backoff for `DB_CONNECT_TIMEOUT`
//! (the `db` container may still be starting); a refused login or a missing
//! database fails at once, since waiting cannot fix it. This module does not
//! run dumps or restores.

use std::time::{Duration, Instant};

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, OptsBuilder};

use crate::config::DbSettings;

pub mod lock;

/// Server error codes we treat specially.
pub mod codes {
    /// ER_ACCESS_DENIED_ERROR
    pub const ACCESS_DENIED: u16 = 1045;
    /// ER_DBACCESS_DENIED_ERROR
    pub const DB_ACCESS_DENIED: u16 = 1044;
    /// ER_BAD_DB_ERROR
    pub const UNKNOWN_DATABASE: u16 = 1049;
    /// ER_CON_COUNT_ERROR
    pub const TOO_MANY_CONNECTIONS: u16 = 1040;
    /// ER_SERVER_SHUTDOWN
    pub const SHUTDOWN: u16 = 1053;
}

/// Errors talking to the database server.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Nothing answered at host:port for the whole retry window.
    #[error("cannot reach MariaDB at {addr} (tried for {waited}s): {detail}; check DB_HOST and DB_PORT and that the database container is running")]
    Unreachable {
        /// host:port
        addr: String,
        /// Seconds spent retrying.
        waited: u64,
        /// The last error seen.
        detail: String,
    },
    /// The server refused the user or password.
    #[error("MariaDB at {addr} refused the login of user '{user}': {message}; check DB_USER and DB_PASSWORD")]
    AccessDenied {
        /// host:port
        addr: String,
        /// The user.
        user: String,
        /// The server's message.
        message: String,
    },
    /// The database does not exist.
    #[error("database `{name}` does not exist on {addr}; check DB_NAME")]
    UnknownDatabase {
        /// host:port
        addr: String,
        /// The database name.
        name: String,
    },
    /// A query failed.
    #[error("{what}: {}{}", driver_detail(.driver), lost_hint(.driver))]
    Query {
        /// What we were doing.
        what: String,
        /// The driver's error (in the message, shortened: not a separate
        /// cause, whose "Input/output error: ..." would repeat it).
        driver: mysql_async::Error,
    },
}

/// Advice for a connection lost in the middle of a result (the server
/// restarted, or someone killed the connection), which the driver reports
/// only as "bytes remaining on stream" or "connection closed".
pub fn lost_hint(e: &mysql_async::Error) -> &'static str {
    let text = e.to_string();
    if text.contains("bytes remaining on stream")
        || text.contains("connection closed")
        || text.contains("Connection reset")
        || text.contains("broken pipe")
        || text.contains("Broken pipe")
    {
        "; the connection to the server was lost mid-query (the server restarted, or the connection was killed: see the server's log); run it again once the server is up"
    } else {
        ""
    }
}

impl DbError {
    /// Wrap a driver error met while doing `what`.
    pub fn query(what: impl Into<String>, source: mysql_async::Error) -> Self {
        DbError::Query {
            what: what.into(),
            driver: source,
        }
    }

    /// The server error code, when the server answered with one.
    pub fn server_code(&self) -> Option<u16> {
        match self {
            DbError::Query {
                driver: mysql_async::Error::Server(e),
                ..
            } => Some(e.code),
            _ => None,
        }
    }
}

/// The `host:port` of the configured server, for messages.
pub fn addr(db: &DbSettings) -> String {
    format!("{}:{}", db.host, db.port)
}

/// Connect to the server, selecting `database` when given.
///
/// Retries connection failures (refused, DNS, timeout, too many connections,
/// shutting down) with exponential backoff up to `db.connect_timeout`.
pub async fn connect(db: &DbSettings, database: Option<&str>) -> Result<Conn, DbError> {
    let opts = OptsBuilder::default()
        .ip_or_hostname(db.host.clone())
        .tcp_port(db.port)
        .user(Some(db.user.clone()))
        .pass(Some(db.password.expose().to_owned()))
        .db_name(database.map(str::to_owned))
        .prefer_socket(false)
        // Rows as large as the server allows (1 GiB is the protocol's maximum).
        .max_allowed_packet(Some(1 << 30))
        .stmt_cache_size(0)
        .tcp_keepalive(Some(Duration::from_secs(30)));
    let started = Instant::now();
    let mut delay = Duration::from_millis(250);
    let mut announced = false;
    loop {
        let attempt = tokio::time::timeout(Duration::from_secs(10), Conn::new(opts.clone())).await;
        let err = match attempt {
            Ok(Ok(mut conn)) => {
                // The server waits a day for a metadata lock by default: a
                // backup or restore stuck behind an open transaction must
                // fail within DB_LOCK_WAIT_TIMEOUT instead, saying so.
                let secs = db.lock_wait_timeout.as_secs().max(1);
                conn.query_drop(format!("SET SESSION lock_wait_timeout = {secs}"))
                    .await
                    .map_err(|e| DbError::query("setting lock_wait_timeout", e))?;
                return Ok(conn);
            }
            Ok(Err(e)) => e,
            Err(_) => mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer within 10s",
            ))),
        };
        if let mysql_async::Error::Server(se) = &err {
            match se.code {
                codes::ACCESS_DENIED | codes::DB_ACCESS_DENIED => {
                    return Err(DbError::AccessDenied {
                        addr: addr(db),
                        user: db.user.clone(),
                        message: se.message.clone(),
                    })
                }
                codes::UNKNOWN_DATABASE => {
                    return Err(DbError::UnknownDatabase {
                        addr: addr(db),
                        name: database.unwrap_or_default().to_owned(),
                    })
                }
                codes::TOO_MANY_CONNECTIONS | codes::SHUTDOWN => {}
                _ => return Err(DbError::query(format!("connecting to {}", addr(db)), err)),
            }
        }
        let waited = started.elapsed();
        if waited >= db.connect_timeout {
            return Err(DbError::Unreachable {
                addr: addr(db),
                // Whole seconds, rounded: DB_CONNECT_TIMEOUT=2 tried for 2s.
                waited: waited.as_secs_f64().round() as u64,
                detail: driver_detail(&err),
            });
        }
        if !announced {
            tracing::warn!(addr = %addr(db), error = %driver_detail(&err), "database not reachable yet, retrying for up to {}s", db.connect_timeout.as_secs());
            announced = true;
        }
        // The last wait ends at the deadline, so the whole window is used.
        tokio::time::sleep(delay.min(db.connect_timeout - waited)).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// The driver's error in one short phrase: its I/O errors read "Input/output
/// error: X", and X is often the same words again; keep what says something.
pub fn driver_detail(err: &mysql_async::Error) -> String {
    let text = match err {
        mysql_async::Error::Io(mysql_async::IoError::Io(e)) => e.to_string(),
        other => other.to_string(),
    };
    dedupe(&text)
}

/// "A: A" -> "A", for causes that repeat their own message.
fn dedupe(text: &str) -> String {
    let parts: Vec<&str> = text.split(": ").collect();
    let mut out: Vec<&str> = Vec::new();
    for p in parts {
        if out.last() != Some(&p) {
            out.push(p);
        }
    }
    out.join(": ")
}

/// Quote an identifier with backticks (for names from the server, never user SQL).
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Quote a string literal for a query we build (metadata lookups).
pub fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Run a query whose rows are all text (or NULL) and return them as strings.
pub async fn query_strings(
    conn: &mut Conn,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, DbError> {
    let rows: Vec<mysql_async::Row> = conn
        .query(sql)
        .await
        .map_err(|e| DbError::query(format!("running `{}`", short(sql)), e))?;
    Ok(rows
        .into_iter()
        .map(|r| {
            r.unwrap_raw()
                .into_iter()
                .map(|v| match v {
                    Some(mysql_async::Value::Bytes(b)) => {
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                    Some(mysql_async::Value::NULL) | None => None,
                    Some(other) => Some(other.as_sql(true)),
                })
                .collect()
        })
        .collect())
}

fn short(sql: &str) -> String {
    let s: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(ident("a`b"), "`a``b`");
        assert_eq!(literal("it's \\ \0"), "'it''s \\\\ \\0'");
    }

    fn io(text: &str) -> mysql_async::Error {
        mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::other(
            text.to_owned(),
        )))
    }

    #[test]
    fn driver_errors_are_said_once() {
        let e = DbError::query("connecting to db:3306", io("Input/output error"));
        assert_eq!(e.to_string(), "connecting to db:3306: Input/output error");
        assert_eq!(dedupe("a: b: b: c"), "a: b: c");
    }

    #[test]
    fn a_lost_connection_says_what_happened_and_what_to_do() {
        let e = DbError::query("reading rows of `t`", io("bytes remaining on stream"));
        let text = e.to_string();
        assert!(
            text.contains("the connection to the server was lost mid-query")
                && text.contains("run it again"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn the_wait_for_an_unreachable_server_is_the_configured_one() {
        // A port nothing listens on: refused at once, retried for 2 s.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let db = DbSettings {
            host: "127.0.0.1".into(),
            port,
            user: "u".into(),
            password: crate::secret::Secret::new("p"),
            name: "x".into(),
            connect_timeout: Duration::from_secs(2),
            lock_wait_timeout: Duration::from_secs(5),
        };
        let err = connect(&db, None).await.unwrap_err().to_string();
        assert!(err.contains("(tried for 2s)"), "{err}");
        assert!(
            !err.contains("Input/output error: Input/output error"),
            "{err}"
        );
    }
}
