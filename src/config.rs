//! Configuration from environment variables, in two steps.
//!
//! 1. The raw environment is filtered to our prefixes and deserialised by
//!    envy into [`EnvConfig`] (strings and numbers, exactly the variable
//!    names operators write). A variable with one of our prefixes that we do
//!    not know is an error with a "did you mean" hint: a typo must never fall
//!    back to a default silently.
//! 2. [`Settings::from_env`] turns that into typed values: durations,
//!    compression, secrets read from `*_FILE` (Docker secrets).
//!
//! Secrets are [`Secret`], whose `Debug` and `Display` print `***`. Tests
//! build settings from a map ([`Settings::from_vars`]), never by mutating the
//! process environment. This module does not open connections or files other
//! than the `*_FILE` secrets.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;
use serde::Deserialize;

pub mod binlog;
pub mod encoding;
pub mod notify;
pub mod restore;
pub mod retention;
pub mod schedule;

pub use crate::secret::Secret;
use encoding::Compression;
use notify::{SmtpTls, WebhookFormat};
use retention::Policy;
use schedule::{CatchUp, Kind, Schedule};

/// Prefixes of the variables this tool owns; unknown names under them are errors.
pub const PREFIXES: &[&str] = &[
    "DB_",
    "BACKUP_",
    "S3_",
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

/// Errors in the configuration; each names the variable and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable with our prefix that we do not know.
    #[error("unknown variable {name}{hint}: fix the name, or list it in BACKUP_IGNORE_ENV if it belongs to another program")]
    Unknown {
        /// The variable as written.
        name: String,
        /// " (did you mean X?)" or empty.
        hint: String,
    },
    /// A value that does not parse.
    #[error("invalid value for {name}: {detail}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What was wrong and what is accepted.
        detail: String,
    },
    /// A required variable is missing.
    #[error("{name} is not set: {detail}")]
    Missing {
        /// The variable.
        name: &'static str,
        /// Why it is needed.
        detail: &'static str,
    },
    /// Both `VAR` and `VAR_FILE` are set.
    #[error("both {name} and {name}_FILE are set: keep only one")]
    Ambiguous {
        /// The variable without `_FILE`.
        name: &'static str,
    },
    /// A `*_FILE` secret could not be read.
    #[error("cannot read {name}_FILE ({path}): {source}")]
    SecretFile {
        /// The variable without `_FILE`.
        name: &'static str,
        /// The path given.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// envy's own parse error (wrong type).
    #[error("{0}")]
    Parse(String),
}

/// File-name prefix of safety snapshots.
pub const SNAPSHOT_PREFIX: &str = "selmai_prerestore";

/// The raw environment, one field per variable (lower-cased by envy).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    db_host: Option<String>,
    db_port: Option<u16>,
    db_user: Option<String>,
    db_password: Option<String>,
    db_password_file: Option<String>,
    db_name: Option<String>,
    db_connect_timeout: Option<u64>,
    db_lock_wait_timeout: Option<u64>,
    backup_dir: Option<String>,
    backup_prefix: Option<String>,
    backup_compression: Option<String>,
    backup_compression_level: Option<i32>,
    backup_passphrase: Option<String>,
    backup_passphrase_file: Option<String>,
    #[allow(dead_code)] // read from the raw map before deserialisation
    backup_ignore_env: Option<String>,
    s3_endpoint: Option<String>,
    s3_bucket: Option<String>,
    s3_region: Option<String>,
    s3_access_key_id: Option<String>,
    s3_secret_access_key: Option<String>,
    s3_secret_access_key_file: Option<String>,
    s3_prefix: Option<String>,
    s3_path_style: Option<bool>,
    s3_storage_class: Option<String>,
    s3_part_size_mb: Option<u64>,
    s3_concurrency: Option<usize>,
    s3_retries: Option<u32>,
    s3_request_timeout: Option<u64>,
    log_level: Option<String>,
    log_format: Option<String>,
    tz: Option<String>,
    backup_schedule: Option<String>,
    config_schedule: Option<String>,
    uploads_schedule: Option<String>,
    full_schedule: Option<String>,
    drill_schedule: Option<String>,
    backup_catch_up: Option<String>,
    backup_offsite_timeout: Option<u64>,
    retention_daily: Option<u32>,
    retention_weekly: Option<u32>,
    retention_monthly: Option<u32>,
    retention_full_monthly: Option<u32>,
    retention_config_weekly: Option<u32>,
    health_max_age_hours: Option<u64>,
    health_min_free_mb: Option<u64>,
    health_max_offsite_delay_hours: Option<u64>,
    notify_on_success: Option<bool>,
    notify_webhook_url: Option<String>,
    notify_webhook_format: Option<String>,
    notify_ping_url: Option<String>,
    notify_smtp_host: Option<String>,
    notify_smtp_port: Option<u16>,
    notify_smtp_user: Option<String>,
    notify_smtp_password: Option<String>,
    notify_smtp_password_file: Option<String>,
    notify_smtp_from: Option<String>,
    notify_smtp_to: Option<String>,
    notify_smtp_tls: Option<String>,
    metrics_listen: Option<String>,
    restore_stop_containers: Option<bool>,
    restore_stop_project: Option<String>,
    config_paths: Option<String>,
    config_exclude: Option<String>,
    config_prefix: Option<String>,
    uploads_paths: Option<String>,
    uploads_prefix: Option<String>,
    full_prefix: Option<String>,
    restore_snapshot_keep_days: Option<u32>,
    restore_definer: Option<String>,
    binlog_archive: Option<String>,
    binlog_server_id: Option<u32>,
    binlog_upload_seconds: Option<u64>,
    binlog_segment_mb: Option<u64>,
    health_max_binlog_lag_seconds: Option<u64>,
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

/// How to reach the database.
#[derive(Debug, Clone)]
pub struct DbSettings {
    /// Host name or address (`DB_HOST`).
    pub host: String,
    /// TCP port (`DB_PORT`).
    pub port: u16,
    /// User (`DB_USER`).
    pub user: String,
    /// Password (`DB_PASSWORD` or `DB_PASSWORD_FILE`).
    pub password: Secret,
    /// Database to back up / restore into (`DB_NAME`).
    pub name: String,
    /// How long to keep retrying an unreachable server (`DB_CONNECT_TIMEOUT`).
    pub connect_timeout: Duration,
    /// How long one statement waits for a lock another connection holds
    /// (`DB_LOCK_WAIT_TIMEOUT`, default 300 s; the server's own default
    /// is a day), set on every session.
    pub lock_wait_timeout: Duration,
}

/// The S3-compatible bucket, when one is configured.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// Endpoint URL (`S3_ENDPOINT`); `None` means AWS.
    pub endpoint: Option<String>,
    /// Bucket name (`S3_BUCKET`).
    pub bucket: String,
    /// Region (`S3_REGION`).
    pub region: String,
    /// Access key id (`S3_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret key (`S3_SECRET_ACCESS_KEY` or `_FILE`).
    pub secret_access_key: Option<Secret>,
    /// Key prefix inside the bucket (`S3_PREFIX`), empty or ending in `/`.
    pub prefix: String,
    /// Path-style addressing (`S3_PATH_STYLE`), needed by MinIO and moto.
    pub path_style: bool,
    /// Storage class for uploaded objects (`S3_STORAGE_CLASS`).
    pub storage_class: Option<String>,
    /// Size of one multipart part in bytes (`S3_PART_SIZE_MB`, default 8).
    ///
    /// Memory of an upload is bounded by this times (`concurrency` + 1), and
    /// the largest object is 10,000 parts (78 GiB at 8 MiB).
    pub part_size: usize,
    /// Parts uploaded at the same time (`S3_CONCURRENCY`, default 2).
    pub concurrency: usize,
    /// Extra attempts of one request after a 5xx, a timeout or a dropped
    /// connection (`S3_RETRIES`, default 5).
    pub retries: u32,
    /// Time limit of one request, a part upload included (`S3_REQUEST_TIMEOUT`
    /// in seconds, default 120).
    pub request_timeout: Duration,
    /// First back-off delay, doubled at each retry (1 s; not a variable:
    /// tests shorten it).
    pub retry_delay: Duration,
}

/// The smallest part S3 accepts (all parts but the last).
pub const S3_MIN_PART_SIZE_MB: u64 = 5;
/// The largest part S3 accepts.
pub const S3_MAX_PART_SIZE_MB: u64 = 5 * 1024;

/// Log output settings.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A tracing filter directive (`LOG_LEVEL`, default `info`).
    pub level: String,
    /// JSON lines instead of human-readable text (`LOG_FORMAT=json`).
    pub json: bool,
}

/// When backups run (`TZ`, `*_SCHEDULE`, `BACKUP_CATCH_UP`).
#[derive(Debug, Clone)]
pub struct ScheduleSettings {
    /// Time zone of the schedules and of retention's days (`TZ`, default UTC).
    pub tz: Tz,
    /// Database backups (`BACKUP_SCHEDULE`); `None` when set to `off`.
    pub db: Option<Schedule>,
    /// Configuration backups (`CONFIG_SCHEDULE`).
    pub config: Option<Schedule>,
    /// Uploads backups (`UPLOADS_SCHEDULE`).
    pub uploads: Option<Schedule>,
    /// Full backups (`FULL_SCHEDULE`).
    pub full: Option<Schedule>,
    /// Restore drills of the newest backup (`DRILL_SCHEDULE`).
    pub drill: Option<Schedule>,
    /// Whether to run a backup at start (`BACKUP_CATCH_UP`).
    pub catch_up: CatchUp,
}

impl ScheduleSettings {
    /// The schedule of `kind`, unless it is off.
    pub fn of(&self, kind: Kind) -> Option<&Schedule> {
        match kind {
            Kind::Db => self.db.as_ref(),
            Kind::Config => self.config.as_ref(),
            Kind::Uploads => self.uploads.as_ref(),
            Kind::Full => self.full.as_ref(),
            Kind::Drill => self.drill.as_ref(),
        }
    }
}

/// What `health` checks (`HEALTH_*`).
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// The newest successful database backup must be younger than this
    /// (`HEALTH_MAX_AGE_HOURS`, default 26).
    pub max_age: Duration,
    /// Free space below this on `BACKUP_DIR` is unhealthy
    /// (`HEALTH_MIN_FREE_MB`); `None`: twice the last backup's size.
    pub min_free_bytes: Option<u64>,
    /// A backup still missing from an off-site target this long after it
    /// was taken is unhealthy (`HEALTH_MAX_OFFSITE_DELAY_HOURS`, default 26).
    pub max_offsite_delay: Duration,
    /// The binlog archive may be this far behind the server
    /// (`HEALTH_MAX_BINLOG_LAG_SECONDS`, default 300).
    pub max_binlog_lag: Duration,
}

/// Sending mail (`NOTIFY_SMTP_*`).
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Relay host (`NOTIFY_SMTP_HOST`).
    pub host: String,
    /// Port (`NOTIFY_SMTP_PORT`; default 587, 465 with `tls`, 25 with `none`).
    pub port: u16,
    /// How the connection is protected (`NOTIFY_SMTP_TLS`).
    pub tls: SmtpTls,
    /// Login (`NOTIFY_SMTP_USER`), when the relay wants one.
    pub user: Option<String>,
    /// Password (`NOTIFY_SMTP_PASSWORD` or `_FILE`).
    pub password: Option<Secret>,
    /// Sender (`NOTIFY_SMTP_FROM`).
    pub from: String,
    /// Recipients (`NOTIFY_SMTP_TO`, comma-separated).
    pub to: Vec<String>,
}

/// Where alerts go (`NOTIFY_*`).
#[derive(Debug, Clone, Default)]
pub struct NotifySettings {
    /// Also alert on success (`NOTIFY_ON_SUCCESS`); failures always alert.
    pub on_success: bool,
    /// Webhook URL (`NOTIFY_WEBHOOK_URL`); a secret, as Slack's URLs are.
    pub webhook: Option<Secret>,
    /// Body format of the webhook (`NOTIFY_WEBHOOK_FORMAT`).
    pub webhook_format: WebhookFormat,
    /// healthchecks.io-style ping URL (`NOTIFY_PING_URL`); a secret.
    pub ping: Option<Secret>,
    /// Mail, when `NOTIFY_SMTP_HOST` is set.
    pub smtp: Option<SmtpSettings>,
}

/// Typed, validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    db_host: String,
    db_port: u16,
    db_user: Option<String>,
    db_password: Option<Secret>,
    db_name: String,
    db_connect_timeout: Duration,
    db_lock_wait_timeout: Duration,
    /// The mounted volume (`BACKUP_DIR`).
    pub backup_dir: PathBuf,
    /// File-name prefix of database backups (`BACKUP_PREFIX`).
    pub prefix: String,
    /// Compression of new backups (`BACKUP_COMPRESSION`, `BACKUP_COMPRESSION_LEVEL`).
    pub compression: Compression,
    /// Passphrase for encryption (`BACKUP_PASSPHRASE` or `_FILE`).
    pub passphrase: Option<Secret>,
    /// The bucket, when `S3_BUCKET` is set.
    pub s3: Option<S3Settings>,
    /// How long one run waits on an off-site target that does not answer,
    /// over all its steps (`BACKUP_OFFSITE_TIMEOUT`, default 60 s).
    pub offsite_timeout: Duration,
    /// Logging.
    pub log: LogSettings,
    /// Schedules and time zone.
    pub schedule: ScheduleSettings,
    /// Retention of database backups and uploads archives
    /// (`RETENTION_DAILY`, `_WEEKLY`, `_MONTHLY`).
    pub retention: Policy,
    /// Retention of configuration archives: the newest of each of the last
    /// N ISO weeks (`RETENTION_CONFIG_WEEKLY`, default 4).
    pub config_retention: Policy,
    /// Retention of full backups: the newest set of each of the last N
    /// months (`RETENTION_FULL_MONTHLY`, default 3).
    pub full_retention: Policy,
    /// File-name prefix of full backups (`FULL_PREFIX`, default `selmai_full`).
    pub full_prefix: String,
    /// Health check thresholds.
    pub health: HealthSettings,
    /// Alerts.
    pub notify: NotifySettings,
    /// Address of the metrics listener (`METRICS_LISTEN`), off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Stop the labelled containers during a restore (`RESTORE_STOP_CONTAINERS`, default true).
    pub restore_stop_containers: bool,
    /// Compose project whose containers are stopped (`RESTORE_STOP_PROJECT`;
    /// default: the project of the container we run in).
    pub restore_stop_project: Option<String>,
    /// Days pre-restore safety snapshots are kept (`RESTORE_SNAPSHOT_KEEP_DAYS`, default 7).
    pub restore_snapshot_keep_days: u32,
    /// `DEFINER` clauses at restore (`RESTORE_DEFINER`: keep, strip, rewrite; default keep).
    pub restore_definer: restore::Definer,
    /// The Docker engine (`DOCKER_HOST`, Docker's own variable; default the socket).
    pub docker_host: Option<String>,
    /// Our host name (`HOSTNAME`): in a container, its short id.
    pub hostname: Option<String>,
    /// What the `config` archive holds (`CONFIG_PATHS`, `CONFIG_EXCLUDE`, `CONFIG_PREFIX`).
    pub config_archive: ArchiveSettings,
    /// What the `uploads` archive holds (`UPLOADS_PATHS`, `UPLOADS_PREFIX`).
    pub uploads_archive: ArchiveSettings,
    /// The binlog archive (`BINLOG_*`).
    pub binlog: binlog::BinlogSettings,
}

/// The directories one kind of file archive holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveSettings {
    /// File-name prefix of these archives.
    pub prefix: String,
    /// Directories (or files) archived, each under its own base name.
    pub paths: Vec<PathBuf>,
    /// Paths that stay out, with all they contain, wherever they appear
    /// in the archive (as `tar --exclude`).
    pub exclude: Vec<String>,
}

impl Settings {
    /// Settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
        )
    }

    /// Settings from any list of variables (tests use a map).
    pub fn from_vars<I, K, V>(vars: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let all: BTreeMap<String, String> = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
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
        for (k, v) in &all {
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
        let env: EnvConfig = envy::from_iter(ours).map_err(parse_error)?;
        let mut settings = Settings::try_from(env)?;
        // Variables of other programs that we read as they are.
        let foreign = |k: &str| all.get(k).filter(|v| !v.is_empty()).cloned();
        settings.docker_host = foreign("DOCKER_HOST");
        settings.hostname = foreign("HOSTNAME");
        Ok(settings)
    }

    /// Database settings, or an error naming the missing variable.
    pub fn db(&self) -> Result<DbSettings, ConfigError> {
        let user = self.db_user.clone().ok_or(ConfigError::Missing {
            name: "DB_USER",
            detail: "set the MariaDB user the backups connect as",
        })?;
        let password = self.db_password.clone().ok_or(ConfigError::Missing {
            name: "DB_PASSWORD",
            detail: "set DB_PASSWORD or DB_PASSWORD_FILE (a Docker secret)",
        })?;
        Ok(DbSettings {
            host: self.db_host.clone(),
            port: self.db_port,
            user,
            password,
            name: self.db_name.clone(),
            connect_timeout: self.db_connect_timeout,
            lock_wait_timeout: self.db_lock_wait_timeout,
        })
    }

    /// The database name (`DB_NAME`), known without credentials.
    pub fn db_name(&self) -> &str {
        &self.db_name
    }

    /// Every secret value configured, for redaction checks.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut v: Vec<&Secret> = Vec::new();
        v.extend(self.db_password.as_ref());
        v.extend(self.passphrase.as_ref());
        if let Some(s3) = &self.s3 {
            v.extend(s3.secret_access_key.as_ref());
        }
        v.extend(self.notify.webhook.as_ref());
        v.extend(self.notify.ping.as_ref());
        if let Some(smtp) = &self.notify.smtp {
            v.extend(smtp.password.as_ref());
        }
        v
    }
}

impl TryFrom<EnvConfig> for Settings {
    type Error = ConfigError;

    fn try_from(e: EnvConfig) -> Result<Self, ConfigError> {
        let compression = Compression::parse(
            e.backup_compression.as_deref().unwrap_or("gzip"),
            e.backup_compression_level,
        )
        .map_err(|detail| ConfigError::Invalid {
            name: "BACKUP_COMPRESSION",
            detail,
        })?;
        let prefix = file_prefix("BACKUP_PREFIX", e.backup_prefix, "selmai_backup")?;
        let config_archive = ArchiveSettings {
            prefix: file_prefix("CONFIG_PREFIX", e.config_prefix, "selmai_config")?,
            paths: path_list(e.config_paths.as_deref().unwrap_or("/config")),
            exclude: exclude_list(e.config_exclude.as_deref().unwrap_or("nginx/ssl"))?,
        };
        let uploads_archive = ArchiveSettings {
            prefix: file_prefix("UPLOADS_PREFIX", e.uploads_prefix, "selmai_uploads")?,
            paths: path_list(e.uploads_paths.as_deref().unwrap_or("/data/uploads")),
            exclude: Vec::new(),
        };
        let full_prefix = file_prefix("FULL_PREFIX", e.full_prefix, "selmai_full")?;
        let kinds = [
            ("BACKUP_PREFIX", &prefix),
            ("CONFIG_PREFIX", &config_archive.prefix),
            ("UPLOADS_PREFIX", &uploads_archive.prefix),
            ("FULL_PREFIX", &full_prefix),
        ];
        for (i, (name, p)) in kinds.iter().enumerate() {
            if let Some((other, _)) = kinds[..i].iter().find(|(_, q)| q == p) {
                return Err(ConfigError::Invalid {
                    name,
                    detail: format!("{p:?} is {other} too: give each kind its own prefix"),
                });
            }
        }
        // Retention lists backups by prefix: sharing the snapshots' prefix
        // would rotate (and delete) the pre-restore snapshots.
        for (name, p) in [
            ("BACKUP_PREFIX", &prefix),
            ("CONFIG_PREFIX", &config_archive.prefix),
            ("UPLOADS_PREFIX", &uploads_archive.prefix),
            ("FULL_PREFIX", &full_prefix),
        ] {
            if p == SNAPSHOT_PREFIX {
                return Err(ConfigError::Invalid {
                    name,
                    detail: format!(
                        "{p:?} is reserved for pre-restore safety snapshots: choose another prefix"
                    ),
                });
            }
        }
        let log_json = match e.log_format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => {
                return Err(ConfigError::Invalid {
                    name: "LOG_FORMAT",
                    detail: format!("{other:?}: use text or json"),
                })
            }
        };
        let s3 = match e.s3_bucket {
            None => {
                // Checked even without a bucket: a wrong value must not wait
                // for the day S3_BUCKET is set to be found.
                s3_part_size(e.s3_part_size_mb)?;
                in_range("S3_CONCURRENCY", e.s3_concurrency, 2, 1, 16)?;
                in_range("S3_RETRIES", e.s3_retries, 5, 0, 20)?;
                in_range("S3_REQUEST_TIMEOUT", e.s3_request_timeout, 120, 1, 3600)?;
                None
            }
            Some(bucket) => {
                let mut prefix = e.s3_prefix.unwrap_or_default();
                if !prefix.is_empty() && !prefix.ends_with('/') {
                    prefix.push('/');
                }
                Some(S3Settings {
                    endpoint: e.s3_endpoint,
                    bucket,
                    region: e.s3_region.unwrap_or_else(|| "us-east-1".into()),
                    access_key_id: e.s3_access_key_id,
                    secret_access_key: secret(
                        "S3_SECRET_ACCESS_KEY",
                        e.s3_secret_access_key,
                        e.s3_secret_access_key_file,
                    )?,
                    prefix,
                    path_style: e.s3_path_style.unwrap_or(false),
                    storage_class: e.s3_storage_class,
                    part_size: s3_part_size(e.s3_part_size_mb)?,
                    concurrency: in_range("S3_CONCURRENCY", e.s3_concurrency, 2, 1, 16)?,
                    retries: in_range("S3_RETRIES", e.s3_retries, 5, 0, 20)?,
                    request_timeout: Duration::from_secs(in_range(
                        "S3_REQUEST_TIMEOUT",
                        e.s3_request_timeout,
                        120,
                        1,
                        3600,
                    )?),
                    retry_delay: Duration::from_secs(1),
                })
            }
        };
        let schedule = ScheduleSettings {
            tz: match e.tz.as_deref() {
                None => Tz::UTC,
                Some(name) => name.parse().map_err(|_| ConfigError::Invalid {
                    name: "TZ",
                    detail: format!(
                        "{name:?} is not a time zone name: use an IANA name such as Europe/Paris or UTC"
                    ),
                })?,
            },
            db: schedule(Kind::Db, e.backup_schedule)?,
            config: schedule(Kind::Config, e.config_schedule)?,
            uploads: schedule(Kind::Uploads, e.uploads_schedule)?,
            full: schedule(Kind::Full, e.full_schedule)?,
            drill: schedule(Kind::Drill, e.drill_schedule)?,
            catch_up: match e.backup_catch_up {
                None => CatchUp::default(),
                Some(s) => s.parse().map_err(|detail| ConfigError::Invalid {
                    name: "BACKUP_CATCH_UP",
                    detail,
                })?,
            },
        };
        let defaults = Policy::default();
        let retention = Policy {
            daily: e.retention_daily.unwrap_or(defaults.daily),
            weekly: e.retention_weekly.unwrap_or(defaults.weekly),
            monthly: e.retention_monthly.unwrap_or(defaults.monthly),
        };
        let config_retention = Policy {
            daily: 0,
            weekly: e.retention_config_weekly.unwrap_or(4),
            monthly: 0,
        };
        let full_retention = Policy {
            daily: 0,
            weekly: 0,
            monthly: e.retention_full_monthly.unwrap_or(3),
        };
        let restore_snapshot_keep_days = e.restore_snapshot_keep_days.unwrap_or(7);
        if restore_snapshot_keep_days == 0 {
            return Err(ConfigError::Invalid {
                name: "RESTORE_SNAPSHOT_KEEP_DAYS",
                detail: "0 would delete the snapshot that undoes the restore just made: use 1 or more, or restore with --no-safety-snapshot".into(),
            });
        }
        let max_age_hours = e.health_max_age_hours.unwrap_or(26);
        if max_age_hours == 0 {
            return Err(ConfigError::Invalid {
                name: "HEALTH_MAX_AGE_HOURS",
                detail:
                    "0: give the age in hours after which the newest backup is too old, e.g. 26"
                        .into(),
            });
        }
        let health = HealthSettings {
            max_age: Duration::from_secs(max_age_hours.saturating_mul(3600)),
            min_free_bytes: e.health_min_free_mb.map(|mb| mb.saturating_mul(1_000_000)),
            max_offsite_delay: Duration::from_secs(
                in_range(
                    "HEALTH_MAX_OFFSITE_DELAY_HOURS",
                    e.health_max_offsite_delay_hours,
                    26,
                    1,
                    24 * 366,
                )?
                .saturating_mul(3600),
            ),
            max_binlog_lag: Duration::from_secs(in_range(
                "HEALTH_MAX_BINLOG_LAG_SECONDS",
                e.health_max_binlog_lag_seconds,
                300,
                1,
                7 * 86_400,
            )?),
        };
        let binlog = binlog::BinlogSettings {
            mode: match e.binlog_archive {
                None => binlog::ArchiveMode::Auto,
                Some(s) => s.parse().map_err(|detail| ConfigError::Invalid {
                    name: "BINLOG_ARCHIVE",
                    detail,
                })?,
            },
            server_id: in_range(
                "BINLOG_SERVER_ID",
                e.binlog_server_id,
                binlog::DEFAULT_SERVER_ID,
                1,
                u32::MAX,
            )?,
            upload_after: Duration::from_secs(in_range(
                "BINLOG_UPLOAD_SECONDS",
                e.binlog_upload_seconds,
                60,
                1,
                86_400,
            )?),
            segment_bytes: in_range("BINLOG_SEGMENT_MB", e.binlog_segment_mb, 64, 1, 1024)? << 20,
        };
        let smtp_password = secret(
            "NOTIFY_SMTP_PASSWORD",
            e.notify_smtp_password,
            e.notify_smtp_password_file,
        )?;
        let smtp = match e.notify_smtp_host {
            None => {
                let stray = [
                    ("NOTIFY_SMTP_PORT", e.notify_smtp_port.is_some()),
                    ("NOTIFY_SMTP_USER", e.notify_smtp_user.is_some()),
                    ("NOTIFY_SMTP_PASSWORD", smtp_password.is_some()),
                    ("NOTIFY_SMTP_FROM", e.notify_smtp_from.is_some()),
                    ("NOTIFY_SMTP_TO", e.notify_smtp_to.is_some()),
                    ("NOTIFY_SMTP_TLS", e.notify_smtp_tls.is_some()),
                ];
                if let Some((name, _)) = stray.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::Invalid {
                        name,
                        detail: "set without NOTIFY_SMTP_HOST: set the relay's host name too, or remove it".into(),
                    });
                }
                None
            }
            Some(host) => {
                let tls: SmtpTls = match e.notify_smtp_tls {
                    None => SmtpTls::default(),
                    Some(s) => s.parse().map_err(|detail| ConfigError::Invalid {
                        name: "NOTIFY_SMTP_TLS",
                        detail,
                    })?,
                };
                let from = e.notify_smtp_from.ok_or(ConfigError::Missing {
                    name: "NOTIFY_SMTP_FROM",
                    detail: "mail alerts need a sender address, e.g. backup@example.org",
                })?;
                mailbox("NOTIFY_SMTP_FROM", &from)?;
                let to_raw = e.notify_smtp_to.ok_or(ConfigError::Missing {
                    name: "NOTIFY_SMTP_TO",
                    detail: "mail alerts need at least one recipient (comma-separated)",
                })?;
                let to: Vec<String> = to_raw
                    .split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect();
                if to.is_empty() {
                    return Err(ConfigError::Invalid {
                        name: "NOTIFY_SMTP_TO",
                        detail: "no address: give at least one recipient".into(),
                    });
                }
                for a in &to {
                    mailbox("NOTIFY_SMTP_TO", a)?;
                }
                if smtp_password.is_some() && e.notify_smtp_user.is_none() {
                    return Err(ConfigError::Missing {
                        name: "NOTIFY_SMTP_USER",
                        detail: "NOTIFY_SMTP_PASSWORD is set: set the login that goes with it",
                    });
                }
                Some(SmtpSettings {
                    port: e.notify_smtp_port.unwrap_or(tls.default_port()),
                    host,
                    tls,
                    user: e.notify_smtp_user,
                    password: smtp_password,
                    from,
                    to,
                })
            }
        };
        let notify = NotifySettings {
            on_success: e.notify_on_success.unwrap_or(false),
            webhook: e
                .notify_webhook_url
                .map(|u| http_url("NOTIFY_WEBHOOK_URL", u))
                .transpose()?,
            webhook_format: match e.notify_webhook_format {
                None => WebhookFormat::default(),
                Some(s) => s.parse().map_err(|detail| ConfigError::Invalid {
                    name: "NOTIFY_WEBHOOK_FORMAT",
                    detail,
                })?,
            },
            ping: e
                .notify_ping_url
                .map(|u| http_url("NOTIFY_PING_URL", u))
                .transpose()?,
            smtp,
        };
        let metrics_listen = e
            .metrics_listen
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| ConfigError::Invalid {
                    name: "METRICS_LISTEN",
                    detail: format!("{a:?}: give an address and port, e.g. 0.0.0.0:9090"),
                })
            })
            .transpose()?;
        Ok(Settings {
            db_host: e.db_host.unwrap_or_else(|| "db".into()),
            db_port: e.db_port.unwrap_or(3306),
            db_user: e.db_user,
            db_password: secret("DB_PASSWORD", e.db_password, e.db_password_file)?,
            db_name: e.db_name.unwrap_or_else(|| "selmai".into()),
            db_connect_timeout: Duration::from_secs(e.db_connect_timeout.unwrap_or(60)),
            db_lock_wait_timeout: Duration::from_secs(in_range(
                "DB_LOCK_WAIT_TIMEOUT",
                e.db_lock_wait_timeout,
                300,
                1,
                31_536_000,
            )?),
            backup_dir: PathBuf::from(e.backup_dir.unwrap_or_else(|| "/backups".into())),
            prefix,
            compression,
            passphrase: secret(
                "BACKUP_PASSPHRASE",
                e.backup_passphrase,
                e.backup_passphrase_file,
            )?,
            s3,
            offsite_timeout: Duration::from_secs(in_range(
                "BACKUP_OFFSITE_TIMEOUT",
                e.backup_offsite_timeout,
                60,
                1,
                86_400,
            )?),
            log: LogSettings {
                level: log_level(e.log_level)?,
                json: log_json,
            },
            schedule,
            retention,
            config_retention,
            full_retention,
            full_prefix,
            health,
            notify,
            metrics_listen,
            restore_stop_containers: e.restore_stop_containers.unwrap_or(true),
            restore_stop_project: e.restore_stop_project,
            restore_snapshot_keep_days,
            restore_definer: match e.restore_definer {
                None => restore::Definer::Keep,
                Some(v) => v.parse().map_err(|detail| ConfigError::Invalid {
                    name: "RESTORE_DEFINER",
                    detail,
                })?,
            },
            docker_host: None,
            hostname: None,
            config_archive,
            uploads_archive,
            binlog,
        })
    }
}

/// envy's type error ("invalid digit found in string while parsing value
/// '-1' provided by RETENTION_DAILY") as our own: the variable, the value,
/// and what it takes.
fn parse_error(e: envy::Error) -> ConfigError {
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

/// `LOG_LEVEL`: a level, or a tracing filter whose every level is one. A
/// typo (`verbose`, `wran`) would otherwise become a target name and
/// silently hide warnings.
fn log_level(value: Option<String>) -> Result<String, ConfigError> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let level = value.unwrap_or_else(|| "info".into());
    for directive in level.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let lvl = directive.rsplit_once('=').map_or(directive, |(_, l)| l);
        if !LEVELS.contains(&lvl.to_ascii_lowercase().as_str()) {
            return Err(ConfigError::Invalid {
                name: "LOG_LEVEL",
                detail: format!(
                    "{directive:?} is not a level: use error, warn, info, debug or trace (or a filter such as selmai_backup=debug)"
                ),
            });
        }
    }
    Ok(level)
}

/// `kind`'s schedule from its variable: the default when unset, `None` for `off`.
fn schedule(kind: Kind, value: Option<String>) -> Result<Option<Schedule>, ConfigError> {
    let text = value.unwrap_or_else(|| kind.default_schedule().to_owned());
    if matches!(
        text.trim().to_ascii_lowercase().as_str(),
        "off" | "never" | "disabled"
    ) {
        return Ok(None);
    }
    Schedule::parse(&text)
        .map(Some)
        .map_err(|detail| ConfigError::Invalid {
            name: kind.schedule_var(),
            detail,
        })
}

/// An `http(s)://` URL, kept as a secret (it often embeds a token).
fn http_url(name: &'static str, value: String) -> Result<Secret, ConfigError> {
    // The value is not repeated in the message: it may hold a token.
    match reqwest::Url::parse(&value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(Secret::new(value))
        }
        _ => Err(ConfigError::Invalid {
            name,
            detail: "not an http:// or https:// URL".into(),
        }),
    }
}

/// Check that `value` is a mail address (`a@b` or `Name <a@b>`).
fn mailbox(name: &'static str, value: &str) -> Result<(), ConfigError> {
    value
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| ConfigError::Invalid {
            name,
            detail: format!("{value:?} is not a mail address: {e}"),
        })
}

/// `S3_PART_SIZE_MB` in bytes, within what S3 accepts.
fn s3_part_size(mb: Option<u64>) -> Result<usize, ConfigError> {
    let mb = in_range(
        "S3_PART_SIZE_MB",
        mb,
        8,
        S3_MIN_PART_SIZE_MB,
        S3_MAX_PART_SIZE_MB,
    )?;
    usize::try_from(mb * 1024 * 1024).map_err(|_| ConfigError::Invalid {
        name: "S3_PART_SIZE_MB",
        detail: format!("{mb} MiB does not fit in memory on this platform"),
    })
}

/// `value` (or `default`) when within `min..=max`, else an error naming the range.
fn in_range<T>(
    name: &'static str,
    value: Option<T>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: PartialOrd + fmt::Display + Copy,
{
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(ConfigError::Invalid {
            name,
            detail: format!("{v}: use a value from {min} to {max} (default {default})"),
        });
    }
    Ok(v)
}

/// Resolve `NAME` / `NAME_FILE`: exactly one may be set; a file's trailing newline is trimmed.
fn secret(
    name: &'static str,
    value: Option<String>,
    file: Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::Ambiguous { name }),
        (Some(v), None) => Ok(Some(Secret::new(v))),
        (None, Some(path)) => {
            let raw = std::fs::read_to_string(&path).map_err(|source| ConfigError::SecretFile {
                name,
                path: path.clone(),
                source,
            })?;
            let trimmed = raw.strip_suffix('\n').unwrap_or(&raw);
            let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed);
            if trimmed.is_empty() {
                return Err(ConfigError::Invalid {
                    name,
                    detail: format!("{name}_FILE ({path}) is empty"),
                });
            }
            Ok(Some(Secret::new(trimmed.to_owned())))
        }
        (None, None) => Ok(None),
    }
}

/// A file-name prefix from `name`, or `default`: safe in a file name and a bucket key.
fn file_prefix(
    name: &'static str,
    value: Option<String>,
    default: &str,
) -> Result<String, ConfigError> {
    let prefix = value.unwrap_or_else(|| default.into());
    if prefix.is_empty()
        || !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        || prefix.starts_with('.')
    {
        return Err(ConfigError::Invalid {
            name,
            detail: format!(
                "{prefix:?}: use letters, digits, '_', '-' or '.', not starting with '.'"
            ),
        });
    }
    Ok(prefix)
}

/// Comma-separated paths; empty entries are dropped (an empty value archives nothing).
fn path_list(value: &str) -> Vec<PathBuf> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Comma-separated exclusions, matched against archive paths at any depth; `none`
/// archives everything (an empty value means "unset", so the default).
fn exclude_list(value: &str) -> Result<Vec<String>, ConfigError> {
    let mut out = Vec::new();
    if value.trim() == "none" {
        return Ok(out);
    }
    for p in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let p = p.trim_end_matches('/');
        if p.starts_with('/') || p.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(ConfigError::Invalid {
                name: "CONFIG_EXCLUDE",
                detail: format!(
                    "{p:?}: give relative paths as they appear in the archive, such as nginx/ssl"
                ),
            });
        }
        out.push(p.to_owned());
    }
    Ok(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn base() -> Vec<(&'static str, String)> {
        vec![
            ("DB_USER", "u".into()),
            ("DB_PASSWORD", "p".into()),
            ("PATH", "/bin".into()),
        ]
    }

    #[test]
    fn defaults() {
        let s = Settings::from_vars(base()).unwrap();
        let db = s.db().unwrap();
        assert_eq!(
            (db.host.as_str(), db.port, db.name.as_str()),
            ("db", 3306, "selmai")
        );
        assert_eq!(s.backup_dir, PathBuf::from("/backups"));
        assert_eq!(s.prefix, "selmai_backup");
        assert_eq!(
            s.compression,
            Compression::Gzip(encoding::DEFAULT_GZIP_LEVEL)
        );
        assert!(s.s3.is_none() && s.passphrase.is_none());
    }

    #[rstest]
    #[case("DB_PASWORD", "DB_PASSWORD")]
    #[case("BACKUP_COMPRESION", "BACKUP_COMPRESSION")]
    #[case("DB_NAMES", "DB_NAME")]
    fn misspelt_variable_is_an_error_with_a_hint(#[case] var: &str, #[case] hint: &str) {
        let mut v = base();
        v.push((var, "x".into()));
        let err = Settings::from_vars(v).unwrap_err().to_string();
        assert!(
            err.contains(var) && err.contains(&format!("did you mean {hint}")),
            "{err}"
        );
    }

    #[test]
    fn ignored_foreign_variable_is_accepted() {
        let mut v = base();
        v.push(("DB_ROOT_PASSWORD", "x".into()));
        assert!(Settings::from_vars(v.clone()).is_err());
        v.push(("BACKUP_IGNORE_ENV", "DB_ROOT_PASSWORD".into()));
        assert!(Settings::from_vars(v).is_ok());
    }

    #[rstest]
    #[case("DB_PORT", "abc")]
    #[case("DB_PORT", "70000")]
    #[case("BACKUP_COMPRESSION", "lz4")]
    #[case("BACKUP_COMPRESSION_LEVEL", "fast")]
    #[case("LOG_FORMAT", "xml")]
    #[case("BACKUP_PREFIX", "../x")]
    fn bad_values_are_rejected_naming_the_variable(#[case] var: &str, #[case] value: &str) {
        let mut v = base();
        v.push((var, value.into()));
        let err = Settings::from_vars(v).unwrap_err().to_string();
        assert!(err.contains(var), "{err}");
    }

    /// Each message names the variable and says what it takes, in words,
    /// never only the parser's own ("invalid digit found in string").
    #[rstest]
    #[case(
        "RETENTION_DAILY",
        "-1",
        "invalid value for RETENTION_DAILY: \"-1\" is not how many backups to keep"
    )]
    #[case(
        "DB_PORT",
        "abc",
        "invalid value for DB_PORT: \"abc\" is not a port number from 1 to 65535"
    )]
    #[case(
        "DB_CONNECT_TIMEOUT",
        "1m",
        "invalid value for DB_CONNECT_TIMEOUT: \"1m\" is not a whole number of seconds"
    )]
    #[case(
        "NOTIFY_ON_SUCCESS",
        "yes",
        "invalid value for NOTIFY_ON_SUCCESS: \"yes\" is not true or false"
    )]
    #[case(
        "LOG_LEVEL",
        "verbose",
        "invalid value for LOG_LEVEL: \"verbose\" is not a level"
    )]
    #[case(
        "LOG_LEVEL",
        "wran",
        "invalid value for LOG_LEVEL: \"wran\" is not a level"
    )]
    #[case(
        "LOG_LEVEL",
        "selmai_backup=dbug",
        "invalid value for LOG_LEVEL: \"selmai_backup=dbug\" is not a level"
    )]
    #[case(
        "S3_PART_SIZE_MB",
        "1",
        "invalid value for S3_PART_SIZE_MB: 1: use a value from 5 to 5120"
    )]
    fn bad_values_say_what_the_variable_takes(
        #[case] var: &str,
        #[case] value: &str,
        #[case] want: &str,
    ) {
        let mut v = base();
        v.push((var, value.into()));
        let err = Settings::from_vars(v).unwrap_err().to_string();
        assert!(err.starts_with(want), "{err}");
        assert!(!err.contains("invalid digit"), "{err}");
    }

    #[rstest]
    #[case("debug")]
    #[case("WARN")]
    #[case("info,selmai_backup=debug")]
    fn good_log_levels_are_accepted(#[case] level: &str) {
        let mut v = base();
        v.push(("LOG_LEVEL", level.into()));
        assert_eq!(Settings::from_vars(v).unwrap().log.level, level);
    }

    #[test]
    fn secret_file_is_read_and_trimmed_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let path = f.display().to_string();
        let s = Settings::from_vars([
            ("DB_USER", "u".to_string()),
            ("DB_PASSWORD_FILE", path.clone()),
        ])
        .unwrap();
        assert_eq!(s.db().unwrap().password.expose(), "s3cret");

        let both =
            Settings::from_vars([("DB_PASSWORD", "a".to_string()), ("DB_PASSWORD_FILE", path)]);
        assert!(matches!(
            both,
            Err(ConfigError::Ambiguous {
                name: "DB_PASSWORD"
            })
        ));

        let missing = Settings::from_vars([("DB_PASSWORD_FILE", "/nonexistent/pw".to_string())]);
        let err = missing.unwrap_err().to_string();
        assert!(
            err.contains("DB_PASSWORD_FILE") && err.contains("/nonexistent/pw"),
            "{err}"
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let s = Settings::from_vars([
            ("DB_USER", "u"),
            ("DB_PASSWORD", "canary-7f3a"),
            ("BACKUP_PASSPHRASE", "canary-7f3a"),
        ])
        .unwrap();
        let dbg = format!("{s:?} {:?}", s.db().unwrap());
        assert!(!dbg.contains("canary-7f3a"), "{dbg}");
        assert_eq!(s.secrets().len(), 2);
    }

    fn with(extra: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut v: Vec<(String, String)> =
            base().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        v.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Settings::from_vars(v)
    }

    #[test]
    fn daemon_defaults() {
        let s = with(&[]).unwrap();
        assert_eq!(s.schedule.tz, Tz::UTC);
        assert_eq!(s.schedule.db.as_ref().unwrap().as_str(), "0 2 * * *");
        assert_eq!(s.schedule.config.as_ref().unwrap().as_str(), "0 3 * * 0");
        assert_eq!(s.schedule.full.as_ref().unwrap().as_str(), "0 4 1 * *");
        assert_eq!(s.schedule.catch_up, CatchUp::Auto);
        assert_eq!(s.retention, Policy::default());
        assert_eq!(
            (s.retention.daily, s.retention.weekly, s.retention.monthly),
            (7, 4, 3)
        );
        assert_eq!(s.health.max_age, Duration::from_secs(26 * 3600));
        assert_eq!(s.health.min_free_bytes, None);
        assert!(!s.notify.on_success);
        assert!(s.notify.webhook.is_none() && s.notify.ping.is_none() && s.notify.smtp.is_none());
        assert_eq!(s.notify.webhook_format, WebhookFormat::Json);
        assert_eq!(s.metrics_listen, None);
    }

    #[test]
    fn daemon_variables_are_read() {
        let s = with(&[
            ("TZ", "Europe/Paris"),
            ("BACKUP_SCHEDULE", "30 1 * * *"),
            ("CONFIG_SCHEDULE", "off"),
            ("FULL_SCHEDULE", "0 5 1 */2 *"),
            ("BACKUP_CATCH_UP", "never"),
            ("RETENTION_DAILY", "14"),
            ("RETENTION_WEEKLY", "0"),
            ("RETENTION_MONTHLY", "12"),
            ("HEALTH_MAX_AGE_HOURS", "50"),
            ("HEALTH_MIN_FREE_MB", "2048"),
            ("NOTIFY_ON_SUCCESS", "true"),
            (
                "NOTIFY_WEBHOOK_URL",
                "https://hooks.slack.com/services/T0/B0/canary-7f3a",
            ),
            ("NOTIFY_WEBHOOK_FORMAT", "slack"),
            ("NOTIFY_PING_URL", "https://hc-ping.com/canary-7f3a"),
            ("NOTIFY_SMTP_HOST", "smtp.example.org"),
            ("NOTIFY_SMTP_TLS", "tls"),
            ("NOTIFY_SMTP_USER", "backup"),
            ("NOTIFY_SMTP_PASSWORD", "canary-7f3a"),
            ("NOTIFY_SMTP_FROM", "Backups <backup@example.org>"),
            ("NOTIFY_SMTP_TO", "admin@example.org, ops@example.org"),
            ("METRICS_LISTEN", "0.0.0.0:9090"),
        ])
        .unwrap();
        assert_eq!(s.schedule.tz, chrono_tz::Europe::Paris);
        assert_eq!(s.schedule.of(Kind::Db).unwrap().as_str(), "30 1 * * *");
        assert!(s.schedule.of(Kind::Config).is_none());
        assert_eq!(s.schedule.of(Kind::Full).unwrap().as_str(), "0 5 1 */2 *");
        assert_eq!(s.schedule.catch_up, CatchUp::Never);
        assert_eq!(
            s.retention,
            Policy {
                daily: 14,
                weekly: 0,
                monthly: 12
            }
        );
        assert_eq!(s.health.max_age, Duration::from_secs(50 * 3600));
        assert_eq!(s.health.min_free_bytes, Some(2_048_000_000));
        assert!(s.notify.on_success);
        assert_eq!(s.notify.webhook_format, WebhookFormat::Slack);
        let smtp = s.notify.smtp.as_ref().unwrap();
        assert_eq!((smtp.port, smtp.tls), (465, SmtpTls::Tls));
        assert_eq!(smtp.to, ["admin@example.org", "ops@example.org"]);
        assert_eq!(s.metrics_listen, Some("0.0.0.0:9090".parse().unwrap()));
        // The URLs carry tokens and the password is one: all redacted.
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("canary-7f3a"), "{dbg}");
        assert_eq!(s.secrets().len(), 4);
    }

    #[rstest]
    #[case("NOTIFY_SMTP_TLS", "none", 25)]
    #[case("NOTIFY_SMTP_TLS", "starttls", 587)]
    #[case("NOTIFY_SMTP_PORT", "2525", 2525)]
    fn smtp_port_follows_the_tls_mode(#[case] var: &str, #[case] value: &str, #[case] port: u16) {
        let s = with(&[
            ("NOTIFY_SMTP_HOST", "relay"),
            ("NOTIFY_SMTP_FROM", "a@b.c"),
            ("NOTIFY_SMTP_TO", "d@e.f"),
            (var, value),
        ])
        .unwrap();
        assert_eq!(s.notify.smtp.unwrap().port, port);
    }

    #[rstest]
    #[case("TZ", "Mars/Olympus", "IANA name")]
    #[case("BACKUP_SCHEDULE", "0 2 * *", "use 5")]
    #[case("BACKUP_SCHEDULE", "0 0 2 * * *", "6 fields")]
    #[case("CONFIG_SCHEDULE", "0 25 * * *", "not a cron expression")]
    #[case("BACKUP_SCHEDULE", "0 2 * 13 *", "month 1-12")]
    #[case("BACKUP_SCHEDULE", "61 2 * * *", "e.g. \"0 2 * * *\"")]
    #[case("FULL_SCHEDULE", "0 0 31 2 *", "never matches")]
    #[case("BACKUP_CATCH_UP", "sometimes", "auto, always or never")]
    #[case("RETENTION_DAILY", "-1", "RETENTION_DAILY")]
    #[case("RETENTION_WEEKLY", "four", "RETENTION_WEEKLY")]
    #[case("RETENTION_MONTHLY", "1.5", "RETENTION_MONTHLY")]
    #[case("HEALTH_MAX_AGE_HOURS", "0", "in hours")]
    #[case("HEALTH_MAX_AGE_HOURS", "a day", "HEALTH_MAX_AGE_HOURS")]
    #[case("HEALTH_MIN_FREE_MB", "1G", "HEALTH_MIN_FREE_MB")]
    #[case("NOTIFY_ON_SUCCESS", "yes", "NOTIFY_ON_SUCCESS")]
    #[case("NOTIFY_WEBHOOK_URL", "hooks.slack.com/x", "http")]
    #[case("NOTIFY_WEBHOOK_URL", "ftp://x/y", "http")]
    #[case("NOTIFY_WEBHOOK_FORMAT", "teams", "json, slack or ntfy")]
    #[case("NOTIFY_PING_URL", "not a url", "http")]
    #[case("NOTIFY_SMTP_PORT", "smtp", "NOTIFY_SMTP_PORT")]
    #[case("NOTIFY_SMTP_TO", "admin@example.org", "without NOTIFY_SMTP_HOST")]
    #[case("METRICS_LISTEN", "9090", "address and port")]
    #[case("METRICS_LISTEN", "localhost:9090", "address and port")]
    fn bad_daemon_values_are_rejected_naming_the_variable(
        #[case] var: &str,
        #[case] value: &str,
        #[case] want: &str,
    ) {
        let err = with(&[(var, value)]).unwrap_err().to_string();
        assert!(err.contains(var) && err.contains(want), "{err}");
    }

    #[rstest]
    #[case(&[("NOTIFY_SMTP_TO", "a@b.c")], "NOTIFY_SMTP_FROM")]
    #[case(&[("NOTIFY_SMTP_FROM", "a@b.c")], "NOTIFY_SMTP_TO")]
    #[case(&[("NOTIFY_SMTP_FROM", "not an address"), ("NOTIFY_SMTP_TO", "a@b.c")], "NOTIFY_SMTP_FROM")]
    #[case(&[("NOTIFY_SMTP_FROM", "a@b.c"), ("NOTIFY_SMTP_TO", "a@b.c, nope")], "NOTIFY_SMTP_TO")]
    #[case(&[("NOTIFY_SMTP_FROM", "a@b.c"), ("NOTIFY_SMTP_TO", "a@b.c"), ("NOTIFY_SMTP_TLS", "maybe")], "NOTIFY_SMTP_TLS")]
    #[case(&[("NOTIFY_SMTP_FROM", "a@b.c"), ("NOTIFY_SMTP_TO", "a@b.c"), ("NOTIFY_SMTP_PASSWORD", "p")], "NOTIFY_SMTP_USER")]
    fn incomplete_smtp_settings_name_what_is_missing(
        #[case] extra: &[(&str, &str)],
        #[case] var: &str,
    ) {
        let mut v = vec![("NOTIFY_SMTP_HOST", "relay")];
        v.extend_from_slice(extra);
        let err = with(&v).unwrap_err().to_string();
        assert!(err.contains(var), "{err}");
    }

    #[rstest]
    #[case("FULL_PREFIX", "selmai_backup", "BACKUP_PREFIX too")]
    #[case("FULL_PREFIX", "selmai_config", "CONFIG_PREFIX too")]
    #[case("UPLOADS_PREFIX", "selmai_full", "UPLOADS_PREFIX")]
    #[case("FULL_PREFIX", "selmai_prerestore", "reserved")]
    fn every_kind_has_its_own_prefix(#[case] var: &str, #[case] value: &str, #[case] want: &str) {
        let err = with(&[(var, value)]).unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }

    #[test]
    fn full_and_config_retention_are_their_own() {
        let s = with(&[]).unwrap();
        assert_eq!(s.full_prefix, "selmai_full");
        assert_eq!(
            (
                s.full_retention.daily,
                s.full_retention.weekly,
                s.full_retention.monthly
            ),
            (0, 0, 3)
        );
        assert_eq!(
            (
                s.config_retention.daily,
                s.config_retention.weekly,
                s.config_retention.monthly
            ),
            (0, 4, 0)
        );
        let s = with(&[
            ("RETENTION_FULL_MONTHLY", "12"),
            ("RETENTION_CONFIG_WEEKLY", "8"),
            ("RETENTION_MONTHLY", "1"),
        ])
        .unwrap();
        assert_eq!(
            (
                s.full_retention.monthly,
                s.config_retention.weekly,
                s.retention.monthly
            ),
            (12, 8, 1)
        );
        assert_eq!(s.schedule.of(Kind::Uploads).unwrap().as_str(), "30 3 * * *");
    }

    #[test]
    fn safety_snapshots_keep_their_own_prefix_and_at_least_a_day() {
        assert_eq!(with(&[]).unwrap().restore_snapshot_keep_days, 7);
        let s = with(&[("RESTORE_SNAPSHOT_KEEP_DAYS", "30")]).unwrap();
        assert_eq!(s.restore_snapshot_keep_days, 30);
        let err = with(&[("RESTORE_SNAPSHOT_KEEP_DAYS", "0")]).unwrap_err();
        assert!(
            err.to_string().contains("RESTORE_SNAPSHOT_KEEP_DAYS"),
            "{err}"
        );
        let err = with(&[("BACKUP_PREFIX", SNAPSHOT_PREFIX)]).unwrap_err();
        assert!(err.to_string().contains("reserved"), "{err}");
        let err = with(&[("RESTORE_DEFINER", "drop")]).unwrap_err();
        assert!(err.to_string().contains("RESTORE_DEFINER"), "{err}");
        assert_eq!(with(&[]).unwrap().restore_definer, restore::Definer::Keep);
    }

    #[test]
    fn smtp_password_file_is_a_secret_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "mail-secret\n").unwrap();
        let path = f.display().to_string();
        let s = with(&[
            ("NOTIFY_SMTP_HOST", "relay"),
            ("NOTIFY_SMTP_FROM", "a@b.c"),
            ("NOTIFY_SMTP_TO", "d@e.f"),
            ("NOTIFY_SMTP_USER", "u"),
            ("NOTIFY_SMTP_PASSWORD_FILE", &path),
        ])
        .unwrap();
        let pw = s.notify.smtp.unwrap().password.unwrap();
        assert_eq!(pw.expose(), "mail-secret");
        let both = with(&[
            ("NOTIFY_SMTP_PASSWORD", "x"),
            ("NOTIFY_SMTP_PASSWORD_FILE", &path),
        ]);
        assert!(matches!(
            both,
            Err(ConfigError::Ambiguous {
                name: "NOTIFY_SMTP_PASSWORD"
            })
        ));
    }

    #[rstest]
    #[case("BACKUP_SCHEDULE")]
    #[case("CONFIG_SCHEDULE")]
    #[case("UPLOADS_SCHEDULE")]
    #[case("FULL_SCHEDULE")]
    #[case("DRILL_SCHEDULE")]
    fn schedules_can_be_turned_off(#[case] var: &str) {
        for off in ["off", "OFF", "never", "disabled"] {
            let s = with(&[(var, off)]).unwrap();
            let kind = Kind::ALL
                .into_iter()
                .find(|k| k.schedule_var() == var)
                .unwrap();
            assert!(s.schedule.of(kind).is_none());
        }
    }

    #[rstest]
    #[case("CONFIG_SCHEDUEL", "CONFIG_SCHEDULE")]
    #[case("FULL_SCHEDULES", "FULL_SCHEDULE")]
    #[case("METRICS_LISTENER", "METRICS_LISTEN")]
    #[case("RETENTION_DAYS", "RETENTION_DAILY")]
    #[case("NOTIFY_WEBHOK_URL", "NOTIFY_WEBHOOK_URL")]
    #[case("DRILL_SHEDULE", "DRILL_SCHEDULE")]
    fn misspelt_daemon_variables_are_errors(#[case] var: &str, #[case] hint: &str) {
        let err = with(&[(var, "x")]).unwrap_err().to_string();
        assert!(
            err.contains(var) && err.contains(&format!("did you mean {hint}")),
            "{err}"
        );
    }

    #[rstest]
    #[case("TERM", "xterm")]
    #[case("TMPDIR", "/tmp")]
    #[case("TZDIR", "/usr/share/zoneinfo")]
    #[case("T", "x")]
    fn tz_is_exact_other_t_variables_are_not_ours(#[case] var: &str, #[case] value: &str) {
        with(&[(var, value), ("TZ", "UTC")]).unwrap();
    }

    #[test]
    fn empty_tz_means_utc() {
        assert_eq!(with(&[("TZ", "")]).unwrap().schedule.tz, Tz::UTC);
    }

    #[test]
    fn s3_defaults_and_tuning() {
        let mut v = base();
        v.push(("S3_BUCKET", "b".into()));
        v.push(("S3_PREFIX", "db/prod".into()));
        let s3 = Settings::from_vars(v.clone()).unwrap().s3.unwrap();
        assert_eq!(s3.prefix, "db/prod/");
        assert_eq!(s3.region, "us-east-1");
        assert_eq!(s3.part_size, 8 * 1024 * 1024);
        assert_eq!((s3.concurrency, s3.retries), (2, 5));
        assert_eq!(s3.request_timeout, Duration::from_secs(120));

        v.extend([
            ("S3_PART_SIZE_MB", "5".into()),
            ("S3_CONCURRENCY", "4".into()),
            ("S3_RETRIES", "0".into()),
            ("S3_REQUEST_TIMEOUT", "30".into()),
        ]);
        let s3 = Settings::from_vars(v).unwrap().s3.unwrap();
        assert_eq!(s3.part_size, 5 * 1024 * 1024);
        assert_eq!((s3.concurrency, s3.retries), (4, 0));
        assert_eq!(s3.request_timeout, Duration::from_secs(30));
    }

    #[rstest]
    #[case("S3_PART_SIZE_MB", "4")]
    #[case("S3_PART_SIZE_MB", "5121")]
    #[case("S3_CONCURRENCY", "0")]
    #[case("S3_CONCURRENCY", "17")]
    #[case("S3_RETRIES", "21")]
    #[case("S3_REQUEST_TIMEOUT", "0")]
    #[case("S3_PATH_STYLE", "maybe")]
    fn bad_s3_values_are_rejected_naming_the_variable(#[case] var: &str, #[case] value: &str) {
        let mut v = base();
        v.push(("S3_BUCKET", "b".into()));
        v.push((var, value.into()));
        let err = Settings::from_vars(v).unwrap_err().to_string();
        assert!(
            err.contains(var) || err.contains(&var.to_lowercase()),
            "{err}"
        );
    }

    #[test]
    fn missing_credentials_name_the_variable() {
        let s = Settings::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert!(s.db().unwrap_err().to_string().contains("DB_USER"));
    }
}

#[cfg(test)]
mod snapshot {
    use super::*;

    /// The effective configuration of a full set of variables, as `Debug`
    /// prints it: every setting visible, every secret redacted. Update with
    /// SELMAI_UPDATE_SNAPSHOTS=1 after reviewing the change.
    #[test]
    fn redacted_effective_config_matches_its_snapshot() {
        let canary = "canary-secret-4d1f";
        let s = Settings::from_vars([
            ("DB_HOST", "db"),
            ("DB_USER", "selmai"),
            ("DB_PASSWORD", canary),
            ("BACKUP_PASSPHRASE", canary),
            ("BACKUP_COMPRESSION", "zstd"),
            ("S3_BUCKET", "backups"),
            ("S3_ENDPOINT", "https://s3.fr-par.scw.cloud"),
            ("S3_REGION", "fr-par"),
            ("S3_ACCESS_KEY_ID", "SCWKEY"),
            ("S3_SECRET_ACCESS_KEY", canary),
            ("TZ", "Europe/Paris"),
            ("NOTIFY_WEBHOOK_URL", "https://hooks.example.org/T0K3N"),
            ("NOTIFY_SMTP_HOST", "smtp.example.org"),
            ("NOTIFY_SMTP_USER", "alerts"),
            ("NOTIFY_SMTP_PASSWORD", canary),
            ("NOTIFY_SMTP_FROM", "backup@example.org"),
            ("NOTIFY_SMTP_TO", "admin@example.org"),
        ])
        .unwrap();
        let text = format!("{s:#?}\n");
        assert!(
            !text.contains(canary) && !text.contains("T0K3N"),
            "a secret leaked:\n{text}"
        );
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/effective_config.txt"
        );
        if std::env::var_os("SELMAI_UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(path, &text).unwrap();
        }
        let want = std::fs::read_to_string(path)
            .expect("snapshot missing: run with SELMAI_UPDATE_SNAPSHOTS=1");
        assert_eq!(
            text, want,
            "the effective configuration changed; review and update the snapshot"
        );
    }
}
