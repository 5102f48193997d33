//! What the continuous binlog archive needs of the server (`log_bin`,
//! `binlog_format`, `server_id`, replication grants, how long binlogs are
//! kept): its facts and their judge.

use super::*;
use crate::config::DbSettings;
use crate::db::{self, query_strings, DbError};

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
pub(super) const MIN_BINLOG_KEEP_SECONDS: u64 = 2 * 86_400;

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

#[cfg(test)]
mod tests {
    use super::*;

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
