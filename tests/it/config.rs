//! The README's variable table against the configuration: every variable
//! documented there reaches the settings (set to a valid non-default value,
//! the effective configuration changes), and every variable the tool reads
//! is documented. A documented switch that is silently dropped, as
//! `DRILL_SCHEDULE` once was, fails here.
//!
//! Not covered here: what each setting then does (its own feature's tests).

use std::collections::BTreeSet;

use selmai_backup::config::{Settings, KNOWN};

/// How a variable shows that it was read.
enum Reach {
    /// The effective configuration differs from the same variables without it.
    Changes(&'static str),
    /// Set instead of another variable that can take its place (two ways
    /// to pin a server key): the configuration with it differs from the
    /// one with the other.
    Instead(&'static str, &'static str),
    /// It is a list of foreign variables: naming one there turns the error
    /// for that unknown variable into acceptance.
    Ignores(&'static str),
}

/// Variables set beside the one under test.
type Vars = Vec<(&'static str, String)>;

/// Every documented variable, a valid value that is not its default, and the
/// variables it needs beside it to be used at all (an SMTP port without a
/// relay, a bucket option without a bucket).
fn cases(file: &str) -> Vec<(&'static str, Reach, Vars)> {
    use Reach::*;
    let s3 = || vec![("S3_BUCKET", "b".to_owned())];
    let smtp = || {
        vec![
            ("NOTIFY_SMTP_HOST", "smtp.example.org".to_owned()),
            ("NOTIFY_SMTP_FROM", "backup@example.org".to_owned()),
            ("NOTIFY_SMTP_TO", "admin@example.org".to_owned()),
        ]
    };
    let smtp_login = || {
        let mut v = smtp();
        v.push(("NOTIFY_SMTP_USER", "alerts".to_owned()));
        v
    };
    let webhook = || {
        vec![(
            "NOTIFY_WEBHOOK_URL",
            "https://hooks.example.org/x".to_owned(),
        )]
    };
    let file: &'static str = Box::leak(file.to_owned().into_boxed_str());
    let sftp_with = |login: (&'static str, &'static str)| {
        vec![
            ("SFTP_HOST", "backup.example.org".to_owned()),
            ("SFTP_USER", "backup".to_owned()),
            ("SFTP_PATH", "backups/selmai".to_owned()),
            (
                "SFTP_HOST_KEY",
                "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU".to_owned(),
            ),
            (login.0, login.1.to_owned()),
        ]
    };
    let sftp = move || sftp_with(("SFTP_KEY_FILE", file));
    let sftp_pw = move || sftp_with(("SFTP_PASSWORD", "pw"));
    vec![
        ("DB_HOST", Changes("db2"), vec![]),
        ("DB_PORT", Changes("3307"), vec![]),
        ("DB_USER", Changes("someone-else"), vec![]),
        ("DB_PASSWORD", Changes("pw"), vec![]),
        ("DB_PASSWORD_FILE", Changes(file), vec![]),
        ("DB_NAME", Changes("other"), vec![]),
        ("DB_CONNECT_TIMEOUT", Changes("7"), vec![]),
        ("DB_LOCK_WAIT_TIMEOUT", Changes("30"), vec![]),
        ("BACKUP_DIR", Changes("/elsewhere"), vec![]),
        ("BACKUP_PREFIX", Changes("mine"), vec![]),
        ("BACKUP_COMPRESSION", Changes("zstd"), vec![]),
        ("BACKUP_COMPRESSION_LEVEL", Changes("5"), vec![]),
        ("BACKUP_PASSPHRASE", Changes("pass"), vec![]),
        ("BACKUP_PASSPHRASE_FILE", Changes(file), vec![]),
        ("BACKUP_IGNORE_ENV", Ignores("DB_OTHER_TOOL"), vec![]),
        ("LOG_LEVEL", Changes("debug"), vec![]),
        ("LOG_FORMAT", Changes("json"), vec![]),
        ("TZ", Changes("Europe/Paris"), vec![]),
        ("BACKUP_SCHEDULE", Changes("0 1 * * *"), vec![]),
        ("CONFIG_SCHEDULE", Changes("0 1 * * 6"), vec![]),
        ("CONFIG_PATHS", Changes("/etc/app"), vec![]),
        ("CONFIG_EXCLUDE", Changes("secrets"), vec![]),
        ("CONFIG_PREFIX", Changes("cfg"), vec![]),
        ("UPLOADS_SCHEDULE", Changes("0 4 * * *"), vec![]),
        ("UPLOADS_PATHS", Changes("/srv/uploads"), vec![]),
        ("UPLOADS_PREFIX", Changes("upl"), vec![]),
        ("FULL_SCHEDULE", Changes("0 4 2 * *"), vec![]),
        ("FULL_PREFIX", Changes("whole"), vec![]),
        ("DRILL_SCHEDULE", Changes("0 6 3 * *"), vec![]),
        ("BACKUP_CATCH_UP", Changes("never"), vec![]),
        ("RETENTION_DAILY", Changes("9"), vec![]),
        ("RETENTION_WEEKLY", Changes("9"), vec![]),
        ("RETENTION_MONTHLY", Changes("9"), vec![]),
        ("RETENTION_CONFIG_WEEKLY", Changes("9"), vec![]),
        ("RETENTION_FULL_MONTHLY", Changes("9"), vec![]),
        ("HEALTH_MAX_AGE_HOURS", Changes("30"), vec![]),
        ("HEALTH_MIN_FREE_MB", Changes("100"), vec![]),
        ("HEALTH_MAX_OFFSITE_DELAY_HOURS", Changes("5"), vec![]),
        ("HEALTH_MAX_BINLOG_LAG_SECONDS", Changes("60"), vec![]),
        ("BINLOG_ARCHIVE", Changes("on"), vec![]),
        ("BINLOG_UPLOAD_SECONDS", Changes("10"), vec![]),
        ("BINLOG_SEGMENT_MB", Changes("16"), vec![]),
        ("BINLOG_SERVER_ID", Changes("77"), vec![]),
        ("BACKUP_OFFSITE_TIMEOUT", Changes("15"), vec![]),
        ("NOTIFY_ON_SUCCESS", Changes("true"), vec![]),
        (
            "NOTIFY_WEBHOOK_URL",
            Changes("https://hooks.example.org/x"),
            vec![],
        ),
        ("NOTIFY_WEBHOOK_FORMAT", Changes("slack"), webhook()),
        (
            "NOTIFY_PING_URL",
            Changes("https://hc.example.org/p"),
            vec![],
        ),
        ("NOTIFY_SMTP_HOST", Changes("smtp2.example.org"), smtp()),
        ("NOTIFY_SMTP_PORT", Changes("2525"), smtp()),
        ("NOTIFY_SMTP_TLS", Changes("none"), smtp()),
        ("NOTIFY_SMTP_USER", Changes("alerts"), smtp()),
        ("NOTIFY_SMTP_PASSWORD", Changes("pw"), smtp_login()),
        ("NOTIFY_SMTP_PASSWORD_FILE", Changes(file), smtp_login()),
        ("NOTIFY_SMTP_FROM", Changes("other@example.org"), smtp()),
        ("NOTIFY_SMTP_TO", Changes("ops@example.org"), smtp()),
        ("METRICS_LISTEN", Changes("127.0.0.1:9999"), vec![]),
        ("S3_BUCKET", Changes("b2"), vec![]),
        ("S3_ENDPOINT", Changes("https://s3.example.org"), s3()),
        ("S3_REGION", Changes("eu-west-3"), s3()),
        ("S3_ACCESS_KEY_ID", Changes("KEY"), s3()),
        ("S3_SECRET_ACCESS_KEY", Changes("secret"), s3()),
        ("S3_SECRET_ACCESS_KEY_FILE", Changes(file), s3()),
        ("S3_PREFIX", Changes("selmai/prod"), s3()),
        ("S3_PATH_STYLE", Changes("true"), s3()),
        ("S3_STORAGE_CLASS", Changes("STANDARD_IA"), s3()),
        ("S3_PART_SIZE_MB", Changes("16"), s3()),
        ("S3_CONCURRENCY", Changes("4"), s3()),
        ("S3_RETRIES", Changes("2"), s3()),
        ("S3_REQUEST_TIMEOUT", Changes("30"), s3()),
        ("SFTP_HOST", Changes("nas.example.org"), sftp()),
        ("SFTP_PORT", Changes("2222"), sftp()),
        ("SFTP_USER", Changes("other"), sftp()),
        ("SFTP_PATH", Changes("/srv/backups"), sftp()),
        ("SFTP_KEY_FILE", Changes(file), sftp_pw()),
        ("SFTP_KEY_PASSPHRASE", Changes("pp"), sftp()),
        ("SFTP_KEY_PASSPHRASE_FILE", Changes(file), sftp()),
        ("SFTP_PASSWORD", Changes("pw"), sftp()),
        ("SFTP_PASSWORD_FILE", Changes(file), sftp()),
        ("SFTP_KNOWN_HOSTS", Instead(file, "SFTP_HOST_KEY"), sftp()),
        (
            "SFTP_HOST_KEY",
            Changes(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ",
            ),
            sftp(),
        ),
        ("SFTP_CONCURRENCY", Changes("4"), sftp()),
        ("SFTP_RETRIES", Changes("2"), sftp()),
        ("SFTP_TIMEOUT", Changes("60"), sftp()),
        ("RESTORE_STOP_CONTAINERS", Changes("false"), vec![]),
        ("RESTORE_STOP_PROJECT", Changes("other-project"), vec![]),
        ("RESTORE_DEFINER", Changes("strip"), vec![]),
        ("RESTORE_SNAPSHOT_KEEP_DAYS", Changes("3"), vec![]),
        ("DOCKER_HOST", Changes("tcp://socket-proxy:2375"), vec![]),
    ]
}

/// The variables in the README's table, in order: the first cell of every
/// row that starts with an upper-case name in backticks; `A` / `A_FILE`
/// and `A` / `_FILE` cells name both.
fn documented() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let mut names = Vec::new();
    for line in readme.lines() {
        let Some(cell) = line.strip_prefix("| `").and_then(|l| l.split(" |").next()) else {
            continue;
        };
        if !cell.starts_with(|c: char| c.is_ascii_uppercase()) {
            continue;
        }
        let mut previous = String::new();
        for part in format!("`{cell}").split(" / ") {
            let name = part.trim().trim_matches('`');
            let name = match name.strip_prefix('_') {
                Some(suffix) => format!("{previous}_{suffix}"),
                None => name.to_owned(),
            };
            if !name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                break;
            }
            previous = name.clone();
            names.push(name);
        }
    }
    names
}

fn effective(vars: &[(&str, String)]) -> Result<String, String> {
    Settings::from_vars(vars.iter().map(|(k, v)| (k.to_string(), v.clone())))
        .map(|s| format!("{s:?}"))
        .map_err(|e| e.to_string())
}

#[test]
fn every_documented_variable_reaches_the_settings() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "from-a-file\n").unwrap();
    let cases = cases(&secret.display().to_string());
    let documented = documented();
    assert!(
        documented.len() > 50,
        "README table not found: {documented:?}"
    );

    let known: BTreeSet<&str> = cases.iter().map(|(name, _, _)| *name).collect();
    let missing: Vec<&String> = documented
        .iter()
        .filter(|n| !known.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "documented in the README but without a case here (add a valid non-default value): {missing:?}"
    );

    let minimal = || vec![("DB_USER", "u".to_owned())];
    for name in &documented {
        let (_, reach, companions) = cases.iter().find(|(n, _, _)| n == name).unwrap();
        let mut base = minimal();
        base.extend(companions.iter().cloned());
        match reach {
            Reach::Changes(value) => {
                let before = effective(&base)
                    .unwrap_or_else(|e| panic!("{name}: the settings without it fail: {e}"));
                base.retain(|(k, _)| k != name);
                base.push((name.as_str(), value.to_string()));
                let after = effective(&base)
                    .unwrap_or_else(|e| panic!("{name}={value} is documented but refused: {e}"));
                assert_ne!(
                    before, after,
                    "{name}={value} did not change the effective configuration: the variable is never read"
                );
            }
            Reach::Instead(value, other) => {
                let before = effective(&base)
                    .unwrap_or_else(|e| panic!("{name}: the settings with {other} fail: {e}"));
                base.retain(|(k, _)| k != name && k != other);
                base.push((name.as_str(), value.to_string()));
                let after = effective(&base).unwrap_or_else(|e| {
                    panic!("{name}={value} instead of {other} is documented but refused: {e}")
                });
                assert_ne!(
                    before, after,
                    "{name}={value} did not change the effective configuration: the variable is never read"
                );
            }
            Reach::Ignores(foreign) => {
                base.push((foreign, "x".to_owned()));
                assert!(effective(&base).is_err(), "{foreign} alone must be refused");
                base.push((name.as_str(), foreign.to_string()));
                effective(&base).unwrap_or_else(|e| {
                    panic!("{name}={foreign} did not make {foreign} acceptable: {e}")
                });
            }
        }
    }
}

#[test]
fn every_variable_the_tool_reads_is_documented() {
    let documented: BTreeSet<String> = documented().into_iter().collect();
    let undocumented: Vec<&&str> = KNOWN.iter().filter(|n| !documented.contains(**n)).collect();
    assert!(
        undocumented.is_empty(),
        "read by the tool but missing from the README's variable table: {undocumented:?}"
    );
}
