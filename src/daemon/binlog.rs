//! The binlog archive inside the daemon: where it starts (the newest
//! dump's snapshot) and what a gap sets off (an alert and a database dump
//! at once). Whether it runs (`BINLOG_ARCHIVE` and the preflight) is
//! decided by `run`, above the preflight.
//!
//! Not here: the archive itself ([`crate::binlog`]) and the health and
//! metrics that read its status file.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use tokio::sync::mpsc;

use crate::binlog::{self, Encoding, Gap, Options, StartPoint, Status};
use crate::config::Settings;
use crate::daemon::notify::{Event, EventKind, Notifier};
use crate::daemon::schedule::Kind;
use crate::format::{catalog, manifest};
use crate::target::{self, Target};

/// The archive's work directory under `BACKUP_DIR` (hidden: never listed
/// as a backup).
pub fn work_dir(settings: &Settings) -> std::path::PathBuf {
    settings.backup_dir.join(".binlog")
}

/// The binlog position of the newest dump with a manifest on the volume.
pub async fn newest_snapshot(settings: &Settings, volume: &dyn Target) -> Option<StartPoint> {
    let mut entries = catalog::list_db(volume, &settings.prefix).await.ok()?;
    entries.sort_by_key(|e| std::cmp::Reverse(e.parsed.taken));
    for e in entries.iter().filter(|e| e.has_manifest) {
        let name = manifest::name_for(&e.name);
        let Ok(bytes) = target::get_bytes(volume, &name).await else {
            continue;
        };
        if let Ok(m) = manifest::Manifest::parse(&name, &bytes) {
            if let Some(s) = m.snapshot {
                return Some(StartPoint {
                    file: s.file,
                    position: s.position,
                });
            }
        }
    }
    None
}

/// The archive's options from the settings.
pub fn options(settings: &Settings) -> Options {
    let mut o = Options::new(
        settings.binlog.server_id,
        &settings.prefix,
        Encoding {
            compression: settings.compression,
            passphrase: settings.passphrase.clone(),
        },
        work_dir(settings),
    );
    o.upload_after = settings.binlog.upload_after;
    o.segment_bytes = settings.binlog.segment_bytes;
    o
}

/// What the daemon does when the archive finds a gap.
pub struct DaemonHooks {
    /// Where alerts go.
    pub notifier: Notifier,
    /// Asks the daemon for a database dump now.
    pub dump_now: mpsc::UnboundedSender<Kind>,
}

#[async_trait::async_trait]
impl binlog::Hooks for DaemonHooks {
    async fn gap(&self, gap: &Gap) {
        let event = Event {
            event: EventKind::BinlogGap,
            kind: Kind::Db,
            file: None,
            size: None,
            duration: 0.0,
            error: Some(format!(
                "{gap}: point-in-time restore cannot cross it; a new dump starts now so that the chain starts again"
            )),
            warnings: Vec::new(),
            host: self.notifier.host().to_owned(),
        };
        self.notifier.finished(&event).await;
        let _ = self.dump_now.send(Kind::Db);
    }
}

/// Run the archive until `shutdown` resolves (the daemon's stop).
pub async fn run(
    settings: Arc<Settings>,
    targets: Vec<Arc<dyn Target>>,
    hooks: DaemonHooks,
    status: Arc<Mutex<Status>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), binlog::BinlogError> {
    let db = match settings.db() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!("the binlog archive cannot start: {e}");
            return Ok(());
        }
    };
    let snapshot = newest_snapshot(&settings, targets[0].as_ref()).await;
    let opts = options(&settings);
    tracing::info!(
        server_id = opts.server_id,
        upload_seconds = opts.upload_after.as_secs(),
        segment_mb = opts.segment_bytes >> 20,
        started = %Utc::now(),
        "binlog archive started"
    );
    binlog::run(
        &db,
        &targets,
        &opts,
        snapshot,
        Arc::new(hooks),
        status,
        shutdown,
    )
    .await
}
