//! The continuous binlog archive against a private MariaDB server with
//! `--log-bin` (see `own_server.rs`) and the moto bucket: the archived
//! segments hold the server's binlog bytes exactly (compared with the
//! server's own files), `mariadb-binlog` reads them once decrypted and
//! decompressed, and cuts (server restart, `KILL` of the replication
//! connection, `kill -9` of the archiver) lose and duplicate nothing, and
//! no half segment reaches the bucket or the SFTP server.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use selmai_backup::binlog::{store, Encoding, Options, SegmentManifest, StartPoint, Status};
use selmai_backup::config::Secret;
use selmai_backup::format::codec::Compression;
use selmai_backup::target::local::LocalTarget;
use selmai_backup::target::s3::S3Target;
use selmai_backup::target::sftp::SftpTarget;
use selmai_backup::target::Target;

use crate::support::archiver::{Archiver, Reach};
use crate::support::bucket::{create_bucket, s3_endpoint, s3_settings, unique_bucket};
use crate::support::own_server::OwnServer;

pub(crate) const PASS: &str = "binlog test passphrase";

/// A workload with every kind of event the archive must keep: row inserts,
/// updates and deletes, DDL, a row over 16 MiB (one event larger than a
/// protocol packet), utf8mb4 text, a rolled-back transaction, a
/// non-transactional table, and a binlog rotation in the middle.
fn workload(s: &OwnServer, db: &str) {
    let env = s.env();
    env.exec(
        None,
        &format!("CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4"),
    );
    env.exec(
        Some(db),
        "CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, s VARCHAR(100) CHARACTER SET utf8mb4, b LONGBLOB) ENGINE=InnoDB;
         CREATE TABLE m (id INT PRIMARY KEY, v VARCHAR(20)) ENGINE=Aria;",
    );
    for i in 0..20 {
        env.exec(
            Some(db),
            &format!("INSERT INTO t (s) VALUES ('row {i} 😀 déjà 中文')"),
        );
    }
    env.exec(
        Some(db),
        "UPDATE t SET s = CONCAT(s, ' updated') WHERE id % 3 = 0",
    );
    env.exec(Some(db), "DELETE FROM t WHERE id % 5 = 0");
    env.exec(
        Some(db),
        "BEGIN; INSERT INTO t (s) VALUES ('never committed'); ROLLBACK;",
    );
    env.exec(Some(db), "INSERT INTO m VALUES (1, 'aria')");
    env.exec(None, "FLUSH BINARY LOGS");
    env.exec(Some(db), "ALTER TABLE t ADD COLUMN extra INT DEFAULT 7");
    env.exec(
        Some(db),
        "INSERT INTO t (s, b) VALUES ('big', REPEAT('x', 17 * 1024 * 1024))",
    );
    env.exec(
        Some(db),
        "BEGIN; INSERT INTO t (s) VALUES ('multi 1'); INSERT INTO t (s) VALUES ('multi 2'); UPDATE t SET extra = 8 WHERE s = 'big'; COMMIT;",
    );
    env.exec(Some(db), "CREATE TABLE gone (a INT); DROP TABLE gone;");
}

fn options(dir: &Path, encrypted: bool) -> Options {
    let mut o = Options::new(
        4242,
        "selmai",
        Encoding {
            compression: Compression::Gzip(1),
            passphrase: encrypted.then(|| Secret::new(PASS)),
        },
        dir.join(".binlog"),
    );
    o.upload_after = Duration::from_secs(2);
    o.segment_bytes = 1 << 20;
    o
}

/// Check the chain against the server's own files: every segment's range
/// equals the file's bytes, the chain is contiguous from `from` to `to`,
/// each file it passes is covered to its end. Returns the plain segments.
async fn check_chain(
    s: &OwnServer,
    t: &dyn Target,
    from: &StartPoint,
    to: &(String, u64),
) -> Vec<(SegmentManifest, Vec<u8>)> {
    check_chain_prefixed(s, t, "selmai", from, to).await
}

pub(crate) async fn check_chain_prefixed(
    s: &OwnServer,
    t: &dyn Target,
    prefix: &str,
    from: &StartPoint,
    to: &(String, u64),
) -> Vec<(SegmentManifest, Vec<u8>)> {
    let chain = store::list_chain(t, prefix).await.unwrap();
    assert!(!chain.is_empty(), "no segment in the {}", t.label());
    let mut out = Vec::new();
    let mut at = (from.file.clone(), from.position);
    for (i, m) in chain.iter().enumerate() {
        let plain = store::read_verified(t, m, Some(&Secret::new(PASS)))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let server_file = std::fs::read(s.datadir.join(&m.binlog_file)).unwrap();
        if m.binlog_file != at.0 {
            // The previous file was read to its end; this one from its start.
            let prev = std::fs::read(s.datadir.join(&at.0)).unwrap();
            assert_eq!(at.1, prev.len() as u64, "{} not archived to its end", at.0);
            assert_eq!(m.start_position, 4, "{} does not start at 4", m.file);
            assert!(chain[i - 1].file_complete);
            at = (m.binlog_file.clone(), 4);
        }
        assert_eq!(
            m.start_position, at.1,
            "{} does not continue at {}:{}",
            m.file, at.0, at.1
        );
        if i > 0 {
            assert_eq!(m.follows.as_deref(), Some(chain[i - 1].file.as_str()));
        }
        let mut range = server_file[m.start_position as usize..m.end_position as usize].to_vec();
        if m.start_position == 4 {
            // The one byte that differs by design: the server sets the
            // in-use flag in the format description of the file it is
            // writing and clears it when it closes the file; the stream
            // sends it cleared, as the closed file will have it.
            range[17] &= !1;
        }
        let range = &range[..];
        assert_eq!(&plain[..4], b"\xfebin");
        let ours = &plain[m.header_len as usize..];
        let first_diff = ours.iter().zip(range).position(|(a, b)| a != b);
        assert!(
            ours == range,
            "{}: the archived events differ from {}[{}..{}] (lengths {} and {}, first difference at {first_diff:?})",
            m.file,
            m.binlog_file,
            m.start_position,
            m.end_position,
            ours.len(),
            range.len()
        );
        at.1 = m.end_position;
        out.push((m.clone(), plain));
    }
    assert_eq!(
        (at.0.as_str(), at.1),
        (to.0.as_str(), to.1),
        "the chain ends early"
    );
    out
}

/// `mariadb-binlog` prints every plain segment as SQL without complaint.
fn mariadb_binlog_reads(plain: &[u8]) -> String {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), plain).unwrap();
    let out = std::process::Command::new("mariadb-binlog")
        .args(["--no-defaults", "-vv"])
        .arg(f.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mariadb-binlog: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_archive_holds_the_servers_binlog_byte_for_byte_on_the_volume_and_in_the_bucket() {
    let s = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bucket_name = unique_bucket("binlog-exact");
    create_bucket(&bucket_name).await;
    let bucket: Arc<dyn Target> =
        Arc::new(S3Target::new(&s3_settings(&s3_endpoint(), &bucket_name, "binlog")).unwrap());
    let volume: Arc<dyn Target> = Arc::new(LocalTarget::new(dir.path()));
    let (file, position) = s.master_position();
    let from = StartPoint { file, position };
    let a = Archiver::start(
        s.db_settings("mysql"),
        vec![volume.clone(), bucket.clone()],
        options(dir.path(), true),
        Some(from.clone()),
    );
    let workload_server = &s;
    tokio::task::block_in_place(|| workload(workload_server, "shop"));
    a.wait(
        Reach::Archived,
        &s.master_position(),
        Duration::from_secs(60),
    )
    .await;
    let end = s.master_position();
    a.stop().await;

    let on_volume = check_chain(&s, volume.as_ref(), &from, &end).await;
    let in_bucket = check_chain(&s, bucket.as_ref(), &from, &end).await;
    assert_eq!(
        on_volume.iter().map(|(m, _)| &m.file).collect::<Vec<_>>(),
        in_bucket.iter().map(|(m, _)| &m.file).collect::<Vec<_>>()
    );
    assert!(
        on_volume.len() >= 3,
        "expected the size limit and the rotation to cut segments"
    );
    // Only complete transactions: every segment ends at a boundary, and
    // the plain files are gone from the work directory.
    let left: Vec<_> = std::fs::read_dir(dir.path().join(".binlog"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".open") || n.contains(".closed"))
        .collect();
    assert!(left.is_empty(), "plain segments left behind: {left:?}");

    let mut text = String::new();
    for (_, plain) in &on_volume {
        text.push_str(&mariadb_binlog_reads(plain));
    }
    assert!(
        text.contains("row 7 😀 déjà 中文"),
        "utf8mb4 text missing from mariadb-binlog's output"
    );
    assert!(text.contains("ALTER TABLE t ADD COLUMN extra"));
    assert!(text.contains("DROP TABLE `gone`"));
    assert!(!text.contains("never committed"));
    // Annotate events (the statement of row events) are kept.
    assert!(text.contains("Annotate_rows:"));
    assert!(text.contains("#Q> INSERT INTO t (s) VALUES ('row 7"));
    let gtids: Vec<&str> = on_volume
        .iter()
        .filter_map(|(m, _)| m.last_gtid.as_deref())
        .collect();
    assert!(!gtids.is_empty());
    assert!(on_volume.iter().all(|(m, _)| m.first_event_time.is_some()));
    assert!(on_volume.iter().all(|(m, _)| m.server_id == 1));
}

/// Keep committing small and larger transactions into `db.seq` until
/// `stop` is set, riding out server restarts; returns how many committed.
fn steady_writes(
    env: crate::support::DbEnv,
    db: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> u64 {
    use mysql_async::prelude::Queryable;
    env.exec(None, &format!("CREATE DATABASE IF NOT EXISTS `{db}`"));
    env.exec(
        Some(db),
        "CREATE TABLE IF NOT EXISTS seq (n INT PRIMARY KEY, pad MEDIUMBLOB)",
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut n = 0u64;
        let mut conn: Option<mysql_async::Conn> = None;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match mysql_async::Conn::new(env.mysql_opts(Some(db))).await {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Every tenth transaction carries two rows and 30 kB, so
            // that cuts also land inside transactions.
            let sql = if n.is_multiple_of(10) {
                format!(
                    "BEGIN; INSERT INTO seq VALUES ({a}, REPEAT('p', 30000)); INSERT INTO seq VALUES ({b}, NULL); COMMIT;",
                    a = n * 2 + 1_000_000,
                    b = n * 2 + 1_000_001
                )
            } else {
                format!("INSERT INTO seq VALUES ({n}, NULL)")
            };
            // About 100 transactions a second: a steady load, not a flood.
            tokio::time::sleep(Duration::from_millis(10)).await;
            match c.query_drop(sql).await {
                Ok(()) => n += 1,
                Err(_) => {
                    conn = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        n
    })
}

/// The id of the server's `Binlog Dump` thread serving us.
fn dump_thread(s: &OwnServer) -> Option<String> {
    s.root_sql("SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND = 'Binlog Dump'")
        .lines()
        .next()
        .map(str::to_owned)
}

/// Runs `steady_writes` on a thread until the returned closure is called.
pub(crate) fn writer(s: &OwnServer) -> impl FnOnce() -> u64 {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let env = s.env();
    let flag = stop.clone();
    let handle = std::thread::spawn(move || steady_writes(env, "steady", &flag));
    move || {
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        handle.join().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_replication_connection_and_a_restarted_server_lose_and_duplicate_nothing() {
    let mut s = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let volume: Arc<dyn Target> = Arc::new(LocalTarget::new(dir.path()));
    let (file, position) = s.master_position();
    let from = StartPoint { file, position };
    let mut opts = options(dir.path(), false);
    opts.segment_bytes = 256 << 10;
    let a = Archiver::start(
        s.db_settings("mysql"),
        vec![volume.clone()],
        opts,
        Some(from.clone()),
    );
    let finish = writer(&s);
    tokio::task::block_in_place(|| {
        for round in 0..4 {
            std::thread::sleep(Duration::from_millis(700 + 300 * round));
            let id = dump_thread(&s).expect("the archive is connected");
            let _ = s.root_sql(&format!("KILL {id}"));
        }
        // A clean restart (the file ends with a stop event), then a crash
        // (it ends wherever the server was), both while writes go on.
        std::thread::sleep(Duration::from_millis(800));
        s.restart();
        std::thread::sleep(Duration::from_millis(1500));
        s.crash();
        s.start_again();
        std::thread::sleep(Duration::from_millis(1500));
    });
    let committed = tokio::task::block_in_place(finish);
    assert!(committed > 20, "only {committed} transactions committed");
    a.wait(
        Reach::Archived,
        &s.master_position(),
        Duration::from_secs(60),
    )
    .await;
    let end = s.master_position();
    a.stop().await;
    let chain = check_chain(&s, volume.as_ref(), &from, &end).await;
    assert!(
        chain.iter().any(|(m, _)| m.file_complete),
        "no segment ends a file"
    );
}

/// The variables of `selmai-backup run` archiving `s` into `dir` and the
/// bucket, with no scheduled backup (only the archive runs).
pub(crate) fn daemon_vars(
    s: &OwnServer,
    dir: &Path,
    bucket: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let port = s.port.to_string();
    let mut v: Vec<(&str, &str)> = vec![
        ("DB_PORT", &port),
        ("DB_NAME", "steady"),
        ("BINLOG_ARCHIVE", "on"),
        ("BINLOG_UPLOAD_SECONDS", "1"),
        ("BINLOG_SEGMENT_MB", "1"),
        ("BACKUP_SCHEDULE", "off"),
        ("CONFIG_SCHEDULE", "off"),
        ("UPLOADS_SCHEDULE", "off"),
        ("FULL_SCHEDULE", "off"),
        ("BACKUP_PASSPHRASE", PASS),
        ("LOG_LEVEL", "info"),
    ];
    v.extend_from_slice(extra);
    crate::support::bucket::bucket_vars("steady", dir, &s3_endpoint(), bucket, &v)
}

pub(crate) fn read_status(dir: &Path) -> Option<Status> {
    Status::read(&dir.join(".binlog"))
}

/// Wait until the archive in `dir` (written by a daemon) has everything
/// the server has on the volume (`stored`: in stored segments too), or
/// panic after two minutes.
pub(crate) fn wait_for_daemon(s: &OwnServer, dir: &Path, stored: bool) {
    let (file, pos) = s.master_position();
    let started = Instant::now();
    loop {
        let st = read_status(dir);
        let a = st.as_ref().and_then(|s| {
            if stored {
                s.uploaded.clone()
            } else {
                s.archived.clone()
            }
        });
        if a.as_ref()
            .is_some_and(|a| a.file == file && a.position >= pos)
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the daemon's archive did not reach {file}:{pos}: {st:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `selmai-backup run` as a child that is killed if the test fails.
pub(crate) struct Daemon(pub(crate) std::process::Child);

impl Daemon {
    pub(crate) fn start(vars: &[(String, String)]) -> Daemon {
        Daemon(
            crate::support::tool::bin(vars)
                .arg("run")
                .stdout(std::process::Stdio::null())
                .stderr(match std::env::var_os("SELMAI_TEST_DAEMON_LOG") {
                    Some(_) => std::process::Stdio::inherit(),
                    None => std::process::Stdio::null(),
                })
                .spawn()
                .unwrap(),
        )
    }

    pub(crate) fn kill_9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        sigterm(&mut self.0)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sigterm(child: &mut std::process::Child) -> std::process::ExitStatus {
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    child.wait().unwrap()
}

/// Every segment in the bucket has its manifest (none is half there) and
/// no multipart upload is left open.
pub(crate) async fn bucket_has_only_whole_segments(bucket_name: &str, t: &dyn Target) {
    let objects = t.list("selmai_backup_binlog_").await.unwrap();
    let names: std::collections::HashSet<&str> = objects.iter().map(|o| o.name.as_str()).collect();
    for o in &objects {
        if !o.name.ends_with(".manifest.json") {
            assert!(
                names.contains(format!("{}.manifest.json", o.name).as_str()),
                "{} is in the bucket without its manifest",
                o.name
            );
        }
    }
    let open = crate::support::bucket::raw_bucket(bucket_name)
        .list_multiparts_uploads(None, None)
        .await
        .unwrap();
    let left: usize = open.iter().map(|r| r.uploads.len()).sum();
    assert_eq!(left, 0, "multipart uploads left open in the bucket");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_of_the_archiver_ten_times_loses_and_duplicates_nothing_and_no_half_segment_goes_off_site(
) {
    let s = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bucket_name = unique_bucket("binlog-kill9");
    create_bucket(&bucket_name).await;
    // The SFTP server too: no half segment reaches either.
    let sftp = crate::support::sshd::sftp_env();
    let (remote, remote_dir) = sftp.fresh_dir("binlog_kill9");
    let mut vars = daemon_vars(&s, dir.path(), &bucket_name, &[]);
    vars.extend(sftp.vars(sftp.port, &remote));
    let (file, position) = s.master_position();
    let from = StartPoint { file, position };
    let mut child = Daemon::start(&vars);
    // Writes start once the archive follows the server.
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), false));
    let finish = writer(&s);
    // Pseudo-random moments, the same on every run of the test.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for _ in 0..10 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let wait = Duration::from_millis(300 + x % 2500);
        tokio::time::sleep(wait).await;
        child.kill_9();
        child = Daemon::start(&vars);
    }
    let committed = tokio::task::block_in_place(finish);
    assert!(committed > 20, "only {committed} transactions committed");
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), true));
    let end = s.master_position();
    let status = tokio::task::block_in_place(|| child.stop());
    assert!(status.success(), "run exited with {status}");

    let volume = LocalTarget::new(dir.path());
    let bucket = S3Target::new(&s3_settings(&s3_endpoint(), &bucket_name, "selmai/prod/")).unwrap();
    let on_volume = check_chain_prefixed(&s, &volume, "selmai_backup", &from, &end).await;
    let in_bucket = check_chain_prefixed(&s, &bucket, "selmai_backup", &from, &end).await;
    assert_eq!(on_volume.len(), in_bucket.len());
    bucket_has_only_whole_segments(&bucket_name, &bucket).await;
    let server = SftpTarget::new(&sftp.settings(&remote)).unwrap();
    let on_server = check_chain_prefixed(&s, &server, "selmai_backup", &from, &end).await;
    assert_eq!(on_volume.len(), on_server.len());
    // Every segment file under a final name there is whole: it has its
    // manifest, and the chain above read each one against it.
    for entry in std::fs::read_dir(&remote_dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.starts_with("selmai_backup_binlog_") && !name.ends_with(".manifest.json") {
            assert!(
                remote_dir.join(format!("{name}.manifest.json")).exists(),
                "{name} is on the SFTP server without its manifest"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn binlogs_purged_while_the_archiver_was_stopped_are_a_gap_in_health_an_alert_and_a_dump_at_once(
) {
    let s = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let env = s.env();
    env.exec(
        None,
        "CREATE DATABASE steady; CREATE TABLE steady.t (a INT PRIMARY KEY)",
    );
    let sink = crate::support::sinks::HttpSink::start(200);
    let hook = format!("{}/hook", sink.url);
    let port = s.port.to_string();
    let base: Vec<(&str, &str)> = vec![
        ("DB_PORT", &port),
        ("BINLOG_ARCHIVE", "on"),
        ("BINLOG_UPLOAD_SECONDS", "1"),
        ("BACKUP_SCHEDULE", "off"),
        ("CONFIG_SCHEDULE", "off"),
        ("UPLOADS_SCHEDULE", "off"),
        ("FULL_SCHEDULE", "off"),
        ("NOTIFY_WEBHOOK_URL", &hook),
    ];
    let vars = crate::support::tool::vars_with("steady", dir.path(), &base);
    // A dump, then the archive from its snapshot.
    let (code, _, err) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["backup"]));
    assert_eq!(code, 0, "{err}");
    let mut child = Daemon::start(&vars);
    env.exec(Some("steady"), "INSERT INTO t VALUES (1)");
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), true));
    assert!(tokio::task::block_in_place(|| child.stop()).success());
    let (code, out, _) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["health"]));
    assert_eq!(code, 0, "healthy before the purge: {out}");

    // While it is stopped: more writes, new binlog files, and the server
    // purges every file before the newest.
    env.exec(Some("steady"), "INSERT INTO t VALUES (2)");
    env.exec(None, "FLUSH BINARY LOGS");
    env.exec(Some("steady"), "INSERT INTO t VALUES (3)");
    env.exec(None, "FLUSH BINARY LOGS");
    let (newest, _) = s.master_position();
    // The server keeps a file until its binlog checkpoint (InnoDB's crash
    // recovery) has moved past it: purge until it really is gone.
    let started = Instant::now();
    loop {
        env.exec(None, &format!("PURGE BINARY LOGS TO '{newest}'"));
        let first = env.exec(None, "SHOW BINARY LOGS");
        if first
            .lines()
            .next()
            .is_some_and(|l| l.starts_with(newest.as_str()))
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the server keeps {first}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The dump the gap asks for must fail here (its database is gone), so
    // that health shows the gap instead of racing the new dump.
    let broken = crate::support::tool::vars_with("no_such_db", dir.path(), &base);
    let mut child = Daemon::start(&broken);
    let mut saw_gap = false;
    let mut saw_dump = false;
    let started = Instant::now();
    while !(saw_gap && saw_dump) && started.elapsed() < Duration::from_secs(60) {
        if let Some(alert) = sink.next(Duration::from_secs(1)) {
            let ev = alert.json();
            match ev["event"].as_str() {
                Some("binlog_gap") => {
                    let e = ev["error"].as_str().unwrap();
                    assert!(e.contains("binlog gap from binlog.000001"), "{e}");
                    assert!(e.contains(&newest), "{e}");
                    saw_gap = true;
                }
                Some("backup_failed") => {
                    assert_eq!(ev["kind"], "db");
                    saw_dump = true;
                }
                _ => {}
            }
        }
    }
    assert!(saw_gap, "no gap alert");
    assert!(saw_dump, "no database dump was started after the gap");
    let (code, _, err) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["health"]));
    assert_eq!(code, 1);
    assert!(
        err.contains("unhealthy: binlog gap from binlog.000001"),
        "{err}"
    );
    // The archive goes on from where the server is now.
    env.exec(Some("steady"), "INSERT INTO t VALUES (4)");
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), true));
    assert!(tokio::task::block_in_place(|| child.stop()).success());

    // A new dump after the gap: healthy again.
    let old_dump: Vec<String> = crate::support::tool::files(dir.path())
        .into_iter()
        .filter(|n| n.ends_with(".sql.gz"))
        .collect();
    assert_eq!(old_dump.len(), 1, "{old_dump:?}");
    // --no-prune: retention would delete the old dump of the same day, and
    // the segments before the new one with it, and the gap is what is checked.
    let (code, _, err) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["backup", "--no-prune"]));
    assert_eq!(code, 0, "{err}");
    let (code, out, _) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["health"]));
    assert_eq!(code, 0, "healthy after a new dump: {out}");

    // `list` names the window: from the new dump on, the old one is cut off.
    let (code, out, err) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["list"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("point-in-time restore of `steady` from the volume: any time from"),
        "{out}"
    );
    assert!(out.contains("1 gap(s) earlier in the archive"), "{out}");
    // verify --binlog: whole from the newest dump, a gap (exit 4) from the old one.
    let (code, out, err) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["verify", "--binlog"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("ok: binlog archive in the volume from binlog.000003"),
        "{out}"
    );
    let (code, _, err) = crate::support::tool::outcome(&crate::support::tool::run(
        &vars,
        &["verify", "--binlog", &old_dump[0]],
    ));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("gap between"), "{err}");

    // Retention: once the old dump is gone, the segments before the new
    // dump's snapshot go too, and the chain the new dump needs stays whole.
    let volume = LocalTarget::new(dir.path());
    let before = store::list_chain(&volume, "selmai_backup").await.unwrap();
    volume.delete(&old_dump[0]).await.unwrap();
    volume
        .delete(&format!("{}.manifest.json", old_dump[0]))
        .await
        .unwrap();
    let (deleted, failed) =
        selmai_backup::daemon::retention::prune_binlog(&volume, "selmai_backup")
            .await
            .unwrap();
    assert!(failed.is_empty());
    let after = store::list_chain(&volume, "selmai_backup").await.unwrap();
    assert!(!deleted.is_empty() && !after.is_empty());
    assert_eq!(before.len(), deleted.len() + after.len());
    assert!(
        deleted
            .iter()
            .all(|d| d.contains("binlog.000001") || d.contains("binlog.000002")),
        "{deleted:?}"
    );
    let (code, out, err) =
        crate::support::tool::outcome(&crate::support::tool::run(&vars, &["verify", "--binlog"]));
    assert_eq!(code, 0, "{out}{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn rpo_the_bucket_holds_every_transaction_committed_more_than_the_upload_interval_before_a_crash(
) {
    let mut s = OwnServer::start();
    let dir = tempfile::tempdir().unwrap();
    let bucket_name = unique_bucket("binlog-rpo");
    create_bucket(&bucket_name).await;
    let vars = daemon_vars(
        &s,
        dir.path(),
        &bucket_name,
        &[("BINLOG_UPLOAD_SECONDS", "2")],
    );
    let env = s.env();
    env.exec(
        None,
        "CREATE DATABASE steady; CREATE TABLE steady.r (n INT PRIMARY KEY, at DATETIME(6))",
    );
    let mut child = Daemon::start(&vars);
    tokio::task::block_in_place(|| wait_for_daemon(&s, dir.path(), false));
    // One transaction every 100 ms for 8 s, each remembering when it committed.
    let mut committed: Vec<(u32, Instant)> = Vec::new();
    tokio::task::block_in_place(|| {
        for n in 0..80u32 {
            env.exec(
                Some("steady"),
                &format!("INSERT INTO r VALUES ({n}, NOW(6))"),
            );
            committed.push((n, Instant::now()));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    // The disaster: the sidecar and the server die together.
    let lost_at = Instant::now();
    child.kill_9();
    s.crash();
    // The bucket alone: every row committed more than 2 s (plus a margin
    // of 2 s) before the crash is in a stored segment's events.
    let bucket = S3Target::new(&s3_settings(&s3_endpoint(), &bucket_name, "selmai/prod/")).unwrap();
    let chain = store::list_chain(&bucket, "selmai_backup").await.unwrap();
    let mut text = String::new();
    for m in &chain {
        let plain = store::read_verified(&bucket, m, Some(&Secret::new(PASS)))
            .await
            .unwrap();
        text.push_str(&mariadb_binlog_reads(&plain));
    }
    let margin = Duration::from_secs(2 + 2);
    let must: Vec<u32> = committed
        .iter()
        .filter(|(_, t)| lost_at.duration_since(*t) > margin)
        .map(|(n, _)| *n)
        .collect();
    assert!(
        must.len() > 30,
        "too few old transactions to judge: {}",
        must.len()
    );
    for n in must {
        assert!(
            text.contains(&format!("INSERT INTO r VALUES ({n}, NOW(6))")),
            "transaction {n}, committed more than {margin:?} before the crash, is not in the bucket"
        );
    }
}
