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
//! Where: step 1 and the names we own in `config/env.rs`; step 2 in
//! `config/convert.rs`, one function per section; the value parsers the
//! sections share in `config/values.rs`; the value types other modules
//! import (schedules, retention policy, alert formats, binlog and restore
//! options) in small files beside them. This file holds the typed
//! sections and [`Settings`].
//!
//! Secrets are [`Secret`], whose `Debug` and `Display` print `***`. Tests
//! build settings from a map ([`Settings::from_vars`]), never by mutating the
//! process environment. This module does not open connections or files other
//! than the `*_FILE` secrets.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

pub mod binlog;
mod convert;
pub mod encoding;
mod env;
pub mod notify;
pub mod restore;
pub mod retention;
pub mod schedule;
mod values;

pub use crate::secret::Secret;
use encoding::Compression;
pub use env::{EnvConfig, EXACT, KNOWN, PREFIXES};
use notify::{SmtpTls, WebhookFormat};
use retention::Policy;
use schedule::{CatchUp, Kind, Schedule};

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
    /// An SFTP server whose key is not pinned: never connected to.
    #[error("SFTP_HOST is set but neither SFTP_HOST_KEY nor SFTP_KNOWN_HOSTS is: no connection is made to a server whose key is not pinned. Print its key fingerprints with `ssh-keyscan -p {port} {host} | ssh-keygen -lf -`, check one with the server's owner, then set SFTP_HOST_KEY=SHA256:... (or SFTP_KNOWN_HOSTS to a known_hosts file)")]
    Unpinned {
        /// `SFTP_HOST`.
        host: String,
        /// `SFTP_PORT`.
        port: u16,
    },
    /// envy's own parse error (wrong type).
    #[error("{0}")]
    Parse(String),
}

/// File-name prefix of safety snapshots.
pub const SNAPSHOT_PREFIX: &str = "selmai_prerestore";

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

/// The SFTP server, when one is configured (`SFTP_HOST`).
#[derive(Debug, Clone)]
pub struct SftpSettings {
    /// Host name or address (`SFTP_HOST`).
    pub host: String,
    /// Port (`SFTP_PORT`, default 22).
    pub port: u16,
    /// Account (`SFTP_USER`).
    pub user: String,
    /// Remote directory (`SFTP_PATH`), created when missing; relative to
    /// the account's home unless it starts with `/`.
    pub path: String,
    /// Private key in OpenSSH format, as read from `SFTP_KEY_FILE`.
    pub key: Option<Secret>,
    /// Where the key came from, for messages.
    pub key_file: Option<String>,
    /// The key's passphrase (`SFTP_KEY_PASSPHRASE` or `_FILE`).
    pub key_passphrase: Option<Secret>,
    /// Password (`SFTP_PASSWORD` or `_FILE`), tried when there is no key or
    /// the key is refused.
    pub password: Option<Secret>,
    /// The server's pinned key: a known_hosts file (`SFTP_KNOWN_HOSTS`)
    /// or one key line or `SHA256:` fingerprint (`SFTP_HOST_KEY`).
    pub host_key: HostKeyPin,
    /// Writes (and reads) in flight at once on the connection
    /// (`SFTP_CONCURRENCY`, default 16).
    pub concurrency: usize,
    /// Extra attempts after a dropped connection or a timeout
    /// (`SFTP_RETRIES`, default 5).
    pub retries: u32,
    /// Time limit of one request, the connection included (`SFTP_TIMEOUT`
    /// in seconds, default 30).
    pub timeout: Duration,
    /// First back-off delay, doubled at each retry (1 s; not a variable:
    /// tests shorten it).
    pub retry_delay: Duration,
}

/// How the SFTP server's identity is pinned: there is no unpinned mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyPin {
    /// A known_hosts file (`SFTP_KNOWN_HOSTS`), read at each connection.
    KnownHosts(PathBuf),
    /// One public key line, `TYPE BASE64 [comment]` (`SFTP_HOST_KEY`).
    Key(String),
    /// A `SHA256:` fingerprint as `ssh-keygen -l` prints it (`SFTP_HOST_KEY`).
    Fingerprint(String),
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
    /// The SFTP server, when `SFTP_HOST` is set.
    pub sftp: Option<SftpSettings>,
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
        let env = env::read(&all)?;
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

    /// Whether any off-site target (bucket, SFTP server) is configured.
    pub fn has_offsite(&self) -> bool {
        self.s3.is_some() || self.sftp.is_some()
    }

    /// Every secret value configured, for redaction checks.
    pub fn secrets(&self) -> Vec<&Secret> {
        let mut v: Vec<&Secret> = Vec::new();
        v.extend(self.db_password.as_ref());
        v.extend(self.passphrase.as_ref());
        if let Some(s3) = &self.s3 {
            v.extend(s3.secret_access_key.as_ref());
        }
        if let Some(sftp) = &self.sftp {
            v.extend(sftp.key.as_ref());
            v.extend(sftp.key_passphrase.as_ref());
            v.extend(sftp.password.as_ref());
        }
        v.extend(self.notify.webhook.as_ref());
        v.extend(self.notify.ping.as_ref());
        if let Some(smtp) = &self.notify.smtp {
            v.extend(smtp.password.as_ref());
        }
        v
    }
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

    const FP: &str = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";

    fn sftp_vars(extra: &[(&'static str, &str)]) -> Result<Settings, ConfigError> {
        let mut v = vec![
            ("SFTP_HOST", "nas.example.org"),
            ("SFTP_USER", "backup"),
            ("SFTP_PATH", "backups/selmai/"),
            ("SFTP_PASSWORD", "pw"),
            ("SFTP_HOST_KEY", FP),
        ];
        for (k, val) in extra {
            v.retain(|(n, _)| n != k);
            if !val.is_empty() {
                v.push((k, val));
            }
        }
        with(&v)
    }

    #[test]
    fn sftp_defaults_and_pins() {
        let s = sftp_vars(&[]).unwrap().sftp.unwrap();
        assert_eq!((s.port, s.path.as_str()), (22, "backups/selmai"));
        assert_eq!((s.concurrency, s.retries), (16, 5));
        assert_eq!(s.timeout, Duration::from_secs(30));
        assert_eq!(s.host_key, HostKeyPin::Fingerprint(FP.into()));
        let line = "nas.example.org ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ comment";
        let s = sftp_vars(&[("SFTP_HOST_KEY", line)]).unwrap().sftp.unwrap();
        assert_eq!(
            s.host_key,
            HostKeyPin::Key(
                "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ"
                    .into()
            )
        );
        assert!(with(&[]).unwrap().sftp.is_none());
    }

    #[rstest]
    #[case::unpinned(&[("SFTP_HOST_KEY", "")], "ssh-keyscan -p 22 nas.example.org | ssh-keygen -lf -")]
    #[case::no_login(&[("SFTP_PASSWORD", "")], "SFTP_KEY_FILE is not set")]
    #[case::no_user(&[("SFTP_USER", "")], "SFTP_USER is not set")]
    #[case::no_path(&[("SFTP_PATH", "")], "SFTP_PATH is not set")]
    #[case::bad_fingerprint(&[("SFTP_HOST_KEY", "SHA256:abc")], "not a SHA256 fingerprint")]
    #[case::not_a_key(&[("SFTP_HOST_KEY", "hello world")], "names no key type")]
    #[case::both_pins(&[("SFTP_KNOWN_HOSTS", "/etc/hosts")], "pin the server's key one way")]
    #[case::missing_known_hosts(&[("SFTP_HOST_KEY", ""), ("SFTP_KNOWN_HOSTS", "/nonexistent/kh")], "cannot read /nonexistent/kh")]
    #[case::unreadable_key(&[("SFTP_KEY_FILE", "/nonexistent/id_ed25519")], "cannot read /nonexistent/id_ed25519")]
    #[case::passphrase_alone(&[("SFTP_KEY_PASSPHRASE", "pp")], "set without SFTP_KEY_FILE")]
    #[case::port_zero(&[("SFTP_PORT", "0")], "SFTP_PORT")]
    #[case::concurrency(&[("SFTP_CONCURRENCY", "0")], "SFTP_CONCURRENCY")]
    fn sftp_mistakes_are_refused_at_start(
        #[case] change: &[(&'static str, &str)],
        #[case] says: &str,
    ) {
        let e = sftp_vars(change).unwrap_err().to_string();
        assert!(e.contains(says), "{e}");
    }

    #[test]
    fn sftp_variables_without_a_host_are_refused() {
        let e = with(&[("SFTP_USER", "backup")]).unwrap_err().to_string();
        assert!(
            e.contains("SFTP_USER") && e.contains("SFTP_HOST is not set"),
            "{e}"
        );
        // Tuning is checked without a host too.
        assert!(with(&[("SFTP_RETRIES", "99")]).is_err());
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
            ("SFTP_HOST", "backup-server"),
            ("SFTP_USER", "backup-user"),
            ("SFTP_PATH", "backups/selmai"),
            ("SFTP_PASSWORD", canary),
            (
                "SFTP_HOST_KEY",
                "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            ),
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
