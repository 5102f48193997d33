//! selmai-backup: a backup sidecar for MariaDB applications under docker compose.
//!
//! # Layout
//!
//! Data flows one way: source -> encode -> targets, and back for a restore.
//! The folders are floors: a module imports only modules on its own floor or
//! below, never one above, and there is no circle of imports
//! (`tests/it/layout.rs` fails when one comes back, naming it).
//!
//! **Ground floor: vocabulary and settings.**
//! - [`config`]: environment variables -> [`config::Settings`] (typed, secrets
//!   redacted): the names we own and envy's step in `config/env.rs`, one
//!   conversion per section in `config/convert.rs`. It imports none of the
//!   modules it configures: the value types it parses (schedules, retention
//!   policy, alert formats) live in small modules under `config/` that
//!   those modules import, and the secret type in [`secret`].
//! - [`base64`]: standard base64 both ways (binlog events for replay,
//!   hashed known_hosts entries).
//! - [`progress`]: counting bytes through a stage and logging rate and percentage.
//!
//! **Sources and formats.**
//! - [`db`]: connecting to MariaDB with retry, classifying its errors, and
//!   naming the connection that holds a lock we wait for (`db::lock`).
//! - [`dump`]: the native dumper: one consistent snapshot written as plain SQL
//!   to any `AsyncWrite`, with per-table row counts and the binlog position.
//! - [`sql`]: the streaming SQL statement splitter used by restore and verify.
//! - [`format`](mod@format): how bytes look at rest: backup names ([`format::catalog`]),
//!   manifests, compression ([`format::codec`]), encryption
//!   ([`format::crypto`]: our versioned `.enc` format and old `.gpg` files),
//!   and the tar archives of configuration and uploads ([`format::archive`]).
//! - [`target`]: storage targets behind one trait (the volume in
//!   `target::local`, an S3-compatible bucket in `target::s3` with its
//!   upload, resuming read, retry and error wording under `target/s3/`;
//!   an SFTP server in `target::sftp`, with its connection and host key
//!   check, pipelined upload and read under `target/sftp/`), and the
//!   run-wide time budget that wraps an
//!   off-site target (`target::budget`).
//!
//! **Stages**, the read path above the binlog archive above the write path:
//! a restore takes a safety snapshot (a backup) and replays the archive; the
//! archive stores segments through the write path's off-site copy; a backup
//! never restores.
//! - [`backup`]: the write path (encode once, store to the volume and each
//!   off-site target in the same pass; copy from the volume to a target
//!   that missed it), full backups, and safety snapshots before a restore.
//! - [`restore`]: the read path: the one restore operation, opening and
//!   verifying a stored backup, the statement executor, `DEFINER` handling,
//!   stopping the app containers (Docker), file archives and full sets,
//!   restore drills, and the point-in-time replay of the binlog archive
//!   (`restore::replay`).
//! - [`binlog`]: the continuous binlog archive: the server's binlog received
//!   as a replica, kept byte for byte in segments through the same encode
//!   stages and targets (the point-in-time replay in `restore::replay`
//!   reads it from here).
//!
//! **Above the stages.**
//! - [`daemon`]: schedules and the scheduler loop, one job start to finish,
//!   retention, catching up missed off-site copies, run history, health,
//!   alerts, metrics.
//! - [`preflight`]: privileges, `max_allowed_packet`, free space and server
//!   version checked at `run` start and before a restore, as a report of
//!   findings: the grants parser, fact gathering and the pure judges in
//!   their own files under `preflight/`.
//! - [`cmd`]: one file per subcommand; the only place (with `main.rs`) using `anyhow`.

pub mod backup;
pub mod base64;
pub mod binlog;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod db;
pub mod dump;
pub mod format;
pub mod preflight;
pub mod progress;
pub mod restore;
pub mod secret;
pub mod sql;
pub mod target;
