//! When backups run: the kinds of backup, their cron schedules in the
//! operator's time zone, catch-up at start, and the scheduler loop.
//!
//! The time arithmetic is pure functions ([`Schedule::next_after`],
//! [`catch_up`]) over explicit instants, so tests check daylight saving
//! changes without a clock. The loop ([`run`]) takes its clock, its job
//! runner and its shutdown signal as arguments (mini-redis'
//! `server::run(listener, shutdown)`): tests drive it with tokio's paused
//! clock and a oneshot, never by sleeping.
//!
//! Jobs never overlap: the loop runs one at a time. A job whose time comes
//! while another kind runs waits and runs right after it; an occurrence of
//! the kind that is running (its own next run came due before it finished)
//! is skipped, since a fresh backup of that kind was just made. Both are
//! logged. Overlap with a one-off `backup` or `restore` from the CLI is the
//! job's business (the `BACKUP_DIR` lock), not this module's.
//!
//! This module does not know what a job does: that is the [`Runner`].

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

pub use crate::config::schedule::{CatchUp, Kind, Schedule};

/// Why a backup runs at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatchUpReason {
    /// `BACKUP_CATCH_UP=always`.
    Always,
    /// No successful backup of this kind was ever recorded.
    NeverRan,
    /// The newest success is older than a period and a run was missed.
    Missed {
        /// When the newest successful backup started.
        last: DateTime<Utc>,
        /// The occurrence that was missed.
        missed: DateTime<Utc>,
    },
}

impl fmt::Display for CatchUpReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CatchUpReason::Always => f.write_str("BACKUP_CATCH_UP=always"),
            CatchUpReason::NeverRan => f.write_str("no successful backup is recorded yet"),
            CatchUpReason::Missed { last, missed } => write!(
                f,
                "the newest successful backup ({}) is older than the schedule's period and the run due at {} was missed",
                last.format("%Y-%m-%d %H:%M:%S UTC"),
                missed.format("%Y-%m-%d %H:%M:%S UTC")
            ),
        }
    }
}

/// Whether to run `schedule`'s kind at start. `auto` runs one when the
/// newest successful backup is older than the schedule's period (the time
/// between its last two occurrences) and the last occurrence came after it
/// (a run was missed). Both conditions matter: a Friday backup is not
/// "missed" on Monday at 01:00 by a weekday schedule, and a manual backup
/// an hour ago makes a missed 02:00 run harmless.
pub fn catch_up(
    mode: CatchUp,
    schedule: &Schedule,
    tz: Tz,
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Option<CatchUpReason> {
    match mode {
        CatchUp::Never => None,
        CatchUp::Always => Some(CatchUpReason::Always),
        CatchUp::Auto => {
            let Some(last) = last_success else {
                return Some(CatchUpReason::NeverRan);
            };
            let missed = schedule.previous_at_or_before(now, tz)?;
            let before =
                schedule.previous_at_or_before(missed - chrono::Duration::seconds(1), tz)?;
            let period = missed - before;
            (last < missed && now - last > period).then_some(CatchUpReason::Missed { last, missed })
        }
    }
}

/// `t` as the operator reads it: local time, zone abbreviation and name.
pub fn local(t: DateTime<Utc>, tz: Tz) -> String {
    format!(
        "{} ({})",
        t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z"),
        tz.name()
    )
}

/// One scheduled kind.
#[derive(Debug, Clone)]
pub struct Job {
    /// What to run.
    pub kind: Kind,
    /// When.
    pub schedule: Schedule,
}

/// Why a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Its schedule fired.
    Schedule,
    /// Catch-up at start.
    CatchUp,
    /// A one-off command.
    Cli,
}

/// A run the loop asks the runner for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// Which kind.
    pub kind: Kind,
    /// The occurrence it stands for (the start time for a catch-up).
    pub at: DateTime<Utc>,
    /// Why.
    pub trigger: Trigger,
}

/// Executes one run. `run` may be dropped at any await point when the
/// process is told to stop; `abandoned` is then called to tidy up.
#[async_trait]
pub trait Runner: Send + Sync {
    /// Run the job to the end; the loop only needs to know it is over.
    async fn run(&self, due: &Due);
    /// `run(due)` was dropped half-way by a shutdown: clean up what it left.
    async fn abandoned(&self, due: &Due);
}

/// Wall-clock time for the loop.
pub trait Clock: Send + Sync {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that starts at a given instant and advances with tokio's
/// clock, so a test under `tokio::time::pause()` moves both at once.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now.
    pub fn starting_at(base: DateTime<Utc>) -> Self {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base
            + chrono::Duration::from_std(self.start.elapsed()).unwrap_or(chrono::Duration::MAX)
    }
}

/// The loop re-reads the wall clock at least this often, so a clock that
/// jumps (NTP, a suspended host) delays a run by at most this much.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// How long the runner's clean-up of an abandoned run may take: Docker
/// kills the container 10 s after SIGTERM.
pub const ABANDON_TIMEOUT: Duration = Duration::from_secs(4);

/// Run `jobs` on their schedules in `tz` until `shutdown` completes.
/// `catch_up` lists the kinds to run at once, before the first scheduled
/// occurrence. A run in progress when `shutdown` completes is dropped and
/// handed to [`Runner::abandoned`].
pub async fn run(
    jobs: &[Job],
    tz: Tz,
    catch_up: Vec<(Kind, CatchUpReason)>,
    runner: &dyn Runner,
    clock: &dyn Clock,
    shutdown: impl Future,
) {
    tokio::pin!(shutdown);
    let start = clock.now();
    let mut next: BTreeMap<Kind, DateTime<Utc>> = BTreeMap::new();
    for j in jobs {
        match j.schedule.next_after(start, tz) {
            Some(t) => {
                next.insert(j.kind, t);
            }
            None => {
                tracing::error!(kind = %j.kind, schedule = %j.schedule, "schedule never fires again; {} is not scheduled", j.kind)
            }
        }
    }
    log_next(jobs, &next, tz, start);
    let mut queue: VecDeque<Due> = catch_up
        .into_iter()
        .filter(|(k, _)| next.contains_key(k))
        .map(|(kind, reason)| {
            tracing::info!(kind = %kind, reason = %reason, "catching up: running a {kind} backup now");
            Due {
                kind,
                at: start,
                trigger: Trigger::CatchUp,
            }
        })
        .collect();

    loop {
        if queue.is_empty() {
            let Some((_, &at)) = next.iter().min_by_key(|(_, t)| **t) else {
                // Nothing scheduled at all: wait for the end.
                shutdown.as_mut().await;
                return;
            };
            let now = clock.now();
            if at > now {
                let wait = (at - now).to_std().unwrap_or_default().min(MAX_SLEEP);
                tokio::select! {
                    _ = shutdown.as_mut() => {
                        tracing::info!("stopping: no backup was running");
                        return;
                    }
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
            let now = clock.now();
            let mut due: Vec<(DateTime<Utc>, Kind)> = next
                .iter()
                .filter(|(_, t)| **t <= now)
                .map(|(k, t)| (*t, *k))
                .collect();
            due.sort();
            for (at, kind) in due {
                queue.push_back(Due {
                    kind,
                    at,
                    trigger: Trigger::Schedule,
                });
                advance(jobs, &mut next, kind, now, tz);
            }
            continue;
        }

        let due = queue.pop_front().expect("queue checked non-empty");
        let finished = {
            let job = runner.run(&due);
            tokio::pin!(job);
            tokio::select! {
                _ = shutdown.as_mut() => false,
                _ = &mut job => true,
            }
        };
        if !finished {
            tracing::warn!(kind = %due.kind, "stopping: abandoning the running {} backup", due.kind);
            if tokio::time::timeout(ABANDON_TIMEOUT, runner.abandoned(&due))
                .await
                .is_err()
            {
                tracing::warn!(kind = %due.kind, "cleaning up the abandoned backup took too long; the next start removes what is left");
            }
            return;
        }

        // Occurrences that came due while it ran: its own are skipped (a
        // backup of that kind was just made), others wait their turn.
        let now = clock.now();
        let mut late: Vec<(DateTime<Utc>, Kind)> = next
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, t)| (*t, *k))
            .collect();
        late.sort();
        for (at, kind) in late {
            let when = local(at, tz);
            if kind == due.kind || queue.iter().any(|d| d.kind == kind) {
                tracing::warn!(kind = %kind, due = %when, "skipping the {kind} run due at {when}: it came due while a {kind} backup was still running or waiting");
            } else {
                tracing::info!(kind = %kind, due = %when, "the {kind} run due at {when} waited for the {} backup to finish; running it now", due.kind);
                queue.push_back(Due {
                    kind,
                    at,
                    trigger: Trigger::Schedule,
                });
            }
            advance(jobs, &mut next, kind, now, tz);
        }
        log_next(jobs, &next, tz, now);
    }
}

fn advance(
    jobs: &[Job],
    next: &mut BTreeMap<Kind, DateTime<Utc>>,
    kind: Kind,
    now: DateTime<Utc>,
    tz: Tz,
) {
    let Some(job) = jobs.iter().find(|j| j.kind == kind) else {
        return;
    };
    match job.schedule.next_after(now, tz) {
        Some(t) => {
            next.insert(kind, t);
        }
        None => {
            next.remove(&kind);
            tracing::error!(kind = %kind, schedule = %job.schedule, "schedule never fires again; {kind} is no longer scheduled");
        }
    }
}

fn log_next(jobs: &[Job], next: &BTreeMap<Kind, DateTime<Utc>>, tz: Tz, now: DateTime<Utc>) {
    for j in jobs {
        if let Some(t) = next.get(&j.kind) {
            let when = local(*t, tz);
            tracing::info!(kind = %j.kind, schedule = %j.schedule, next = %when, "next {} backup at {when}, in {}", j.kind, human_duration(*t - now));
        }
    }
}

/// "3h 05m", "2d 4h", "45s".
pub fn human_duration(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    if days > 0 {
        format!("{days}d {hours}h")
    } else if hours > 0 {
        format!("{hours}h {mins:02}m")
    } else if mins > 0 {
        format!("{mins}m {:02}s", s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    const PARIS: Tz = chrono_tz::Europe::Paris;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[rstest]
    #[case("0 2 * * *")]
    #[case("30 2 * * 0")]
    #[case("*/15 * * * *")]
    #[case("0 4 1 * *")]
    #[case("0 3 * * SUN")]
    #[case("@daily")]
    fn valid_schedules(#[case] expr: &str) {
        Schedule::parse(expr).unwrap();
    }

    #[rstest]
    #[case("0 2 * *", "4 fields")]
    #[case("0 0 2 * * *", "6 fields")]
    #[case("61 2 * * *", "not a cron expression")]
    #[case("0 2 * * MON-FUN", "not a cron expression")]
    #[case("0 0 30 2 *", "never matches")]
    #[case("", "0 fields")]
    fn invalid_schedules(#[case] expr: &str, #[case] want: &str) {
        let err = Schedule::parse(expr).unwrap_err();
        assert!(err.contains(want), "{err}");
    }

    /// Europe/Paris: spring forward on 2025-03-30 (02:00 CET -> 03:00 CEST),
    /// fall back on 2025-10-26 (03:00 CEST -> 02:00 CET).
    #[rstest]
    // An ordinary day: 02:00 CET is 01:00 UTC.
    #[case("0 2 * * *", "2025-01-10T12:00:00Z", "2025-01-11T01:00:00Z")]
    // 02:30 does not exist on the last Sunday of March: it runs at 03:00 CEST.
    #[case("30 2 * * *", "2025-03-29T12:00:00Z", "2025-03-30T01:00:00Z")]
    #[case("30 2 * * 0", "2025-03-29T12:00:00Z", "2025-03-30T01:00:00Z")]
    // ... and the day after at 02:30 CEST again.
    #[case("30 2 * * *", "2025-03-30T01:00:00Z", "2025-03-31T00:30:00Z")]
    // 03:30 CEST exists that day, an hour after 01:30 UTC's CET equivalent.
    #[case("30 3 * * *", "2025-03-29T12:00:00Z", "2025-03-30T01:30:00Z")]
    // 02:30 happens twice on the last Sunday of October: it runs the first time...
    #[case("30 2 * * *", "2025-10-25T12:00:00Z", "2025-10-26T00:30:00Z")]
    // ... and not the second: the next run is the day after.
    #[case("30 2 * * *", "2025-10-26T00:30:00Z", "2025-10-27T01:30:00Z")]
    // An hourly job runs in both halves of the repeated hour.
    #[case("30 * * * *", "2025-10-26T00:30:00Z", "2025-10-26T01:30:00Z")]
    fn next_run_across_dst_in_paris(#[case] expr: &str, #[case] after: &str, #[case] want: &str) {
        let s = Schedule::parse(expr).unwrap();
        assert_eq!(s.next_after(utc(after), PARIS), Some(utc(want)));
    }

    #[test]
    fn next_run_in_utc_by_default() {
        let s = Schedule::parse("0 2 * * *").unwrap();
        assert_eq!(
            s.next_after(utc("2025-03-30T01:00:00Z"), Tz::UTC),
            Some(utc("2025-03-30T02:00:00Z"))
        );
    }

    #[test]
    fn local_time_names_the_zone() {
        assert_eq!(
            local(utc("2025-03-30T01:00:00Z"), PARIS),
            "2025-03-30 03:00:00 CEST (Europe/Paris)"
        );
    }

    #[rstest]
    #[case::never_ran(CatchUp::Auto, None, "2025-01-10T12:00:00Z", Some("no successful"))]
    #[case::fresh(
        CatchUp::Auto,
        Some("2025-01-10T02:00:01Z"),
        "2025-01-10T12:00:00Z",
        None
    )]
    // Rebooted at 01:59, back at 02:05: the 02:00 run was missed.
    #[case::rebooted_over_the_run(
        CatchUp::Auto,
        Some("2025-01-09T02:00:01Z"),
        "2025-01-10T02:05:00Z",
        Some("was missed")
    )]
    // Back at 01:59:30: the 02:00 run is still to come.
    #[case::rebooted_before_the_run(
        CatchUp::Auto,
        Some("2025-01-09T02:00:01Z"),
        "2025-01-10T01:59:30Z",
        None
    )]
    // A manual backup an hour ago: younger than a period, nothing to catch up.
    #[case::manual_backup_since(
        CatchUp::Auto,
        Some("2025-01-10T01:00:00Z"),
        "2025-01-10T03:00:00Z",
        None
    )]
    #[case::down_for_a_week(
        CatchUp::Auto,
        Some("2025-01-03T02:00:00Z"),
        "2025-01-10T12:00:00Z",
        Some("was missed")
    )]
    #[case::always(
        CatchUp::Always,
        Some("2025-01-10T02:00:01Z"),
        "2025-01-10T12:00:00Z",
        Some("always")
    )]
    #[case::never(CatchUp::Never, None, "2025-01-10T12:00:00Z", None)]
    fn catch_up_daily(
        #[case] mode: CatchUp,
        #[case] last: Option<&str>,
        #[case] now: &str,
        #[case] want: Option<&str>,
    ) {
        let s = Schedule::parse("0 2 * * *").unwrap();
        let got = catch_up(mode, &s, Tz::UTC, last.map(utc), utc(now)).map(|r| r.to_string());
        match (got, want) {
            (None, None) => {}
            (Some(g), Some(w)) => assert!(g.contains(w), "{g}"),
            (g, w) => panic!("got {g:?}, want {w:?}"),
        }
    }

    #[test]
    fn catch_up_weekdays_only_does_not_fire_on_monday_night() {
        // Friday 2025-01-10 02:00 ran; Monday 01:00 start: nothing was missed.
        let s = Schedule::parse("0 2 * * 1-5").unwrap();
        let last = Some(utc("2025-01-10T02:00:01Z"));
        assert_eq!(
            catch_up(
                CatchUp::Auto,
                &s,
                Tz::UTC,
                last,
                utc("2025-01-13T01:00:00Z")
            ),
            None
        );
        assert!(catch_up(
            CatchUp::Auto,
            &s,
            Tz::UTC,
            last,
            utc("2025-01-13T03:00:00Z")
        )
        .is_some());
    }

    #[rstest]
    #[case("auto", CatchUp::Auto)]
    #[case("ALWAYS", CatchUp::Always)]
    #[case("never", CatchUp::Never)]
    fn catch_up_modes(#[case] s: &str, #[case] want: CatchUp) {
        assert_eq!(s.parse::<CatchUp>().unwrap(), want);
        assert!("sometimes".parse::<CatchUp>().is_err());
    }

    /// (kind, trigger, due, started at)
    type Record = (Kind, Trigger, DateTime<Utc>, DateTime<Utc>);

    /// Records every run with the (test) wall time it started at, takes
    /// `took` of tokio time per run, and fails the test on overlap.
    struct Recorder {
        clock: TokioClock,
        took: BTreeMap<Kind, Duration>,
        running: AtomicBool,
        runs: Mutex<Vec<Record>>,
        abandoned: Mutex<Vec<Kind>>,
    }

    impl Recorder {
        fn new(clock: TokioClock, took: &[(Kind, u64)]) -> Self {
            Recorder {
                clock,
                took: took
                    .iter()
                    .map(|(k, s)| (*k, Duration::from_secs(*s)))
                    .collect(),
                running: AtomicBool::new(false),
                runs: Mutex::default(),
                abandoned: Mutex::default(),
            }
        }
        fn runs(&self) -> Vec<Record> {
            self.runs.lock().unwrap().clone()
        }
    }

    #[async_trait]
    impl Runner for Recorder {
        async fn run(&self, due: &Due) {
            assert!(
                !self.running.swap(true, Ordering::SeqCst),
                "two runs overlap"
            );
            self.runs
                .lock()
                .unwrap()
                .push((due.kind, due.trigger, due.at, self.clock.now()));
            let took = self.took.get(&due.kind).copied().unwrap_or_default();
            tokio::time::sleep(took).await;
            self.running.store(false, Ordering::SeqCst);
        }
        async fn abandoned(&self, due: &Due) {
            self.running.store(false, Ordering::SeqCst);
            self.abandoned.lock().unwrap().push(due.kind);
        }
    }

    fn job(kind: Kind, expr: &str) -> Job {
        Job {
            kind,
            schedule: Schedule::parse(expr).unwrap(),
        }
    }

    /// Runs the loop under the paused clock from `start` for `span`.
    async fn drive(
        jobs: &[Job],
        tz: Tz,
        catch: Vec<(Kind, CatchUpReason)>,
        rec: &Recorder,
        span: Duration,
    ) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stopper = async move {
            tokio::time::sleep(span).await;
            let _ = tx.send(());
        };
        let clock = rec.clock;
        tokio::join!(
            run(jobs, tz, catch, rec, &clock, async {
                let _ = rx.await;
            }),
            stopper
        );
    }

    #[tokio::test(start_paused = true)]
    async fn daily_job_runs_at_its_times_across_spring_forward_in_paris() {
        let start = utc("2025-03-28T12:00:00Z");
        let rec = Recorder::new(TokioClock::starting_at(start), &[(Kind::Db, 600)]);
        let jobs = [job(Kind::Db, "30 2 * * *")];
        drive(&jobs, PARIS, vec![], &rec, Duration::from_secs(4 * 86_400)).await;
        let at: Vec<_> = rec.runs().into_iter().map(|r| (r.2, r.3)).collect();
        let want = [
            "2025-03-29T01:30:00Z", // 02:30 CET
            "2025-03-30T01:00:00Z", // 02:30 does not exist: 03:00 CEST
            "2025-03-31T00:30:00Z", // 02:30 CEST
            "2025-04-01T00:30:00Z",
        ];
        assert_eq!(at.len(), want.len(), "{at:?}");
        for ((due, started), w) in at.iter().zip(want) {
            assert_eq!(*due, utc(w));
            // Started at its time (the clock re-reads every minute at most).
            assert!(*started >= utc(w) && *started - utc(w) < chrono::Duration::seconds(1));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn daily_job_runs_once_when_paris_falls_back() {
        let start = utc("2025-10-25T12:00:00Z");
        let rec = Recorder::new(TokioClock::starting_at(start), &[(Kind::Db, 60)]);
        let jobs = [job(Kind::Db, "30 2 * * *")];
        drive(&jobs, PARIS, vec![], &rec, Duration::from_secs(2 * 86_400)).await;
        let due: Vec<_> = rec.runs().into_iter().map(|r| r.2).collect();
        assert_eq!(
            due,
            [utc("2025-10-26T00:30:00Z"), utc("2025-10-27T01:30:00Z")]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_runs_first_then_the_schedule() {
        let start = utc("2025-01-10T12:00:00Z");
        let rec = Recorder::new(TokioClock::starting_at(start), &[(Kind::Db, 300)]);
        let jobs = [job(Kind::Db, "0 2 * * *")];
        let catch = vec![(Kind::Db, CatchUpReason::NeverRan)];
        drive(&jobs, Tz::UTC, catch, &rec, Duration::from_secs(86_400)).await;
        let runs: Vec<_> = rec.runs().into_iter().map(|r| (r.1, r.3)).collect();
        assert_eq!(
            runs,
            [
                (Trigger::CatchUp, start),
                (Trigger::Schedule, utc("2025-01-11T02:00:00Z"))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn catch_up_of_an_unscheduled_kind_is_ignored() {
        let start = utc("2025-01-10T12:00:00Z");
        let rec = Recorder::new(TokioClock::starting_at(start), &[]);
        let jobs = [job(Kind::Db, "0 2 * * *")];
        let catch = vec![(Kind::Full, CatchUpReason::Always)];
        drive(&jobs, Tz::UTC, catch, &rec, Duration::from_secs(3600)).await;
        assert!(rec.runs().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_longer_than_the_period_skips_its_own_next_occurrences() {
        // Every 30 minutes, each run takes 70: runs never overlap, the
        // occurrences that came due meanwhile are skipped.
        let start = utc("2025-01-10T00:00:30Z");
        let rec = Recorder::new(TokioClock::starting_at(start), &[(Kind::Db, 70 * 60)]);
        let jobs = [job(Kind::Db, "*/30 * * * *")];
        drive(&jobs, Tz::UTC, vec![], &rec, Duration::from_secs(4 * 3600)).await;
        let starts: Vec<_> = rec.runs().into_iter().map(|r| r.3).collect();
        assert_eq!(
            starts,
            [
                utc("2025-01-10T00:30:00Z"),
                // 01:00 and 01:30 came due during the first run: skipped.
                utc("2025-01-10T02:00:00Z"),
                utc("2025-01-10T03:30:00Z"),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn another_kind_due_during_a_run_waits_for_it() {
        // db at 02:00 takes 2 hours; config at 03:00 waits until 04:00.
        let start = utc("2025-01-12T00:00:00Z"); // a Sunday
        let rec = Recorder::new(
            TokioClock::starting_at(start),
            &[(Kind::Db, 7200), (Kind::Config, 60)],
        );
        let jobs = [job(Kind::Db, "0 2 * * *"), job(Kind::Config, "0 3 * * 0")];
        drive(&jobs, Tz::UTC, vec![], &rec, Duration::from_secs(6 * 3600)).await;
        let runs: Vec<_> = rec.runs().into_iter().map(|r| (r.0, r.2, r.3)).collect();
        assert_eq!(
            runs,
            [
                (
                    Kind::Db,
                    utc("2025-01-12T02:00:00Z"),
                    utc("2025-01-12T02:00:00Z")
                ),
                (
                    Kind::Config,
                    utc("2025-01-12T03:00:00Z"),
                    utc("2025-01-12T04:00:00Z")
                ),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn two_kinds_due_at_the_same_time_run_one_after_the_other() {
        let start = utc("2025-01-31T23:00:00Z");
        let rec = Recorder::new(
            TokioClock::starting_at(start),
            &[(Kind::Db, 600), (Kind::Full, 600)],
        );
        let jobs = [job(Kind::Db, "0 4 * * *"), job(Kind::Full, "0 4 1 * *")];
        drive(&jobs, Tz::UTC, vec![], &rec, Duration::from_secs(6 * 3600)).await;
        let runs: Vec<_> = rec.runs().into_iter().map(|r| (r.0, r.3)).collect();
        assert_eq!(
            runs,
            [
                (Kind::Db, utc("2025-02-01T04:00:00Z")),
                (Kind::Full, utc("2025-02-01T04:10:00Z")),
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_mid_run_abandons_it_and_returns() {
        let start = utc("2025-01-10T01:59:00Z");
        let rec = Recorder::new(TokioClock::starting_at(start), &[(Kind::Db, 3600)]);
        let jobs = [job(Kind::Db, "0 2 * * *")];
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let clock = rec.clock;
        let stopped_at = tokio::join!(
            async {
                run(&jobs, Tz::UTC, vec![], &rec, &clock, rx).await;
                clock.now()
            },
            async {
                tokio::time::sleep(Duration::from_secs(120)).await;
                let _ = tx.send(());
            }
        )
        .0;
        assert_eq!(rec.runs().len(), 1);
        assert_eq!(*rec.abandoned.lock().unwrap(), [Kind::Db]);
        assert_eq!(stopped_at, utc("2025-01-10T02:01:00Z"));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_while_idle_returns_at_once() {
        let start = utc("2025-01-10T03:00:00Z");
        let rec = Recorder::new(TokioClock::starting_at(start), &[]);
        let jobs = [job(Kind::Db, "0 2 * * *")];
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tx.send(()).unwrap();
        run(&jobs, Tz::UTC, vec![], &rec, &rec.clock, rx).await;
        assert!(rec.runs().is_empty() && rec.abandoned.lock().unwrap().is_empty());
        assert_eq!(rec.clock.now(), start);
    }

    #[rstest]
    #[case(45, "45s")]
    #[case(125, "2m 05s")]
    #[case(3 * 3600 + 5 * 60, "3h 05m")]
    #[case(2 * 86_400 + 4 * 3600, "2d 4h")]
    fn durations_read_well(#[case] secs: i64, #[case] want: &str) {
        assert_eq!(human_duration(chrono::Duration::seconds(secs)), want);
    }
}
