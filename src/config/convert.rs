//! Step 2 of the configuration: [`EnvConfig`] to typed [`Settings`], one
//! conversion per section.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use chrono_tz::Tz;

use super::encoding::Compression;
use super::notify::{SmtpTls, WebhookFormat};
use super::retention::Policy;
use super::schedule::{CatchUp, Kind};
use super::values::{
    exclude_list, file_prefix, http_url, in_range, log_level, mailbox, path_list, s3_part_size,
    schedule, secret,
};
use super::{
    binlog, restore, ArchiveSettings, ConfigError, EnvConfig, HealthSettings, HostKeyPin,
    LogSettings, NotifySettings, S3Settings, ScheduleSettings, Settings, SftpSettings,
    SmtpSettings, SNAPSHOT_PREFIX,
};

impl TryFrom<EnvConfig> for Settings {
    type Error = ConfigError;

    fn try_from(mut e: EnvConfig) -> Result<Self, ConfigError> {
        let compression = Compression::parse(
            e.backup_compression.as_deref().unwrap_or("gzip"),
            e.backup_compression_level,
        )
        .map_err(|detail| ConfigError::Invalid {
            name: "BACKUP_COMPRESSION",
            detail,
        })?;
        let (prefix, config_archive, uploads_archive, full_prefix) = kinds(&mut e)?;
        let log = log(&mut e)?;
        let s3 = s3(&mut e)?;
        let sftp = sftp(&mut e)?;
        let schedule = schedules(&mut e)?;
        let (retention, config_retention, full_retention) = retention(&mut e);
        let restore_snapshot_keep_days = e.restore_snapshot_keep_days.unwrap_or(7);
        if restore_snapshot_keep_days == 0 {
            return Err(ConfigError::Invalid {
                name: "RESTORE_SNAPSHOT_KEEP_DAYS",
                detail: "0 would delete the snapshot that undoes the restore just made: use 1 or more, or restore with --no-safety-snapshot".into(),
            });
        }
        let health = health(&mut e)?;
        let binlog = binlog_archive(&mut e)?;
        let notify = notify(&mut e)?;
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
            sftp,
            offsite_timeout: Duration::from_secs(in_range(
                "BACKUP_OFFSITE_TIMEOUT",
                e.backup_offsite_timeout,
                60,
                1,
                86_400,
            )?),
            log,
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

/// The file-name prefixes of the four kinds of backup, each its own and
/// none the safety snapshots' (retention lists backups by prefix).
fn kinds(
    e: &mut EnvConfig,
) -> Result<(String, ArchiveSettings, ArchiveSettings, String), ConfigError> {
    let prefix = file_prefix("BACKUP_PREFIX", e.backup_prefix.take(), "selmai_backup")?;
    let config_archive = ArchiveSettings {
        prefix: file_prefix("CONFIG_PREFIX", e.config_prefix.take(), "selmai_config")?,
        paths: path_list(e.config_paths.as_deref().unwrap_or("/config")),
        exclude: exclude_list(e.config_exclude.as_deref().unwrap_or("nginx/ssl"))?,
    };
    let uploads_archive = ArchiveSettings {
        prefix: file_prefix("UPLOADS_PREFIX", e.uploads_prefix.take(), "selmai_uploads")?,
        paths: path_list(e.uploads_paths.as_deref().unwrap_or("/data/uploads")),
        exclude: Vec::new(),
    };
    let full_prefix = file_prefix("FULL_PREFIX", e.full_prefix.take(), "selmai_full")?;
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
    Ok((prefix, config_archive, uploads_archive, full_prefix))
}

/// `LOG_LEVEL` and `LOG_FORMAT`.
fn log(e: &mut EnvConfig) -> Result<LogSettings, ConfigError> {
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
    Ok(LogSettings {
        level: log_level(e.log_level.take())?,
        json: log_json,
    })
}

/// The SFTP server, when `SFTP_HOST` is set. Without it, any other
/// `SFTP_*` variable is an error (a half-configured server must not look
/// like a configured one); its tuning is checked either way.
fn sftp(e: &mut EnvConfig) -> Result<Option<SftpSettings>, ConfigError> {
    let concurrency = in_range("SFTP_CONCURRENCY", e.sftp_concurrency, 16, 1, 64)?;
    let retries = in_range("SFTP_RETRIES", e.sftp_retries, 5, 0, 20)?;
    let timeout = in_range("SFTP_TIMEOUT", e.sftp_timeout, 30, 1, 3600)?;
    let Some(host) = e.sftp_host.take().filter(|h| !h.trim().is_empty()) else {
        let set = [
            ("SFTP_PORT", e.sftp_port.is_some()),
            ("SFTP_USER", e.sftp_user.is_some()),
            ("SFTP_PATH", e.sftp_path.is_some()),
            ("SFTP_KEY_FILE", e.sftp_key_file.is_some()),
            ("SFTP_KEY_PASSPHRASE", e.sftp_key_passphrase.is_some()),
            (
                "SFTP_KEY_PASSPHRASE_FILE",
                e.sftp_key_passphrase_file.is_some(),
            ),
            ("SFTP_PASSWORD", e.sftp_password.is_some()),
            ("SFTP_PASSWORD_FILE", e.sftp_password_file.is_some()),
            ("SFTP_KNOWN_HOSTS", e.sftp_known_hosts.is_some()),
            ("SFTP_HOST_KEY", e.sftp_host_key.is_some()),
        ];
        if let Some((name, _)) = set.iter().find(|(_, is_set)| *is_set) {
            return Err(ConfigError::Invalid {
                name,
                detail: "SFTP_HOST is not set: set it to copy backups to an SFTP server, or remove this variable".into(),
            });
        }
        return Ok(None);
    };
    let port = e.sftp_port.unwrap_or(22);
    if port == 0 {
        return Err(ConfigError::Invalid {
            name: "SFTP_PORT",
            detail: "0: use the server's SSH port (22 by default)".into(),
        });
    }
    let user = e
        .sftp_user
        .take()
        .filter(|u| !u.is_empty())
        .ok_or(ConfigError::Missing {
            name: "SFTP_USER",
            detail: "the account on the SFTP server",
        })?;
    let path = e
        .sftp_path
        .take()
        .map(|p| p.trim_end_matches('/').to_owned())
        .filter(|p| !p.is_empty())
        .ok_or(ConfigError::Missing {
            name: "SFTP_PATH",
            detail: "the directory for backups on the SFTP server, e.g. backups/selmai (relative to the account's home) or /srv/backups/selmai",
        })?;
    let key_file = e.sftp_key_file.take().filter(|k| !k.is_empty());
    let key = match &key_file {
        None => None,
        Some(path) => Some(super::Secret::new(std::fs::read_to_string(path).map_err(
            |source| ConfigError::Invalid {
                name: "SFTP_KEY_FILE",
                detail: format!(
                    "cannot read {path}: {source}: mount the private key (e.g. as a Docker secret) readable by this container's user"
                ),
            },
        )?)),
    };
    let key_passphrase = secret(
        "SFTP_KEY_PASSPHRASE",
        e.sftp_key_passphrase.take(),
        e.sftp_key_passphrase_file.take(),
    )?;
    if key.is_none() && key_passphrase.is_some() {
        return Err(ConfigError::Invalid {
            name: "SFTP_KEY_PASSPHRASE",
            detail: "set without SFTP_KEY_FILE: give the key it opens".into(),
        });
    }
    let password = secret(
        "SFTP_PASSWORD",
        e.sftp_password.take(),
        e.sftp_password_file.take(),
    )?;
    if key.is_none() && password.is_none() {
        return Err(ConfigError::Missing {
            name: "SFTP_KEY_FILE",
            detail: "the SFTP server needs a private key (SFTP_KEY_FILE) or a password (SFTP_PASSWORD or SFTP_PASSWORD_FILE)",
        });
    }
    let host_key = match (
        e.sftp_known_hosts.take().filter(|k| !k.is_empty()),
        e.sftp_host_key
            .take()
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty()),
    ) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                name: "SFTP_HOST_KEY",
                detail: "SFTP_KNOWN_HOSTS is set too: pin the server's key one way, keep only one"
                    .into(),
            })
        }
        (None, None) => return Err(ConfigError::Unpinned { host, port }),
        (Some(file), None) => {
            if let Err(source) = std::fs::metadata(&file) {
                return Err(ConfigError::Invalid {
                    name: "SFTP_KNOWN_HOSTS",
                    detail: format!("cannot read {file}: {source}: mount the known_hosts file, or pin the key with SFTP_HOST_KEY"),
                });
            }
            HostKeyPin::KnownHosts(PathBuf::from(file))
        }
        (None, Some(key)) => host_key_pin(&key)?,
    };
    Ok(Some(SftpSettings {
        host,
        port,
        user,
        path,
        key,
        key_file,
        key_passphrase,
        password,
        host_key,
        concurrency,
        retries,
        timeout: Duration::from_secs(timeout),
        retry_delay: Duration::from_secs(1),
    }))
}

/// `SFTP_HOST_KEY`: a `SHA256:` fingerprint, or a public key line (a
/// known_hosts line's host field is accepted and ignored).
fn host_key_pin(value: &str) -> Result<HostKeyPin, ConfigError> {
    let bad = |why: &str| {
        ConfigError::Invalid {
        name: "SFTP_HOST_KEY",
        detail: format!("{why}: give the server's SHA256: fingerprint (from `ssh-keyscan HOST | ssh-keygen -lf -`) or its public key line, e.g. `ssh-ed25519 AAAA...`"),
    }
    };
    if let Some(b64) = value.strip_prefix("SHA256:") {
        let ok = b64.len() == 43
            && b64
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/');
        return if ok {
            Ok(HostKeyPin::Fingerprint(value.to_owned()))
        } else {
            Err(bad(&format!(
                "{value:?} is not a SHA256 fingerprint (43 base64 characters after SHA256:)"
            )))
        };
    }
    let fields: Vec<&str> = value.split_whitespace().collect();
    let at = fields
        .iter()
        .position(|f| f.starts_with("ssh-") || f.starts_with("ecdsa-") || f.starts_with("rsa-"))
        .ok_or_else(|| bad(&format!("{value:?} names no key type")))?;
    match fields.get(at + 1) {
        Some(b64) if b64.len() > 16 => Ok(HostKeyPin::Key(format!("{} {b64}", fields[at]))),
        _ => Err(bad("the key line has no key after its type")),
    }
}

/// The bucket, when `S3_BUCKET` is set (its tuning is checked either way).
fn s3(e: &mut EnvConfig) -> Result<Option<S3Settings>, ConfigError> {
    let s3 = match e.s3_bucket.take() {
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
            let mut prefix = e.s3_prefix.take().unwrap_or_default();
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            Some(S3Settings {
                endpoint: e.s3_endpoint.take(),
                bucket,
                region: e.s3_region.take().unwrap_or_else(|| "us-east-1".into()),
                access_key_id: e.s3_access_key_id.take(),
                secret_access_key: secret(
                    "S3_SECRET_ACCESS_KEY",
                    e.s3_secret_access_key.take(),
                    e.s3_secret_access_key_file.take(),
                )?,
                prefix,
                path_style: e.s3_path_style.unwrap_or(false),
                storage_class: e.s3_storage_class.take(),
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
    Ok(s3)
}

/// `TZ`, the schedules and the catch-up policy.
fn schedules(e: &mut EnvConfig) -> Result<ScheduleSettings, ConfigError> {
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
        db: schedule(Kind::Db, e.backup_schedule.take())?,
        config: schedule(Kind::Config, e.config_schedule.take())?,
        uploads: schedule(Kind::Uploads, e.uploads_schedule.take())?,
        full: schedule(Kind::Full, e.full_schedule.take())?,
        drill: schedule(Kind::Drill, e.drill_schedule.take())?,
        catch_up: match e.backup_catch_up.take() {
            None => CatchUp::default(),
            Some(s) => s.parse().map_err(|detail| ConfigError::Invalid {
                name: "BACKUP_CATCH_UP",
                detail,
            })?,
        },
    };
    Ok(schedule)
}

/// The policies of database, configuration and full backups.
fn retention(e: &mut EnvConfig) -> (Policy, Policy, Policy) {
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
    (retention, config_retention, full_retention)
}

/// What `health` checks.
fn health(e: &mut EnvConfig) -> Result<HealthSettings, ConfigError> {
    let max_age_hours = e.health_max_age_hours.unwrap_or(26);
    if max_age_hours == 0 {
        return Err(ConfigError::Invalid {
            name: "HEALTH_MAX_AGE_HOURS",
            detail: "0: give the age in hours after which the newest backup is too old, e.g. 26"
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
    Ok(health)
}

/// The continuous binlog archive.
fn binlog_archive(e: &mut EnvConfig) -> Result<binlog::BinlogSettings, ConfigError> {
    let binlog = binlog::BinlogSettings {
        mode: match e.binlog_archive.take() {
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
    Ok(binlog)
}

/// The mail relay, when `NOTIFY_SMTP_HOST` is set (its other variables
/// are refused without it).
fn smtp(e: &mut EnvConfig) -> Result<Option<SmtpSettings>, ConfigError> {
    let smtp_password = secret(
        "NOTIFY_SMTP_PASSWORD",
        e.notify_smtp_password.take(),
        e.notify_smtp_password_file.take(),
    )?;
    let smtp = match e.notify_smtp_host.take() {
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
                    detail:
                        "set without NOTIFY_SMTP_HOST: set the relay's host name too, or remove it"
                            .into(),
                });
            }
            None
        }
        Some(host) => {
            let tls: SmtpTls = match e.notify_smtp_tls.take() {
                None => SmtpTls::default(),
                Some(s) => s.parse().map_err(|detail| ConfigError::Invalid {
                    name: "NOTIFY_SMTP_TLS",
                    detail,
                })?,
            };
            let from = e.notify_smtp_from.take().ok_or(ConfigError::Missing {
                name: "NOTIFY_SMTP_FROM",
                detail: "mail alerts need a sender address, e.g. backup@example.org",
            })?;
            mailbox("NOTIFY_SMTP_FROM", &from)?;
            let to_raw = e.notify_smtp_to.take().ok_or(ConfigError::Missing {
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
                user: e.notify_smtp_user.take(),
                password: smtp_password,
                from,
                to,
            })
        }
    };
    Ok(smtp)
}

/// Alerts and pings.
fn notify(e: &mut EnvConfig) -> Result<NotifySettings, ConfigError> {
    let notify = NotifySettings {
        on_success: e.notify_on_success.unwrap_or(false),
        webhook: e
            .notify_webhook_url
            .take()
            .map(|u| http_url("NOTIFY_WEBHOOK_URL", u))
            .transpose()?,
        webhook_format: match e.notify_webhook_format.take() {
            None => WebhookFormat::default(),
            Some(s) => s.parse().map_err(|detail| ConfigError::Invalid {
                name: "NOTIFY_WEBHOOK_FORMAT",
                detail,
            })?,
        },
        ping: e
            .notify_ping_url
            .take()
            .map(|u| http_url("NOTIFY_PING_URL", u))
            .transpose()?,
        smtp: smtp(e)?,
    };
    Ok(notify)
}
