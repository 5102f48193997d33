//! One run of a backup kind, start to finish, as the daemon does it.
//!
//! [`Jobs::run_once`] takes the `BACKUP_DIR` lock (waiting for a one-off
//! `backup` or `restore` to finish), checks free space, runs the backup,
//! applies retention on every target after a success only, records the run
//! in the state file, updates the metrics and sends the alerts, and returns
//! the record: tests call it directly, the scheduler loop around it is thin
//! ([`crate::daemon::schedule::run`] through the [`Runner`] impl).
//!
//! A run dropped half-way by a shutdown is tidied by
//! [`Jobs::clean_up_abandoned`]: dropping the backup future already drops
//! the uploads (whose `Drop` removes their partial files) and the dump
//! connection; what can remain is a manifest on the volume whose data was
//! never published (the manifest is stored first there), data off-site
//! whose manifest was never stored (it goes last there), and the parts of
//! an unfinished full backup, and those are deleted here.
//!
//! Not here: when runs happen (`schedule`), how a backup is made
//! (`pipeline`), which backups to keep (`retention`).

use std::error::Error as StdError;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::backup::full::{self, FullError};
use crate::backup::pipeline::{self, BackupError, BackupOutcome, Encoding, TargetFailure};
use crate::config::Settings;
use crate::daemon::health::{self, SpaceError};
use crate::daemon::metrics::Metrics;
use crate::daemon::notify::{Event, EventKind, Notifier};
use crate::daemon::offsite;
use crate::daemon::retention;
use crate::daemon::schedule::{Due, Kind, Runner, Trigger};
use crate::daemon::state::{self, Offsite, Outcome, Run, State};
use crate::dump::{DumpOptions, NoHooks};
use crate::format::archive::ArchiveKind;
use crate::format::catalog::{self, DirLock, LockError};
use crate::restore::drill::{self, DrillError};
use crate::restore::open::{self, LocateError};
use crate::restore::replay;
use crate::restore::RestoreError;
use crate::target::budget;
use crate::target::Target;

/// Why a run made no backup.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The lock stayed busy.
    #[error("{source} (waited {} min)", waited.as_secs() / 60)]
    Lock {
        /// The lock error.
        #[source]
        source: LockError,
        /// How long we waited.
        waited: Duration,
    },
    /// Not enough room.
    #[error(transparent)]
    Space(#[from] SpaceError),
    /// The backup failed.
    #[error(transparent)]
    Backup(#[from] BackupError),
    /// The newest backup could not be found for a drill.
    #[error(transparent)]
    Locate(#[from] LocateError),
    /// The newest backup did not verify, so it was not drilled.
    #[error(transparent)]
    Verify(#[from] RestoreError),
    /// The restore drill failed or found differences.
    #[error(transparent)]
    Drill(#[from] DrillError),
    /// The binlog chain to the newest dump could not be read or replayed.
    #[error(transparent)]
    Chain(#[from] replay::PitrError),
    /// The full backup failed (none of it was kept).
    #[error(transparent)]
    Full(#[from] FullError),
}

impl From<open::PrepareError> for JobError {
    fn from(e: open::PrepareError) -> Self {
        match e {
            open::PrepareError::Locate(e) => JobError::Locate(e),
            open::PrepareError::Read(e) => JobError::Verify(e),
        }
    }
}

/// The error and its sources on one line, skipping a source whose text is
/// already in the message.
pub fn error_line(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !out.contains(&t) {
            out.push_str(": ");
            out.push_str(&t);
        }
        cur = s.source();
    }
    out
}

/// The file-name prefix of an archive kind's backups.
fn archive_prefix(s: &Settings, kind: Kind) -> &str {
    if kind == Kind::Uploads {
        &s.uploads_archive.prefix
    } else {
        &s.config_archive.prefix
    }
}

/// What a successful run produced, before it is recorded.
struct Done {
    file: String,
    size: u64,
    offsite: Offsite,
    warnings: Vec<String>,
    written: Written,
}

/// What a successful run wrote, for the one-off `backup`'s output and exit
/// code (the daemon only records the [`Run`]).
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// The files written, in order (a full backup's parts, then its set manifest).
    pub files: Vec<String>,
    /// Why a copy to an off-site target failed, when one did (the local
    /// backup still counts).
    pub offsite_failed: Option<String>,
}

/// Runs backups for the daemon.
pub struct Jobs {
    settings: Arc<Settings>,
    targets: Vec<Arc<dyn Target>>,
    notifier: Notifier,
    metrics: Metrics,
    lock_wait: Duration,
    lock_poll: Duration,
    /// Apply retention after a success (`backup --no-prune` turns it off).
    prune: bool,
    /// Start of the run in progress, for the clean-up after an abandon.
    current: Mutex<Option<DateTime<Utc>>>,
}

impl Jobs {
    /// Jobs writing to `targets` (the volume first), alerting through `notifier`.
    pub fn new(
        settings: Arc<Settings>,
        targets: Vec<Arc<dyn Target>>,
        notifier: Notifier,
        metrics: Metrics,
    ) -> Self {
        Jobs {
            settings,
            targets,
            notifier,
            metrics,
            lock_wait: Duration::from_secs(3600),
            lock_poll: Duration::from_secs(5),
            prune: true,
            current: Mutex::new(None),
        }
    }

    /// Whether retention runs after a successful backup (default yes).
    pub fn with_prune(mut self, prune: bool) -> Self {
        self.prune = prune;
        self
    }

    /// How long a run waits for a one-off `backup` or `restore` holding
    /// the lock (default 1 h), and how often it tries.
    pub fn with_lock_wait(mut self, wait: Duration, poll: Duration) -> Self {
        self.lock_wait = wait;
        self.lock_poll = poll;
        self
    }

    /// The metrics this runner updates.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Run one backup of `kind` to the end: lock, space check, backup,
    /// retention, state, metrics, alerts. Never fails: the returned record
    /// says how it went.
    pub async fn run_once(&self, kind: Kind, trigger: Trigger) -> Run {
        self.run_reporting(kind, trigger).await.0
    }

    /// [`Jobs::run_once`], also handing back what was written, or the
    /// error itself (the one-off `backup` maps it to an exit code). The
    /// record, the metrics and the alerts are the same.
    pub async fn run_reporting(
        &self,
        kind: Kind,
        trigger: Trigger,
    ) -> (Run, Result<Written, JobError>) {
        let started = Utc::now();
        self.notifier.started(kind).await;
        let result = self.locked_run(kind, trigger, started).await;
        let (run, result) = match result {
            Ok((r, w)) => (r, Ok(w)),
            Err((e, lock)) => {
                let error = error_line(&e);
                tracing::error!(kind = %kind, error = %error, "{kind} backup failed");
                let run = Run {
                    kind,
                    trigger,
                    started,
                    finished: Utc::now(),
                    outcome: Outcome::Failed,
                    file: None,
                    size: None,
                    offsite: if self.settings.has_offsite() && kind != Kind::Drill {
                        Offsite::Failed {
                            error: "no backup was made".into(),
                        }
                    } else {
                        Offsite::NotConfigured
                    },
                    error: Some(error),
                    warnings: Vec::new(),
                };
                // Without the lock the state file is another process's to write.
                if lock.is_some() {
                    self.save(&run);
                }
                (run, Err(e))
            }
        };
        self.metrics.record(&run);
        let event = Event {
            event: match (run.outcome, run.warnings.is_empty()) {
                (Outcome::Success, true) => EventKind::BackupSucceeded,
                (Outcome::Success, false) => EventKind::BackupWarning,
                _ => EventKind::BackupFailed,
            },
            kind,
            file: run.file.clone(),
            size: run.size,
            duration: (run.finished - run.started).num_milliseconds() as f64 / 1000.0,
            error: run.error.clone(),
            warnings: run.warnings.clone(),
            host: self.notifier.host().to_owned(),
        };
        self.notifier.finished(&event).await;
        (run, result)
    }

    /// The part of a run that holds the lock; on error, says whether the
    /// lock was held (so the failure can be recorded).
    async fn locked_run(
        &self,
        kind: Kind,
        trigger: Trigger,
        started: DateTime<Utc>,
    ) -> Result<(Run, Written), (JobError, Option<DirLock>)> {
        let lock = self.lock(kind).await.map_err(|e| (e, None))?;
        let dir = &self.settings.backup_dir;
        // One budget per run for each off-site target; the volume has none.
        let targets = budget::for_run(&self.targets, self.settings.offsite_timeout);
        // Off-site leftovers are cleaned after the local backup, which
        // must not wait on them; on the volume, partial files and manifests
        // whose backup was never stored go now.
        pipeline::clean_interrupted(&targets[..1], &pipeline::our_prefixes(&self.settings)).await;
        let state = State::load(dir).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "ignoring the state file for the space check");
            State::default()
        });
        // A drill writes nothing into BACKUP_DIR.
        if kind != Kind::Drill {
            if let Err(e) =
                health::space_for_backup(dir, &state, kind, self.settings.health.min_free_bytes)
            {
                return Err((e.into(), Some(lock)));
            }
        }
        *self.current.lock().expect("current lock") = Some(started);
        let done = self.backup(kind, &targets).await;
        *self.current.lock().expect("current lock") = None;
        // After every run but a drill, failed or not: what earlier runs
        // could not copy off-site is copied now.
        let caught_up = if kind == Kind::Drill {
            Vec::new()
        } else {
            self.catch_up_offsite(&targets).await
        };
        let mut done = match done {
            Ok(d) => d,
            Err(e) => return Err((e, Some(lock))),
        };
        done.warnings.extend(caught_up);
        let run = Run {
            kind,
            trigger,
            started,
            finished: Utc::now(),
            outcome: Outcome::Success,
            file: Some(done.file),
            size: Some(done.size),
            offsite: done.offsite,
            error: None,
            warnings: done.warnings,
        };
        self.save(&run);
        drop(lock);
        Ok((run, done.written))
    }

    /// Take the lock, waiting up to `lock_wait` for another process.
    async fn lock(&self, kind: Kind) -> Result<DirLock, JobError> {
        let began = tokio::time::Instant::now();
        let mut said = false;
        loop {
            match catalog::lock_dir(&self.settings.backup_dir) {
                Ok(l) => {
                    if said {
                        tracing::info!(kind = %kind, "the lock is free; starting the {kind} backup");
                    }
                    return Ok(l);
                }
                Err(LockError::Busy(path)) if began.elapsed() < self.lock_wait => {
                    if !said {
                        tracing::warn!(kind = %kind, lock = %path.display(), "the {kind} backup waits: another backup or restore holds the lock; retrying every {}s for up to {} min", self.lock_poll.as_secs(), self.lock_wait.as_secs() / 60);
                        said = true;
                    }
                    tokio::time::sleep(self.lock_poll).await;
                }
                Err(source) => {
                    return Err(JobError::Lock {
                        source,
                        waited: began.elapsed(),
                    })
                }
            }
        }
    }

    async fn catch_up_offsite(&self, targets: &[Arc<dyn Target>]) -> Vec<String> {
        offsite::catch_up_and_record(targets, &self.settings).await
    }

    /// At start: catch up the off-site copies, unless a one-off `backup` or
    /// `restore` holds the lock (the next run does it then).
    pub async fn catch_up_at_start(&self) {
        if self.targets.len() < 2 {
            return;
        }
        let Ok(lock) = catalog::lock_dir(&self.settings.backup_dir) else {
            return;
        };
        let targets = budget::for_run(&self.targets, self.settings.offsite_timeout);
        for w in self.catch_up_offsite(&targets).await {
            tracing::warn!("{w}");
        }
        drop(lock);
    }

    /// The backup itself, then retention. One arm per kind.
    async fn backup(&self, kind: Kind, targets: &[Arc<dyn Target>]) -> Result<Done, JobError> {
        match kind {
            Kind::Db => {
                let outcome = pipeline::backup_db(
                    &self.settings.db().map_err(BackupError::from)?,
                    &Encoding::of(&self.settings),
                    &self.settings.prefix,
                    targets,
                    &DumpOptions::default(),
                    &NoHooks,
                )
                .await?;
                let mut done = self.done(outcome);
                done.warnings.extend(self.prune(kind, targets).await);
                Ok(done)
            }
            Kind::Config | Kind::Uploads => {
                let archive = if kind == Kind::Config {
                    ArchiveKind::Config
                } else {
                    ArchiveKind::Uploads
                };
                let outcome = pipeline::backup_archive(
                    archive.settings(&self.settings),
                    &Encoding::of(&self.settings),
                    targets,
                    archive,
                )
                .await?;
                let changed = outcome.manifest.changed_file_warnings();
                let mut done = self.done(outcome);
                done.warnings.extend(changed);
                done.warnings.extend(self.prune(kind, targets).await);
                Ok(done)
            }
            Kind::Drill => {
                let s = &self.settings;
                let (source, _) =
                    open::prepare("latest", &s.prefix, targets, None, s.passphrase.as_ref())
                        .await?;
                let db = s.db().map_err(BackupError::from)?;
                let report = drill::run(
                    &source,
                    s.passphrase.as_ref(),
                    &db,
                    &drill::scratch_name(),
                    s.restore_definer,
                )
                .await?;
                tracing::info!("{report}");
                let report = report.into_result()?;
                self.drill_chain(targets).await?;
                Ok(Done {
                    // Nothing was written: the metrics' bytes stay true.
                    size: 0,
                    file: report.file,
                    offsite: Offsite::NotConfigured,
                    warnings: Vec::new(),
                    written: Written::default(),
                })
            }
            Kind::Full => {
                let spec = full::FullSpec::of(&self.settings).map_err(BackupError::from)?;
                let o = full::backup(&spec, targets, &DumpOptions::default(), &NoHooks).await?;
                let mut done = self.done_of(o.set, o.manifest.size(), &o.stored, &o.failed);
                // The parts first, then the set manifest that completes them.
                let set = done.written.files.pop();
                done.written.files = o.manifest.parts.iter().map(|p| p.file.clone()).collect();
                done.written.files.extend(set);
                done.warnings.extend(o.warnings);
                done.warnings.extend(self.prune(kind, targets).await);
                Ok(done)
            }
        }
    }

    fn done(&self, o: BackupOutcome) -> Done {
        self.done_of(o.file, o.manifest.size, &o.stored, &o.failed)
    }

    /// The record of a backup `file` of `size` bytes stored on `stored`,
    /// with the secondary targets that `failed`.
    fn done_of(
        &self,
        file: String,
        size: u64,
        stored: &[&'static str],
        failed: &[TargetFailure],
    ) -> Done {
        let mut warnings: Vec<String> = failed
            .iter()
            .map(|f| {
                format!(
                    "the copy to {} failed: {}",
                    crate::target::the(f.target),
                    f.error
                )
            })
            .collect();
        let offsite = if !self.settings.has_offsite() {
            Offsite::NotConfigured
        } else if failed.is_empty() && stored.iter().any(|t| *t != "volume") {
            Offsite::Stored
        } else {
            let error = if warnings.is_empty() {
                "no off-site target was written".to_owned()
            } else {
                warnings.join("; ")
            };
            if failed.is_empty() {
                warnings.push(error.clone());
            }
            Offsite::Failed { error }
        };
        let offsite_failed = failed.first().map(|f| {
            format!(
                "{file} was written to the volume, but the copy to {} failed: {}",
                crate::target::the(f.target),
                f.error
            )
        });
        Done {
            written: Written {
                files: vec![file.clone()],
                offsite_failed,
            },
            file,
            size,
            offsite,
            warnings,
        }
    }

    /// With the binlog archive running, the monthly drill also proves the
    /// chain: the dump before the newest, restored into a scratch database
    /// and replayed to the newest dump's snapshot, must give the newest
    /// dump's tables (the drill fails naming a table that differs, or the
    /// gap or damaged segment in the way). Nothing to prove while the
    /// archive is off or has never run here, or before there are two
    /// dumps with a binlog position (said in the log).
    async fn drill_chain(&self, targets: &[Arc<dyn Target>]) -> Result<(), JobError> {
        let s = &self.settings;
        if s.binlog.mode == crate::config::binlog::ArchiveMode::Off
            || crate::binlog::Status::read(&crate::daemon::binlog::work_dir(s)).is_none()
        {
            return Ok(());
        }
        let passphrase = s.passphrase.as_ref();
        let (to, expected, plan) =
            match replay::chain_to("latest", &s.prefix, targets, passphrase).await {
                Ok(found) => found,
                Err(replay::PitrError::Unreachable(why)) => {
                    tracing::info!("drill of the binlog chain skipped: {why}");
                    return Ok(());
                }
                Err(e) => return Err(e.into()),
            };
        let (source, _) = open::prepare(&plan.dump, &s.prefix, targets, None, passphrase).await?;
        let db = s.db().map_err(BackupError::from)?;
        let chain = drill::ChainDrill {
            replay: replay::Replay {
                plan: &plan,
                passphrase,
            },
            expected: (&to, &expected),
        };
        let report = drill::run_with(
            &source,
            passphrase,
            &db,
            &drill::scratch_name(),
            s.restore_definer,
            Some(chain),
        )
        .await?;
        tracing::info!("{report}");
        report.into_result()?;
        Ok(())
    }

    /// Retention of `kind`'s backups on every target (unless turned off by
    /// [`Jobs::with_prune`]); returns what could not be done.
    async fn prune(&self, kind: Kind, targets: &[Arc<dyn Target>]) -> Vec<String> {
        let s = &self.settings;
        let mut warnings = Vec::new();
        if !self.prune {
            tracing::info!(kind = %kind, "retention not applied (--no-prune)");
            return warnings;
        }
        for t in targets {
            let t = t.as_ref();
            let planned = match kind {
                Kind::Config | Kind::Uploads => {
                    let policy = if kind == Kind::Config {
                        &s.config_retention
                    } else {
                        &s.retention
                    };
                    let prefix = archive_prefix(s, kind);
                    retention::plan_archives(t, prefix, policy, s.schedule.tz).await
                }
                Kind::Full => {
                    retention::plan_full(t, &s.full_prefix, &s.full_retention, s.schedule.tz).await
                }
                _ => retention::plan(t, &s.prefix, &s.retention, s.schedule.tz).await,
            };
            match planned {
                Ok(plan) => {
                    let p = retention::execute(t, plan).await;
                    for f in p.failed {
                        warnings.push(format!(
                            "retention could not delete {} from the {}: {}",
                            f.name, p.target, f.error
                        ));
                    }
                }
                Err(e) => warnings.push(format!("retention could not list the {}: {e}", t.label())),
            }
            if kind == Kind::Db {
                match retention::prune_binlog(t, &s.prefix).await {
                    Ok((_, failed)) => {
                        for f in failed {
                            warnings.push(format!(
                                "retention could not delete {} from the {}: {}",
                                f.name,
                                t.label(),
                                f.error
                            ));
                        }
                    }
                    Err(e) => warnings.push(format!(
                        "binlog retention could not list the {}: {e}",
                        t.label()
                    )),
                }
            }
        }
        warnings
    }

    fn save(&self, run: &Run) {
        if let Err(e) = state::record(&self.settings.backup_dir, run.clone()) {
            tracing::error!(error = %e, "cannot record the run; `health` will not see it");
        }
    }

    /// After a shutdown dropped a run: remove what it left (partial files,
    /// incomplete uploads, a manifest without its data, the parts of an
    /// unfinished full backup), record it as abandoned.
    pub async fn clean_up_abandoned(&self, kind: Kind, trigger: Trigger) {
        let Some(started) = self.current.lock().expect("current lock").take() else {
            return; // it was still waiting for the lock, or already done
        };
        let lock = match catalog::lock_dir(&self.settings.backup_dir) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "not cleaning up the abandoned backup: {e}");
                return;
            }
        };
        // Partial files, incomplete uploads, and a manifest on the volume
        // whose data was never published (the manifest goes first there).
        pipeline::clean_interrupted(&self.targets, &pipeline::our_prefixes(&self.settings)).await;
        // Names carry the start second, truncated.
        let since = started - chrono::Duration::seconds(1);
        // A shutdown is waiting: an off-site target gets the run's budget
        // at most, not its retries.
        let targets = budget::for_run(&self.targets, self.settings.offsite_timeout);
        for t in &targets {
            if kind == Kind::Full {
                // A set without its set manifest never finished: all of it goes.
                match catalog::list_full(t.as_ref(), &self.settings.full_prefix).await {
                    Ok(sets) => {
                        for set in sets.iter().filter(|s| !s.complete && s.taken >= since) {
                            if retention::delete_set(t.as_ref(), set).await.is_empty() {
                                tracing::warn!(target = t.label(), set = %set.name, "deleted the parts of the abandoned full backup");
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(target = t.label(), error = %e, "cannot list for clean-up")
                    }
                }
                continue;
            }
            let listed = match kind {
                Kind::Config | Kind::Uploads => {
                    catalog::list_archives(t.as_ref(), archive_prefix(&self.settings, kind)).await
                }
                _ => catalog::list_db(t.as_ref(), &self.settings.prefix).await,
            };
            let entries = match listed {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(target = t.label(), error = %e, "cannot list for clean-up");
                    continue;
                }
            };
            for e in entries {
                if e.parsed.taken >= since && !e.has_manifest {
                    match t.delete(&e.name).await {
                        Ok(()) => {
                            tracing::warn!(target = t.label(), file = %e.name, "deleted the abandoned backup (it had no manifest)")
                        }
                        Err(err) => {
                            tracing::warn!(target = t.label(), file = %e.name, error = %err, "cannot delete the abandoned backup")
                        }
                    }
                }
            }
        }
        let run = Run {
            kind,
            trigger,
            started,
            finished: Utc::now(),
            outcome: Outcome::Abandoned,
            file: None,
            size: None,
            offsite: Offsite::NotConfigured,
            error: Some("stopped by a shutdown signal before it finished".into()),
            warnings: Vec::new(),
        };
        self.save(&run);
        self.metrics.record(&run);
        drop(lock);
    }
}

#[async_trait]
impl Runner for Jobs {
    async fn run(&self, due: &Due) {
        self.run_once(due.kind, due.trigger).await;
    }

    async fn abandoned(&self, due: &Due) {
        self.clean_up_abandoned(due.kind, due.trigger).await;
    }
}
