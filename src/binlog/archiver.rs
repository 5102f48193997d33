//! The archiver loop: follow the server's binlog as a replica and write it
//! into segments, close them on time or size, and hand them to the uploader.
//!
//! Four tasks: a reader that owns the replication connection and passes
//! packets through a small channel (so that waiting for the next event is
//! cancel-safe), the writer here (segments, flushes, deadlines, status),
//! an uploader that stores closed segments in order on the volume, and a
//! copier that keeps the off-site targets level with the volume (retrying
//! while one is down, so it never holds up the volume). A cut connection is
//! reconnected with backoff and the stream asked again from the last
//! complete transaction; what followed it in the open segment is dropped
//! first. This module does not decide when the archive runs (the daemon
//! does) nor read dumps (the caller passes the newest snapshot).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use mysql_async::prelude::Queryable;
use tokio::sync::mpsc;

use super::event::{self, types, Format, Header, Tracker};
use super::protocol::{Packet, ProtocolError, ReplicaConn};
use super::segment::{self, Closed, OpenSegment, SegmentManifest};
use super::status::{Gap, OffsitePending, Position, Status};
use super::store::{self, Encoding};
use super::BinlogError;
use crate::config::DbSettings;
use crate::target::Target;

/// `ER_MASTER_FATAL_ERROR_READING_BINLOG`: the file or position is gone.
const FATAL_READING_BINLOG: u16 = 1236;

/// How the archive runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Our replica server id (`BINLOG_SERVER_ID`): unique among the
    /// server's replicas.
    pub server_id: u32,
    /// Backup prefix the segment names start with.
    pub prefix: String,
    /// Compression and encryption of stored segments.
    pub encoding: Encoding,
    /// Close a segment this long after its first event (`BINLOG_UPLOAD_SECONDS`).
    pub upload_after: Duration,
    /// Close a segment at this size (`BINLOG_SEGMENT_MB`).
    pub segment_bytes: u64,
    /// Where open and closed plain segments and the status live.
    pub work_dir: PathBuf,
    /// fsync the open segment this often.
    pub flush_every: Duration,
    /// Ask the server for a heartbeat after this much silence.
    pub heartbeat: Duration,
}

impl Options {
    /// Defaults for everything but the names (tests and the daemon adjust).
    pub fn new(server_id: u32, prefix: &str, encoding: Encoding, work_dir: PathBuf) -> Self {
        Options {
            server_id,
            prefix: prefix.to_owned(),
            encoding,
            upload_after: Duration::from_secs(60),
            segment_bytes: 64 << 20,
            work_dir,
            flush_every: Duration::from_secs(1),
            heartbeat: Duration::from_secs(1),
        }
    }
}

/// Something the daemon acts on.
#[async_trait::async_trait]
pub trait Hooks: Send + Sync {
    /// The server purged binlogs we never read: alert and dump at once.
    async fn gap(&self, gap: &Gap);
    /// A segment is stored on the volume (and copied where possible).
    async fn stored(&self, _m: &SegmentManifest) {}
}

/// Hooks that do nothing (tests, `verify`).
pub struct NoHooks;

#[async_trait::async_trait]
impl Hooks for NoHooks {
    async fn gap(&self, _gap: &Gap) {}
}

/// Where the stream starts when the volume holds nothing to continue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPoint {
    /// Binlog file.
    pub file: String,
    /// Position in it.
    pub position: u64,
}

/// Run the archive until `shutdown` resolves. `snapshot` is the newest
/// dump's binlog position (where a chain without history starts). On
/// shutdown the open segment is closed at its last complete transaction
/// and stored, so a clean stop loses nothing.
pub async fn run(
    db: &DbSettings,
    targets: &[Arc<dyn Target>],
    opts: &Options,
    snapshot: Option<StartPoint>,
    hooks: Arc<dyn Hooks>,
    status: Arc<Mutex<Status>>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), BinlogError> {
    let dir = &opts.work_dir;
    std::fs::create_dir_all(dir).map_err(|e| BinlogError::io("creating", dir, e))?;
    {
        let mut st = lock(&status);
        st.load_gaps(dir);
        st.server_id = opts.server_id;
        st.started_at = Some(Utc::now());
        st.connected = false;
    }
    // Closed segments an earlier run left are stored first, in order.
    let (closed_tx, closed_rx) = mpsc::unbounded_channel::<Closed>();
    for c in Closed::pending(dir).map_err(|e| BinlogError::io("reading", dir, e))? {
        let _ = closed_tx.send(c);
    }
    let chain = store::list_chain(targets[0].as_ref(), &opts.prefix)
        .await
        .map_err(BinlogError::Store)?;
    let (copy_tx, copy_rx) = mpsc::unbounded_channel::<SegmentManifest>();
    let copier = tokio::spawn(copy_loop(
        store::Copier::new(targets, &opts.prefix),
        chain.clone(),
        copy_rx,
        opts.upload_after.max(Duration::from_secs(1)),
        status.clone(),
        dir.clone(),
    ));
    let uploader = tokio::spawn(upload_loop(
        targets[0].clone(),
        opts.clone(),
        chain.clone(),
        closed_rx,
        copy_tx,
        hooks.clone(),
        status.clone(),
    ));

    let mut w = Writer {
        opts: opts.clone(),
        open: OpenSegment::recover(dir).map_err(|e| BinlogError::io("recovering", dir, e))?,
        closed_tx,
        status: status.clone(),
        tracker: Tracker::default(),
        format: None,
        fde: None,
        file: None,
        stream_start: 0,
        next: None,
        close_pending: false,
    };
    if let Some(open) = &w.open {
        w.file = Some(open.binlog_file.clone());
        w.format = open.summary.format.clone();
        tracing::info!(file = %open.binlog_file, position = open.summary.end_position, "continuing the open binlog segment");
    } else if let Some(last) = chain.last() {
        // Where the newest stored segment ended (closed segments still to
        // store come after it).
        let pending_last = Closed::pending(dir).ok().and_then(|v| v.last().cloned());
        w.next = Some(match pending_last {
            Some(c) => (
                StartPoint {
                    file: c.binlog_file.clone(),
                    position: c.summary.end_position,
                },
                c.file_complete || c.summary.ends_file,
            ),
            None => (
                StartPoint {
                    file: last.binlog_file.clone(),
                    position: last.end_position,
                },
                last.file_complete,
            ),
        });
    } else if let Some(c) = Closed::pending(dir).ok().and_then(|v| v.last().cloned()) {
        w.next = Some((
            StartPoint {
                file: c.binlog_file.clone(),
                position: c.summary.end_position,
            },
            c.file_complete || c.summary.ends_file,
        ));
    } else if let Some(s) = snapshot {
        tracing::info!(file = %s.file, position = s.position, "starting the binlog archive at the newest dump's snapshot");
        w.next = Some((s, false));
    }
    let result = w.follow(db, hooks.as_ref(), shutdown).await;
    // Clean stop: the complete part of the open segment is stored now.
    let closing = w.end_of_segment(false);
    {
        let mut st = lock(&status);
        st.connected = false;
        st.save(dir);
    }
    drop(w);
    let uploaded = uploader.await;
    // The uploader is done: the copier makes its last attempt and ends.
    let copied = copier.await;
    closing?;
    match uploaded {
        Ok(Err(e)) => return Err(e),
        Err(e) => return Err(BinlogError::Thread(e.to_string())),
        Ok(Ok(())) => {}
    }
    copied.map_err(|e| BinlogError::Thread(e.to_string()))?;
    lock(&status).save(dir);
    result
}

fn lock(status: &Mutex<Status>) -> std::sync::MutexGuard<'_, Status> {
    status.lock().unwrap_or_else(|p| p.into_inner())
}

struct Writer {
    opts: Options,
    open: Option<OpenSegment>,
    closed_tx: mpsc::UnboundedSender<Closed>,
    status: Arc<Mutex<Status>>,
    tracker: Tracker,
    format: Option<Format>,
    /// The current file's format description (the header of new segments).
    fde: Option<Vec<u8>>,
    /// The server file the stream is in.
    file: Option<String>,
    /// The position the current stream was asked from, in `file`.
    stream_start: u64,
    /// Where to continue when no segment is open, and whether that file is
    /// complete (the server may have purged it and moved on).
    next: Option<(StartPoint, bool)>,
    close_pending: bool,
}

/// What one connection's stream ended with.
enum StreamEnd {
    Cut(String),
    Gap(Gap),
}

impl Writer {
    fn st(&self) -> std::sync::MutexGuard<'_, Status> {
        lock(&self.status)
    }

    async fn follow(
        &mut self,
        db: &DbSettings,
        hooks: &dyn Hooks,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), BinlogError> {
        tokio::pin!(shutdown);
        let mut delay = Duration::from_millis(250);
        loop {
            let outcome = tokio::select! {
                () = &mut shutdown => return Ok(()),
                end = self.stream_once(db) => end?,
            };
            // Whatever the cut, the open transaction is read again.
            if let Some(open) = self.open.as_mut() {
                open.rewind()
                    .map_err(|e| BinlogError::io("rewinding", open.path(), e))?;
            }
            self.tracker.reset();
            self.close_pending = false;
            match outcome {
                StreamEnd::Gap(gap) => {
                    tracing::error!(gap = %gap, "the server purged binlogs the archive never read; a new dump is needed for point-in-time restore to work again");
                    self.st().add_gap(&self.opts.work_dir, gap.clone());
                    hooks.gap(&gap).await;
                }
                StreamEnd::Cut(why) => {
                    let saw_events = {
                        let mut st = self.st();
                        let was = st.connected;
                        st.connected = false;
                        st.last_error = Some(why.clone());
                        st.save(&self.opts.work_dir);
                        was
                    };
                    if saw_events {
                        delay = Duration::from_millis(250);
                    }
                    tracing::warn!(error = %why, retry_in_ms = delay.as_millis() as u64, "binlog stream cut; reconnecting");
                    tokio::select! {
                        () = &mut shutdown => return Ok(()),
                        () = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }

    /// Decide where to start, connect, and follow the stream until it is
    /// cut. Errors are only those of the volume (fatal); the server's are
    /// a [`StreamEnd`].
    async fn stream_once(&mut self, db: &DbSettings) -> Result<StreamEnd, BinlogError> {
        let (logs, master) = match server_logs(db).await {
            Ok(v) => v,
            Err(e) => return Ok(StreamEnd::Cut(e)),
        };
        let has = |f: &str| logs.iter().any(|l| l == f);
        let wanted: Option<(StartPoint, bool)> = match (&self.open, &self.next) {
            (Some(o), _) => Some((
                StartPoint {
                    file: o.binlog_file.clone(),
                    position: o.summary.end_position,
                },
                false,
            )),
            (None, Some(n)) => Some(n.clone()),
            (None, None) => None,
        };
        let start = match wanted {
            Some((p, _)) if has(&p.file) => p,
            Some((p, complete)) => {
                let idx = segment::file_index(&p.file);
                let successor = logs.iter().find(|l| segment::file_index(l) == idx + 1);
                match successor {
                    Some(next) if complete => StartPoint {
                        file: next.clone(),
                        position: 4,
                    },
                    _ => {
                        // The server no longer has what comes next: a gap.
                        // The chain starts again where the server is now;
                        // the dump the daemon takes at once covers the rest.
                        self.end_of_segment(false)?;
                        let gap = Gap {
                            detected_at: Utc::now(),
                            after: Position {
                                file: p.file.clone(),
                                position: p.position,
                            },
                            server_oldest: logs.first().cloned().unwrap_or_default(),
                            resumed_at: Position {
                                file: master.file.clone(),
                                position: master.position,
                            },
                        };
                        self.file = None;
                        self.next = Some((master, false));
                        return Ok(StreamEnd::Gap(gap));
                    }
                }
            }
            None => {
                tracing::info!(file = %master.file, position = master.position, "starting the binlog archive at the server's current position (no dump and no archive yet)");
                master
            }
        };
        if self.file.as_deref() != Some(start.file.as_str()) {
            self.fde = None;
            self.format = None;
        }
        self.file = Some(start.file.clone());
        self.stream_start = start.position;

        let mut conn = match ReplicaConn::connect(db, Duration::from_secs(10)).await {
            Ok(c) => c,
            Err(e) => return Ok(StreamEnd::Cut(e.to_string())),
        };
        if let Err(e) = conn
            .start_dump(
                self.opts.server_id,
                &start.file,
                start.position,
                self.opts.heartbeat,
            )
            .await
        {
            return Ok(StreamEnd::Cut(e.to_string()));
        }
        tracing::info!(file = %start.file, position = start.position, connection = conn.connection_id, "binlog stream started");
        let (tx, mut rx) = mpsc::channel::<Result<Packet, ProtocolError>>(4);
        let silence = self.opts.heartbeat * 5 + Duration::from_secs(5);
        let reader = tokio::spawn(async move {
            loop {
                let got = match tokio::time::timeout(silence, conn.next_event()).await {
                    Ok(r) => r,
                    Err(_) => Err(ProtocolError::Io {
                        addr: String::new(),
                        detail: format!("no event and no heartbeat for {}s", silence.as_secs()),
                    }),
                };
                let stop = !matches!(got, Ok(Packet::Event(_)));
                if tx.send(got).await.is_err() || stop {
                    break;
                }
            }
        });
        let _abort = AbortOnDrop(reader);
        let mut tick = tokio::time::interval(self.opts.flush_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        {
            let mut st = self.st();
            st.connected = true;
            st.last_error = None;
        }
        loop {
            tokio::select! {
                got = rx.recv() => match got {
                    Some(Ok(Packet::Event(ev))) => {
                        if let Err(why) = self.on_event(ev)? {
                            return Ok(StreamEnd::Cut(why));
                        }
                    }
                    Some(Ok(Packet::End)) => return Ok(StreamEnd::Cut("the server ended the binlog stream".into())),
                    Some(Err(e)) if e.server_code() == Some(FATAL_READING_BINLOG) => {
                        return Ok(StreamEnd::Cut(format!("{e}; checking whether the server purged the binlog")));
                    }
                    Some(Err(e)) => return Ok(StreamEnd::Cut(e.to_string())),
                    None => return Ok(StreamEnd::Cut("the binlog reader stopped".into())),
                },
                _ = tick.tick() => self.on_tick()?,
            }
        }
    }

    /// One event from the stream. `Ok(Err(why))` cuts the stream (the
    /// server sent something inconsistent; it is asked again).
    fn on_event(&mut self, ev: Vec<u8>) -> Result<Result<(), String>, BinlogError> {
        let Some(h) = Header::parse(&ev) else {
            return Ok(Err(format!(
                "an event of {} bytes is shorter than its header",
                ev.len()
            )));
        };
        if h.size as usize != ev.len() {
            return Ok(Err(format!(
                "an event says it has {} bytes but {} arrived",
                h.size,
                ev.len()
            )));
        }
        match h.kind {
            types::HEARTBEAT => {
                self.st().caught_up_at = Some(Utc::now());
                return Ok(Ok(()));
            }
            types::ROTATE if h.is_artificial() => {
                if let Some((name, pos)) = event::rotate_target(&ev, self.format.as_ref()) {
                    if self.file.as_deref() != Some(name.as_str()) {
                        // The server moved on to the next file: the current
                        // one is complete.
                        self.end_of_segment(true)?;
                        self.file = Some(name);
                        self.stream_start = pos;
                        self.fde = None;
                        self.format = None;
                    }
                }
                return Ok(Ok(()));
            }
            types::FORMAT_DESCRIPTION => {
                let Some(format) = Format::parse(&ev) else {
                    return Ok(Err("unreadable format description event".into()));
                };
                self.format = Some(format);
                self.fde = Some(ev.clone());
                if h.is_artificial() {
                    if self.open.is_none() {
                        self.open_segment(self.stream_start)?;
                    }
                    return Ok(Ok(()));
                }
                if self.open.is_none() {
                    self.open_segment(4)?;
                }
            }
            _ if h.is_artificial() => return Ok(Ok(())),
            _ => {}
        }
        let Some(format) = self.format.clone() else {
            return Ok(Err("an event arrived before the format description".into()));
        };
        let Some(open) = self.open.as_mut() else {
            return Ok(Err("an event arrived before the format description".into()));
        };
        let expected = open.next_position() + ev.len() as u64;
        if u64::from(h.log_pos) != expected {
            return Ok(Err(format!(
                "event ends at position {} in {}, expected {expected}",
                h.log_pos, open.binlog_file
            )));
        }
        if format.crc32 && !event::checksum_ok(&ev) {
            return Ok(Err(format!(
                "the event ending at {}:{} fails its CRC32 check",
                open.binlog_file, h.log_pos
            )));
        }
        let was_in = self.tracker.in_transaction();
        let (gtid, boundary) = self.tracker.observe(&ev, &h, &format);
        open.append(&ev, &h, gtid, boundary, was_in)
            .map_err(|e| BinlogError::io("writing", open.path(), e))?;
        {
            let mut st = self.st();
            st.bytes += ev.len() as u64;
            let t = segment::event_time(h.timestamp);
            st.last_event_time = Some(t);
            // An event stamped this second: the archive is level with the server.
            if (Utc::now() - t).num_seconds() <= 1 {
                st.caught_up_at = Some(Utc::now());
            }
        }
        if !boundary {
            return Ok(Ok(()));
        }
        match h.kind {
            types::ROTATE => {
                let next = event::rotate_target(&ev, Some(&format));
                self.end_of_segment(true)?;
                if let Some((name, pos)) = next {
                    self.file = Some(name);
                    self.stream_start = pos;
                }
                self.fde = None;
                self.format = None;
            }
            types::STOP => {
                let end = self.open.as_ref().map(|o| o.summary.end_position);
                let file = self.file.clone();
                self.end_of_segment(true)?;
                if let (Some(file), Some(position)) = (file, end) {
                    self.next = Some((StartPoint { file, position }, true));
                }
            }
            _ => {
                let full = self
                    .open
                    .as_ref()
                    .is_some_and(|o| o.written() >= self.opts.segment_bytes);
                if full || self.close_pending {
                    self.roll()?;
                }
            }
        }
        Ok(Ok(()))
    }

    /// Every `flush_every`: fsync, publish the status, and close the
    /// segment when its upload deadline has passed.
    fn on_tick(&mut self) -> Result<(), BinlogError> {
        if let Some(open) = self.open.as_mut() {
            open.sync()
                .map_err(|e| BinlogError::io("syncing", open.path(), e))?;
            let archived = Position {
                file: open.binlog_file.clone(),
                position: open.summary.end_position,
            };
            lock(&self.status).archived = Some(archived);
            let due = open
                .first_arrival
                .is_some_and(|t| t.elapsed() >= self.opts.upload_after);
            if due && open.has_events() {
                if open.at_boundary() {
                    self.roll()?;
                } else {
                    self.close_pending = true;
                }
            }
        }
        let dir = self.opts.work_dir.clone();
        self.st().save(&dir);
        Ok(())
    }

    fn open_segment(&mut self, start: u64) -> Result<(), BinlogError> {
        let (Some(file), Some(fde)) = (self.file.clone(), self.fde.clone()) else {
            return Ok(());
        };
        let dir = &self.opts.work_dir;
        let seg = OpenSegment::create(dir, &file, start, &fde)
            .map_err(|e| BinlogError::io("creating a segment in", dir, e))?;
        self.open = Some(seg);
        self.next = None;
        Ok(())
    }

    /// Close the open segment (when it holds events) and hand it to the
    /// uploader; an empty one is thrown away.
    fn end_of_segment(&mut self, file_complete: bool) -> Result<(), BinlogError> {
        self.close_pending = false;
        let Some(open) = self.open.take() else {
            return Ok(());
        };
        let path = open.path().to_path_buf();
        let end = StartPoint {
            file: open.binlog_file.clone(),
            position: open.summary.end_position,
        };
        if !open.has_events() {
            open.discard()
                .map_err(|e| BinlogError::io("removing", &path, e))?;
        } else {
            let closed = open
                .close(file_complete)
                .map_err(|e| BinlogError::io("closing", &path, e))?;
            let _ = self.closed_tx.send(closed);
        }
        self.next = Some((end, file_complete));
        Ok(())
    }

    /// Close the open segment and start the next one where it ended, in
    /// the same server file.
    fn roll(&mut self) -> Result<(), BinlogError> {
        let Some(end) = self.open.as_ref().map(|o| o.summary.end_position) else {
            return Ok(());
        };
        self.end_of_segment(false)?;
        self.open_segment(end)
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The server's binlog files (oldest first) and its current position.
async fn server_logs(db: &DbSettings) -> Result<(Vec<String>, StartPoint), String> {
    let mut conn = crate::db::connect(db, None)
        .await
        .map_err(|e| e.to_string())?;
    let result = async {
        let logs: Vec<mysql_async::Row> = conn.query("SHOW BINARY LOGS").await?;
        let names: Vec<String> = logs
            .into_iter()
            .filter_map(|r| r.get::<String, _>(0))
            .collect();
        let status: Option<mysql_async::Row> = conn.query_first("SHOW MASTER STATUS").await?;
        Ok::<_, mysql_async::Error>((names, status))
    }
    .await;
    let _ = conn.disconnect().await;
    let (names, status) = result.map_err(|e| format!("reading the server's binlog list: {e}"))?;
    let status = status.ok_or(
        "the server has binary logging off (SHOW MASTER STATUS is empty): start it with --log-bin",
    )?;
    let file: String = status.get(0).ok_or("SHOW MASTER STATUS without a file")?;
    let position: u64 = status
        .get(1)
        .ok_or("SHOW MASTER STATUS without a position")?;
    Ok((names, StartPoint { file, position }))
}

/// Store closed segments in order on the volume, and hand each stored one
/// to the copier. A volume failure is retried (the plain file stays until
/// it is stored).
async fn upload_loop(
    volume: Arc<dyn Target>,
    opts: Options,
    mut chain: Vec<SegmentManifest>,
    mut rx: mpsc::UnboundedReceiver<Closed>,
    copy_tx: mpsc::UnboundedSender<SegmentManifest>,
    hooks: Arc<dyn Hooks>,
    status: Arc<Mutex<Status>>,
) -> Result<(), BinlogError> {
    while let Some(c) = rx.recv().await {
        let name = segment::segment_name(
            &opts.prefix,
            &c.binlog_file,
            c.summary.start_position,
            opts.encoding.compression.extension(),
            opts.encoding.passphrase.is_some(),
        );
        // Stored by an earlier run that stopped before removing the plain file?
        let raw =
            segment::sha256_file(&c.path).map_err(|e| BinlogError::io("reading", &c.path, e))?;
        let done = chain.iter().any(|m| m.file == name && m.raw_sha256 == raw);
        if !done {
            let follows = chain
                .last()
                .filter(|p| store::continues(p, &c.binlog_file, c.summary.start_position))
                .map(|p| p.file.clone());
            let mut summary = c.summary.clone();
            summary.ends_file |= c.file_complete;
            let mut wait = Duration::from_secs(1);
            let m = loop {
                match store::store_on_volume(
                    volume.as_ref(),
                    &c.path,
                    &summary,
                    &c.binlog_file,
                    &opts.prefix,
                    &opts.encoding,
                    follows.clone(),
                )
                .await
                {
                    Ok(m) => break m,
                    Err(e) => {
                        tracing::error!(file = %name, error = %e, "cannot store the binlog segment on the volume; retrying");
                        lock(&status).last_error = Some(e.to_string());
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(60));
                    }
                }
            };
            tracing::info!(
                file = %m.file,
                transactions = m.transactions,
                end = m.end_position,
                "binlog segment stored"
            );
            chain.push(m.clone());
            let recent = chain.len().saturating_sub(1000);
            chain.drain(..recent);
            {
                let mut st = lock(&status);
                st.segments += 1;
                st.uploaded = Some(Position {
                    file: m.binlog_file.clone(),
                    position: m.end_position,
                });
            }
            let _ = copy_tx.send(m.clone());
            hooks.stored(&m).await;
        }
        std::fs::remove_file(&c.path).map_err(|e| BinlogError::io("removing", &c.path, e))?;
        let _ = segment::sync_dir(&opts.work_dir);
    }
    Ok(())
}

/// Copy stored segments off-site, apart from storing them on the volume so
/// that a bucket that is down or slow never holds up the volume. Copies at
/// start what an earlier run could not, after each stored segment, and,
/// while a target lacks segments, again every `retry` (a bucket that comes
/// back is caught up even when no new segment closes). Records what is
/// missing in the status (`health`, `/metrics`). Ends after one last
/// attempt once the uploader has stopped; what that cannot copy is copied
/// at the next start.
async fn copy_loop(
    mut copier: store::Copier,
    mut chain: Vec<SegmentManifest>,
    mut rx: mpsc::UnboundedReceiver<SegmentManifest>,
    retry: Duration,
    status: Arc<Mutex<Status>>,
    work_dir: PathBuf,
) {
    let record = |pending: &[OffsitePending]| {
        let mut st = lock(&status);
        if st.offsite_pending != pending {
            st.offsite_pending = pending.to_vec();
            st.save(&work_dir);
        }
    };
    let mut pending = copier.sync(&chain).await;
    record(&pending);
    let mut open = true;
    while open {
        let retry_due = async {
            if pending.is_empty() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(retry).await;
        };
        tokio::select! {
            got = rx.recv() => match got {
                Some(m) => chain.push(m),
                None => open = false,
            },
            () = retry_due => {}
        }
        while let Ok(m) = rx.try_recv() {
            chain.push(m);
        }
        let recent = chain.len().saturating_sub(1000);
        chain.drain(..recent);
        pending = copier.sync(&chain).await;
        record(&pending);
    }
}
