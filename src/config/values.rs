//! Value parsers shared by the sections: levels, schedules, URLs, mail
//! addresses, ranges, secrets with their `*_FILE`, prefixes and lists.
//! Each error names the variable and says what it takes.

use std::fmt;
use std::path::PathBuf;

use super::schedule::{Kind, Schedule};
use super::{ConfigError, Secret, S3_MAX_PART_SIZE_MB, S3_MIN_PART_SIZE_MB};

/// `LOG_LEVEL`: a level, or a tracing filter whose every level is one. A
/// typo (`verbose`, `wran`) would otherwise become a target name and
/// silently hide warnings.
pub(super) fn log_level(value: Option<String>) -> Result<String, ConfigError> {
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
pub(super) fn schedule(kind: Kind, value: Option<String>) -> Result<Option<Schedule>, ConfigError> {
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
pub(super) fn http_url(name: &'static str, value: String) -> Result<Secret, ConfigError> {
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
pub(super) fn mailbox(name: &'static str, value: &str) -> Result<(), ConfigError> {
    value
        .parse::<lettre::message::Mailbox>()
        .map(|_| ())
        .map_err(|e| ConfigError::Invalid {
            name,
            detail: format!("{value:?} is not a mail address: {e}"),
        })
}

/// `S3_PART_SIZE_MB` in bytes, within what S3 accepts.
pub(super) fn s3_part_size(mb: Option<u64>) -> Result<usize, ConfigError> {
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
pub(super) fn in_range<T>(
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
pub(super) fn secret(
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
pub(super) fn file_prefix(
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
pub(super) fn path_list(value: &str) -> Vec<PathBuf> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect()
}

/// Comma-separated exclusions, matched against archive paths at any depth; `none`
/// archives everything (an empty value means "unset", so the default).
pub(super) fn exclude_list(value: &str) -> Result<Vec<String>, ConfigError> {
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
