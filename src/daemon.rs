//! The long-running side: what `run` does between backups.
//!
//! Owns: cron schedules and the scheduler loop ([`schedule`]), one scheduled
//! job start to finish ([`jobs`]), grandfather-father-son rotation
//! ([`retention`]), the run history ([`state`]) and the health verdict read
//! from it ([`health`]), alerts ([`notify`]) and the Prometheus listener
//! ([`metrics`]).
//!
//! Does not own: how a backup is written (`crate::backup`) or read back
//! (`crate::restore`); the daemon calls those stages, they never call it.
//! Only the commands (`crate::cmd`) and the preflight report sit above it.

pub mod health;
pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod retention;
pub mod schedule;
pub mod state;
