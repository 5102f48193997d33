//! The binlog archive run inside the test process (`binlog::run` as a
//! task, stopped through a oneshot), for the tests that read what it
//! writes (`binlog.rs` on a private server, `pitr.rs` on the shared one),
//! and waiting until it has archived, or stored, up to a position.
//!
//! Not responsible for the options or the start point: each test chooses
//! them (replica id, segment size, encryption).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selmai_backup::binlog::{self, segment, NoHooks, Options, StartPoint, Status};
use selmai_backup::config::DbSettings;
use selmai_backup::target::Target;

/// How far a position must have gone.
#[derive(Debug, Clone, Copy)]
pub enum Reach {
    /// Written to the open segment on the volume (`Status::archived`).
    Archived,
    /// In a closed segment stored on every target (`Status::uploaded`).
    Stored,
}

/// A running archive.
pub struct Archiver {
    status: Arc<Mutex<Status>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), binlog::BinlogError>>,
}

impl Archiver {
    /// Archive the binlog of the server `db` connects to into `targets`
    /// from `from` (or where the archive's own state says).
    pub fn start(
        db: DbSettings,
        targets: Vec<Arc<dyn Target>>,
        opts: Options,
        from: Option<StartPoint>,
    ) -> Archiver {
        let status = Arc::new(Mutex::new(Status::default()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let st = status.clone();
        let task = tokio::spawn(async move {
            binlog::run(&db, &targets, &opts, from, Arc::new(NoHooks), st, async {
                let _ = rx.await;
            })
            .await
        });
        Archiver {
            status,
            stop: Some(tx),
            task,
        }
    }

    /// Wait until the archive has reached `to` (a binlog file and a
    /// position in it, or any later file) as `reach` says; panics after
    /// `within`.
    pub async fn wait(&self, reach: Reach, to: &(String, u64), within: Duration) {
        let (file, pos) = to;
        let started = Instant::now();
        loop {
            let at = {
                let st = self.status.lock().unwrap();
                match reach {
                    Reach::Archived => st.archived.clone(),
                    Reach::Stored => st.uploaded.clone(),
                }
            };
            if at.as_ref().is_some_and(|a| {
                (segment::file_index(&a.file), a.position) >= (segment::file_index(file), *pos)
            }) {
                return;
            }
            assert!(
                started.elapsed() < within,
                "the archive did not reach {file}:{pos} ({reach:?}) in {within:?}; it is at {at:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stop it; panics if it had failed.
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}
