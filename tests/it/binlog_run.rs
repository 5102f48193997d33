//! The binlog archive as `selmai-backup run` starts and serves it: what the
//! preflight finds (binary logging, ROW format and why, the server id, the
//! REPLICATION SLAVE and BINLOG MONITOR grants, how long the server keeps
//! its binlogs), `BINLOG_ARCHIVE=auto` without the prerequisites (one
//! warning saying how to enable it, the daemon runs on), `on` (exit 3
//! with one line) and `off` (never archives), `/metrics` over HTTP while the archive runs, and a
//! bucket that is down while segments close (they stay on the volume,
//! `health` and `list` say so, and they are copied whole once it is back;
//! `verify --binlog` then finds both chains whole, and a flipped byte),
//! retention, which deletes the segments before the oldest kept dump on
//! the volume and in the bucket alike, and `health` failing on the lag
//! while the server is down (with the last error) and healthy once back.
//!
//! Uses a user without grants on the shared server, and private servers
//! (`own_server.rs`), one of them without `--log-bin`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use selmai_backup::binlog::{store, StartPoint};
use selmai_backup::preflight::{self, Severity};
use selmai_backup::target::local::LocalTarget;
use selmai_backup::target::s3::S3Target;
use selmai_backup::target::Target;

use crate::binlog::{
    bucket_has_only_whole_segments, check_chain_prefixed, daemon_vars, read_status,
    wait_for_daemon, Daemon,
};
use crate::preflight::TestUser;
use crate::support::bucket::{create_bucket, s3_endpoint, s3_settings, unique_bucket};
use crate::support::own_server::OwnServer;
use crate::support::sinks::{free_port, http_get};
use crate::support::tool;
use crate::support::TestDb;

/// No scheduled backup: only the archive's decision is logged.
const QUIET: [(&str, &str); 6] = [
    ("BACKUP_SCHEDULE", "off"),
    ("CONFIG_SCHEDULE", "off"),
    ("UPLOADS_SCHEDULE", "off"),
    ("FULL_SCHEDULE", "off"),
    ("BACKUP_CATCH_UP", "never"),
    ("LOG_LEVEL", "info"),
];

/// Start `run`, read its log until a line contains `marker`, check that
/// it is still running, stop it with SIGTERM and return the whole log and
/// the exit status. Killed after two minutes without the marker.
fn run_until(vars: &[(String, String)], marker: &str) -> (Vec<String>, bool, ExitStatus) {
    let mut child = tool::spawn(vars, &["run"]);
    let pid = child.id();
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let done = done.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while !done.load(Ordering::Relaxed) {
                if started.elapsed() > Duration::from_secs(120) {
                    let _ = std::process::Command::new("kill")
                        .args(["-9", &pid.to_string()])
                        .status();
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let mut log = Vec::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let seen = line.contains(marker);
        log.push(line);
        if seen {
            break;
        }
    }
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    // Still running once started: the daemon goes on without the archive.
    std::thread::sleep(Duration::from_millis(500));
    let running = child.try_wait().unwrap().is_none();
    let _ = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status();
    let status = child.wait().unwrap();
    done.store(true, Ordering::Relaxed);
    watchdog.join().unwrap();
    log.extend(rest.join().unwrap());
    (log, running, status)
}

fn warnings_about_binlog(log: &[String]) -> Vec<&String> {
    log.iter()
        .filter(|l| l.contains("WARN") && l.to_lowercase().contains("binlog"))
        .collect()
}

/// A user on the shared server who may read its database and nothing else.
fn user_without_replication(tag: &str) -> (TestDb, TestUser) {
    let db = TestDb::new(tag);
    db.exec("CREATE TABLE t (id INT PRIMARY KEY)");
    let user = TestUser::new(tag, &[format!("SELECT ON `{}`.*", db.name)]);
    (db, user)
}

#[test]
fn auto_without_the_prerequisites_warns_once_how_to_enable_it_and_the_daemon_keeps_running() {
    // A user without the grants, on the shared server (which has --log-bin).
    let (db, user) = user_without_replication("bl_auto_nogrant");
    let dir = tempfile::tempdir().unwrap();
    let mut extra: Vec<(&str, &str)> = QUIET.to_vec();
    extra.push(("BINLOG_ARCHIVE", "auto"));
    extra.extend(user.vars());
    let vars = tool::vars_with(&db.name, dir.path(), &extra);
    let (log, running, status) = run_until(&vars, "daemon started");
    let text = log.join("\n");
    assert!(running, "the daemon stopped: {text}");
    assert!(status.success(), "{status}: {text}");
    let warned = warnings_about_binlog(&log);
    assert_eq!(warned.len(), 1, "{text}");
    let want = format!(
        "the binlog archive is not running (BINLOG_ARCHIVE=auto): {0}@localhost lacks REPLICATION SLAVE and BINLOG MONITOR on *.*: it cannot read the binlog as a replica; GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{0}'@'localhost'; the recovery point stays the newest dump. Set BINLOG_ARCHIVE=off to silence this",
        user.name
    );
    assert!(warned[0].contains(&want), "{text}");
    assert!(!text.contains("binlog archive started"), "{text}");
    assert!(!dir.path().join(".binlog/status.json").exists());

    // A server without binary logging.
    let s = OwnServer::start_without_log_bin();
    let dir = tempfile::tempdir().unwrap();
    let port = s.port.to_string();
    let mut extra: Vec<(&str, &str)> = QUIET.to_vec();
    extra.extend([("BINLOG_ARCHIVE", "auto"), ("DB_PORT", port.as_str())]);
    let vars = tool::vars_with("mysql", dir.path(), &extra);
    let (log, running, status) = run_until(&vars, "daemon started");
    let text = log.join("\n");
    assert!(running && status.success(), "{status}: {text}");
    let warned = warnings_about_binlog(&log);
    assert_eq!(warned.len(), 1, "{text}");
    assert!(
        warned[0].contains("the binlog archive is not running (BINLOG_ARCHIVE=auto): binary logging is off on the server: there is no binlog to archive; start MariaDB with --log-bin --server-id=1 --binlog-format=ROW"),
        "{text}"
    );
    assert!(!text.contains("binlog archive started"), "{text}");
}

#[test]
fn off_never_archives_even_when_the_server_is_ready_and_says_so_once() {
    let s = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let port = s.port.to_string();
    let mut extra: Vec<(&str, &str)> = QUIET.to_vec();
    extra.extend([("BINLOG_ARCHIVE", "off"), ("DB_PORT", port.as_str())]);
    let vars = tool::vars_with("mysql", dir.path(), &extra);
    let (log, running, status) = run_until(&vars, "daemon started");
    let text = log.join("\n");
    assert!(running && status.success(), "{status}: {text}");
    assert!(warnings_about_binlog(&log).is_empty(), "{text}");
    let said: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("INFO") && l.contains("the binlog archive is off (BINLOG_ARCHIVE=off): the recovery point is the newest dump"))
        .collect();
    assert_eq!(said.len(), 1, "{text}");
    assert!(!text.contains("binlog archive started"), "{text}");
    assert!(!dir.path().join(".binlog").exists());
}

#[test]
fn on_without_the_prerequisites_exits_3_at_start_with_one_line() {
    let (db, user) = user_without_replication("bl_on_nogrant");
    let dir = tempfile::tempdir().unwrap();
    let mut extra: Vec<(&str, &str)> = QUIET.to_vec();
    extra.push(("BINLOG_ARCHIVE", "on"));
    extra.extend(user.vars());
    let vars = tool::vars_with(&db.name, dir.path(), &extra);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["run"]));
    assert_eq!(code, 3, "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("selmai-backup: error:"))
        .collect();
    assert_eq!(
        errors,
        [format!(
            "selmai-backup: error: not starting: BINLOG_ARCHIVE=on and the binlog archive cannot work: preflight: {0}@localhost lacks REPLICATION SLAVE and BINLOG MONITOR on *.*: it cannot read the binlog as a replica; GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{0}'@'localhost'",
            user.name
        )],
        "{err}"
    );
    assert!(!err.contains("daemon started"), "{err}");

    let s = OwnServer::start_without_log_bin();
    let port = s.port.to_string();
    let mut extra: Vec<(&str, &str)> = QUIET.to_vec();
    extra.extend([("BINLOG_ARCHIVE", "on"), ("DB_PORT", port.as_str())]);
    let vars = tool::vars_with("mysql", dir.path(), &extra);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["run"]));
    assert_eq!(code, 3, "{err}");
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("selmai-backup: error:"))
        .collect();
    assert_eq!(
        errors,
        ["selmai-backup: error: not starting: BINLOG_ARCHIVE=on and the binlog archive cannot work: preflight: binary logging is off on the server: there is no binlog to archive; start MariaDB with --log-bin --server-id=1 --binlog-format=ROW"],
        "{err}"
    );
}

fn messages(r: &preflight::Report, at: Severity) -> Vec<String> {
    r.findings
        .iter()
        .filter(|f| f.severity == at)
        .map(|f| f.message.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_preflight_checks_log_bin_row_server_id_both_grants_and_how_long_binlogs_are_kept() {
    // Binary logging off.
    let off = OwnServer::start_without_log_bin();
    let r = preflight::for_binlog(&off.db_settings("mysql"), 4242)
        .await
        .unwrap();
    assert_eq!(
        messages(&r, Severity::Fatal),
        ["binary logging is off on the server: there is no binlog to archive; start MariaDB with --log-bin --server-id=1 --binlog-format=ROW"]
    );
    drop(off);

    // The grants, one by one, on the shared server.
    let (db, none) = user_without_replication("bl_pf_none");
    let dir = tempfile::tempdir().unwrap();
    let settings = |u: &TestUser| {
        tool::settings(&db.name, dir.path(), &u.vars())
            .db()
            .unwrap()
    };
    let r = preflight::for_binlog(&settings(&none), 4242).await.unwrap();
    let fatal = messages(&r, Severity::Fatal);
    assert_eq!(fatal.len(), 1, "{r}");
    assert!(
        fatal[0].contains("lacks REPLICATION SLAVE and BINLOG MONITOR on *.*"),
        "{r}"
    );
    let slave = TestUser::new("bl_pf_slave", &["REPLICATION SLAVE ON *.*".into()]);
    let r = preflight::for_binlog(&settings(&slave), 4242)
        .await
        .unwrap();
    let fatal = messages(&r, Severity::Fatal);
    assert_eq!(fatal.len(), 1, "{r}");
    assert!(
        fatal[0].contains("lacks BINLOG MONITOR on *.*")
            && fatal[0].contains(&format!(
                "GRANT REPLICATION SLAVE, BINLOG MONITOR ON *.* TO '{}'@'localhost'",
                slave.name
            )),
        "{r}"
    );
    let both = TestUser::new(
        "bl_pf_both",
        &["REPLICATION SLAVE, BINLOG MONITOR ON *.*".into()],
    );
    let r = preflight::for_binlog(&settings(&both), 4242).await.unwrap();
    assert!(messages(&r, Severity::Fatal).is_empty(), "{r}");
    assert!(messages(&r, Severity::Warning).is_empty(), "{r}");

    // Statement-based logging, binlogs kept an hour, and a server id that
    // clashes with ours, on a private server.
    let s = OwnServer::start();
    s.root_sql(
        "SET GLOBAL binlog_format = 'MIXED'; SET GLOBAL binlog_expire_logs_seconds = 3600; SET GLOBAL server_id = 77",
    );
    let r = preflight::for_binlog(&s.db_settings("mysql"), 77)
        .await
        .unwrap();
    assert_eq!(
        messages(&r, Severity::Fatal),
        ["the server's server_id is 77, the id the binlog archive uses as a replica: set BINLOG_SERVER_ID to another value"]
    );
    let warnings = messages(&r, Severity::Warning);
    assert_eq!(warnings.len(), 2, "{r}");
    assert_eq!(
        warnings[0],
        "binlog_format is MIXED: a point-in-time restore replays statements, and statements such as NOW(), UUID() or UPDATE ... LIMIT can give other rows than they did; ROW records the rows themselves: start MariaDB with --binlog-format=ROW"
    );
    assert!(
        warnings[1].starts_with("the server deletes binlogs after ")
            && warnings[1].contains("if the sidecar is down longer, the archive has a gap and needs a new dump; keep them at least 2 days (binlog_expire_logs_seconds=172800)"),
        "{r}"
    );

    // `run` logs those findings and, with `auto`, archives anyway: they
    // are warnings, the server id is fixed by BINLOG_SERVER_ID.
    let dir = tempfile::tempdir().unwrap();
    let port = s.port.to_string();
    let mut extra: Vec<(&str, &str)> = QUIET.to_vec();
    extra.extend([
        ("BINLOG_ARCHIVE", "auto"),
        ("BINLOG_SERVER_ID", "78"),
        ("DB_PORT", port.as_str()),
    ]);
    let vars = tool::vars_with("mysql", dir.path(), &extra);
    let (log, running, status) =
        tokio::task::block_in_place(|| run_until(&vars, "binlog stream started"));
    let text = log.join("\n");
    assert!(running && status.success(), "{status}: {text}");
    let warned = warnings_about_binlog(&log);
    assert_eq!(warned.len(), 2, "{text}");
    assert!(
        warned[0].contains("preflight for the binlog archive: binlog_format is MIXED"),
        "{text}"
    );
    assert!(
        warned[1].contains("preflight for the binlog archive: the server deletes binlogs after"),
        "{text}"
    );
}

/// The body of `GET /metrics` on `addr`, which must answer 200.
fn metrics_page(addr: &str) -> String {
    let (code, body) = http_get(addr, "/metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// The samples of a Prometheus text page, by metric name.
fn samples(page: &str) -> BTreeMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            Some((name.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn unix_now() -> f64 {
    chrono::Utc::now().timestamp() as f64
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_over_http_show_the_archives_lag_last_event_bytes_and_segments() {
    let s = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bucket = unique_bucket("binlog-metrics");
    create_bucket(&bucket).await;
    let addr = format!("127.0.0.1:{}", free_port());
    let vars = daemon_vars(&s, dir.path(), &bucket, &[("METRICS_LISTEN", &addr)]);
    let env = s.env();
    env.exec(
        None,
        "CREATE DATABASE steady; CREATE TABLE steady.t (id INT PRIMARY KEY, b LONGBLOB)",
    );
    let mut child = Daemon::start(&vars);
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), false));

    let mut before: Option<BTreeMap<String, f64>> = None;
    for (round, kib) in [(1, 100), (2, 300)] {
        let written_after = unix_now();
        env.exec(
            Some("steady"),
            &format!("INSERT INTO t VALUES ({round}, REPEAT('m', {kib} * 1024))"),
        );
        tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), true));
        let page = tokio::task::block_in_place(|| metrics_page(&addr));
        let m = samples(&page);
        let get = |name: &str| {
            *m.get(&format!("selmai_backup_binlog_{name}"))
                .unwrap_or_else(|| panic!("no {name} in {page}"))
        };
        // Level with the server: the lag is within what health accepts.
        assert!(get("lag_seconds") >= 0.0, "{page}");
        assert!(get("lag_seconds") <= 300.0, "{page}");
        let last = get("last_event_timestamp_seconds");
        assert!(
            last >= written_after && last <= unix_now(),
            "the newest event's time {last} is not the insert's: {page}"
        );
        assert_eq!(get("connected"), 1.0, "{page}");
        assert_eq!(get("gaps"), 0.0, "{page}");
        assert_eq!(get("offsite_pending_segments"), 0.0, "{page}");
        let status = read_status(dir.path()).unwrap();
        assert!(get("segments_total") >= 1.0, "{page}");
        assert!(get("bytes_total") >= f64::from(kib * 1024), "{page}");
        assert!(get("bytes_total") <= status.bytes as f64, "{page}");
        if let Some(b) = &before {
            let was = |name: &str| b[&format!("selmai_backup_binlog_{name}")];
            assert!(
                get("bytes_total") >= was("bytes_total") + f64::from(kib * 1024),
                "{page}"
            );
            assert!(get("segments_total") > was("segments_total"), "{page}");
            assert!(last >= was("last_event_timestamp_seconds"), "{page}");
        }
        before = Some(m);
    }
    assert!(tokio::task::block_in_place(|| child.stop()).success());
}

/// A TCP proxy in front of the S3 server that can be taken down (every
/// connection, open or new, is closed at once) and brought back.
struct Switch {
    addr: std::net::SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Switch {
    async fn start(to: String) -> Switch {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (u, o) = (up.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !u.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let to = to.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&to).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                let mut open = o.lock().unwrap();
                open.retain(|t| !t.is_finished());
                open.push(task);
            }
        });
        Switch { addr, up, open }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn down(&self) {
        self.up.store(false, Ordering::SeqCst);
        for t in self.open.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    fn up(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn names(chain: &[selmai_backup::binlog::SegmentManifest]) -> Vec<String> {
    chain.iter().map(|m| m.file.clone()).collect()
}

/// The window line `list` prints for `target`.
fn window_line<'a>(out: &'a str, target: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&format!("from the {target}: any time from")))
        .unwrap_or_else(|| panic!("no window for the {target}: {out}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn segments_closed_while_the_bucket_is_down_stay_on_the_volume_and_are_copied_whole_once_it_is_back(
) {
    let s = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bucket_name = unique_bucket("binlog-down");
    create_bucket(&bucket_name).await;
    let moto = s3_endpoint();
    let switch = Switch::start(moto.trim_start_matches("http://").to_owned()).await;
    let proxied = daemon_vars(
        &s,
        dir.path(),
        &bucket_name,
        &[("S3_ENDPOINT", &switch.endpoint())],
    );
    // `list` and `health` as an operator runs them, on the bucket itself.
    let direct = daemon_vars(&s, dir.path(), &bucket_name, &[]);
    let env = s.env();
    env.exec(
        None,
        "CREATE DATABASE steady; CREATE TABLE steady.t (id INT PRIMARY KEY, v VARCHAR(20))",
    );
    // A dump (its snapshot starts the chain), then the archive.
    let (code, _, err) = tool::outcome(&tool::run(&proxied, &["backup"]));
    assert_eq!(code, 0, "{err}");
    let from: StartPoint = {
        let volume = LocalTarget::new(dir.path());
        let settings = tool::settings("steady", dir.path(), &[]);
        selmai_backup::daemon::binlog::newest_snapshot(&settings, &volume)
            .await
            .expect("the dump records its snapshot")
    };
    let mut child = Daemon::start(&proxied);
    env.exec(Some("steady"), "INSERT INTO t VALUES (1, 'before')");
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), true));
    let volume = LocalTarget::new(dir.path());
    let bucket = S3Target::new(&s3_settings(&moto, &bucket_name, "selmai/prod/")).unwrap();
    let level = |want: Vec<String>| {
        let bucket = &bucket;
        async move {
            let started = Instant::now();
            loop {
                let have = names(&store::list_chain(bucket, "selmai_backup").await.unwrap());
                if have == want {
                    return;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "the bucket holds {have:?}, the volume {want:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    level(names(
        &store::list_chain(&volume, "selmai_backup").await.unwrap(),
    ))
    .await;
    let before_outage = store::list_chain(&bucket, "selmai_backup").await.unwrap();

    // The bucket goes down; writes go on until two more segments have
    // closed on the volume.
    switch.down();
    let started = Instant::now();
    let mut n = 2;
    while store::list_chain(&volume, "selmai_backup")
        .await
        .unwrap()
        .len()
        < before_outage.len() + 2
    {
        env.exec(
            Some("steady"),
            &format!("INSERT INTO t VALUES ({n}, 'outage')"),
        );
        n += 1;
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "no segment closes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), true));
    let end = s.master_position();
    let on_volume = store::list_chain(&volume, "selmai_backup").await.unwrap();
    // The archive says what the bucket lacks.
    let started = Instant::now();
    let pending = loop {
        let st = read_status(dir.path()).unwrap();
        if let Some(p) = st
            .offsite_pending
            .first()
            .filter(|p| p.segments + before_outage.len() >= on_volume.len())
        {
            break p.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the status does not name the segments missing from the bucket: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(pending.target, "bucket");
    let (code, out, err) = tool::outcome(&tool::run(&direct, &["health"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("binlog segment(s) stored since") && out.contains("are not in the bucket yet"),
        "{out}"
    );
    // `list`: the bucket's window ends where the outage began.
    let (code, out, err) = tool::outcome(&tool::run(&direct, &["list"]));
    assert_eq!(code, 0, "{err}");
    let fmt = |m: &selmai_backup::binlog::SegmentManifest| {
        m.last_event_time
            .unwrap()
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string()
    };
    let volume_end = fmt(on_volume.last().unwrap());
    let bucket_end = fmt(before_outage.last().unwrap());
    assert_ne!(volume_end, bucket_end);
    assert!(
        window_line(&out, "volume").contains(&format!("to {volume_end}")),
        "{out}"
    );
    assert!(
        window_line(&out, "bucket").contains(&format!("to {bucket_end}")),
        "{out}"
    );

    // Back up: with no new write, the retry copies every missing segment.
    switch.up();
    level(names(&on_volume)).await;
    let in_bucket = check_chain_prefixed(&s, &bucket, "selmai_backup", &from, &end).await;
    assert_eq!(in_bucket.len(), on_volume.len());
    bucket_has_only_whole_segments(&bucket_name, &bucket).await;
    let started = Instant::now();
    while !read_status(dir.path()).unwrap().offsite_pending.is_empty() {
        assert!(started.elapsed() < Duration::from_secs(60));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, out, err) = tool::outcome(&tool::run(&direct, &["health"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("not in the bucket"), "{out}");
    let (code, out, err) = tool::outcome(&tool::run(&direct, &["list"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        window_line(&out, "bucket").contains(&format!("to {volume_end}")),
        "{out}"
    );
    assert!(tokio::task::block_in_place(|| child.stop()).success());

    // verify --binlog reads both chains from the dump's snapshot: whole.
    let (code, out, err) = tool::outcome(&tool::run(&direct, &["verify", "--binlog"]));
    assert_eq!(code, 0, "{out}{err}");
    for target in ["volume", "bucket"] {
        assert!(
            out.contains(&format!(
                "ok: binlog archive in the {target} from {}:{}",
                from.file, from.position
            )),
            "{out}"
        );
    }
    // A flipped byte in a stored segment is damage (exit 5), named.
    let victim = &on_volume[on_volume.len() / 2].file;
    let path = dir.path().join(victim);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&path, bytes).unwrap();
    let (code, out, err) = tool::outcome(&tool::run(&direct, &["verify", "--binlog"]));
    assert_eq!(code, 5, "{out}{err}");
    assert!(err.contains(victim.as_str()), "{err}");
}

/// Wait until the bucket's chain has the same segments as the volume's.
async fn bucket_level(volume: &dyn Target, bucket: &dyn Target) {
    let started = Instant::now();
    loop {
        let want = names(&store::list_chain(volume, "selmai_backup").await.unwrap());
        let have = names(&store::list_chain(bucket, "selmai_backup").await.unwrap());
        if have == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the bucket holds {have:?}, the volume {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_the_segments_before_the_oldest_kept_dump_on_the_volume_and_in_the_bucket(
) {
    use selmai_backup::binlog::segment::file_index;
    use selmai_backup::format::catalog;

    let s = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bucket_name = unique_bucket("binlog-retention");
    create_bucket(&bucket_name).await;
    let vars = daemon_vars(&s, dir.path(), &bucket_name, &[]);
    let env = s.env();
    env.exec(
        None,
        "CREATE DATABASE steady; CREATE TABLE steady.t (id INT PRIMARY KEY)",
    );
    let volume = LocalTarget::new(dir.path());
    let bucket = S3Target::new(&s3_settings(&s3_endpoint(), &bucket_name, "selmai/prod/")).unwrap();
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{err}");
    let first_dump: Vec<String> = catalog::list_db(&volume, "selmai_backup")
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(first_dump.len(), 1);
    let mut child = Daemon::start(&vars);
    // Segments after the first dump, in both targets.
    let mut n = 0;
    while store::list_chain(&volume, "selmai_backup")
        .await
        .unwrap()
        .len()
        < 3
    {
        n += 1;
        env.exec(Some("steady"), &format!("INSERT INTO t VALUES ({n})"));
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), true));
    bucket_level(&volume, &bucket).await;
    let before = names(&store::list_chain(&volume, "selmai_backup").await.unwrap());

    // A second dump the same day: retention keeps it alone, and the
    // segments a point-in-time restore from it does not need go too.
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{err}");
    let settings = tool::settings("steady", dir.path(), &[]);
    let snap = selmai_backup::daemon::binlog::newest_snapshot(&settings, &volume)
        .await
        .unwrap();
    env.exec(Some("steady"), &format!("INSERT INTO t VALUES ({})", n + 1));
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), true));
    bucket_level(&volume, &bucket).await;
    for t in [&volume as &dyn Target, &bucket] {
        let dumps: Vec<String> = catalog::list_db(t, "selmai_backup")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert!(!dumps.contains(&first_dump[0]), "{}: {dumps:?}", t.label());
        let chain = store::list_chain(t, "selmai_backup").await.unwrap();
        let deleted: Vec<&String> = before
            .iter()
            .filter(|b| !names(&chain).contains(b))
            .collect();
        assert!(!deleted.is_empty(), "{}: nothing deleted", t.label());
        for m in &chain {
            assert!(
                (file_index(&m.binlog_file), m.end_position)
                    >= (file_index(&snap.file), snap.position),
                "{}: {} ends before the kept dump's snapshot {}:{}",
                t.label(),
                m.file,
                snap.file,
                snap.position
            );
        }
    }
    assert!(tokio::task::block_in_place(|| child.stop()).success());
    // What is left is the whole chain the kept dump needs, in both.
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["verify", "--binlog"]));
    assert_eq!(code, 0, "{out}{err}");
    for target in ["volume", "bucket"] {
        assert!(
            out.contains(&format!("ok: binlog archive in the {target} from")),
            "{out}"
        );
    }
}

/// Run `health` until its exit code is `code` (two minutes at most);
/// returns its stdout and stderr.
fn health_until(vars: &[(String, String)], code: i32) -> String {
    let started = Instant::now();
    loop {
        let (got, out, err) = tool::outcome(&tool::run(vars, &["health"]));
        if got == code {
            return format!("{out}{err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "health still exits {got}: {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn health_fails_while_the_archive_falls_behind_a_server_that_is_down_and_recovers_with_it() {
    let mut s = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bucket_name = unique_bucket("binlog-lag");
    create_bucket(&bucket_name).await;
    let vars = daemon_vars(&s, dir.path(), &bucket_name, &[]);
    let strict = daemon_vars(
        &s,
        dir.path(),
        &bucket_name,
        &[("HEALTH_MAX_BINLOG_LAG_SECONDS", "3")],
    );
    s.env().exec(
        None,
        "CREATE DATABASE steady; CREATE TABLE steady.t (id INT PRIMARY KEY)",
    );
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{err}");
    let mut child = Daemon::start(&vars);
    s.env().exec(Some("steady"), "INSERT INTO t VALUES (1)");
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), true));
    let out = tokio::task::block_in_place(|| health_until(&vars, 0));
    assert!(out.contains("binlog archive"), "{out}");

    // The server goes away: the archive falls behind, and says why.
    s.crash();
    let out = tokio::task::block_in_place(|| health_until(&strict, 1));
    assert!(
        out.contains("behind the server, more than HEALTH_MAX_BINLOG_LAG_SECONDS=3; last error:"),
        "{out}"
    );
    // Back: the archive reconnects, catches up, and health follows.
    s.start_again();
    s.env().exec(Some("steady"), "INSERT INTO t VALUES (2)");
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), true));
    let out = tokio::task::block_in_place(|| health_until(&strict, 0));
    assert!(out.contains("healthy:"), "{out}");
    assert!(tokio::task::block_in_place(|| child.stop()).success());
}
