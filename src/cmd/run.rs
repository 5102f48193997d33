//! `selmai-backup run`: the daemon, the container's default command.
//!
//! Runs the preflight ([`crate::preflight`]: privileges, packet size, free
//! space, server version) and exits on a fatal finding; logs the
//! schedules, decides the catch-up, starts the metrics listener when
//! asked, and runs the scheduler until SIGTERM or SIGINT. A backup in
//! progress is then abandoned cleanly and the process exits 0, well within
//! Docker's 10 s stop timeout.

use std::sync::Arc;

use anyhow::Context as _;
use chrono::Utc;

use crate::config::Settings;
use crate::daemon::jobs::Jobs;
use crate::daemon::metrics::{self, Metrics};
use crate::daemon::notify::Notifier;
use crate::daemon::schedule::{self, Job, Kind, SystemClock};
use crate::daemon::state::State;
use crate::preflight::{self, PreflightError};

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

/// Run the scheduler until a stop signal.
pub async fn run(_args: Args, settings: &Settings) -> anyhow::Result<()> {
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
            signal = super::interrupted() => {
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

    // Installed now, not when the scheduler first polls the shutdown: a
    // stop signal from here on stops the daemon cleanly.
    let mut signals = super::Interrupt::install().context("cannot install the signal handlers")?;
    let shutdown = async move {
        let name = signals.recv().await;
        tracing::info!(signal = name, "received {name}: stopping");
    };

    let runner = Jobs::new(
        settings.clone(),
        super::targets(&settings)?,
        Notifier::new(settings.notify.clone()),
        metrics,
    );
    tracing::info!(
        time_zone = tz.name(),
        retention = %settings.retention,
        "selmai-backup daemon started"
    );
    schedule::run(&jobs, tz, catch_up, &runner, &SystemClock, shutdown).await;
    let _ = stop_tx.send(true);
    tracing::info!("stopped");
    Ok(())
}
