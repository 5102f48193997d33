//! `selmai-backup run`: the daemon, the container's default command.
//!
//! Runs the preflight ([`crate::preflight`]: privileges, packet size, free
//! space, server version) and exits on a fatal finding; logs the
//! schedules, decides the catch-up, starts the metrics listener when
//! asked, starts the binlog archive beside the scheduler when
//! `BINLOG_ARCHIVE` allows it, and runs the scheduler until SIGTERM or SIGINT. A backup in
//! progress is then abandoned cleanly and the process exits 0, well within
//! Docker's 10 s stop timeout.

use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;

use crate::config::binlog::ArchiveMode;
use crate::config::Settings;
use crate::daemon::binlog as daemon_binlog;
use crate::daemon::jobs::Jobs;
use crate::daemon::metrics::{self, Metrics};
use crate::daemon::notify::Notifier;
use crate::daemon::schedule::{self, Job, Kind, SystemClock, Trigger};
use crate::daemon::state::State;
use crate::preflight::{self, PreflightError, Severity};

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {}

fn any_exists(paths: &[std::path::PathBuf]) -> bool {
    paths.iter().any(|p| p.exists())
}

/// Check at start that backups can work, logging the findings; `Err` for a
/// fatal one (no SELECT ...). A server that cannot be reached or logged in
/// to yet is only a warning: the database container may still be starting,
/// and every scheduled backup reports its own failure.
async fn preflight(settings: &Settings) -> anyhow::Result<()> {
    match preflight::for_backup(settings).await {
        Ok(report) => {
            report.log("backups");
            report
                .into_result()
                .context("not starting: backups cannot work")?;
        }
        Err(PreflightError::Db(e)) => {
            tracing::warn!("preflight not run: {e}");
        }
        Err(e) => return Err(e).context("not starting: backups cannot work"),
    }
    Ok(())
}

/// Whether the archive should run: `Ok(false)` when it is off or, with
/// `auto`, when the server is not ready for it (warned once); `Err` with
/// `on` and a fatal finding (the daemon exits 3).
async fn binlog_should_run(settings: &Settings) -> Result<bool, PreflightError> {
    let mode = settings.binlog.mode;
    if mode == ArchiveMode::Off {
        tracing::info!(
            "the binlog archive is off (BINLOG_ARCHIVE=off): the recovery point is the newest dump"
        );
        let _ = std::fs::remove_file(
            daemon_binlog::work_dir(settings).join(crate::binlog::status::STATUS_FILE),
        );
        return Ok(false);
    }
    let db = match settings.db() {
        Ok(d) => d,
        // Without database credentials there is nothing to archive; `on`
        // says so, `auto` stays quiet (a files-only installation).
        Err(_) if mode == ArchiveMode::Auto => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    let report = match preflight::for_binlog(&db, settings.binlog.server_id).await {
        Ok(r) => r,
        // The database container may still be starting: the archive
        // retries on its own and says what it finds.
        Err(PreflightError::Db(e)) => {
            tracing::warn!("binlog archive preflight not run: {e}");
            return Ok(true);
        }
        Err(e) => return Err(e),
    };
    if mode == ArchiveMode::On {
        report.log("the binlog archive");
        report.into_result()?;
        return Ok(true);
    }
    let fatal = report
        .at_least(Severity::Fatal)
        .next()
        .map(|f| f.message.clone());
    match fatal {
        None => {
            report.log("the binlog archive");
            Ok(true)
        }
        Some(f) => {
            tracing::warn!(
                "the binlog archive is not running (BINLOG_ARCHIVE=auto): {}; the recovery point stays the newest dump. Set BINLOG_ARCHIVE=off to silence this",
                f
            );
            let _ = std::fs::remove_file(
                daemon_binlog::work_dir(settings).join(crate::binlog::status::STATUS_FILE),
            );
            Ok(false)
        }
    }
}

/// Run the scheduler until a stop signal.
pub async fn run(_args: Args, settings: &Settings) -> anyhow::Result<()> {
    // Installed first, and kept for the whole run: a stop signal from here
    // on (during the preflight's wait for the database too) stops cleanly.
    let mut signals = super::Interrupt::install().context("cannot install the signal handlers")?;
    let settings = Arc::new(settings.clone());
    let tz = settings.schedule.tz;
    let now = Utc::now();

    let mut jobs = Vec::new();
    for kind in Kind::ALL {
        let var = kind.schedule_var();
        match settings.schedule.of(kind) {
            None => tracing::info!(kind = %kind, "{kind} backups are off ({var}=off)"),
            // Without any of its paths mounted, an archive job would only
            // fail at every run; say so once, at start, instead.
            Some(_) if kind == Kind::Config && !any_exists(&settings.config_archive.paths) => {
                tracing::warn!(kind = %kind, paths = ?settings.config_archive.paths, "config backups are not scheduled: none of CONFIG_PATHS exists; mount the configuration read-only there, or set CONFIG_SCHEDULE=off");
            }
            Some(_) if kind == Kind::Uploads && !any_exists(&settings.uploads_archive.paths) => {
                tracing::warn!(kind = %kind, paths = ?settings.uploads_archive.paths, "uploads backups are not scheduled: none of UPLOADS_PATHS exists; mount the uploads volume read-only there, or set UPLOADS_SCHEDULE=off");
            }
            Some(s) => jobs.push(Job {
                kind,
                schedule: s.clone(),
            }),
        }
    }
    if jobs.iter().any(|j| matches!(j.kind, Kind::Db | Kind::Full)) {
        // Fail at start, not at 02:00, when the credentials are missing.
        settings.db()?;
        // Waiting for the database may take DB_CONNECT_TIMEOUT: a stop
        // signal meanwhile must still stop us at once.
        tokio::select! {
            checked = preflight(&settings) => checked?,
            signal = signals.recv() => {
                tracing::info!(signal, "received {signal} during the preflight: stopping");
                return Ok(());
            }
        }
    }
    // BACKUP_DIR must be usable now; a busy lock is fine (a one-off run).
    if let Err(e @ crate::format::catalog::LockError::Open { .. }) =
        crate::format::catalog::lock_dir(&settings.backup_dir)
    {
        return Err(e.into());
    }

    let state = State::load(&settings.backup_dir).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "ignoring the state file");
        State::default()
    });
    let catch_up: Vec<_> = jobs
        .iter()
        // A drill is not caught up: at first start there may be no backup
        // to drill yet, and a missed monthly drill waits for the next one.
        .filter(|j| j.kind != crate::daemon::schedule::Kind::Drill)
        .filter_map(|j| {
            let last = state.last_success(j.kind).map(|r| r.started);
            schedule::catch_up(settings.schedule.catch_up, &j.schedule, tz, last, now)
                .map(|r| (j.kind, r))
        })
        .collect();

    let metrics = Metrics::from_state(&state);
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = settings.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("METRICS_LISTEN={addr}: cannot listen"))?;
        let bound = listener.local_addr()?;
        tracing::info!(address = %bound, "serving metrics on http://{bound}/metrics and /healthz");
        let (m, s) = (metrics.clone(), settings.clone());
        tokio::spawn(async move {
            metrics::serve(listener, m, s, async move {
                let _ = stop_rx.changed().await;
            })
            .await
        });
    }

    let shutdown = async move {
        let name = signals.recv().await;
        tracing::info!(signal = name, "received {name}: stopping");
    };

    let targets = super::targets(&settings)?;
    let runner = Arc::new(Jobs::new(
        settings.clone(),
        targets.clone(),
        Notifier::new(settings.notify.clone()),
        metrics,
    ));

    // The binlog archive runs beside the scheduler; a gap it finds asks
    // for a database dump at once.
    let archive = tokio::select! {
        decided = binlog_should_run(&settings) => decided.context("not starting: BINLOG_ARCHIVE=on and the binlog archive cannot work")?,
        signal = super::interrupted() => {
            tracing::info!(signal, "received {signal} during the preflight: stopping");
            return Ok(());
        }
    };
    let (archive_stop, archive_stopped) = tokio::sync::watch::channel(false);
    let archive_task = archive.then(|| {
        let (dump_tx, mut dump_rx) = tokio::sync::mpsc::unbounded_channel::<Kind>();
        let gap_runner = runner.clone();
        tokio::spawn(async move {
            while let Some(kind) = dump_rx.recv().await {
                tracing::info!(kind = %kind, "running a {kind} backup now: the binlog archive starts again from it");
                gap_runner.run_once(kind, Trigger::Cli).await;
            }
        });
        let hooks = daemon_binlog::DaemonHooks {
            notifier: Notifier::new(settings.notify.clone()),
            dump_now: dump_tx,
        };
        let mut stopped = archive_stopped;
        tokio::spawn(daemon_binlog::run(
            settings.clone(),
            targets.clone(),
            hooks,
            Arc::new(std::sync::Mutex::new(crate::binlog::Status::default())),
            async move {
                let _ = stopped.changed().await;
            },
        ))
    });
    tracing::info!(
        time_zone = tz.name(),
        retention = %settings.retention,
        "selmai-backup daemon started"
    );
    // Copies an earlier run (or process) could not make off-site are made
    // before the first scheduled run; a shutdown meanwhile stops them.
    let mut shutdown = std::pin::pin!(shutdown);
    let stopped = tokio::select! {
        () = runner.catch_up_at_start() => false,
        _ = &mut shutdown => true,
    };
    if !stopped {
        schedule::run(&jobs, tz, catch_up, runner.as_ref(), &SystemClock, shutdown).await;
    }
    let _ = stop_tx.send(true);
    if let Some(task) = archive_task {
        // The open segment is closed and stored; what does not fit in the
        // container's stop timeout is stored at the next start.
        let _ = archive_stop.send(true);
        match tokio::time::timeout(std::time::Duration::from_secs(7), task).await {
            Ok(Ok(Err(e))) => tracing::error!("binlog archive: {e}"),
            Err(_) => tracing::warn!("the binlog archive did not finish storing its last segment in time; it is stored at the next start"),
            _ => {}
        }
    }
    tracing::info!("stopped");
    Ok(())
}
