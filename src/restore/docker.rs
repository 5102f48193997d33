//! Stopping the application's containers while a restore runs, through the
//! Docker Engine API.
//!
//! A restore replaces tables under the application's feet; containers of
//! our compose project that carry the label [`STOP_LABEL`]`=true` are stopped
//! before the first statement and started again afterwards, whether the
//! restore succeeded or not. What was stopped is recorded in
//! `BACKUP_DIR/`[`RECORD_FILE`] *before* anything is stopped, so that if we
//! die mid-restore the next command of any kind starts them again
//! ([`AppControl::recover`]).
//!
//! The Docker calls sit behind the small [`Engine`] trait (bollard over a
//! unix socket or plain HTTP to a socket proxy in production, a fake in the
//! unit tests). Without a reachable engine everything else still works and
//! the tool says so once. This module does not decide *when* to stop: that is
//! `cmd/restore.rs`.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::config::Settings;

/// The label that marks a container to stop during a restore (value `true`).
pub const STOP_LABEL: &str = "selmai.backup.stop-during-restore";
/// The label docker compose puts on every container of a project.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
/// The record of stopped containers, inside `BACKUP_DIR`.
pub const RECORD_FILE: &str = ".selmai-backup-stopped.json";
/// Where the engine listens when `DOCKER_HOST` is not set.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Errors talking to the Docker engine or keeping the record.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    /// The engine cannot be reached at all.
    #[error("cannot reach the Docker engine at {host}: {detail}")]
    Unreachable {
        /// `DOCKER_HOST` or the default socket.
        host: String,
        /// Why.
        detail: String,
    },
    /// One API call failed.
    #[error("Docker API: cannot {action} {what}: {detail}")]
    Api {
        /// "list containers", "stop", "start", "inspect".
        action: &'static str,
        /// The container (name or id), or the filter.
        what: String,
        /// The engine's message.
        detail: String,
    },
    /// The container does not exist (any more).
    #[error("container {0} does not exist any more")]
    Gone(String),
    /// The record file could not be read or written.
    #[error("cannot {action} {path}: {source}; check that BACKUP_DIR is writable")]
    Record {
        /// "write", "read", "remove".
        action: &'static str,
        /// The record's path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
}

/// A container we stopped (or will stop).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRef {
    /// Full id.
    pub id: String,
    /// Name without the leading `/`, for messages.
    pub name: String,
}

impl std::fmt::Display for ContainerRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, short(&self.id))
    }
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// The few Docker calls needed here.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Where the engine is, for messages.
    fn host(&self) -> String;
    /// Labels of a container by id, id prefix or name; `Gone` when unknown.
    async fn labels(&self, container: &str) -> Result<HashMap<String, String>, DockerError>;
    /// Running containers carrying label `key=value` for every pair given.
    async fn running_with(&self, labels: &[(&str, &str)])
        -> Result<Vec<ContainerRef>, DockerError>;
    /// Stop a container (its own stop timeout applies); stopping a stopped one is fine.
    async fn stop(&self, id: &str) -> Result<(), DockerError>;
    /// Start a container; starting a running one is fine.
    async fn start(&self, id: &str) -> Result<(), DockerError>;
}

/// [`Engine`] over bollard: a unix socket, or plain HTTP (`tcp://`) to a
/// socket proxy. No TLS: bollard is built without its TLS features.
pub struct BollardEngine {
    docker: bollard::Docker,
    host: String,
}

impl BollardEngine {
    /// Connect to `host` (`unix:///path`, `tcp://name:port`), or to the
    /// default socket; the API version is negotiated down to the engine's.
    pub async fn connect(host: Option<&str>) -> Result<Self, DockerError> {
        let host = host
            .map(str::to_owned)
            .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"));
        let unreachable = |detail: String| DockerError::Unreachable {
            host: host.clone(),
            detail,
        };
        let docker = if let Some(path) = host.strip_prefix("unix://") {
            if !Path::new(path).exists() {
                return Err(unreachable("the socket is not mounted".into()));
            }
            bollard::Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION)
        } else if host.starts_with("tcp://") || host.starts_with("http://") {
            bollard::Docker::connect_with_http(&host, 120, bollard::API_DEFAULT_VERSION)
        } else {
            return Err(unreachable(
                "unsupported DOCKER_HOST: use unix:///path/to/docker.sock or tcp://host:port (no TLS)"
                    .into(),
            ));
        }
        .map_err(|e| unreachable(e.to_string()))?;
        let docker = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            docker.negotiate_version().await
        })
        .await
        .map_err(|_| unreachable("no answer within 10s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
        Ok(BollardEngine { docker, host })
    }
}

fn api(action: &'static str, what: &str, e: bollard::errors::Error) -> DockerError {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        } if action != "list containers" => DockerError::Gone(what.to_owned()),
        e => DockerError::Api {
            action,
            what: what.to_owned(),
            detail: e.to_string(),
        },
    }
}

#[async_trait]
impl Engine for BollardEngine {
    fn host(&self) -> String {
        self.host.clone()
    }

    async fn labels(&self, container: &str) -> Result<HashMap<String, String>, DockerError> {
        let c = self
            .docker
            .inspect_container(container, None)
            .await
            .map_err(|e| api("inspect", container, e))?;
        Ok(c.config.and_then(|c| c.labels).unwrap_or_default())
    }

    async fn running_with(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerRef>, DockerError> {
        let filter: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::new()
            .all(false)
            .filters(&HashMap::from([("label".to_owned(), filter.clone())]))
            .build();
        let list = self
            .docker
            .list_containers(Some(opts))
            .await
            .map_err(|e| api("list containers", &filter.join(","), e))?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_else(|| short(&id).to_owned());
                Some(ContainerRef { id, name })
            })
            .collect())
    }

    async fn stop(&self, id: &str) -> Result<(), DockerError> {
        self.docker
            .stop_container(id, None)
            .await
            .map_err(|e| api("stop", id, e))
    }

    async fn start(&self, id: &str) -> Result<(), DockerError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(|e| api("start", id, e))
    }
}

/// The record file's content.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    version: u32,
    project: String,
    stopped_at: DateTime<Utc>,
    containers: Vec<ContainerRef>,
}

/// Containers stopped for a restore; hand back to [`AppControl::resume`].
#[derive(Debug)]
#[must_use = "stopped containers must be started again with AppControl::resume"]
pub struct Paused {
    project: String,
    containers: Vec<ContainerRef>,
}

impl Paused {
    /// What was stopped.
    pub fn containers(&self) -> &[ContainerRef] {
        &self.containers
    }
}

/// How the engine is reached (or why not), decided once per process.
enum Connection {
    Ready(Arc<dyn Engine>),
    Off,
    Unavailable(String),
}

/// Stops and starts the labelled containers of our compose project, keeps
/// the record, and says once when it cannot.
pub struct AppControl {
    enabled: bool,
    docker_host: Option<String>,
    project: Option<String>,
    own_ids: Vec<String>,
    record: PathBuf,
    engine: OnceCell<Connection>,
    warned: AtomicBool,
}

impl AppControl {
    /// From the settings; nothing is contacted until needed.
    pub fn new(settings: &Settings) -> Self {
        // Docker sets HOSTNAME to the short container id unless the compose
        // file chose a host name; only an id is worth asking the engine about.
        let mut own_ids: Vec<String> = settings
            .hostname
            .iter()
            .filter(|h| h.len() >= 12 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .cloned()
            .collect();
        own_ids.extend(own_container_id());
        AppControl {
            enabled: settings.restore_stop_containers,
            docker_host: settings.docker_host.clone(),
            project: settings.restore_stop_project.clone(),
            own_ids,
            record: settings.backup_dir.join(RECORD_FILE),
            engine: OnceCell::new(),
            warned: AtomicBool::new(false),
        }
    }

    /// With a given engine (`None`: no Docker), for tests.
    pub fn with_engine(
        engine: Option<Arc<dyn Engine>>,
        project: Option<String>,
        own_ids: Vec<String>,
        backup_dir: &Path,
    ) -> Self {
        let conn = match engine {
            Some(e) => Connection::Ready(e),
            None => Connection::Unavailable("no engine given".into()),
        };
        AppControl {
            enabled: true,
            docker_host: None,
            project,
            own_ids,
            record: backup_dir.join(RECORD_FILE),
            engine: OnceCell::new_with(Some(conn)),
            warned: AtomicBool::new(false),
        }
    }

    async fn engine(&self) -> Option<Arc<dyn Engine>> {
        let conn = self
            .engine
            .get_or_init(|| async {
                if !self.enabled {
                    return Connection::Off;
                }
                match BollardEngine::connect(self.docker_host.as_deref()).await {
                    Ok(e) => Connection::Ready(Arc::new(e)),
                    Err(e) => Connection::Unavailable(e.to_string()),
                }
            })
            .await;
        match conn {
            Connection::Ready(e) => Some(e.clone()),
            Connection::Off => None,
            Connection::Unavailable(why) => {
                self.warn_once(why);
                None
            }
        }
    }

    fn warn_once(&self, why: &str) {
        if !self.warned.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                "cannot stop the application's containers during a restore ({why}); \
                 mount the Docker socket or a socket proxy (DOCKER_HOST), or set \
                 RESTORE_STOP_CONTAINERS=false to silence this"
            );
        }
    }

    /// The compose project whose containers we stop: `RESTORE_STOP_PROJECT`,
    /// else the project label of the container we run in.
    async fn project(&self, engine: &dyn Engine) -> Option<String> {
        if let Some(p) = &self.project {
            return Some(p.clone());
        }
        for id in &self.own_ids {
            if let Ok(labels) = engine.labels(id).await {
                if let Some(p) = labels.get(PROJECT_LABEL) {
                    return Some(p.clone());
                }
            }
        }
        None
    }

    fn is_own(&self, id: &str) -> bool {
        self.own_ids
            .iter()
            .any(|own| own.len() >= 12 && (id.starts_with(own.as_str()) || own.starts_with(id)))
    }

    /// Stop the running, labelled containers of our project, recording them
    /// first. `Ok(None)` when there is no engine (already said once) or no
    /// project. On an error nothing stays stopped.
    pub async fn pause(&self) -> Result<Option<Paused>, DockerError> {
        let Some(engine) = self.engine().await else {
            return Ok(None);
        };
        let Some(project) = self.project(engine.as_ref()).await else {
            self.warn_once(
                "cannot tell which compose project this container belongs to; set RESTORE_STOP_PROJECT",
            );
            return Ok(None);
        };
        let containers: Vec<ContainerRef> = engine
            .running_with(&[(PROJECT_LABEL, &project), (STOP_LABEL, "true")])
            .await?
            .into_iter()
            .filter(|c| !self.is_own(&c.id))
            .collect();
        if containers.is_empty() {
            tracing::info!(
                "no running container of project {project} carries {STOP_LABEL}=true; none stopped"
            );
            return Ok(Some(Paused {
                project,
                containers,
            }));
        }
        self.write_record(&project, &containers).await?;
        let mut stopped = Vec::new();
        for c in &containers {
            eprintln!("stopping {c} for the restore");
            if let Err(e) = engine.stop(&c.id).await {
                // Put back what we stopped; the restore does not happen.
                let paused = Paused {
                    project: project.clone(),
                    containers: stopped,
                };
                let _ = self.resume_with(engine.as_ref(), paused).await;
                return Err(e);
            }
            stopped.push(c.clone());
        }
        Ok(Some(Paused {
            project,
            containers,
        }))
    }

    /// Start again exactly the containers in `paused` and remove the record.
    /// Containers that could not be started stay in the record, so the next
    /// command tries again; they are the error.
    pub async fn resume(&self, paused: Paused) -> Result<(), DockerError> {
        if paused.containers.is_empty() {
            return Ok(());
        }
        let Some(engine) = self.engine().await else {
            return Err(DockerError::Unreachable {
                host: self.docker_host.clone().unwrap_or_default(),
                detail: "lost the connection".into(),
            });
        };
        self.resume_with(engine.as_ref(), paused).await
    }

    async fn resume_with(&self, engine: &dyn Engine, paused: Paused) -> Result<(), DockerError> {
        let mut failed = Vec::new();
        let mut first_error = None;
        for c in &paused.containers {
            match engine.start(&c.id).await {
                Ok(()) => eprintln!("started {c} again"),
                Err(DockerError::Gone(_)) => {
                    tracing::warn!("{c} was removed while stopped; nothing to start")
                }
                Err(e) => {
                    tracing::error!("cannot start {c} again: {e}; run `docker start {}`", c.name);
                    failed.push(c.clone());
                    first_error.get_or_insert(e);
                }
            }
        }
        if failed.is_empty() {
            self.remove_record().await?;
        } else {
            self.write_record(&paused.project, &failed).await?;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// At the start of any command: if a restore died with containers
    /// stopped, start them again and say so. Never fails the command.
    /// `lock` takes the `BACKUP_DIR` lock, held while we recover; `None`
    /// means a restore is running right now and the record is its own.
    pub async fn recover<G>(&self, lock: impl FnOnce() -> Option<G>) {
        let record = match self.read_record().await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!("{e}");
                return;
            }
        };
        let Some(_guard) = lock() else {
            return;
        };
        let names: Vec<String> = record.containers.iter().map(|c| c.to_string()).collect();
        eprintln!(
            "a restore was interrupted at {} with containers stopped: starting {} again",
            record.stopped_at.format("%Y-%m-%d %H:%M:%S UTC"),
            names.join(", ")
        );
        let Some(engine) = self.engine().await else {
            tracing::warn!(
                "cannot start {} again without the Docker API; start them by hand, then delete {}",
                names.join(", "),
                self.record.display()
            );
            return;
        };
        let paused = Paused {
            project: record.project,
            containers: record.containers,
        };
        if let Err(e) = self.resume_with(engine.as_ref(), paused).await {
            tracing::warn!("{e}");
        }
    }

    async fn write_record(
        &self,
        project: &str,
        containers: &[ContainerRef],
    ) -> Result<(), DockerError> {
        let record = Record {
            version: 1,
            project: project.to_owned(),
            stopped_at: Utc::now(),
            containers: containers.to_vec(),
        };
        let path = self.record.clone();
        let body = serde_json::to_vec_pretty(&record).expect("the record serialises");
        tokio::task::spawn_blocking(move || write_atomic(&path, &body))
            .await
            .expect("the record writer does not panic")
            .map_err(|source| DockerError::Record {
                action: "write",
                path: self.record.clone(),
                source,
            })
    }

    async fn read_record(&self) -> Result<Option<Record>, DockerError> {
        let err = |source| DockerError::Record {
            action: "read",
            path: self.record.clone(),
            source,
        };
        match tokio::fs::read(&self.record).await {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(err(e)),
        }
    }

    async fn remove_record(&self) -> Result<(), DockerError> {
        match tokio::fs::remove_file(&self.record).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DockerError::Record {
                action: "remove",
                path: self.record.clone(),
                source,
            }),
        }
    }
}

fn write_atomic(path: &Path, body: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Our container's full id, read from the bind mounts Docker gives every
/// container (`/var/lib/docker/containers/<id>/hostname`), for when
/// `HOSTNAME` was overridden in the compose file.
fn own_container_id() -> Option<String> {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    container_id_in(&mounts)
}

fn container_id_in(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let (_, rest) = line.split_once("/containers/")?;
        let id = rest.split('/').next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A container of the fake: id, labels, running.
    type FakeContainer = (String, HashMap<String, String>, bool);

    /// An engine in memory: containers with labels and a running flag, and
    /// a log of calls. `fail_stop`/`fail_start` make those calls fail.
    #[derive(Default)]
    struct Fake {
        containers: Mutex<Vec<FakeContainer>>,
        calls: Mutex<Vec<String>>,
        fail_stop: Option<String>,
        fail_start: Option<String>,
        record: Option<PathBuf>,
    }

    impl Fake {
        fn add(&self, id: &str, project: &str, label: Option<&str>, running: bool) {
            let mut labels = HashMap::from([(PROJECT_LABEL.to_owned(), project.to_owned())]);
            if let Some(v) = label {
                labels.insert(STOP_LABEL.to_owned(), v.to_owned());
            }
            self.containers
                .lock()
                .unwrap()
                .push((id.to_owned(), labels, running));
        }
        fn running(&self) -> Vec<String> {
            let c = self.containers.lock().unwrap();
            c.iter().filter(|c| c.2).map(|c| c.0.clone()).collect()
        }
        fn set(&self, id: &str, running: bool) {
            let mut c = self.containers.lock().unwrap();
            c.iter_mut().find(|c| c.0 == id).unwrap().2 = running;
        }
    }

    #[async_trait]
    impl Engine for Fake {
        fn host(&self) -> String {
            "fake".into()
        }
        async fn labels(&self, id: &str) -> Result<HashMap<String, String>, DockerError> {
            let c = self.containers.lock().unwrap();
            c.iter()
                .find(|c| c.0.starts_with(id))
                .map(|c| c.1.clone())
                .ok_or(DockerError::Gone(id.into()))
        }
        async fn running_with(
            &self,
            want: &[(&str, &str)],
        ) -> Result<Vec<ContainerRef>, DockerError> {
            let c = self.containers.lock().unwrap();
            Ok(c.iter()
                .filter(|c| {
                    c.2 && want
                        .iter()
                        .all(|(k, v)| c.1.get(*k).map(String::as_str) == Some(*v))
                })
                .map(|c| ContainerRef {
                    id: c.0.clone(),
                    name: format!("n-{}", c.0),
                })
                .collect())
        }
        async fn stop(&self, id: &str) -> Result<(), DockerError> {
            // The record must name a container before it is stopped.
            if let Some(r) = &self.record {
                let text = std::fs::read_to_string(r).expect("record exists before a stop");
                assert!(text.contains(id), "{id} not in the record: {text}");
            }
            self.calls.lock().unwrap().push(format!("stop {id}"));
            if self.fail_stop.as_deref() == Some(id) {
                return Err(DockerError::Api {
                    action: "stop",
                    what: id.into(),
                    detail: "boom".into(),
                });
            }
            self.set(id, false);
            Ok(())
        }
        async fn start(&self, id: &str) -> Result<(), DockerError> {
            self.calls.lock().unwrap().push(format!("start {id}"));
            if self.fail_start.as_deref() == Some(id) {
                return Err(DockerError::Api {
                    action: "start",
                    what: id.into(),
                    detail: "boom".into(),
                });
            }
            self.set(id, true);
            Ok(())
        }
    }

    const SELF: &str = "5e1f00000000000000000000000000000000000000000000000000000000beef";

    /// A stack: our container, two labelled apps, an unlabelled db, a
    /// label set to false, a stopped labelled one, another project's app.
    fn stack(dir: &Path) -> Fake {
        let f = Fake {
            record: Some(dir.join(RECORD_FILE)),
            ..Fake::default()
        };
        f.add(SELF, "shop", Some("true"), true);
        f.add("app1", "shop", Some("true"), true);
        f.add("app2", "shop", Some("true"), true);
        f.add("db", "shop", None, true);
        f.add("nginx", "shop", Some("false"), true);
        f.add("cron", "shop", Some("true"), false);
        f.add("other", "blog", Some("true"), true);
        f
    }

    fn control(f: Arc<Fake>, dir: &Path) -> AppControl {
        AppControl::with_engine(Some(f), None, vec![SELF[..12].to_owned()], dir)
    }

    #[tokio::test]
    async fn stops_exactly_the_labelled_running_containers_of_our_project_and_restarts_them() {
        let d = tempfile::tempdir().unwrap();
        let f = Arc::new(stack(d.path()));
        let c = control(f.clone(), d.path());
        let paused = c.pause().await.unwrap().unwrap();
        let ids: Vec<&str> = paused.containers().iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["app1", "app2"]);
        assert_eq!(f.running(), [SELF, "db", "nginx", "other"]);
        assert!(d.path().join(RECORD_FILE).exists());
        c.resume(paused).await.unwrap();
        assert_eq!(f.running(), [SELF, "app1", "app2", "db", "nginx", "other"]);
        assert!(!d.path().join(RECORD_FILE).exists());
        assert_eq!(
            *f.calls.lock().unwrap(),
            ["stop app1", "stop app2", "start app1", "start app2"]
        );
    }

    #[tokio::test]
    async fn a_failed_stop_starts_again_what_was_stopped() {
        let d = tempfile::tempdir().unwrap();
        let f = Arc::new(Fake {
            fail_stop: Some("app2".into()),
            ..stack(d.path())
        });
        let c = control(f.clone(), d.path());
        assert!(c.pause().await.is_err());
        assert_eq!(f.running(), [SELF, "app1", "app2", "db", "nginx", "other"]);
        assert_eq!(
            *f.calls.lock().unwrap(),
            ["stop app1", "stop app2", "start app1"]
        );
        assert!(!d.path().join(RECORD_FILE).exists());
    }

    #[tokio::test]
    async fn a_failed_start_stays_in_the_record_and_the_next_command_retries() {
        let d = tempfile::tempdir().unwrap();
        let f = Arc::new(Fake {
            fail_start: Some("app1".into()),
            ..stack(d.path())
        });
        let c = control(f.clone(), d.path());
        let paused = c.pause().await.unwrap().unwrap();
        assert!(c.resume(paused).await.is_err());
        let record = std::fs::read_to_string(d.path().join(RECORD_FILE)).unwrap();
        assert!(
            record.contains("app1") && !record.contains("app2"),
            "{record}"
        );

        // The next process, with a healthy engine, starts it.
        let healthy = Arc::new(stack(d.path()));
        healthy.set("app1", false);
        control(healthy.clone(), d.path())
            .recover(|| Some(()))
            .await;
        assert!(healthy.running().contains(&"app1".to_owned()));
        assert!(!d.path().join(RECORD_FILE).exists());
    }

    #[tokio::test]
    async fn a_crash_mid_restore_is_recovered_by_the_next_command_unless_a_restore_runs() {
        let d = tempfile::tempdir().unwrap();
        let f = Arc::new(stack(d.path()));
        let c = control(f.clone(), d.path());
        let paused = c.pause().await.unwrap().unwrap();
        std::mem::forget(paused); // the process died here

        // A restore holds the lock: its record is left alone.
        control(f.clone(), d.path()).recover(|| None::<()>).await;
        assert!(!f.running().contains(&"app1".to_owned()));

        control(f.clone(), d.path()).recover(|| Some(())).await;
        assert_eq!(f.running(), [SELF, "app1", "app2", "db", "nginx", "other"]);
        assert!(!d.path().join(RECORD_FILE).exists());
    }

    #[tokio::test]
    async fn without_an_engine_nothing_is_stopped_and_it_is_said_once() {
        let d = tempfile::tempdir().unwrap();
        let c = AppControl::with_engine(None, None, vec![], d.path());
        assert!(c.pause().await.unwrap().is_none());
        assert!(c.warned.load(Ordering::SeqCst));
        assert!(c.pause().await.unwrap().is_none());
        assert!(!d.path().join(RECORD_FILE).exists());
    }

    #[tokio::test]
    async fn the_project_can_be_named_when_we_do_not_run_in_a_container() {
        let d = tempfile::tempdir().unwrap();
        let f = Arc::new(stack(d.path()));
        let c = AppControl::with_engine(Some(f.clone()), Some("blog".into()), vec![], d.path());
        let paused = c.pause().await.unwrap().unwrap();
        assert_eq!(paused.containers()[0].id, "other");
        c.resume(paused).await.unwrap();

        let unknown = AppControl::with_engine(Some(f), None, vec!["host".into()], d.path());
        assert!(unknown.pause().await.unwrap().is_none());
    }

    #[test]
    fn own_id_from_mountinfo() {
        let info = "1 2 0:1 / / rw - overlay overlay rw\n\
            3 1 254:0 /var/lib/docker/containers/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/hostname /etc/hostname rw - ext4 /dev/vda rw\n";
        assert_eq!(
            container_id_in(info).as_deref(),
            Some("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
        );
        assert_eq!(
            container_id_in("1 2 0:1 / / rw - overlay overlay rw\n"),
            None
        );
    }
}
