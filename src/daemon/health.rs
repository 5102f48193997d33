//! Is the backup healthy? The one verdict behind `selmai-backup health`
//! (Docker's HEALTHCHECK) and the metrics listener's `/healthz`.
//!
//! Healthy means all of:
//! 1. the state file is readable and records a successful database backup;
//! 2. that backup started less than `HEALTH_MAX_AGE_HOURS` ago;
//! 3. when off-site targets are configured, its copy to each succeeded;
//! 4. no backup that retention keeps has been missing from an off-site
//!    target (as the last catch-up found) for longer than
//!    `HEALTH_MAX_OFFSITE_DELAY_HOURS` after it was taken;
//! 5. free space on `BACKUP_DIR` is at least `HEALTH_MIN_FREE_MB`, or by
//!    default twice the size of that backup;
//! 6. when the binlog archive runs (or `BINLOG_ARCHIVE=on`): it is at most
//!    `HEALTH_MAX_BINLOG_LAG_SECONDS` behind the server, no gap was found
//!    after the newest database backup, and no stored segment has been
//!    missing from an off-site target for longer than
//!    `HEALTH_MAX_OFFSITE_DELAY_HOURS` ([`binlog_verdict`]).
//!
//! [`verdict`] is a pure function of the state, the settings, the free
//! space and the time; [`check`] gathers those from the disk. Neither
//! touches the database or the bucket, so a health check is fast and does
//! not depend on them. Also here: [`free_bytes`] (statvfs) and the space
//! check a backup makes before it starts ([`space_for_backup`]).

use std::io;
use std::path::Path;

use chrono::{DateTime, Utc};

use crate::binlog::Status;
use crate::config::binlog::ArchiveMode;
use crate::config::Settings;
use crate::daemon::schedule::{human_duration, Kind};
use crate::daemon::state::{Offsite, State, STATE_FILE};
use crate::progress::human_bytes;

/// Bytes available to an unprivileged writer on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// What the check found: `Ok(summary)` or `Err(one-line reason)`.
pub type Verdict = Result<String, String>;

/// The health verdict. `free` is `None` when it could not be measured.
pub fn verdict(
    state: &State,
    settings: &Settings,
    free: Result<u64, String>,
    now: DateTime<Utc>,
) -> Verdict {
    let dir = settings.backup_dir.display();
    let Some(last) = state.last_success(Kind::Db) else {
        let why = match state.last_run(Kind::Db) {
            Some(r) => format!(
                "; the last attempt at {} failed: {}",
                r.started.format("%Y-%m-%d %H:%M UTC"),
                r.error.as_deref().unwrap_or("no detail")
            ),
            None => String::new(),
        };
        return Err(format!(
            "no successful database backup recorded in {dir}/{STATE_FILE} yet{why}"
        ));
    };
    let file = last.file.as_deref().unwrap_or("?");
    let age = now - last.started;
    let max = chrono::Duration::from_std(settings.health.max_age).unwrap_or(chrono::Duration::MAX);
    if age > max {
        let failed = state
            .last_run(Kind::Db)
            .filter(|r| r.started > last.started)
            .and_then(|r| r.error.as_deref())
            .map(|e| format!("; the last attempt failed: {e}"))
            .unwrap_or_default();
        return Err(format!(
            "the newest database backup {file} is {} old, more than HEALTH_MAX_AGE_HOURS={}{failed}",
            human_duration(age),
            settings.health.max_age.as_secs() / 3600
        ));
    }
    if settings.has_offsite() {
        match &last.offsite {
            Offsite::Stored => {}
            Offsite::Failed { error } => {
                return Err(format!(
                    "the newest database backup {file} has no off-site copy: {error}"
                ))
            }
            Offsite::NotConfigured => {
                return Err(format!(
                    "the newest database backup {file} was made before an off-site target was configured: it has no off-site copy"
                ))
            }
        }
    }
    if let Some(why) = overdue_offsite(state, settings, now) {
        return Err(why);
    }
    let last_size = last.size.unwrap_or(0);
    let (need, why) = match settings.health.min_free_bytes {
        Some(b) => (b, "HEALTH_MIN_FREE_MB".to_owned()),
        None => (
            last_size.saturating_mul(2),
            format!("twice the last backup's {}", human_bytes(last_size)),
        ),
    };
    let free = match free {
        Ok(f) => f,
        Err(e) => return Err(format!("cannot measure free space on {dir}: {e}")),
    };
    if free < need {
        return Err(format!(
            "only {} free on {dir}, less than {} ({why}): free space or lower retention",
            human_bytes(free),
            human_bytes(need)
        ));
    }
    Ok(format!(
        "healthy: newest database backup {file} is {} old{}, {} free{}",
        human_duration(age),
        if settings.has_offsite() {
            ", copied off-site"
        } else {
            ""
        },
        human_bytes(free),
        last_drill(state)
    ))
}

/// The oldest backup still missing from an off-site target longer than
/// `HEALTH_MAX_OFFSITE_DELAY_HOURS` after it was taken, as the reason.
fn overdue_offsite(state: &State, settings: &Settings, now: DateTime<Utc>) -> Option<String> {
    let max = chrono::Duration::from_std(settings.health.max_offsite_delay)
        .unwrap_or(chrono::Duration::MAX);
    let (target, m) = state
        .offsite
        .iter()
        .flat_map(|c| c.missing.iter().map(move |m| (&c.target, m)))
        .filter(|(_, m)| now - m.taken > max)
        .min_by_key(|(_, m)| m.taken)?;
    Some(format!(
        "the backup {} is still not in {} {} after it was taken, more than HEALTH_MAX_OFFSITE_DELAY_HOURS={}: {}",
        m.name,
        crate::target::the(target),
        human_duration(now - m.taken),
        settings.health.max_offsite_delay.as_secs() / 3600,
        m.error
    ))
}

/// "; last restore drill ..." when one is recorded. A failed drill is
/// reported (and alerted) but does not make the container unhealthy:
/// backups are still being made.
fn last_drill(state: &State) -> String {
    match state.last_run(Kind::Drill) {
        None => String::new(),
        Some(r) if r.outcome == crate::daemon::state::Outcome::Success => format!(
            "; last restore drill passed on {}",
            r.started.format("%Y-%m-%d")
        ),
        Some(r) => format!(
            "; last restore drill FAILED on {}: {}",
            r.started.format("%Y-%m-%d"),
            r.error.as_deref().unwrap_or("no detail")
        ),
    }
}

/// Read the state file and the free space of `BACKUP_DIR`, and judge.
pub fn check(settings: &Settings, now: DateTime<Utc>) -> Verdict {
    let state = State::load(&settings.backup_dir).map_err(|e| e.to_string())?;
    let free = free_bytes(&settings.backup_dir).map_err(|e| e.to_string());
    let summary = verdict(&state, settings, free, now)?;
    let status = Status::read(&crate::daemon::binlog::work_dir(settings));
    let newest_dump = state.last_success(Kind::Db).map(|r| r.started);
    let archive = binlog_verdict(status.as_ref(), settings, newest_dump, now)?;
    Ok(format!("{summary}{archive}"))
}

/// The binlog archive's part of the verdict: `Ok` with a few words to add
/// (empty when the archive is off; segments not off-site yet are named),
/// `Err` naming a gap after the newest dump, a lag over
/// `HEALTH_MAX_BINLOG_LAG_SECONDS`, or segments missing off-site for longer
/// than `HEALTH_MAX_OFFSITE_DELAY_HOURS`.
pub fn binlog_verdict(
    status: Option<&Status>,
    settings: &Settings,
    newest_dump: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Verdict {
    let mode = settings.binlog.mode;
    let status = match (mode, status) {
        (ArchiveMode::Off, _) => return Ok(String::new()),
        (ArchiveMode::Auto, None) => return Ok(String::new()),
        (ArchiveMode::On, None) => {
            return Err(format!(
                "the binlog archive has not reported (no {}/.binlog/status.json): it is not running; see the log of `run`",
                settings.backup_dir.display()
            ))
        }
        (_, Some(s)) => s,
    };
    if let Some(gap) = status
        .gaps
        .iter()
        .rev()
        .find(|g| newest_dump.is_none_or(|d| g.detected_at >= d))
    {
        return Err(format!(
            "{gap}: point-in-time restore cannot reach past it until a new database backup succeeds"
        ));
    }
    let max = settings.health.max_binlog_lag.as_secs() as i64;
    let lag = status.lag_seconds(now).unwrap_or(0);
    if lag > max {
        let why = status
            .last_error
            .as_deref()
            .map(|e| format!("; last error: {e}"))
            .unwrap_or_default();
        return Err(format!(
            "the binlog archive is {} behind the server, more than HEALTH_MAX_BINLOG_LAG_SECONDS={max}{why}",
            human_duration(chrono::Duration::seconds(lag))
        ));
    }
    let max_offsite = chrono::Duration::from_std(settings.health.max_offsite_delay)
        .unwrap_or(chrono::Duration::MAX);
    if let Some(p) = status
        .offsite_pending
        .iter()
        .filter(|p| now - p.oldest > max_offsite)
        .min_by_key(|p| p.oldest)
    {
        return Err(format!(
            "{p}, more than HEALTH_MAX_OFFSITE_DELAY_HOURS={}",
            settings.health.max_offsite_delay.as_secs() / 3600
        ));
    }
    let at = status
        .archived
        .as_ref()
        .map(|p| format!(" at {p}"))
        .unwrap_or_default();
    let offsite: String = status
        .offsite_pending
        .iter()
        .map(|p| format!("; {p}"))
        .collect();
    Ok(format!("; binlog archive {lag}s behind{at}{offsite}"))
}

/// Errors of the space check before a backup.
#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    /// Too little room for a backup the size of the last one.
    #[error("only {} free on {dir}, and the last backup took {}: free space or lower retention before the next backup", human_bytes(*.free), human_bytes(*.need))]
    TooLittle {
        /// The directory.
        dir: String,
        /// Bytes free.
        free: u64,
        /// Bytes the last backup took.
        need: u64,
    },
    /// Below the floor the operator set (`HEALTH_MIN_FREE_MB`).
    #[error("only {} free on {dir}, less than HEALTH_MIN_FREE_MB ({}): not starting the backup; free space, lower retention, or lower HEALTH_MIN_FREE_MB", human_bytes(*.free), human_bytes(*.floor))]
    BelowMinimum {
        /// The directory.
        dir: String,
        /// Bytes free.
        free: u64,
        /// `HEALTH_MIN_FREE_MB` in bytes.
        floor: u64,
    },
    /// statvfs failed.
    #[error("cannot measure free space on {dir}: {source}; check that BACKUP_DIR exists")]
    Io {
        /// The directory.
        dir: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// Before a backup: refuse when `BACKUP_DIR` has less room than
/// `HEALTH_MIN_FREE_MB` (`min_free`, when set: the operator's floor, as
/// `health` judges it), or than the last backup of `kind` took (a backup
/// that cannot fit would fail at the end, after loading the database for
/// nothing).
pub fn space_for_backup(
    dir: &Path,
    state: &State,
    kind: Kind,
    min_free: Option<u64>,
) -> Result<u64, SpaceError> {
    let free = free_bytes(dir).map_err(|source| SpaceError::Io {
        dir: dir.display().to_string(),
        source,
    })?;
    if let Some(floor) = min_free.filter(|f| free < *f) {
        return Err(SpaceError::BelowMinimum {
            dir: dir.display().to_string(),
            free,
            floor,
        });
    }
    let need = state.last_success(kind).and_then(|r| r.size).unwrap_or(0);
    if free < need {
        return Err(SpaceError::TooLittle {
            dir: dir.display().to_string(),
            free,
            need,
        });
    }
    Ok(free)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::schedule::Trigger;
    use crate::daemon::state::{Outcome, Run};
    use chrono::TimeZone;
    use rstest::rstest;

    const MB: u64 = 1_000_000;

    fn settings(extra: &[(&str, &str)]) -> Settings {
        let mut v = vec![("BACKUP_DIR", "/backups")];
        v.extend_from_slice(extra);
        Settings::from_vars(v).unwrap()
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 1, 21, 12, 0, 0).unwrap()
    }

    fn run(hours_ago: i64, outcome: Outcome, offsite: Offsite) -> Run {
        let started = now() - chrono::Duration::hours(hours_ago);
        Run {
            kind: Kind::Db,
            trigger: Trigger::Schedule,
            started,
            finished: started + chrono::Duration::minutes(1),
            outcome,
            file: Some("selmai_backup_x.sql.gz".into()),
            size: Some(10 * MB),
            offsite,
            error: (outcome == Outcome::Failed).then(|| "database unreachable".into()),
            warnings: Vec::new(),
        }
    }

    fn state(runs: Vec<Run>) -> State {
        State {
            version: 1,
            runs,
            offsite: Vec::new(),
        }
    }

    #[rstest]
    #[case::fresh(vec![run(3, Outcome::Success, Offsite::NotConfigured)], &[], 100 * MB, None)]
    #[case::none(vec![], &[], 100 * MB, Some("no successful database backup recorded"))]
    #[case::only_failures(vec![run(3, Outcome::Failed, Offsite::NotConfigured)], &[], 100 * MB,
        Some("the last attempt at 2025-01-21 09:00 UTC failed: database unreachable"))]
    #[case::stale(vec![run(27, Outcome::Success, Offsite::NotConfigured)], &[], 100 * MB,
        Some("is 1d 3h old, more than HEALTH_MAX_AGE_HOURS=26"))]
    #[case::stale_after_a_failure(vec![run(27, Outcome::Success, Offsite::NotConfigured), run(3, Outcome::Failed, Offsite::NotConfigured)],
        &[], 100 * MB, Some("the last attempt failed: database unreachable"))]
    #[case::custom_age(vec![run(27, Outcome::Success, Offsite::NotConfigured)], &[("HEALTH_MAX_AGE_HOURS", "48")], 100 * MB, None)]
    #[case::offsite_stored(vec![run(3, Outcome::Success, Offsite::Stored)], &[("S3_BUCKET", "b")], 100 * MB, None)]
    #[case::offsite_failed(vec![run(3, Outcome::Success, Offsite::Failed { error: "bucket: access denied".into() })],
        &[("S3_BUCKET", "b")], 100 * MB, Some("has no off-site copy: bucket: access denied"))]
    #[case::offsite_never_configured(vec![run(3, Outcome::Success, Offsite::NotConfigured)],
        &[("S3_BUCKET", "b")], 100 * MB, Some("no off-site copy"))]
    #[case::offsite_ignored_without_bucket(vec![run(3, Outcome::Success, Offsite::Failed { error: "x".into() })], &[], 100 * MB, None)]
    #[case::low_disk(vec![run(3, Outcome::Success, Offsite::NotConfigured)], &[], 19 * MB,
        Some("only 19.0 MB free on /backups, less than 20.0 MB (twice the last backup's 10.0 MB)"))]
    #[case::enough_disk(vec![run(3, Outcome::Success, Offsite::NotConfigured)], &[], 20 * MB, None)]
    #[case::custom_threshold(vec![run(3, Outcome::Success, Offsite::NotConfigured)], &[("HEALTH_MIN_FREE_MB", "500")], 100 * MB,
        Some("less than 500.0 MB (HEALTH_MIN_FREE_MB)"))]
    #[case::custom_threshold_lower(vec![run(3, Outcome::Success, Offsite::NotConfigured)], &[("HEALTH_MIN_FREE_MB", "1")], 5 * MB, None)]
    fn verdicts(
        #[case] runs: Vec<Run>,
        #[case] extra: &[(&str, &str)],
        #[case] free: u64,
        #[case] want_err: Option<&str>,
    ) {
        let got = verdict(&state(runs), &settings(extra), Ok(free), now());
        match (got, want_err) {
            (Ok(s), None) => assert!(s.starts_with("healthy"), "{s}"),
            (Err(e), Some(w)) => {
                assert!(e.contains(w), "{e}");
                assert!(!e.contains('\n'), "one line: {e}");
            }
            (got, want) => panic!("got {got:?}, want error {want:?}"),
        }
    }

    #[rstest]
    #[case::recent(20, &[], None)]
    #[case::overdue(27, &[], Some("the backup selmai_backup_old.sql.gz is still not in the bucket 1d 3h after it was taken, more than HEALTH_MAX_OFFSITE_DELAY_HOURS=26: bucket: gave up"))]
    #[case::custom_delay(27, &[("HEALTH_MAX_OFFSITE_DELAY_HOURS", "48")], None)]
    #[case::custom_delay_overdue(3, &[("HEALTH_MAX_OFFSITE_DELAY_HOURS", "2")], Some("selmai_backup_old.sql.gz is still not in the bucket 3h"))]
    fn a_backup_missing_off_site_too_long_is_named(
        #[case] hours_ago: i64,
        #[case] extra: &[(&str, &str)],
        #[case] want_err: Option<&str>,
    ) {
        let mut vars = vec![("S3_BUCKET", "b")];
        vars.extend_from_slice(extra);
        let mut st = state(vec![run(1, Outcome::Success, Offsite::Stored)]);
        st.offsite = vec![crate::daemon::state::OffsiteCopies {
            target: "bucket".into(),
            checked: Some(now()),
            missing: vec![crate::daemon::state::Missing {
                name: "selmai_backup_old.sql.gz".into(),
                taken: now() - chrono::Duration::hours(hours_ago),
                error: "bucket: gave up".into(),
            }],
        }];
        match (
            verdict(&st, &settings(&vars), Ok(100 * MB), now()),
            want_err,
        ) {
            (Ok(s), None) => assert!(s.starts_with("healthy"), "{s}"),
            (Err(e), Some(w)) => assert!(e.contains(w), "{e}"),
            (got, want) => panic!("got {got:?}, want error {want:?}"),
        }
    }

    #[test]
    fn free_space_of_a_real_directory() {
        let d = tempfile::tempdir().unwrap();
        assert!(free_bytes(d.path()).unwrap() > 0);
        assert!(free_bytes(Path::new("/nonexistent/dir")).is_err());
    }

    #[test]
    fn backup_is_refused_when_the_last_one_would_not_fit() {
        let d = tempfile::tempdir().unwrap();
        let free = free_bytes(d.path()).unwrap();
        let mut r = run(3, Outcome::Success, Offsite::NotConfigured);
        r.size = Some(free.saturating_mul(4));
        let err = space_for_backup(d.path(), &state(vec![r]), Kind::Db, None).unwrap_err();
        assert!(err.to_string().contains("the last backup took"), "{err}");
        space_for_backup(d.path(), &State::default(), Kind::Db, None).unwrap();
    }

    #[test]
    fn binlog_verdict_fails_on_a_gap_after_the_newest_dump_and_on_lag() {
        use crate::binlog::{Gap, Position, Status};
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let s = settings(&[("BINLOG_ARCHIVE", "on")]);
        let mut st = Status {
            caught_up_at: Some(now - chrono::Duration::seconds(5)),
            archived: Some(Position {
                file: "binlog.000009".into(),
                position: 1234,
            }),
            ..Status::default()
        };
        let dump = Some(now - chrono::Duration::hours(2));
        let ok = binlog_verdict(Some(&st), &s, dump, now).unwrap();
        assert!(ok.contains("5s behind at binlog.000009:1234"), "{ok}");
        // `on` without a status: the archive is not running.
        assert!(binlog_verdict(None, &s, dump, now)
            .unwrap_err()
            .contains("not running"));
        // `auto` without a status, or `off`: nothing to say.
        let auto = settings(&[]);
        assert_eq!(binlog_verdict(None, &auto, dump, now).unwrap(), "");
        // Lag over the limit.
        st.caught_up_at = Some(now - chrono::Duration::seconds(301));
        st.last_error = Some("connection refused".into());
        let e = binlog_verdict(Some(&st), &s, dump, now).unwrap_err();
        assert!(
            e.contains("HEALTH_MAX_BINLOG_LAG_SECONDS=300") && e.contains("connection refused"),
            "{e}"
        );
        st.caught_up_at = Some(now);
        // A gap after the newest dump is unhealthy; before it, it is history.
        st.gaps.push(Gap {
            detected_at: now - chrono::Duration::hours(1),
            after: Position {
                file: "binlog.000003".into(),
                position: 99,
            },
            server_oldest: "binlog.000007".into(),
            resumed_at: Position {
                file: "binlog.000007".into(),
                position: 4,
            },
        });
        let e = binlog_verdict(Some(&st), &s, dump, now).unwrap_err();
        assert!(
            e.contains("binlog gap from binlog.000003:99 to binlog.000007:4"),
            "{e}"
        );
        let newer_dump = Some(now - chrono::Duration::minutes(30));
        assert!(binlog_verdict(Some(&st), &s, newer_dump, now).is_ok());
    }

    #[test]
    fn binlog_verdict_names_segments_not_off_site_and_fails_once_they_are_overdue() {
        use crate::binlog::{OffsitePending, Status};
        let now = Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap();
        let s = settings(&[("BINLOG_ARCHIVE", "on")]);
        let mut st = Status {
            caught_up_at: Some(now),
            offsite_pending: vec![OffsitePending {
                target: "bucket".into(),
                segments: 3,
                oldest: now - chrono::Duration::minutes(10),
                error: "connection refused".into(),
            }],
            ..Status::default()
        };
        let ok = binlog_verdict(Some(&st), &s, None, now).unwrap();
        assert!(
            ok.contains("3 binlog segment(s) stored since 2026-11-30 11:50:00 UTC are not in the bucket yet: connection refused"),
            "{ok}"
        );
        st.offsite_pending[0].oldest = now - chrono::Duration::hours(27);
        let e = binlog_verdict(Some(&st), &s, None, now).unwrap_err();
        assert!(
            e.contains("not in the bucket yet") && e.contains("HEALTH_MAX_OFFSITE_DELAY_HOURS=26"),
            "{e}"
        );
    }
}
