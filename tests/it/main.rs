//! Integration tests: one binary, one module per feature. They talk to the
//! real MariaDB, S3-compatible and SFTP servers started by `scripts/test.sh`
//! (addresses in the `TEST_*` variables it exports).

mod archive;
mod binlog;
mod binlog_run;
mod bucket;
mod cli;
mod commit_point;
mod config;
mod daemon;
mod drill;
mod encryption;
mod failures;
mod full;
mod harness;
mod layout;
mod lock_wait;
mod messages;
mod offsite;
mod one_off;
mod one_pass;
mod pitr;
mod preflight;
mod restore_source;
mod rollback;
mod roundtrip;
mod s3_faults;
mod sftp;
mod sshd_support;
mod support;
mod target_conformance;
mod verify_foreign;
