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
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::codec::Compression;

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
];

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

/// A secret value; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The value itself, for the one place that must use it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

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
    log_level: Option<String>,
    log_format: Option<String>,
    restore_stop_containers: Option<bool>,
    restore_stop_project: Option<String>,
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
    "LOG_LEVEL",
    "LOG_FORMAT",
    "RESTORE_STOP_CONTAINERS",
    "RESTORE_STOP_PROJECT",
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
}

/// Log output settings.
#[derive(Debug, Clone)]
pub struct LogSettings {
    /// A tracing filter directive (`LOG_LEVEL`, default `info`).
    pub level: String,
    /// JSON lines instead of human-readable text (`LOG_FORMAT=json`).
    pub json: bool,
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
    /// Logging.
    pub log: LogSettings,
    /// Stop the labelled containers during a restore (`RESTORE_STOP_CONTAINERS`, default true).
    pub restore_stop_containers: bool,
    /// Compose project whose containers are stopped (`RESTORE_STOP_PROJECT`;
    /// default: the project of the container we run in).
    pub restore_stop_project: Option<String>,
    /// The Docker engine (`DOCKER_HOST`, Docker's own variable; default the socket).
    pub docker_host: Option<String>,
    /// Our host name (`HOSTNAME`): in a container, its short id.
    pub hostname: Option<String>,
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
        let env: EnvConfig =
            envy::from_iter(ours).map_err(|e| ConfigError::Parse(e.to_string()))?;
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
        let prefix = e.backup_prefix.unwrap_or_else(|| "selmai_backup".into());
        if prefix.is_empty()
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            || prefix.starts_with('.')
        {
            return Err(ConfigError::Invalid {
                name: "BACKUP_PREFIX",
                detail: format!(
                    "{prefix:?}: use letters, digits, '_', '-' or '.', not starting with '.'"
                ),
            });
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
            None => None,
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
                })
            }
        };
        Ok(Settings {
            db_host: e.db_host.unwrap_or_else(|| "db".into()),
            db_port: e.db_port.unwrap_or(3306),
            db_user: e.db_user,
            db_password: secret("DB_PASSWORD", e.db_password, e.db_password_file)?,
            db_name: e.db_name.unwrap_or_else(|| "selmai".into()),
            db_connect_timeout: Duration::from_secs(e.db_connect_timeout.unwrap_or(60)),
            backup_dir: PathBuf::from(e.backup_dir.unwrap_or_else(|| "/backups".into())),
            prefix,
            compression,
            passphrase: secret(
                "BACKUP_PASSPHRASE",
                e.backup_passphrase,
                e.backup_passphrase_file,
            )?,
            s3,
            log: LogSettings {
                level: e.log_level.unwrap_or_else(|| "info".into()),
                json: log_json,
            },
            restore_stop_containers: e.restore_stop_containers.unwrap_or(true),
            restore_stop_project: e.restore_stop_project,
            docker_host: None,
            hostname: None,
        })
    }
}

/// Resolve `NAME` / `NAME_FILE`: exactly one may be set; a file's trailing newline is trimmed.
fn secret(
    name: &'static str,
    value: Option<String>,
    file: Option<String>,
) -> Result<Option<Secret>, ConfigError> {
    match (value, file) {
        (Some(_), Some(_)) => Err(ConfigError::Ambiguous { name }),
        (Some(v), None) => Ok(Some(Secret(v))),
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
            Ok(Some(Secret(trimmed.to_owned())))
        }
        (None, None) => Ok(None),
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
        assert_eq!(s.compression, Compression::Gzip(6));
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

    #[test]
    fn missing_credentials_name_the_variable() {
        let s = Settings::from_vars(Vec::<(String, String)>::new()).unwrap();
        assert!(s.db().unwrap_err().to_string().contains("DB_USER"));
    }
}
