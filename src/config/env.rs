//! Step 1 of the configuration: the raw environment filtered to our
//! variables and deserialised by envy into [`EnvConfig`]. A variable with
//! one of our prefixes that we do not know is an error with a "did you
//! mean" hint; envy's type errors become ours, naming the variable.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::ConfigError;

/// Prefixes of the variables this tool owns; unknown names under them are errors.
pub const PREFIXES: &[&str] = &[
    "DB_",
    "BACKUP_",
    "S3_",
    "SFTP_",
    "LOG_",
    "RETENTION_",
    "HEALTH_",
    "NOTIFY_",
    "DUMP_",
    "RESTORE_",
    "CONFIG_",
    "FULL_",
    "METRICS_",
    "UPLOADS_",
    "DRILL_",
    "BINLOG_",
];

/// Standard variables we read by their exact name. Unlike [`PREFIXES`],
/// nothing near them is an error: `TZ` is not a prefix of ours, and a
/// container's `TERM` or `TMPDIR` must not be taken for a typo.
pub const EXACT: &[&str] = &["TZ"];

/// The raw environment, one field per variable (lower-cased by envy).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    pub(super) db_host: Option<String>,
    pub(super) db_port: Option<u16>,
    pub(super) db_user: Option<String>,
    pub(super) db_password: Option<String>,
    pub(super) db_password_file: Option<String>,
    pub(super) db_name: Option<String>,
    pub(super) db_connect_timeout: Option<u64>,
    pub(super) db_lock_wait_timeout: Option<u64>,
    pub(super) backup_dir: Option<String>,
    pub(super) backup_prefix: Option<String>,
    pub(super) backup_compression: Option<String>,
    pub(super) backup_compression_level: Option<i32>,
    pub(super) backup_passphrase: Option<String>,
    pub(super) backup_passphrase_file: Option<String>,
    #[allow(dead_code)] // read from the raw map before deserialisation
    pub(super) backup_ignore_env: Option<String>,
    pub(super) s3_endpoint: Option<String>,
    pub(super) s3_bucket: Option<String>,
    pub(super) s3_region: Option<String>,
    pub(super) s3_access_key_id: Option<String>,
    pub(super) s3_secret_access_key: Option<String>,
    pub(super) s3_secret_access_key_file: Option<String>,
    pub(super) s3_prefix: Option<String>,
    pub(super) s3_path_style: Option<bool>,
    pub(super) s3_storage_class: Option<String>,
    pub(super) s3_part_size_mb: Option<u64>,
    pub(super) s3_concurrency: Option<usize>,
    pub(super) s3_retries: Option<u32>,
    pub(super) s3_request_timeout: Option<u64>,
    pub(super) sftp_host: Option<String>,
    pub(super) sftp_port: Option<u16>,
    pub(super) sftp_user: Option<String>,
    pub(super) sftp_path: Option<String>,
    pub(super) sftp_key_file: Option<String>,
    pub(super) sftp_key_passphrase: Option<String>,
    pub(super) sftp_key_passphrase_file: Option<String>,
    pub(super) sftp_password: Option<String>,
    pub(super) sftp_password_file: Option<String>,
    pub(super) sftp_known_hosts: Option<String>,
    pub(super) sftp_host_key: Option<String>,
    pub(super) sftp_concurrency: Option<usize>,
    pub(super) sftp_retries: Option<u32>,
    pub(super) sftp_timeout: Option<u64>,
    pub(super) log_level: Option<String>,
    pub(super) log_format: Option<String>,
    pub(super) tz: Option<String>,
    pub(super) backup_schedule: Option<String>,
    pub(super) config_schedule: Option<String>,
    pub(super) uploads_schedule: Option<String>,
    pub(super) full_schedule: Option<String>,
    pub(super) drill_schedule: Option<String>,
    pub(super) backup_catch_up: Option<String>,
    pub(super) backup_offsite_timeout: Option<u64>,
    pub(super) retention_daily: Option<u32>,
    pub(super) retention_weekly: Option<u32>,
    pub(super) retention_monthly: Option<u32>,
    pub(super) retention_full_monthly: Option<u32>,
    pub(super) retention_config_weekly: Option<u32>,
    pub(super) health_max_age_hours: Option<u64>,
    pub(super) health_min_free_mb: Option<u64>,
    pub(super) health_max_offsite_delay_hours: Option<u64>,
    pub(super) notify_on_success: Option<bool>,
    pub(super) notify_webhook_url: Option<String>,
    pub(super) notify_webhook_format: Option<String>,
    pub(super) notify_ping_url: Option<String>,
    pub(super) notify_smtp_host: Option<String>,
    pub(super) notify_smtp_port: Option<u16>,
    pub(super) notify_smtp_user: Option<String>,
    pub(super) notify_smtp_password: Option<String>,
    pub(super) notify_smtp_password_file: Option<String>,
    pub(super) notify_smtp_from: Option<String>,
    pub(super) notify_smtp_to: Option<String>,
    pub(super) notify_smtp_tls: Option<String>,
    pub(super) metrics_listen: Option<String>,
    pub(super) restore_stop_containers: Option<bool>,
    pub(super) restore_stop_project: Option<String>,
    pub(super) config_paths: Option<String>,
    pub(super) config_exclude: Option<String>,
    pub(super) config_prefix: Option<String>,
    pub(super) uploads_paths: Option<String>,
    pub(super) uploads_prefix: Option<String>,
    pub(super) full_prefix: Option<String>,
    pub(super) restore_snapshot_keep_days: Option<u32>,
    pub(super) restore_definer: Option<String>,
    pub(super) binlog_archive: Option<String>,
    pub(super) binlog_server_id: Option<u32>,
    pub(super) binlog_upload_seconds: Option<u64>,
    pub(super) binlog_segment_mb: Option<u64>,
    pub(super) health_max_binlog_lag_seconds: Option<u64>,
}

/// Every variable we read, for the unknown-name check and its hints.
pub const KNOWN: &[&str] = &[
    "DB_HOST",
    "DB_PORT",
    "DB_USER",
    "DB_PASSWORD",
    "DB_PASSWORD_FILE",
    "DB_NAME",
    "DB_CONNECT_TIMEOUT",
    "DB_LOCK_WAIT_TIMEOUT",
    "BACKUP_DIR",
    "BACKUP_PREFIX",
    "BACKUP_COMPRESSION",
    "BACKUP_COMPRESSION_LEVEL",
    "BACKUP_PASSPHRASE",
    "BACKUP_PASSPHRASE_FILE",
    "BACKUP_IGNORE_ENV",
    "S3_ENDPOINT",
    "S3_BUCKET",
    "S3_REGION",
    "S3_ACCESS_KEY_ID",
    "S3_SECRET_ACCESS_KEY",
    "S3_SECRET_ACCESS_KEY_FILE",
    "S3_PREFIX",
    "S3_PATH_STYLE",
    "S3_STORAGE_CLASS",
    "S3_PART_SIZE_MB",
    "S3_CONCURRENCY",
    "S3_RETRIES",
    "S3_REQUEST_TIMEOUT",
    "SFTP_HOST",
    "SFTP_PORT",
    "SFTP_USER",
    "SFTP_PATH",
    "SFTP_KEY_FILE",
    "SFTP_KEY_PASSPHRASE",
    "SFTP_KEY_PASSPHRASE_FILE",
    "SFTP_PASSWORD",
    "SFTP_PASSWORD_FILE",
    "SFTP_KNOWN_HOSTS",
    "SFTP_HOST_KEY",
    "SFTP_CONCURRENCY",
    "SFTP_RETRIES",
    "SFTP_TIMEOUT",
    "LOG_LEVEL",
    "LOG_FORMAT",
    "TZ",
    "BACKUP_SCHEDULE",
    "CONFIG_SCHEDULE",
    "UPLOADS_SCHEDULE",
    "FULL_SCHEDULE",
    "CONFIG_PATHS",
    "CONFIG_EXCLUDE",
    "CONFIG_PREFIX",
    "UPLOADS_PATHS",
    "UPLOADS_PREFIX",
    "FULL_PREFIX",
    "DRILL_SCHEDULE",
    "BACKUP_CATCH_UP",
    "BACKUP_OFFSITE_TIMEOUT",
    "RETENTION_DAILY",
    "RETENTION_WEEKLY",
    "RETENTION_MONTHLY",
    "RETENTION_FULL_MONTHLY",
    "RETENTION_CONFIG_WEEKLY",
    "HEALTH_MAX_AGE_HOURS",
    "HEALTH_MIN_FREE_MB",
    "HEALTH_MAX_OFFSITE_DELAY_HOURS",
    "NOTIFY_ON_SUCCESS",
    "NOTIFY_WEBHOOK_URL",
    "NOTIFY_WEBHOOK_FORMAT",
    "NOTIFY_PING_URL",
    "NOTIFY_SMTP_HOST",
    "NOTIFY_SMTP_PORT",
    "NOTIFY_SMTP_USER",
    "NOTIFY_SMTP_PASSWORD",
    "NOTIFY_SMTP_PASSWORD_FILE",
    "NOTIFY_SMTP_FROM",
    "NOTIFY_SMTP_TO",
    "NOTIFY_SMTP_TLS",
    "METRICS_LISTEN",
    "RESTORE_STOP_CONTAINERS",
    "RESTORE_STOP_PROJECT",
    "RESTORE_SNAPSHOT_KEEP_DAYS",
    "RESTORE_DEFINER",
    "BINLOG_ARCHIVE",
    "BINLOG_SERVER_ID",
    "BINLOG_UPLOAD_SECONDS",
    "BINLOG_SEGMENT_MB",
    "HEALTH_MAX_BINLOG_LAG_SECONDS",
];

/// Our variables out of `all` (empty values mean "not set"), as
/// [`EnvConfig`]; `BACKUP_IGNORE_ENV` lists names of other programs that
/// share our prefixes.
pub(super) fn read(all: &BTreeMap<String, String>) -> Result<EnvConfig, ConfigError> {
    let ignored: Vec<String> = all
        .get("BACKUP_IGNORE_ENV")
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().to_owned())
                .filter(|x| !x.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let mut ours = Vec::new();
    for (k, v) in all {
        if EXACT.contains(&k.as_str()) {
            if !v.is_empty() {
                ours.push((k.clone(), v.clone()));
            }
            continue;
        }
        if !PREFIXES.iter().any(|p| k.starts_with(p)) || ignored.contains(k) {
            continue;
        }
        if !KNOWN.contains(&k.as_str()) {
            return Err(ConfigError::Unknown {
                name: k.clone(),
                hint: suggest(k)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default(),
            });
        }
        // An empty value means "not set", as in compose files with `VAR=`.
        if !v.is_empty() {
            ours.push((k.clone(), v.clone()));
        }
    }
    envy::from_iter(ours).map_err(parse_error)
}

/// envy's type error ("invalid digit found in string while parsing value
/// '-1' provided by RETENTION_DAILY") as our own: the variable, the value,
/// and what it takes.
pub(super) fn parse_error(e: envy::Error) -> ConfigError {
    let text = e.to_string();
    let parsed = text.rsplit_once(" provided by ").and_then(|(head, var)| {
        let name = KNOWN.iter().find(|k| k.eq_ignore_ascii_case(var.trim()))?;
        let value = head.rsplit_once(" while parsing value ")?.1;
        Some((*name, value.trim_matches('\'')))
    });
    let Some((name, value)) = parsed else {
        return ConfigError::Parse(text);
    };
    let wants = if text.contains("`true` or `false`") {
        "true or false"
    } else if name.ends_with("_PORT") {
        "a port number from 1 to 65535"
    } else if name.starts_with("RETENTION_") {
        "how many backups to keep: a whole number, 0 or more"
    } else if name.ends_with("_HOURS") {
        "a whole number of hours"
    } else if name.ends_with("_MB") {
        "a whole number of megabytes"
    } else if name.ends_with("_TIMEOUT") {
        "a whole number of seconds"
    } else if name == "BACKUP_COMPRESSION_LEVEL" {
        "a whole number: 1-9 for gzip, 1-19 for zstd"
    } else {
        "a whole number, 0 or more"
    };
    ConfigError::Invalid {
        name,
        detail: format!("{value:?} is not {wants}"),
    }
}
/// The known variable closest to a misspelt one, if any is close.
fn suggest(name: &str) -> Option<&'static str> {
    KNOWN
        .iter()
        .map(|k| (edit_distance(name, k), *k))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
