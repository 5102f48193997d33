//! Waiting for a lock another connection holds, said out loud.
//!
//! A backup's `SELECT` behind an application's `LOCK TABLES ... WRITE`, or a
//! restore's `DROP TABLE` behind an open transaction, waits on the server
//! with nothing to show for it but a progress line that stands still. Every
//! session bounds that wait (`DB_LOCK_WAIT_TIMEOUT`, set by
//! [`super::connect`]); while it lasts, [`watch`] looks at our connections
//! from a separate one and logs which connection holds the lock, how long
//! we have waited and what to do, once when the wait is seen and again
//! every [`REPEAT`]. When the wait runs out, [`holders`] words the same
//! thing for the error.
//!
//! Which connection holds a metadata lock is exact when the server has the
//! `metadata_lock_info` plugin; without it, the other connections on the
//! same database that are not waiting themselves are named (an open
//! transaction shows there as an idle `Sleep`). Best effort: without the
//! `PROCESS` privilege the server shows only the user's own connections,
//! and a failing query says less rather than failing the backup.
//!
//! Not responsible for the wait itself or its bound (the server's
//! `lock_wait_timeout`, set at connect).

use std::time::Duration;

use mysql_async::Conn;

use super::{literal, query_strings};
use crate::config::DbSettings;

/// How often our connections are looked at.
const POLL: Duration = Duration::from_secs(3);

/// How often a wait that goes on is reported again.
pub const REPEAT: Duration = Duration::from_secs(30);

/// Watching stops when this is dropped.
pub struct Watch(tokio::task::JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Watch our connections `ids` (working in `database`) and log a warning
/// naming the holder while one of them waits for a lock. `what` says who
/// waits ("the backup", "the restore").
pub fn watch(db: &DbSettings, database: &str, ids: Vec<u32>, what: &'static str) -> Watch {
    let db = db.clone();
    let database = database.to_owned();
    Watch(tokio::spawn(async move {
        let mut conn: Option<Conn> = None;
        let mut last_report: Option<tokio::time::Instant> = None;
        loop {
            tokio::time::sleep(POLL).await;
            if conn.is_none() {
                conn = super::connect(&db, None).await.ok();
            }
            let Some(c) = conn.as_mut() else { continue };
            let Some((id, waited, state)) = waiting(c, &ids).await else {
                last_report = None;
                continue;
            };
            if last_report.is_some_and(|t| t.elapsed() < REPEAT) {
                continue;
            }
            last_report = Some(tokio::time::Instant::now());
            let held = holders(c, Some(&database), &ids).await;
            tracing::warn!(
                connection = id,
                "{what} has waited {waited} s for a lock on database `{database}` ({state}): {held}; it gives up after DB_LOCK_WAIT_TIMEOUT={} s: end that transaction or unlock those tables, or KILL that connection",
                db.lock_wait_timeout.as_secs()
            );
        }
    }))
}

/// The first of `ids` that waits for a lock: its id, seconds waited, state.
async fn waiting(conn: &mut Conn, ids: &[u32]) -> Option<(u32, String, String)> {
    if ids.is_empty() {
        return None;
    }
    let list = ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let rows = query_strings(
        conn,
        &format!(
            "SELECT ID, TIME, STATE FROM information_schema.PROCESSLIST \
             WHERE ID IN ({list}) AND STATE LIKE 'Waiting for%lock%' ORDER BY TIME DESC LIMIT 1"
        ),
    )
    .await
    .ok()?;
    let row = rows.into_iter().next()?;
    let f = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
    Some((f(0).parse().ok()?, f(1), f(2)))
}

/// Who may hold the lock our connections `ours` wait for on `database`
/// (the connection's own when `None`),
/// in words: "held by connection 12 (app@10.0.0.5, Sleep for 40 s)", or
/// "held by one of: ..." when the server cannot say exactly.
pub async fn holders(conn: &mut Conn, database: Option<&str>, ours: &[u32]) -> String {
    let mut excluded: Vec<String> = ours.iter().map(u32::to_string).collect();
    excluded.push("CONNECTION_ID()".into());
    let excluded = excluded.join(",");
    // The connection's own database when none is named.
    let db = database.map_or_else(|| "DATABASE()".to_owned(), literal);
    // Exact, when the plugin is there (an error otherwise: fall back).
    let exact = query_strings(
        conn,
        &format!(
            "SELECT DISTINCT p.ID, p.USER, p.HOST, p.COMMAND, p.TIME, IFNULL(p.STATE, ''), IFNULL(LEFT(p.INFO, 60), '') \
             FROM information_schema.METADATA_LOCK_INFO m JOIN information_schema.PROCESSLIST p ON p.ID = m.THREAD_ID \
             WHERE m.TABLE_SCHEMA = {db} AND m.THREAD_ID NOT IN ({excluded}) \
             AND IFNULL(p.STATE, '') NOT LIKE 'Waiting for%lock%' ORDER BY p.TIME DESC LIMIT 5"
        ),
    )
    .await;
    if let Ok(rows) = &exact {
        if !rows.is_empty() {
            return describe(rows, "held by");
        }
    }
    let rows = query_strings(
        conn,
        &format!(
            "SELECT ID, USER, HOST, COMMAND, TIME, IFNULL(STATE, ''), IFNULL(LEFT(INFO, 60), '') \
             FROM information_schema.PROCESSLIST \
             WHERE ID NOT IN ({excluded}) AND DB = {db} \
             AND IFNULL(STATE, '') NOT LIKE 'Waiting for%lock%' ORDER BY TIME DESC LIMIT 5"
        ),
    )
    .await
    .unwrap_or_default();
    if rows.is_empty() {
        return "another connection holds it (the server shows none on this database: the user may lack the PROCESS privilege)".into();
    }
    describe(&rows, "held by one of")
}

fn describe(rows: &[Vec<Option<String>>], lead: &str) -> String {
    let who: Vec<String> = rows
        .iter()
        .map(|r| {
            let f = |i: usize| r.get(i).cloned().flatten().unwrap_or_default();
            let doing = if f(6).is_empty() { f(5) } else { f(6) };
            format!(
                "connection {} ({}@{}, {} for {} s{})",
                f(0),
                f(1),
                f(2),
                f(3),
                f(4),
                if doing.is_empty() {
                    String::new()
                } else {
                    format!(": {doing}")
                }
            )
        })
        .collect();
    if who.len() == 1 {
        format!("held by {}", who[0])
    } else {
        format!("{lead}: {}", who.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, cmd: &str, info: &str) -> Vec<Option<String>> {
        [id, "app", "10.0.0.5", cmd, "40", "", info]
            .iter()
            .map(|s| Some((*s).to_owned()))
            .collect()
    }

    #[test]
    fn one_holder_is_named_alone_and_several_as_candidates() {
        assert_eq!(
            describe(&[row("12", "Sleep", "")], "held by one of"),
            "held by connection 12 (app@10.0.0.5, Sleep for 40 s)"
        );
        assert_eq!(
            describe(
                &[row("12", "Sleep", ""), row("14", "Query", "UPDATE t SET v = 1")],
                "held by one of"
            ),
            "held by one of: connection 12 (app@10.0.0.5, Sleep for 40 s); connection 14 (app@10.0.0.5, Query for 40 s: UPDATE t SET v = 1)"
        );
    }
}
