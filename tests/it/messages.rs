//! Operator-facing messages through the binary: a bad value names its
//! variable and says what it takes (never only the parser's words), a
//! misspelt LOG_LEVEL is refused, an unreachable server is tried for the
//! whole DB_CONNECT_TIMEOUT and said once, and a bad cron gives examples.

use std::path::Path;

use crate::support::tool;

fn fails_with(extra: &[(&str, &str)], args: &[&str], code: i32, needles: &[&str]) {
    let vars = tool::vars_with("msg_db", Path::new("/nonexistent"), extra);
    let (got, _, stderr) = tool::outcome(&tool::run(&vars, args));
    assert_eq!(got, code, "{extra:?}: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "{extra:?}: no {n:?} in: {stderr}");
    }
    for bad in [
        "invalid digit found",
        "Input/output error: Input/output error",
    ] {
        assert!(!stderr.contains(bad), "{extra:?}: {stderr}");
    }
}

#[test]
fn bad_values_say_what_the_variable_takes() {
    fails_with(
        &[("RETENTION_DAILY", "-1")],
        &["list"],
        2,
        &["RETENTION_DAILY", "how many backups to keep"],
    );
    fails_with(
        &[("DB_PORT", "abc")],
        &["list"],
        2,
        &["DB_PORT", "port number"],
    );
    fails_with(
        &[("LOG_LEVEL", "verbose")],
        &["list"],
        2,
        &["LOG_LEVEL", "not a level"],
    );
    fails_with(
        &[("LOG_LEVEL", "wran")],
        &["list"],
        2,
        &["LOG_LEVEL", "not a level"],
    );
    fails_with(
        &[("S3_PART_SIZE_MB", "1")],
        &["list"],
        2,
        &["S3_PART_SIZE_MB", "from 5 to 5120"],
    );
    fails_with(
        &[("BACKUP_SCHEDULE", "61 2 * * *")],
        &["list"],
        2,
        &["BACKUP_SCHEDULE", "minute 0-59", "e.g. \"0 2 * * *\""],
    );
}

#[test]
fn an_unreachable_server_is_tried_for_the_whole_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(
        "msg_db",
        dir.path(),
        &[("DB_PORT", &port), ("DB_CONNECT_TIMEOUT", "2")],
    );
    let (code, _, stderr) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("(tried for 2s)"), "{stderr}");
    assert!(
        !stderr.contains("Input/output error: Input/output error"),
        "{stderr}"
    );
}
