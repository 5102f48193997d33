//! The subcommands, one file each, and the mapping from errors to the
//! documented exit codes. With `main.rs`, the only place that uses `anyhow`.

pub mod backup;
pub mod check;
pub mod decrypt;
pub mod health;
pub mod list;
pub mod prune;
pub mod restore;
pub mod run;
pub mod verify;

use std::error::Error as StdError;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::backup::full::FullError;
use crate::backup::pipeline::BackupError;
use crate::config::{ConfigError, Settings};
use crate::db::DbError;
use crate::dump::DumpError;
use crate::format::archive::ArchiveError;
use crate::format::catalog::LockError;
use crate::format::crypto::CryptoError;
use crate::preflight::PreflightError;
use crate::restore::docker::AppControl;
use crate::restore::drill::DrillError;
use crate::restore::full::FullSetError;
use crate::restore::open::LocateError;
use crate::restore::RestoreError;
use crate::sql::SplitError;
use crate::target::local::LocalTarget;
use crate::target::{Target, TargetError};

/// Exit codes (also in the README).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other failure (a dump or a restore statement failed ...).
    pub const FAILURE: u8 = 1;
    /// Bad command line or configuration.
    pub const CONFIG: u8 = 2;
    /// Database unreachable, login refused, database missing, or the preflight
    /// found that the user lacks a privilege the job cannot do without.
    pub const DATABASE: u8 = 3;
    /// The backup asked for does not exist.
    pub const NOT_FOUND: u8 = 4;
    /// The backup is corrupt or does not match its manifest, or a restore
    /// test found that it does not restore to what was dumped.
    pub const CORRUPT: u8 = 5;
    /// Wrong or missing passphrase.
    pub const PASSPHRASE: u8 = 6;
    /// Refused: no confirmation, or another backup/restore holds the lock.
    pub const REFUSED: u8 = 7;
    /// Storage failed (disk full, permission denied, bucket error).
    pub const STORAGE: u8 = 8;
    /// Interrupted by SIGINT (128 + 2), after cleaning up.
    pub const SIGINT: u8 = 130;
    /// Interrupted by SIGTERM (128 + 15), after cleaning up.
    pub const SIGTERM: u8 = 143;
}

/// selmai-backup: backups of a MariaDB database under docker compose.
///
/// Configured by environment variables (see the README); each subcommand has --help.
#[derive(Debug, Parser)]
#[command(name = "selmai-backup", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Back the database (or, with --kind, the configuration, uploads or all three as a full backup) up now and print the files written.
    Backup(backup::Args),
    /// Restore a backup into the database, extract an archive with --to, or both for a full backup (verifies everything first).
    Restore(restore::Args),
    /// List backups with date, size and age.
    List(list::Args),
    /// Read a backup to the end (checksum, encryption, compression, SQL); with --restore-test, prove it restores.
    Verify(verify::Args),
    /// Decrypt an encrypted backup (.enc, or an old .gpg) into its compressed SQL file.
    Decrypt(decrypt::Args),
    /// Run the scheduler: backups on schedule, retention, alerts (the container's command).
    Run(run::Args),
    /// Exit 0 when the newest backup is fresh (Docker HEALTHCHECK), else 1 with the reason.
    Health(health::Args),
    /// Apply retention now, printing what is kept and deleted and why.
    Prune(prune::Args),
    /// Run the preflight: privileges, max_allowed_packet, free space and server version.
    Check(check::Args),
}

/// Stopped by SIGINT or SIGTERM after cleaning up: exit 130 or 143, as a
/// shell reports a process those signals ended.
#[derive(Debug, thiserror::Error)]
#[error("{what} was interrupted by {signal}: {after}")]
pub struct Interrupted {
    /// "SIGINT" or "SIGTERM".
    pub signal: &'static str,
    /// What was interrupted.
    pub what: String,
    /// The state it left.
    pub after: &'static str,
}

/// A command-line value that does not parse (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadArgument(pub String);

/// A refusal that is not an error of the data (exit code 7).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// Run the chosen subcommand, after starting again any containers that a
/// restore which died left stopped.
pub async fn run(cli: Cli, settings: Settings) -> anyhow::Result<()> {
    let apps = AppControl::new(&settings);
    apps.recover(
        || match crate::format::catalog::lock_dir(&settings.backup_dir) {
            Ok(lock) => Some(Some(lock)),
            // A restore is running: the record is its own.
            Err(LockError::Busy(_)) => None,
            Err(LockError::Open { .. }) => Some(None),
        },
    )
    .await;
    match cli.command {
        Command::Backup(a) => backup::run(a, &settings).await,
        Command::Restore(a) => restore::run(a, &settings, &apps).await,
        Command::List(a) => list::run(a, &settings).await,
        Command::Verify(a) => verify::run(a, &settings).await,
        Command::Decrypt(a) => decrypt::run(a, &settings).await,
        Command::Run(a) => run::run(a, &settings).await,
        Command::Health(a) => health::run(a, &settings).await,
        Command::Prune(a) => prune::run(a, &settings).await,
        Command::Check(a) => check::run(a, &settings).await,
    }
}

/// SIGINT and SIGTERM, for every command: the daemon's shutdown, and the
/// interruption of a restore, a restore test or the daemon's preflight.
/// One mechanism (tokio's), installed before it is awaited.
pub struct Interrupt {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Interrupt {
    /// Install the handlers; from now on these signals no longer kill the process.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Interrupt {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
        })
    }

    /// Resolves on the next SIGINT or SIGTERM, naming it.
    pub async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
        }
    }
}

/// Resolves on SIGINT or SIGTERM, naming it (never, when the handlers
/// cannot be installed). The handlers are installed when this is called,
/// not when the future is first polled: a `select!` may poll its other
/// branch first, and a signal in between would kill the process.
pub fn interrupted() -> impl std::future::Future<Output = &'static str> {
    let installed = Interrupt::install();
    async move {
        match installed {
            Ok(mut i) => i.recv().await,
            Err(_) => std::future::pending().await,
        }
    }
}

/// The targets configured: the volume first (primary), then the bucket
/// when `S3_BUCKET` is set, then the SFTP server when `SFTP_HOST` is.
pub fn targets(settings: &Settings) -> Result<Vec<Arc<dyn Target>>, TargetError> {
    let mut v: Vec<Arc<dyn Target>> = vec![Arc::new(LocalTarget::new(&settings.backup_dir))];
    if let Some(s3) = &settings.s3 {
        v.push(Arc::new(crate::target::s3::S3Target::new(s3)?));
    }
    if let Some(sftp) = &settings.sftp {
        v.push(Arc::new(crate::target::sftp::SftpTarget::new(sftp)?));
    }
    Ok(v)
}

/// The error and its causes on one line, leaving out a cause whose text
/// is already part of the message (many errors embed their source).
pub fn one_line(err: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// The exit code for an error: the first cause in the chain that we recognise.
pub fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain().find_map(code_of).unwrap_or(exit::FAILURE)
}

fn code_of(e: &(dyn StdError + 'static)) -> Option<u8> {
    if e.is::<ConfigError>() || e.is::<BadArgument>() {
        return Some(exit::CONFIG);
    }
    if let Some(p) = e.downcast_ref::<crate::restore::replay::PitrError>() {
        use crate::restore::replay::PitrError;
        return match p {
            PitrError::Unreachable(_) => Some(exit::NOT_FOUND),
            PitrError::Store(s) | PitrError::Reread(s) => code_of(s),
            PitrError::Locate(l) => code_of(l),
            PitrError::Unsupported(_) | PitrError::Statement { .. } => Some(exit::FAILURE),
            PitrError::Db(d) => Some(db_code(d)),
        };
    }
    if e.is::<Refused>() || e.is::<LockError>() {
        return Some(match e.downcast_ref::<LockError>() {
            Some(LockError::Open { .. }) => exit::STORAGE,
            _ => exit::REFUSED,
        });
    }
    if let Some(i) = e.downcast_ref::<Interrupted>() {
        return Some(if i.signal == "SIGINT" {
            exit::SIGINT
        } else {
            exit::SIGTERM
        });
    }
    if e.is::<backup::OffsiteFailed>() {
        return Some(exit::STORAGE);
    }
    if let Some(c) = e.downcast_ref::<CryptoError>() {
        return Some(crypto_code(c));
    }
    if let Some(c) = e
        .downcast_ref::<std::io::Error>()
        .and_then(CryptoError::from_io)
    {
        return Some(crypto_code(c));
    }
    if let Some(t) = e.downcast_ref::<TargetError>() {
        return Some(target_code(t));
    }
    if e.is::<crate::daemon::health::SpaceError>() {
        return Some(exit::STORAGE);
    }
    if let Some(b) = e.downcast_ref::<crate::binlog::StoreError>() {
        return Some(match b {
            crate::binlog::StoreError::Gap(_) => exit::NOT_FOUND,
            crate::binlog::StoreError::Encode { .. } => exit::CORRUPT,
            crate::binlog::StoreError::Target(t) => target_code(t),
        });
    }
    if e.is::<health::Unhealthy>() {
        return Some(exit::FAILURE);
    }
    if let Some(d) = e.downcast_ref::<DbError>() {
        return Some(db_code(d));
    }
    if let Some(d) = e.downcast_ref::<DumpError>() {
        return Some(match d {
            DumpError::Db(db) => db_code(db),
            DumpError::NoDatabase(_) => exit::DATABASE,
            _ => exit::FAILURE,
        });
    }
    if let Some(b) = e.downcast_ref::<BackupError>() {
        return match b {
            BackupError::Config(_) => Some(exit::CONFIG),
            BackupError::Target(t) => Some(target_code(t)),
            BackupError::Dump(d) => code_of(d),
            BackupError::Encode(_) => Some(exit::FAILURE),
            BackupError::Crypto(c) => Some(crypto_code(c)),
            BackupError::Archive(a) => Some(archive_code(a)),
        };
    }
    if let Some(a) = e.downcast_ref::<ArchiveError>() {
        return Some(archive_code(a));
    }
    if let Some(l) = e.downcast_ref::<LocateError>() {
        return Some(match l {
            LocateError::NotFound { .. } | LocateError::Empty(_) => exit::NOT_FOUND,
            LocateError::Target(t) => target_code(t),
            LocateError::Manifest(_) => exit::CORRUPT,
        });
    }
    if let Some(d) = e.downcast_ref::<DrillError>() {
        return match d {
            DrillError::Mismatch { .. } | DrillError::NoManifest(_) => Some(exit::CORRUPT),
            DrillError::ScratchExists(_) => Some(exit::REFUSED),
            DrillError::Restore { source, .. } => code_of(source.as_ref()),
            DrillError::Db(db) => Some(db_code(db)),
        };
    }
    if let Some(r) = e.downcast_ref::<RestoreError>() {
        return Some(restore_code(r));
    }
    // The restore operation's own variants carry no code: their causes do.
    if let Some(run) = e.downcast_ref::<crate::restore::RunError>() {
        if let crate::restore::RunError::Apply(r) = run {
            return Some(restore_code(r));
        }
        if let crate::restore::RunError::Replay(r) = run {
            return code_of(r);
        }
        // A rolled-back or partly restored failure exits as the failure does.
        if let Some(cause) = run.cause() {
            return code_of(cause);
        }
    }
    if let Some(p) = e.downcast_ref::<crate::restore::open::PrepareError>() {
        return match p {
            crate::restore::open::PrepareError::Locate(l) => code_of(l),
            crate::restore::open::PrepareError::Read(r) => Some(restore_code(r)),
        };
    }
    if let Some(f) = e.downcast_ref::<FullError>() {
        return match f {
            FullError::Target(t) | FullError::SetManifest { source: t, .. } => Some(target_code(t)),
            FullError::Part { source, .. } => code_of(source),
        };
    }
    if let Some(f) = e.downcast_ref::<FullSetError>() {
        return match f {
            FullSetError::NotFound { .. } | FullSetError::Empty(_) => Some(exit::NOT_FOUND),
            FullSetError::Manifest(_)
            | FullSetError::MissingPart { .. }
            | FullSetError::Mismatch { .. } => Some(exit::CORRUPT),
            FullSetError::Target(t) => Some(target_code(t)),
            FullSetError::Db { source, .. } | FullSetError::Archive { source, .. } => {
                Some(restore_code(source))
            }
        };
    }
    if let Some(p) = e.downcast_ref::<PreflightError>() {
        return Some(match p {
            PreflightError::Db(d) => db_code(d),
            PreflightError::Config(_) => exit::CONFIG,
            PreflightError::Database(_) => exit::DATABASE,
            PreflightError::Space(_) => exit::STORAGE,
        });
    }
    None
}

fn restore_code(r: &RestoreError) -> u8 {
    match r {
        RestoreError::Db(d) => db_code(d),
        RestoreError::Archive(a) => archive_code(a),
        RestoreError::Crypto { source, .. } => crypto_code(source),
        RestoreError::Unreadable {
            source: SplitError::Io(io),
            ..
        } => CryptoError::from_io(io).map_or(exit::CORRUPT, crypto_code),
        RestoreError::Unreadable { .. }
        | RestoreError::Integrity { .. }
        | RestoreError::NotADump { .. } => exit::CORRUPT,
        RestoreError::Statement { .. } | RestoreError::Definer { .. } => exit::FAILURE,
    }
}

fn archive_code(a: &ArchiveError) -> u8 {
    match a {
        ArchiveError::Read { .. } | ArchiveError::Stream(_) | ArchiveError::Thread(_) => {
            exit::FAILURE
        }
        ArchiveError::Clash(_) => exit::CONFIG,
        ArchiveError::Corrupt { .. } | ArchiveError::Unsafe { .. } => exit::CORRUPT,
        ArchiveError::NotEmpty(_) => exit::REFUSED,
        ArchiveError::Write { .. } => exit::STORAGE,
    }
}

fn crypto_code(c: &CryptoError) -> u8 {
    match c {
        CryptoError::WrongPassphrase
        | CryptoError::GpgWrongPassphrase
        | CryptoError::MissingPassphrase => exit::PASSPHRASE,
        CryptoError::Io { .. } => exit::STORAGE,
        _ => exit::CORRUPT,
    }
}

fn target_code(t: &TargetError) -> u8 {
    match t {
        TargetError::NotFound { .. } => exit::NOT_FOUND,
        // Found before anything was written: the settings are wrong.
        TargetError::Config { .. } => exit::CONFIG,
        _ => exit::STORAGE,
    }
}

fn db_code(d: &DbError) -> u8 {
    match d {
        DbError::Unreachable { .. }
        | DbError::AccessDenied { .. }
        | DbError::UnknownDatabase { .. } => exit::DATABASE,
        DbError::Query { .. } => exit::FAILURE,
    }
}

/// Take the `BACKUP_DIR` lock and clean up what a killed run left behind
/// on the volume (partial files, manifests whose backup was never
/// stored). Off-site leftovers (incomplete bucket uploads) are cleaned
/// after a backup, so that nothing waits on an off-site target here.
pub async fn lock_and_clean(
    settings: &Settings,
) -> anyhow::Result<crate::format::catalog::DirLock> {
    let lock = crate::format::catalog::lock_dir(&settings.backup_dir)?;
    let volume: Arc<dyn Target> = Arc::new(LocalTarget::new(&settings.backup_dir));
    crate::backup::pipeline::clean_interrupted(
        &[volume],
        &crate::backup::pipeline::our_prefixes(settings),
    )
    .await;
    Ok(lock)
}
