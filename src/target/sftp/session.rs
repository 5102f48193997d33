//! One SSH connection with its SFTP channel: connect (with a time limit),
//! check the server's key against the pin before anything else is sent,
//! log in with the key or the password, open the SFTP subsystem, learn
//! the server's extensions and make sure the remote directory exists.
//!
//! Failures are sorted for the retry loop ([`Failure::transient`]): a
//! server that is down or a connection that dropped may answer on the next
//! attempt; a refused login, a key that is not pinned, a permission error
//! will not, and are reported at once.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::client::{self, Handle};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, StatusCode};

use super::hostkey::Accepted;
use super::{Inner, LABEL};
use crate::target::TargetError;

/// A failed step: whether trying again may help, and the error to report.
#[derive(Debug)]
pub(super) struct Failure {
    /// A dropped connection, a server that does not answer (yet).
    pub(super) transient: bool,
    /// What to report when no retry is left.
    pub(super) error: TargetError,
}

impl Failure {
    pub(super) fn stop(error: TargetError) -> Self {
        Failure {
            transient: false,
            error,
        }
    }

    pub(super) fn retry(error: TargetError) -> Self {
        Failure {
            transient: true,
            error,
        }
    }

    /// The object does not exist (which deleting or asking for metadata
    /// takes as an answer, not a failure).
    pub(super) fn is_missing(&self) -> bool {
        matches!(self.error, TargetError::NotFound { .. })
    }

    /// An SFTP request on `name` failed while doing `action`.
    pub(super) fn sftp(action: &'static str, name: &str, e: SftpError) -> Self {
        let remote = |detail: String| TargetError::Remote {
            target: LABEL,
            action,
            name: name.to_owned(),
            detail,
        };
        match e {
            SftpError::Status(s) => match s.status_code {
                StatusCode::NoSuchFile => Failure::stop(TargetError::NotFound {
                    target: LABEL,
                    name: name.to_owned(),
                }),
                StatusCode::PermissionDenied => Failure::stop(TargetError::Denied {
                    target: LABEL,
                    name: name.to_owned(),
                    detail: format!(
                        "{}: let the SFTP user write SFTP_PATH on the server",
                        s.error_message
                    ),
                }),
                StatusCode::ConnectionLost | StatusCode::NoConnection => {
                    Failure::retry(remote(s.error_message))
                }
                code => Failure::stop(remote(format!("{code}: {}", s.error_message))),
            },
            // The channel closed, a request got no answer in time: the
            // connection is gone or stuck; a new one may do.
            SftpError::IO(_) | SftpError::Timeout | SftpError::UnexpectedBehavior(_) => {
                Failure::retry(remote(format!(
                    "{e}: the connection to the server was lost"
                )))
            }
            other => Failure::stop(remote(other.to_string())),
        }
    }
}

/// What the server's SFTP offers beyond version 3.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Extensions {
    /// `posix-rename@openssh.com`: a rename that replaces the target atomically.
    pub(super) posix_rename: bool,
    /// `fsync@openssh.com`: make a written file durable before publishing it.
    pub(super) fsync: bool,
    /// `statvfs@openssh.com`: free space, to tell a full disk from other failures.
    pub(super) statvfs: bool,
}

/// One live connection. Requests take `&self`, so several can be in
/// flight at once (pipelining) from different tasks.
pub(super) struct Conn {
    /// Kept so the SSH connection lives as long as this.
    ssh: Handle<Client>,
    /// The SFTP channel.
    pub(super) sftp: RawSftpSession,
    /// The remote directory, absolute.
    pub(super) root: String,
    pub(super) ext: Extensions,
}

impl Conn {
    /// Whether the SSH connection has ended.
    pub(super) fn is_closed(&self) -> bool {
        self.ssh.is_closed()
    }

    /// Absolute path of `name` in the remote directory.
    pub(super) fn path(&self, name: &str) -> String {
        format!("{}/{name}", self.root)
    }
}

/// The russh callbacks: only the server key check matters here.
pub(super) struct Client {
    accepted: Accepted,
    host: String,
    port: u16,
    /// Why the key was refused, read back after `connect` fails.
    refusal: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.refusal.lock().unwrap() = Some(format!(
                "the server at {}:{} presented a certificate: pin its plain host key instead",
                self.host, self.port
            ));
            return Ok(false);
        };
        match self.accepted.check(key, &self.host, self.port) {
            Ok(()) => Ok(true),
            Err(why) => {
                *self.refusal.lock().unwrap() = Some(why);
                Ok(false)
            }
        }
    }
}

/// The SSH channel window we grant the server: the most reads in flight
/// (`SFTP_CONCURRENCY` at most 64, of 128 KiB).
const WINDOW: u32 = 8 * 1024 * 1024;

/// Open a new connection for `inner`, within its time limit.
pub(super) async fn connect(inner: &Inner) -> Result<Conn, Failure> {
    let s = &inner.settings;
    let wait = s.timeout;
    match tokio::time::timeout(wait, connect_now(inner)).await {
        Ok(r) => r,
        Err(_) => Err(Failure::retry(unreachable(
            inner,
            format!("no answer within {}s", wait.as_secs()),
        ))),
    }
}

fn unreachable(inner: &Inner, why: String) -> TargetError {
    let s = &inner.settings;
    TargetError::Remote {
        target: LABEL,
        action: "connecting to",
        name: format!("{}:{}", s.host, s.port),
        detail: format!(
            "{why}: check SFTP_HOST and SFTP_PORT, that the server is up and that this container can reach it"
        ),
    }
}

fn refused(inner: &Inner, detail: String) -> Failure {
    let s = &inner.settings;
    Failure::stop(TargetError::Remote {
        target: LABEL,
        action: "logging in to",
        name: format!("{}@{}:{}", s.user, s.host, s.port),
        detail,
    })
}

async fn connect_now(inner: &Inner) -> Result<Conn, Failure> {
    let s = &inner.settings;
    let accepted = Accepted::read(&s.host_key, &s.host, s.port).map_err(|detail| {
        Failure::stop(TargetError::Config {
            target: LABEL,
            detail,
        })
    })?;
    let mut config = client::Config {
        // How much the server may send before we grant more. russh grants
        // more only once half of it is used, so about half of it is on the
        // way: at its default 2 MiB, downloads over a 20 ms round trip
        // stalled at 0.6x OpenSSH's `sftp get` whatever the reads in
        // flight. The reads in flight bound what the server sends, so a
        // larger window holds no more data in memory.
        window_size: WINDOW,
        keepalive_interval: Some(Duration::from_secs(15)),
        keepalive_max: 3,
        nodelay: true,
        ..Default::default()
    };
    if let Some(algs) = accepted.algorithms() {
        config.preferred.key = algs.into();
    }
    let refusal = Arc::new(Mutex::new(None));
    let handler = Client {
        accepted,
        host: s.host.clone(),
        port: s.port,
        refusal: refusal.clone(),
    };
    let tcp = tokio::net::TcpStream::connect((s.host.as_str(), s.port))
        .await
        .map_err(|e| Failure::retry(unreachable(inner, e.to_string())))?;
    let _ = tcp.set_nodelay(true);
    let mut ssh = match client::connect_stream(Arc::new(config), tcp, handler).await {
        Ok(h) => h,
        Err(e) => {
            if let Some(why) = refusal.lock().unwrap().take() {
                return Err(Failure::stop(TargetError::Remote {
                    target: LABEL,
                    action: "checking the key of",
                    name: format!("{}:{}", s.host, s.port),
                    detail: why,
                }));
            }
            return Err(Failure::retry(unreachable(
                inner,
                format!("SSH handshake failed: {e}"),
            )));
        }
    };
    login(inner, &mut ssh).await?;
    let lost = |e: russh::Error| {
        Failure::retry(unreachable(inner, format!("opening the SFTP channel: {e}")))
    };
    let channel = ssh.channel_open_session().await.map_err(lost)?;
    channel
        .request_subsystem(true, "sftp")
        .await
        .map_err(lost)?;
    let sftp = RawSftpSession::new_with_config(
        channel.into_stream(),
        russh_sftp::client::Config {
            request_timeout_secs: s.timeout.as_secs().max(1),
            ..Default::default()
        },
    );
    let version = sftp
        .init()
        .await
        .map_err(|e| Failure::sftp("starting SFTP on", &s.host, e))?;
    let has = |name: &str| version.extensions.contains_key(name);
    let ext = Extensions {
        posix_rename: has("posix-rename@openssh.com"),
        fsync: has("fsync@openssh.com"),
        statvfs: has("statvfs@openssh.com"),
    };
    let root = make_root(&sftp, &s.path).await?;
    Ok(Conn {
        ssh,
        sftp,
        root,
        ext,
    })
}

/// Log in with the key, then the password, whichever are configured.
async fn login(inner: &Inner, ssh: &mut Handle<Client>) -> Result<(), Failure> {
    let s = &inner.settings;
    let lost = |e: russh::Error| Failure::retry(unreachable(inner, format!("logging in: {e}")));
    let mut tried = Vec::new();
    if let Some(key) = &inner.key {
        let hash = ssh.best_supported_rsa_hash().await.map_err(lost)?.flatten();
        let r = ssh
            .authenticate_publickey(
                s.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::clone(key), hash),
            )
            .await
            .map_err(lost)?;
        if r.success() {
            return Ok(());
        }
        tried.push(format!(
            "the key of SFTP_KEY_FILE ({})",
            s.key_file.as_deref().unwrap_or("?")
        ));
    }
    if let Some(pw) = &s.password {
        let r = ssh
            .authenticate_password(s.user.clone(), pw.expose())
            .await
            .map_err(lost)?;
        if r.success() {
            return Ok(());
        }
        tried.push("the password of SFTP_PASSWORD".into());
    }
    Err(refused(
        inner,
        format!(
            "the server refused {}: check SFTP_USER, the credentials, and that the account's authorized_keys holds the public key",
            tried.join(" and ")
        ),
    ))
}

/// The remote directory as an absolute path, created (with its parents)
/// when missing.
async fn make_root(sftp: &RawSftpSession, path: &str) -> Result<String, Failure> {
    let absolute = if path.starts_with('/') {
        path.to_owned()
    } else {
        let home = sftp
            .realpath(".")
            .await
            .map_err(|e| Failure::sftp("finding the home directory on", path, e))?
            .files
            .into_iter()
            .next()
            .map(|f| f.filename)
            .unwrap_or_else(|| ".".into());
        format!("{}/{path}", home.trim_end_matches('/'))
    };
    if sftp.stat(absolute.as_str()).await.is_ok() {
        return Ok(absolute);
    }
    let mut at = String::new();
    for part in absolute.split('/').filter(|p| !p.is_empty()) {
        at.push('/');
        at.push_str(part);
        if sftp.stat(at.as_str()).await.is_ok() {
            continue;
        }
        let attrs = FileAttributes {
            permissions: Some(0o700),
            ..FileAttributes::empty()
        };
        if let Err(e) = sftp.mkdir(at.as_str(), attrs).await {
            // Made meanwhile by another writer: fine.
            if sftp.stat(at.as_str()).await.is_ok() {
                continue;
            }
            let mut f = Failure::sftp("creating SFTP_PATH", &at, e);
            if let TargetError::Denied { detail, .. } = &mut f.error {
                *detail = format!(
                    "{detail} (SFTP_PATH {path} is missing and cannot be created): create it on the server for the SFTP user"
                );
            }
            return Err(f);
        }
    }
    Ok(absolute)
}

/// Decode the private key of `SFTP_KEY_FILE` with its passphrase.
pub(super) fn load_key(
    text: &str,
    file: &str,
    passphrase: Option<&str>,
) -> Result<PrivateKey, TargetError> {
    russh::keys::decode_secret_key(text, passphrase).map_err(|e| {
        let detail = match (&e, passphrase) {
            (russh::keys::Error::KeyIsEncrypted, _) => format!(
                "SFTP_KEY_FILE {file} is encrypted: set SFTP_KEY_PASSPHRASE (or _FILE)"
            ),
            (_, Some(_)) => format!(
                "cannot open SFTP_KEY_FILE {file} ({e}): check SFTP_KEY_PASSPHRASE, and that the file is a private key in OpenSSH format"
            ),
            (_, None) => format!(
                "cannot read SFTP_KEY_FILE {file} as a private key ({e}): give an OpenSSH private key (ed25519 or RSA), e.g. made by ssh-keygen -t ed25519"
            ),
        };
        TargetError::Config {
            target: LABEL,
            detail,
        }
    })
}
