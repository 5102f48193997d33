//! An SFTP server as a storage target (`SFTP_HOST`): the runbook's `scp`
//! to a backup server, or a storage box, in pure Rust (russh with ring,
//! russh-sftp), with no `ssh` binary in the image.
//!
//! The same promises as the volume: data goes to a hidden
//! `.NAME.partial` file in `SFTP_PATH` and is renamed to its final name
//! only on commit (`posix-rename@openssh.com` where the server offers it,
//! which replaces atomically), after `fsync@openssh.com`; a cut connection
//! leaves no file under a final name, and [`Target::clean_interrupted`]
//! removes our partial files on the next run. Several writes (and reads)
//! are in flight at once on the one connection (`SFTP_CONCURRENCY`),
//! since one at a time is bound by the round trip. A dropped connection
//! is reopened with back-off (`SFTP_RETRIES`) and an upload goes on where
//! the server's acknowledgements stopped.
//!
//! The server's key must be pinned (`SFTP_HOST_KEY` or
//! `SFTP_KNOWN_HOSTS`): see [`hostkey`]. The connection is opened on the
//! first request and kept for the next ones.

mod hostkey;
mod read;
mod session;
mod upload;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use russh::keys::PrivateKey;
use russh_sftp::protocol::StatusCode;

use self::session::{Conn, Failure};
use super::{ObjectInfo, ObjectReader, Target, TargetError, Upload};
use crate::config::SftpSettings;

const LABEL: &str = SftpTarget::LABEL;
const PARTIAL_SUFFIX: &str = ".partial";

/// The SFTP server of `SFTP_HOST`, directory `SFTP_PATH`.
#[derive(Clone)]
pub struct SftpTarget {
    inner: Arc<Inner>,
}

/// What every request and upload of one target shares.
struct Inner {
    settings: SftpSettings,
    key: Option<Arc<PrivateKey>>,
    /// The open connection, if any; replaced when it drops.
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
}

impl fmt::Debug for SftpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.inner.settings;
        f.debug_struct("SftpTarget")
            .field("host", &s.host)
            .field("port", &s.port)
            .field("user", &s.user)
            .field("path", &s.path)
            .finish_non_exhaustive()
    }
}

impl SftpTarget {
    /// The label of an SFTP server in logs and listings.
    pub const LABEL: &'static str = "sftp";

    /// A target for the server in `s`. Nothing is sent yet; the private
    /// key is decoded now, so a wrong passphrase is found at start.
    pub fn new(s: &SftpSettings) -> Result<Self, TargetError> {
        let key = match &s.key {
            None => None,
            Some(text) => Some(Arc::new(session::load_key(
                text.expose(),
                s.key_file.as_deref().unwrap_or("?"),
                s.key_passphrase.as_ref().map(|p| p.expose()),
            )?)),
        };
        Ok(SftpTarget {
            inner: Arc::new(Inner {
                settings: s.clone(),
                key,
                conn: tokio::sync::Mutex::new(None),
            }),
        })
    }

    /// `user@host:port:path`, for messages.
    pub fn location(&self) -> String {
        let s = &self.inner.settings;
        format!("{}@{}:{}:{}", s.user, s.host, s.port, s.path)
    }
}

impl Inner {
    /// The open connection, or a new one.
    async fn conn(&self) -> Result<Arc<Conn>, Failure> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(Arc::clone(c));
        }
        *slot = None;
        let c = Arc::new(session::connect(self).await?);
        *slot = Some(Arc::clone(&c));
        Ok(c)
    }

    /// Forget `c` after it failed, so the next request opens a new one.
    async fn forget(&self, c: &Arc<Conn>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, c)) {
            *slot = None;
        }
    }

    /// Wait before retry number `attempt` (1-based).
    fn backoff(&self, attempt: u32) -> std::time::Duration {
        super::backoff(self.settings.retry_delay, attempt)
    }

    /// Run `op` on a connection until it succeeds, fails for good, or
    /// `SFTP_RETRIES` run out; a transient failure opens a new connection.
    async fn retry<T, F, Fut>(&self, what: &str, retries: u32, mut op: F) -> Result<T, TargetError>
    where
        F: FnMut(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut attempt = 1;
        loop {
            let result = match self.conn().await {
                Ok(c) => {
                    let r = op(Arc::clone(&c)).await;
                    if matches!(&r, Err(f) if f.transient) {
                        self.forget(&c).await;
                    }
                    r
                }
                Err(f) => Err(f),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(f) if f.transient && attempt <= retries => {
                    let wait = self.backoff(attempt);
                    tracing::warn!(
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        error = %f.error,
                        "sftp: {what} failed, retrying"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Err(f) => return Err(f.error),
            }
        }
    }

    /// [`Inner::retry`] with `SFTP_RETRIES`.
    async fn request<T, F, Fut>(&self, what: &str, op: F) -> Result<T, TargetError>
    where
        F: FnMut(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.retry(what, self.settings.retries, op).await
    }
}

fn check_name(name: &str) -> Result<(), TargetError> {
    super::check_name(LABEL, name)
}

fn info_of(name: String, attrs: &russh_sftp::protocol::FileAttributes) -> ObjectInfo {
    ObjectInfo {
        name,
        size: attrs.size.unwrap_or(0),
        modified: attrs
            .mtime
            .and_then(|t| DateTime::<Utc>::from_timestamp(i64::from(t), 0)),
    }
}

/// A regular file, as the permission bits' type field says (a server that
/// sends no permissions is taken at its word).
fn is_file(attrs: &russh_sftp::protocol::FileAttributes) -> bool {
    attrs.permissions.is_none_or(|p| p & 0o170000 == 0o100000)
}

/// Every entry of the remote directory with its attributes.
async fn read_dir(
    c: &Conn,
) -> Result<Vec<(String, russh_sftp::protocol::FileAttributes)>, Failure> {
    let dir = c
        .sftp
        .opendir(c.root.as_str())
        .await
        .map_err(|e| Failure::sftp("listing", &c.root, e))?;
    let mut out = Vec::new();
    let result = loop {
        match c.sftp.readdir(dir.handle.as_str()).await {
            Ok(name) => out.extend(name.files.into_iter().map(|f| (f.filename, f.attrs))),
            Err(russh_sftp::client::error::Error::Status(s))
                if s.status_code == StatusCode::Eof =>
            {
                break Ok(out)
            }
            Err(e) => break Err(Failure::sftp("listing", &c.root, e)),
        }
    };
    let _ = c.sftp.close(dir.handle).await;
    result
}

#[async_trait]
impl Target for SftpTarget {
    fn label(&self) -> &'static str {
        LABEL
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, TargetError> {
        let entries = self
            .inner
            .request("listing", |c| async move { read_dir(&c).await })
            .await?;
        Ok(entries
            .into_iter()
            .filter(|(name, attrs)| {
                !name.starts_with('.') && name.starts_with(prefix) && is_file(attrs)
            })
            .map(|(name, attrs)| info_of(name, &attrs))
            .collect())
    }

    async fn metadata(&self, name: &str) -> Result<Option<ObjectInfo>, TargetError> {
        check_name(name)?;
        self.inner
            .request("reading metadata", |c| async move {
                match c.sftp.stat(c.path(name)).await {
                    Ok(a) if is_file(&a.attrs) => Ok(Some(info_of(name.to_owned(), &a.attrs))),
                    Ok(_) => Ok(None),
                    Err(e) => match Failure::sftp("reading metadata of", name, e) {
                        f if f.is_missing() => Ok(None),
                        f => Err(f),
                    },
                }
            })
            .await
    }

    async fn create(&self, name: &str) -> Result<Box<dyn Upload>, TargetError> {
        check_name(name)?;
        Ok(Box::new(
            upload::SftpUpload::start(Arc::clone(&self.inner), name).await?,
        ))
    }

    async fn open(&self, name: &str) -> Result<ObjectReader, TargetError> {
        check_name(name)?;
        read::open(Arc::clone(&self.inner), name).await
    }

    async fn delete(&self, name: &str) -> Result<(), TargetError> {
        check_name(name)?;
        self.inner
            .request("deleting", |c| async move {
                remove(&c, "deleting", name).await.map(|_| ())
            })
            .await
    }

    async fn clean_interrupted(&self) -> Result<Vec<String>, TargetError> {
        self.inner
            .request("removing partial files", |c| async move {
                let mut removed = Vec::new();
                for (name, attrs) in read_dir(&c).await? {
                    let partial =
                        name.starts_with('.') && name.ends_with(PARTIAL_SUFFIX) && is_file(&attrs);
                    if partial && remove(&c, "removing", &name).await? {
                        removed.push(name);
                    }
                }
                Ok(removed)
            })
            .await
    }

    async fn answers(&self) -> Result<(), TargetError> {
        self.inner
            .retry("reaching the server", 0, |c| async move {
                c.sftp
                    .stat(c.root.as_str())
                    .await
                    .map(|_| ())
                    .map_err(|e| Failure::sftp("reaching", &c.root, e))
            })
            .await
    }
}

/// Remove `name`: `false` when it was already gone, which is no error.
async fn remove(c: &Conn, action: &'static str, name: &str) -> Result<bool, Failure> {
    match c.sftp.remove(c.path(name)).await {
        Ok(_) => Ok(true),
        Err(e) => match Failure::sftp(action, name, e) {
            f if f.is_missing() => Ok(false),
            f => Err(f),
        },
    }
}

/// The partial file an upload of `name` writes to.
fn partial_name(name: &str) -> String {
    format!(".{name}{PARTIAL_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for bad in ["", ".hidden", "a/b", "../x", "a\nb"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name("selmai_backup_2026-11-30_02-00-00.sql.gz").is_ok());
        assert_eq!(partial_name("a.sql.gz"), ".a.sql.gz.partial");
    }

    #[test]
    fn only_regular_files_are_objects() {
        let with = |p| russh_sftp::protocol::FileAttributes {
            permissions: Some(p),
            ..russh_sftp::protocol::FileAttributes::empty()
        };
        assert!(is_file(&with(0o100600)));
        assert!(!is_file(&with(0o040700)));
        assert!(!is_file(&with(0o120777)));
    }
}
