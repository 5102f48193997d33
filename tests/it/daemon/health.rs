//! `health` exit codes: fresh, stale, missing off-site copy, low disk, and never 2.

use super::*;

#[test]
fn health_is_0_for_a_fresh_backup_and_1_without_one() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = health(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        text.contains("no successful database backup recorded"),
        "{text}"
    );
    record(dir.path(), 2, 1000, Offsite::NotConfigured);
    let (code, text) = health(dir.path(), &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("healthy: newest database backup"),
        "{text}"
    );
}

#[test]
fn health_is_1_for_a_stale_backup() {
    let dir = tempfile::tempdir().unwrap();
    record(dir.path(), 30, 1000, Offsite::NotConfigured);
    let (code, text) = health(dir.path(), &[]);
    assert_eq!(code, 1);
    assert!(
        text.contains("old, more than HEALTH_MAX_AGE_HOURS=26"),
        "{text}"
    );
    assert_eq!(health(dir.path(), &[("HEALTH_MAX_AGE_HOURS", "31")]).0, 0);
}

#[test]
fn health_is_1_when_the_offsite_copy_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let bucket = [("S3_BUCKET", "backups")];
    record(
        dir.path(),
        2,
        1000,
        Offsite::Failed {
            error: "bucket: access denied".into(),
        },
    );
    let (code, text) = health(dir.path(), &bucket);
    assert_eq!(code, 1);
    assert!(
        text.contains("no off-site copy: bucket: access denied"),
        "{text}"
    );
    // Without a bucket configured the off-site status does not matter.
    assert_eq!(health(dir.path(), &[]).0, 0);
    record(dir.path(), 1, 1000, Offsite::Stored);
    let (code, text) = health(dir.path(), &bucket);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("copied off-site"), "{text}");
}

#[test]
fn health_is_1_when_free_space_is_low() {
    let fs = Tmpfs::mount(1024, "");
    let dir = fs.dir.path();
    // Twice the last backup (600 kB) does not fit in a 1 MiB tmpfs.
    record(dir, 2, 600_000, Offsite::NotConfigured);
    let (code, text) = health(dir, &[]);
    assert_eq!(code, 1);
    assert!(
        text.contains("free on") && text.contains("twice the last backup's 600.0 kB"),
        "{text}"
    );
    // HEALTH_MIN_FREE_MB replaces the default threshold, both ways.
    assert_eq!(health(dir, &[("HEALTH_MIN_FREE_MB", "0")]).0, 0);
    record(dir, 1, 1000, Offsite::NotConfigured);
    assert_eq!(health(dir, &[]).0, 0);
    let (code, text) = health(dir, &[("HEALTH_MIN_FREE_MB", "2")]);
    assert_eq!(code, 1);
    assert!(text.contains("(HEALTH_MIN_FREE_MB)"), "{text}");
}

#[test]
fn health_never_exits_2_even_on_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let (code, text) = health(dir.path(), &[("BACKUP_SCHEDULE", "nope")]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("BACKUP_SCHEDULE"), "{text}");
}
