//! selmai-backup: a backup sidecar for MariaDB applications under docker compose.
//!
//! # Layout
//!
//! Data flows one way: source -> encode -> targets.
//!
//! - [`config`]: environment variables -> [`config::Settings`] (typed, secrets redacted).
//! - [`db`]: connecting to MariaDB with retry, and classifying its errors.
//! - [`dump`]: the native dumper: one consistent snapshot written as plain SQL
//!   to any `AsyncWrite`, with per-table row counts and the binlog position.
//! - [`definer`]: `DEFINER` clauses kept, stripped or rewritten at restore (`RESTORE_DEFINER`).
//! - [`sql`]: the streaming SQL statement splitter used by restore and verify.
//! - [`restore`]: executes a statement stream into a database, with progress.
//! - [`codec`]: compression (gzip, zstd) in independent blocks on every core;
//!   decompression as an `AsyncRead` adapter.
//! - [`crypto`]: encryption stages (our versioned `.enc` format: STREAM over
//!   AES-256-GCM, Argon2id key per file) and reading old `.gpg` files.
//! - [`archive`]: the configuration and uploads as a streamed tar, and its
//!   checked, confined extraction.
//! - [`manifest`]: the JSON file written next to every backup (versioned format).
//! - [`catalog`]: backup file names, and which stored objects are ours.
//! - [`full`]: full backups: the dump and both archives under one timestamp,
//!   one set manifest naming every part, verified whole before a restore.
//! - [`target`]: storage targets behind one trait (the volume in `target::local`,
//!   an S3-compatible bucket in `target::s3`).
//! - [`pipeline`]: composes the stages into "back up now" and "open for restore".
//! - [`drill`]: restore drills: restore into a scratch database, compare the
//!   fingerprints and objects with the manifest, drop it, report.
//! - [`docker`]: stopping the labelled app containers during a restore (Docker API).
//! - [`progress`]: counting bytes through a stage and logging rate and percentage.
//! - [`snapshot`]: pre-restore safety snapshots (own prefix, outside retention).
//! - [`schedule`]: backup kinds, cron schedules in `TZ`, catch-up, the scheduler loop.
//! - [`jobs`]: one daemon run start to finish (lock, space, backup, retention, state, alerts).
//! - [`retention`]: grandfather-father-son retention, a pure plan and its application.
//! - [`state`]: the run history in `BACKUP_DIR` that `health` and catch-up read.
//! - [`health`]: the health verdict and free-space checks.
//! - [`preflight`]: privileges, `max_allowed_packet`, free space and server version
//!   checked at `run` start and before a restore, as a report of findings.
//! - [`notify`]: alerts by webhook, mail and healthchecks-style pings.
//! - [`metrics`]: Prometheus counters and the tiny `/metrics` + `/healthz` listener.
//! - [`binlog`]: the continuous binlog archive: the server's binlog received as a
//!   replica, kept byte for byte in segments through the same encode stages and targets.
//! - [`cmd`]: one file per subcommand; the only place (with `main.rs`) using `anyhow`.

pub mod archive;
pub mod binlog;
pub mod catalog;
pub mod cmd;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod db;
pub mod definer;
pub mod docker;
pub mod drill;
pub mod dump;
pub mod full;
pub mod health;
pub mod jobs;
pub mod manifest;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod preflight;
pub mod progress;
pub mod restore;
pub mod retention;
pub mod schedule;
pub mod snapshot;
pub mod sql;
pub mod state;
pub mod target;
