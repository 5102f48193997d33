//! Point-in-time restore against the shared server (`--log-bin`, ROW):
//! a workload in phases is archived (encrypted, volume and bucket), each
//! phase's time and state are noted, and `restore latest --to T --into
//! scratch` must give that state (canonical dump, `CHECKSUM TABLE`, row
//! counts), as `mariadb-binlog ... | mariadb` over the same archive does;
//! targets at the edges, before the dumps and after the archive are
//! refused or served as documented; the bucket alone serves after the
//! volume is lost; a gap and a damaged segment are refused before
//! anything is touched. Also: statement-format events with user variables
//! of every type replay to the same tables; `--into NAME` over a `DROP
//! DATABASE` of the source is refused with nothing touched, and a time
//! before it restores; the daemon's own drill passes on a whole chain.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use selmai_backup::binlog::{store, Encoding, Options, StartPoint};
use selmai_backup::config::{Secret, Settings};
use selmai_backup::daemon::jobs::Jobs;
use selmai_backup::daemon::metrics::Metrics;
use selmai_backup::daemon::notify::Notifier;
use selmai_backup::daemon::schedule::{Kind, Trigger};
use selmai_backup::daemon::state::Outcome;
use selmai_backup::format::codec::Compression;
use selmai_backup::target::local::LocalTarget;
use selmai_backup::target::s3::S3Target;
use selmai_backup::target::Target;

use crate::support::archiver::{Archiver, Reach};
use crate::support::bucket::{create_bucket, s3_endpoint, s3_settings, unique_bucket};
use crate::support::tool;
use crate::support::{assert_same_database, compare_databases, copy_with_mariadb_dump, db_env};

const PASS: &str = "pitr test passphrase";
const SRC: &str = "pitr_src";
const SCRATCH: &str = "pitr_scratch";
const CHARSET: &str = "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci";

fn exec(db: Option<&str>, sql: &str) -> String {
    db_env().exec(db, sql)
}

fn master_position() -> (String, u64) {
    let out = exec(None, "SHOW MASTER STATUS");
    let mut f = out.split('\t');
    let file = f.next().unwrap().trim().to_owned();
    let pos = f.next().unwrap().trim().parse().unwrap();
    (file, pos)
}

fn server_now() -> DateTime<Utc> {
    let s: i64 = exec(None, "SELECT UNIX_TIMESTAMP()")
        .trim()
        .parse()
        .unwrap();
    Utc.timestamp_opt(s, 0).unwrap()
}

/// Wait until the server's clock is in a later second than `t`.
fn after(t: DateTime<Utc>) {
    while server_now() <= t {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run `sql` in `db` within one second of the server's clock and return
/// that second (the time stamp of its events).
fn in_one_second(sql: &str) -> (DateTime<Utc>, String) {
    loop {
        let before = server_now();
        let out = exec(Some(SRC), sql);
        if server_now() == before {
            return (before, out.trim().to_owned());
        }
    }
}

/// Note the state of the source database under `name`.
fn note(name: &str) {
    note_of(name, SRC);
}

/// Note the state of `src` under `name`.
fn note_of(name: &str, src: &str) {
    exec(
        None,
        &format!("DROP DATABASE IF EXISTS {name}; CREATE DATABASE {name} {CHARSET}"),
    );
    copy_with_mariadb_dump(src, name);
}

/// Set every AUTO_INCREMENT counter of `db` to its table's largest key
/// plus one. A rolled-back transaction advances a counter on the source
/// but leaves no event in the binlog, so no replay (ours or
/// `mariadb-binlog`'s) can advance it: the counters are compared as the
/// rows define them.
fn settle_counters(db: &str) {
    let tables = exec(
        None,
        &format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{db}' AND AUTO_INCREMENT IS NOT NULL"),
    );
    for t in tables.lines().map(str::trim).filter(|t| !t.is_empty()) {
        exec(Some(db), &format!("ALTER TABLE `{t}` AUTO_INCREMENT = 1"));
    }
}

/// The state noted as `noted` and the database `db` are the same (rows,
/// schema, checksums; counters as the rows define them).
fn same_state(noted: &str, db: &str) -> Result<(), String> {
    settle_counters(noted);
    settle_counters(db);
    compare_databases(noted, db).map_err(|m| m.to_string())
}

/// The archive of the shared server from its current position into
/// `targets`, encrypted, as the restores here read it. `replica` tells the
/// archives of the tests apart: the server disconnects a replica when
/// another one registers with its id.
fn archiver(dir: &Path, prefix: &str, targets: Vec<Arc<dyn Target>>, replica: u32) -> Archiver {
    let mut o = Options::new(
        replica * 1000 + std::process::id() % 1000,
        prefix,
        Encoding {
            compression: Compression::Gzip(1),
            passphrase: Some(Secret::new(PASS)),
        },
        dir.join(".binlog"),
    );
    o.upload_after = Duration::from_secs(1);
    o.segment_bytes = 1 << 20;
    let (file, position) = master_position();
    let db = tool::settings("mysql", dir, &[]).db().unwrap();
    Archiver::start(db, targets, o, Some(StartPoint { file, position }))
}

/// Wait until stored segments hold everything the server has now.
async fn wait_stored(a: &Archiver) {
    a.wait(Reach::Stored, &master_position(), Duration::from_secs(90))
        .await;
}

fn run(vars: &[(String, String)], args: &[&str]) -> Output {
    tool::run(vars, args)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `restore latest --to TO --into SCRATCH` (dropped first); asserts success.
fn restore_to(vars: &[(String, String)], to: &str) -> Output {
    exec(None, &format!("DROP DATABASE IF EXISTS {SCRATCH}"));
    let o = run(
        vars,
        &[
            "restore",
            "latest",
            "--to",
            to,
            "--into",
            SCRATCH,
            "--yes",
            "--no-safety-snapshot",
        ],
    );
    assert!(o.status.success(), "restore --to {to}: {}", text(&o));
    o
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

/// The workload, in phases after the first dump; returns each phase's
/// noted database and time.
fn phases() -> Vec<(&'static str, DateTime<Utc>)> {
    let mut noted = Vec::new();
    fn done(name: &'static str, noted: &mut Vec<(&'static str, DateTime<Utc>)>) {
        let t = server_now();
        note(name);
        noted.push((name, t));
        after(t);
    }
    // Inserts, NULLs, FLOAT, utf8mb4, the trigger firing.
    exec(
        Some(SRC),
        "INSERT INTO t (s, f, n) VALUES ('déjà vu 😀 中文', 3.14159, NULL), (NULL, -0.000123, 5), ('third', 1e30, NULL);
         INSERT INTO t (s, f, n) VALUES ('fourth', NULL, 42)",
    );
    done("pitr_at_1", &mut noted);
    // Updates, deletes, a multi-statement transaction, a rolled-back one.
    exec(
        Some(SRC),
        "UPDATE t SET s = CONCAT(IFNULL(s, ''), ' updated'), f = f * 2 WHERE id % 2 = 0;
         DELETE FROM t WHERE s = 'third';
         BEGIN; INSERT INTO t (s, n) VALUES ('multi 1', 1); UPDATE t SET n = n + 1 WHERE n IS NOT NULL; DELETE FROM log WHERE id = 1; COMMIT;
         BEGIN; INSERT INTO t (s) VALUES ('never committed'); DELETE FROM t; ROLLBACK;",
    );
    done("pitr_at_2", &mut noted);
    // DDL: ALTER TABLE, a table created, used and dropped, another kept.
    exec(
        Some(SRC),
        "ALTER TABLE t ADD COLUMN extra INT DEFAULT 7;
         CREATE TABLE gone (a INT) ENGINE=InnoDB; INSERT INTO gone VALUES (1); DROP TABLE gone;
         CREATE TABLE kept (k VARCHAR(10) PRIMARY KEY, v DOUBLE) ENGINE=InnoDB;
         INSERT INTO kept VALUES ('a', 0.1), ('b', NULL);",
    );
    done("pitr_at_3", &mut noted);
    // A 20 MiB BLOB, then updated.
    exec(
        Some(SRC),
        "INSERT INTO t (s, b) VALUES ('big', REPEAT('x', 20 * 1024 * 1024));
         UPDATE t SET b = CONCAT(REPEAT('y', 20 * 1024 * 1024), 'end'), extra = 8 WHERE s = 'big';",
    );
    done("pitr_at_4", &mut noted);
    noted
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_to_a_time_gives_the_state_noted_then_from_the_volume_or_the_bucket_and_refuses_what_the_archive_cannot_reach(
) {
    let dir = tempfile::tempdir().unwrap();
    let bucket_name = unique_bucket("pitr");
    create_bucket(&bucket_name).await;
    let vars = crate::support::bucket::bucket_vars(
        SRC,
        dir.path(),
        &s3_endpoint(),
        &bucket_name,
        &[("BACKUP_PASSPHRASE", PASS), ("TZ", "UTC")],
    );
    let prefix = tool::settings(SRC, dir.path(), &[]).prefix;
    let bucket: Arc<dyn Target> = Arc::new(
        S3Target::new(&s3_settings(&s3_endpoint(), &bucket_name, "selmai/prod/")).unwrap(),
    );
    let volume: Arc<dyn Target> = Arc::new(LocalTarget::new(dir.path()));
    for db in [SRC, SCRATCH, "pitr_mb", "pitr_marker"] {
        exec(None, &format!("DROP DATABASE IF EXISTS {db}"));
    }
    exec(None, &format!("CREATE DATABASE {SRC} {CHARSET}"));
    exec(
        Some(SRC),
        "CREATE TABLE t (id INT PRIMARY KEY AUTO_INCREMENT, s VARCHAR(100), f FLOAT, n INT NULL, b LONGBLOB) ENGINE=InnoDB;
         CREATE TABLE log (id INT PRIMARY KEY AUTO_INCREMENT, t_id INT, at_s VARCHAR(100)) ENGINE=InnoDB;
         CREATE TRIGGER t_logged AFTER INSERT ON t FOR EACH ROW INSERT INTO log (t_id, at_s) VALUES (NEW.id, NEW.s);
         INSERT INTO t (s, f) VALUES ('before the dump', 1.5);",
    );
    let archiver = archiver(dir.path(), &prefix, vec![volume.clone(), bucket.clone()], 4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let vars2 = vars.clone();
    let gtid_out = Arc::new(Mutex::new(String::new()));
    let edge_gtid_slot = gtid_out.clone();
    let written = |o: &Output| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .find_map(|l| {
                Path::new(l.trim())
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap()
    };
    let (first_dump_at, first_dump, noted, edge, second_dump, third_dump) =
        tokio::task::block_in_place(move || {
            let before_dumps = server_now();
            after(before_dumps);
            let o = run(&vars2, &["backup", "--no-prune"]);
            assert!(o.status.success(), "backup: {}", text(&o));
            let first_dump = written(&o);
            let first_dump_at = server_now();
            after(first_dump_at);
            let mut noted = phases();
            // A second dump after phase 2's state is noted, and a last phase.
            let o = run(&vars2, &["backup", "--no-prune"]);
            assert!(o.status.success(), "backup: {}", text(&o));
            let second_dump = written(&o);
            let t = server_now();
            after(t);
            // One commit in one known second: the edge.
            let (edge, edge_gtid) =
                in_one_second("INSERT INTO kept VALUES ('edge', 2.5); SELECT @@last_gtid");
            note("pitr_at_5");
            noted.push(("pitr_at_5", edge));
            *gtid_out.lock().unwrap() = edge_gtid;
            after(edge);
            // The bad statement an operator wants to undo.
            exec(Some(SRC), "DELETE FROM t WHERE id > 1");
            note("pitr_at_6");
            let t6 = server_now();
            noted.push(("pitr_at_6", t6));
            after(t6);
            // A change the binlog never saw, then a third dump: the
            // archive between the second and the third dump is incomplete,
            // which the drill of the chain must find.
            exec(
                Some(SRC),
                "SET SESSION sql_log_bin = 0; UPDATE t SET s = 'not in the binlog' WHERE id = 1",
            );
            note("pitr_at_7");
            let o = run(&vars2, &["backup", "--no-prune"]);
            assert!(o.status.success(), "backup: {}", text(&o));
            let third_dump = written(&o);
            (
                first_dump_at,
                first_dump,
                noted,
                edge,
                second_dump,
                third_dump,
            )
        });
    wait_stored(&archiver).await;
    archiver.stop().await;

    tokio::task::block_in_place(|| {
        // Every noted time, from the first dump (phases 1-3 lie before the
        // second dump, so `latest` must choose the first) and the second.
        for (name, t) in &noted {
            restore_to(&vars, &rfc(*t));
            if let Err(m) = same_state(name, SCRATCH) {
                panic!("restore --to {t} differs from the state noted then ({name}): {m}");
            }
        }
        // One second before the edge commit: the state before it.
        restore_to(&vars, &rfc(edge - chrono::Duration::seconds(1)));
        same_state("pitr_at_4", SCRATCH).unwrap();
        // The local form, read in TZ (UTC here).
        restore_to(&vars, &edge.format("%Y-%m-%d %H:%M:%S").to_string());
        same_state("pitr_at_5", SCRATCH).unwrap();
        // Up to and including the edge transaction, by its GTID.
        let gtid = edge_gtid_slot.lock().unwrap().clone();
        exec(None, &format!("DROP DATABASE IF EXISTS {SCRATCH}"));
        let o = run(
            &vars,
            &[
                "restore",
                "latest",
                "--to-gtid",
                &gtid,
                "--into",
                SCRATCH,
                "--yes",
            ],
        );
        assert!(o.status.success(), "--to-gtid {gtid}: {}", text(&o));
        same_state("pitr_at_5", SCRATCH).unwrap();
        // Everything archived.
        restore_to(&vars, "end");
        same_state("pitr_at_7", SCRATCH).unwrap();

        // The plan alone touches nothing.
        exec(None, &format!("DROP DATABASE IF EXISTS {SCRATCH}"));
        let o = run(
            &vars,
            &[
                "restore",
                "latest",
                "--to",
                &rfc(edge),
                "--into",
                SCRATCH,
                "--dry-run",
            ],
        );
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "{}", text(&o));
        assert!(out.contains(&format!("dump: {second_dump}")), "{out}");
        assert!(out.contains("segments: "), "{out}");
        assert!(
            out.contains(&format!(
                "committed {}",
                edge.format("%Y-%m-%d %H:%M:%S UTC")
            )),
            "{out}"
        );
        assert!(
            out.contains("transactions: 1 of database `pitr_src`"),
            "{out}"
        );
        assert_eq!(
            exec(None, &format!("SHOW DATABASES LIKE '{SCRATCH}'")).trim(),
            ""
        );

        // Before every dump: refused (4), naming the oldest.
        let o = run(
            &vars,
            &[
                "restore",
                "latest",
                "--to",
                &rfc(first_dump_at - chrono::Duration::seconds(5)),
                "--into",
                SCRATCH,
                "--yes",
            ],
        );
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        assert!(
            text(&o).contains("no dump was taken before"),
            "{}",
            text(&o)
        );
        // The second dump asked for a time before it: the first serves.
        let o = run(
            &vars,
            &[
                "restore",
                &second_dump,
                "--to",
                &rfc(noted[0].1),
                "--into",
                SCRATCH,
                "--yes",
            ],
        );
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        assert!(
            text(&o).contains("the older dump selmai_backup_"),
            "{}",
            text(&o)
        );
        // After the archive's end: refused unless `end`.
        let o = run(
            &vars,
            &[
                "restore",
                "latest",
                "--to",
                &rfc(Utc::now() + chrono::Duration::hours(1)),
                "--into",
                SCRATCH,
                "--yes",
            ],
        );
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        assert!(
            text(&o).contains("after the end of the archive"),
            "{}",
            text(&o)
        );
        assert!(text(&o).contains("--to end"), "{}", text(&o));
        assert_eq!(
            exec(None, &format!("SHOW DATABASES LIKE '{SCRATCH}'")).trim(),
            ""
        );
        // A replay that fails after the dump was restored is rolled back
        // with it: the database holds a table the archive creates again.
        exec(
            None,
            &format!("DROP DATABASE IF EXISTS {SCRATCH}; CREATE DATABASE {SCRATCH}; CREATE TABLE {SCRATCH}.kept (k INT); INSERT INTO {SCRATCH}.kept VALUES (42)"),
        );
        let o = run(
            &vars,
            &[
                "restore",
                "latest",
                "--to",
                &rfc(noted[2].1),
                "--into",
                SCRATCH,
                "--yes",
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{}", text(&o));
        assert!(text(&o).contains("already exists"), "{}", text(&o));
        assert!(text(&o).contains("is as it was before"), "{}", text(&o));
        assert_eq!(
            exec(None, &format!("SHOW TABLES FROM {SCRATCH}")).trim(),
            "kept"
        );
        assert_eq!(exec(Some(SCRATCH), "SELECT k FROM kept").trim(), "42");
        exec(None, &format!("DROP DATABASE {SCRATCH}"));
        // A user who may restore the database but not replay BINLOG
        // statements: the preflight refuses (3) before anything is touched.
        exec(
            None,
            &["'pitr_limited'@'%'", "'pitr_limited'@'localhost'"]
                .map(|u| format!("DROP USER IF EXISTS {u}; CREATE USER {u} IDENTIFIED BY 'pitr-limited-pw'; \
                     GRANT ALL PRIVILEGES ON `pitr_scratch`.* TO {u}; GRANT SELECT ON *.* TO {u};"))
                .concat(),
        );
        let limited: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| match k.as_str() {
                "DB_USER" => (k.clone(), "pitr_limited".to_owned()),
                "DB_PASSWORD" => (k.clone(), "pitr-limited-pw".to_owned()),
                _ => (k.clone(), v.clone()),
            })
            .collect();
        let o = run(
            &limited,
            &[
                "restore", "latest", "--to", "end", "--into", SCRATCH, "--yes",
            ],
        );
        exec(
            None,
            "DROP USER 'pitr_limited'@'%', 'pitr_limited'@'localhost'",
        );
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(
            text(&o).contains("GRANT BINLOG REPLAY ON *.*"),
            "{}",
            text(&o)
        );
        assert_eq!(
            exec(None, &format!("SHOW DATABASES LIKE '{SCRATCH}'")).trim(),
            ""
        );
    });

    // The drill of the chain: the first dump plus the archive gives the
    // second dump's tables; the archive to the third lacks a change.
    tokio::task::block_in_place(|| {
        let o = run(
            &vars,
            &["verify", &second_dump, "--restore-test", "--binlog"],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains(&format!(
                "{first_dump} with the binlog archive to {second_dump}'s snapshot"
            )),
            "{}",
            text(&o)
        );
        let o = run(
            &vars,
            &["verify", &third_dump, "--restore-test", "--binlog"],
        );
        assert_eq!(o.status.code(), Some(5), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("does not restore to what was dumped"),
            "{}",
            text(&o)
        );
        assert!(
            err.contains(&format!(
                "{second_dump} with the binlog archive to {third_dump}"
            )),
            "{}",
            text(&o)
        );
        assert!(err.contains("table `t`"), "{}", text(&o));
    });

    // The daemon's monthly drill proves the chain too: the dump drill of
    // the third dump alone would pass, but the chain to it lacks the change
    // the binlog never saw, and the drill fails naming the table. (It passes
    // on a whole chain: the same drill as `verify --restore-test --binlog`
    // above, between the first and second dumps.)
    // As the daemon's own settings would be, with the archive on.
    let mut daemon_vars = vars.clone();
    daemon_vars.retain(|(k, _)| k != "BINLOG_ARCHIVE");
    daemon_vars.push(("BINLOG_ARCHIVE".into(), "on".into()));
    let settings = Arc::new(Settings::from_vars(daemon_vars).unwrap());
    let drilled = Jobs::new(
        settings.clone(),
        vec![volume.clone(), bucket.clone()],
        Notifier::new(settings.notify.clone()),
        Metrics::default(),
    )
    .run_once(Kind::Drill, Trigger::Schedule)
    .await;
    assert_eq!(drilled.outcome, Outcome::Failed, "{drilled:?}");
    let why = drilled.error.unwrap_or_default();
    assert!(why.contains("table `t`"), "{why}");
    assert!(
        why.contains(&format!(
            "{second_dump} with the binlog archive to {third_dump}"
        )),
        "{why}"
    );

    // The same result as mariadb-binlog | mariadb over the same archive.
    let t = noted[2].1;
    let chain = store::list_chain(volume.as_ref(), &prefix).await.unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(format!("{first_dump}.manifest.json"))).unwrap(),
    )
    .unwrap();
    let snap_file = manifest["snapshot"]["file"].as_str().unwrap().to_owned();
    let snap_pos = manifest["snapshot"]["position"].as_u64().unwrap();
    let start = store::segment_at(&chain, &snap_file, snap_pos).unwrap();
    let files = tempfile::tempdir().unwrap();
    let mut paths = Vec::new();
    for (i, m) in chain[start..].iter().enumerate() {
        let plain = store::read_verified(volume.as_ref(), m, Some(&Secret::new(PASS)))
            .await
            .unwrap();
        let p = files.path().join(format!("{i:04}.bin"));
        std::fs::write(&p, plain).unwrap();
        paths.push(p);
    }
    let first_m = &chain[start];
    let offset = first_m.header_len + snap_pos.saturating_sub(first_m.start_position);
    let stop = (t + chrono::Duration::seconds(1))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    tokio::task::block_in_place(|| {
        exec(
            None,
            "CREATE DATABASE pitr_mb CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
        );
        let o = run(
            &vars,
            &[
                "restore",
                &first_dump,
                "--into",
                "pitr_mb",
                "--yes",
                "--no-safety-snapshot",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        let mut binlog = Command::new("mariadb-binlog")
            .env("TZ", "UTC")
            .args([
                "--no-defaults",
                &format!("--start-position={offset}"),
                &format!("--stop-datetime={stop}"),
                "--rewrite-db=pitr_src->pitr_mb",
                "--database=pitr_src",
            ])
            .args(&paths)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let load = db_env()
            .client("mariadb")
            .args(["--max-allowed-packet=1G", "--batch"])
            .stdin(Stdio::from(binlog.stdout.take().unwrap()))
            .output()
            .unwrap();
        assert!(binlog.wait().unwrap().success(), "mariadb-binlog failed");
        assert!(
            load.status.success(),
            "mariadb-binlog | mariadb: {}",
            String::from_utf8_lossy(&load.stderr)
        );
        restore_to(&vars, &rfc(t));
        assert_same_database("pitr_mb", SCRATCH);
        same_state(noted[2].0, "pitr_mb").unwrap();
    });

    // Damage, on copies of the volume without the bucket: nothing touched.
    let volume_only = tool::vars_with(SRC, dir.path(), &[("BACKUP_PASSPHRASE", PASS)]);
    tokio::task::block_in_place(|| {
        exec(None, "CREATE DATABASE pitr_marker; CREATE TABLE pitr_marker.m (a INT); INSERT INTO pitr_marker.m VALUES (1)");
        // A segment `--to end` reads: from the newest dump's snapshot on.
        let newest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join(format!("{second_dump}.manifest.json"))).unwrap(),
        )
        .unwrap();
        let from = store::segment_at(
            &chain,
            newest["snapshot"]["file"].as_str().unwrap(),
            newest["snapshot"]["position"].as_u64().unwrap(),
        )
        .unwrap();
        let middle = &chain[from + (chain.len() - from) / 2];
        for (what, code) in [("gap", 4), ("damage", 5)] {
            let copy = tempfile::tempdir().unwrap();
            let st = Command::new("cp")
                .arg("-a")
                .arg(format!("{}/.", dir.path().display()))
                .arg(copy.path())
                .status()
                .unwrap();
            assert!(st.success());
            let seg = copy.path().join(&middle.file);
            if what == "gap" {
                std::fs::remove_file(&seg).unwrap();
                std::fs::remove_file(copy.path().join(format!("{}.manifest.json", middle.file)))
                    .unwrap();
            } else {
                let mut b = std::fs::read(&seg).unwrap();
                let at = b.len() / 2;
                b[at] ^= 0x40;
                std::fs::write(&seg, b).unwrap();
            }
            let v: Vec<(String, String)> = volume_only
                .iter()
                .map(|(k, val)| {
                    if k == "BACKUP_DIR" {
                        (k.clone(), copy.path().display().to_string())
                    } else {
                        (k.clone(), val.clone())
                    }
                })
                .collect();
            let o = run(
                &v,
                &[
                    "restore",
                    &second_dump,
                    "--to",
                    "end",
                    "--into",
                    "pitr_marker",
                    "--yes",
                ],
            );
            assert_eq!(o.status.code(), Some(code), "{what}: {}", text(&o));
            assert!(
                text(&o).contains("nothing was touched"),
                "{what}: {}",
                text(&o)
            );
            assert_eq!(
                exec(None, "SELECT a FROM pitr_marker.m").trim(),
                "1",
                "{what}"
            );
            assert_eq!(
                exec(None, "SHOW TABLES FROM pitr_marker").trim(),
                "m",
                "{what}"
            );
        }
    });

    // The volume is lost: the bucket alone serves, encrypted.
    for e in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    tokio::task::block_in_place(|| {
        exec(None, &format!("DROP DATABASE {SRC}"));
        let o = restore_to(&vars, "end");
        assert!(text(&o).contains("from the bucket"), "{}", text(&o));
        same_state("pitr_at_7", SCRATCH).unwrap();
    });

    // Into another server, with another GTID history in the same domain
    // and gtid_strict_mode: the replayed transactions take its GTIDs.
    let other = crate::support::own_server::OwnServer::start();
    other.root_sql(
        "SET GLOBAL gtid_strict_mode = 1; SET SESSION gtid_seq_no = 1000000; CREATE DATABASE history; SET GLOBAL server_id = 9",
    );
    let port = other.port.to_string();
    let other_vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| match k.as_str() {
            "DB_PORT" => (k.clone(), port.clone()),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    tokio::task::block_in_place(|| {
        let o = run(
            &other_vars,
            &[
                "restore", "latest", "--to", "end", "--into", SCRATCH, "--yes",
            ],
        );
        assert!(
            o.status.success(),
            "into a strict-mode server: {}",
            text(&o)
        );
        let sums = |env: &crate::support::DbEnv, db: &str| {
            env.exec(Some(db), "CHECKSUM TABLE t, log, kept")
                .replace(&format!("{db}."), "")
        };
        assert_eq!(sums(&other.env(), SCRATCH), sums(&db_env(), "pitr_at_7"));
        let gtid = other.root_sql("SELECT @@gtid_binlog_pos");
        assert!(gtid.trim().starts_with("0-9-10000"), "{gtid}");
        for db in ["pitr_at_7"].iter().chain(noted.iter().map(|(d, _)| d)) {
            exec(None, &format!("DROP DATABASE IF EXISTS {db}"));
        }
        for db in [SCRATCH, "pitr_mb", "pitr_marker"] {
            exec(None, &format!("DROP DATABASE IF EXISTS {db}"));
        }
    });
}

/// A database `src` (dropped first, then created with `schema`), an
/// archiver of the shared server into a fresh volume (`replica` as in
/// [`archiver`]) and one dump of `src` taken after the archiver
/// started: what the tests of one feature need.
struct Small {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
    archiver: Archiver,
}

async fn small(src: &str, schema: &str, replica: u32) -> Small {
    let dir = tempfile::tempdir().unwrap();
    exec(
        None,
        &format!("DROP DATABASE IF EXISTS {src}; CREATE DATABASE {src} {CHARSET}"),
    );
    exec(Some(src), schema);
    let vars = tool::vars_with(src, dir.path(), &[("BACKUP_PASSPHRASE", PASS)]);
    let prefix = tool::settings(src, dir.path(), &[]).prefix;
    let volume: Arc<dyn Target> = Arc::new(LocalTarget::new(dir.path()));
    let archiver = archiver(dir.path(), &prefix, vec![volume], replica);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let o = tokio::task::block_in_place(|| run(&vars, &["backup", "--no-prune"]));
    assert!(o.status.success(), "backup: {}", text(&o));
    Small {
        dir,
        vars,
        archiver,
    }
}

/// How many `User_var` events the server's binlog holds from `from` on.
fn user_var_events(from: &(String, u64)) -> usize {
    let logs = exec(None, "SHOW BINARY LOGS");
    let files: Vec<&str> = logs
        .lines()
        .filter_map(|l| l.split('\t').next())
        .filter(|f| {
            selmai_backup::binlog::segment::file_index(f)
                >= selmai_backup::binlog::segment::file_index(&from.0)
        })
        .collect();
    files
        .iter()
        .map(|f| {
            let at = if *f == from.0 { from.1 } else { 4 };
            exec(None, &format!("SHOW BINLOG EVENTS IN '{f}' FROM {at}"))
                .lines()
                .filter(|l| l.split('\t').nth(2) == Some("User var"))
                .count()
        })
        .sum()
}

/// Statement-based events with user variables of every type are replayed
/// with their values: the server logs each variable a statement reads as
/// a `User_var` event, the replay sets it before the statement.
#[tokio::test(flavor = "multi_thread")]
async fn statements_with_user_variables_of_every_type_replay_to_the_same_tables() {
    const SRC_UV: &str = "pitr_uv_src";
    const INTO_UV: &str = "pitr_uv_scratch";
    let s = small(
        SRC_UV,
        "CREATE TABLE v (id INT PRIMARY KEY AUTO_INCREMENT, s VARCHAR(100) CHARACTER SET utf8mb4,
            l VARCHAR(20) CHARACTER SET latin1, i BIGINT, neg BIGINT, u BIGINT UNSIGNED,
            r DOUBLE, d DECIMAL(30,10), d0 DECIMAL(30,10), n INT NULL, e VARCHAR(5)) ENGINE=InnoDB;
         INSERT INTO v (s) VALUES ('before the dump');",
        5,
    )
    .await;
    let from = master_position();
    tokio::task::block_in_place(|| {
        exec(
            Some(SRC_UV),
            "SET SESSION binlog_format = STATEMENT;
             SET @s := 'déjà vu 😀 中文', @l := CONVERT('café' USING latin1), @i := 42,
                 @neg := -9223372036854775808, @u := 18446744073709551615,
                 @r := 1 / 3e0, @d := 12345.6789012345, @d0 := CAST(7 AS DECIMAL(10,0)),
                 @n := NULL, @e := '';
             INSERT INTO v (s, l, i, neg, u, r, d, d0, n, e)
                 VALUES (@s, @l, @i, @neg, @u, @r, @d, @d0 / 3, @n, @e);
             BEGIN;
             INSERT INTO v (s, r, d) VALUES (CONCAT(@s, ' again'), @r * 1e300, -@d);
             UPDATE v SET n = @i + 1 WHERE s = @s;
             COMMIT;
             SET @r := PI() * 1e-5, @u := @u - 1, @big := 'DÉJÀ VU 😀 中文';
             UPDATE v SET r = r + @r, u = @u WHERE id > 1 AND s = @big;
             DELETE FROM v WHERE s = @missing;",
        );
    });
    // Statement-based: the events the replay must decode are there.
    let events = user_var_events(&from);
    assert!(events >= 12, "{events} User_var events in the binlog");
    wait_stored(&s.archiver).await;
    s.archiver.stop().await;
    tokio::task::block_in_place(|| {
        exec(None, &format!("DROP DATABASE IF EXISTS {INTO_UV}"));
        let o = run(
            &s.vars,
            &[
                "restore",
                "latest",
                "--to",
                "end",
                "--into",
                INTO_UV,
                "--yes",
                "--no-safety-snapshot",
            ],
        );
        assert!(o.status.success(), "{}", text(&o));
        assert_same_database(SRC_UV, INTO_UV);
        // The values themselves, beyond the checksums: the unsigned one
        // and the REAL to its last bit.
        assert_eq!(
            exec(
                Some(INTO_UV),
                "SELECT u, r, d0, n FROM v WHERE s = 'déjà vu 😀 中文'"
            )
            .trim(),
            exec(
                Some(SRC_UV),
                "SELECT u, r, d0, n FROM v WHERE s = 'déjà vu 😀 中文'"
            )
            .trim(),
        );
        exec(
            None,
            &format!("DROP DATABASE {INTO_UV}; DROP DATABASE {SRC_UV}"),
        );
    });
    drop(s.dir);
}

/// `--into NAME` over a range holding a `DROP DATABASE` of the source:
/// refused in one line (exit 1) before anything is touched, the database
/// `NAME` and the source (created again after the drop) as they were; a
/// target before the drop restores into `NAME`.
#[tokio::test(flavor = "multi_thread")]
async fn a_drop_database_in_the_range_refuses_into_another_name_and_a_time_before_it_restores() {
    const SRC_DROP: &str = "pitr_drop_src";
    const INTO_DROP: &str = "pitr_drop_into";
    const NOTED: &str = "pitr_drop_noted";
    let s = small(
        SRC_DROP,
        "CREATE TABLE o (id INT PRIMARY KEY AUTO_INCREMENT, what VARCHAR(40)) ENGINE=InnoDB;
         INSERT INTO o (what) VALUES ('before the dump');",
        6,
    )
    .await;
    let before_drop = tokio::task::block_in_place(|| {
        exec(
            Some(SRC_DROP),
            "INSERT INTO o (what) VALUES ('after the dump'); UPDATE o SET what = 'changed' WHERE id = 1;",
        );
        note_of(NOTED, SRC_DROP);
        let t = server_now();
        after(t);
        exec(None, &format!("DROP DATABASE {SRC_DROP}"));
        // The application creates its database again.
        exec(
            None,
            &format!("CREATE DATABASE {SRC_DROP} {CHARSET}; CREATE TABLE {SRC_DROP}.fresh (a INT); INSERT INTO {SRC_DROP}.fresh VALUES (1)"),
        );
        t
    });
    wait_stored(&s.archiver).await;
    s.archiver.stop().await;
    tokio::task::block_in_place(|| {
        let restore = |to: &str| {
            run(
                &s.vars,
                &[
                    "restore",
                    "latest",
                    "--to",
                    to,
                    "--into",
                    INTO_DROP,
                    "--yes",
                    "--no-safety-snapshot",
                ],
            )
        };
        let source_now = || exec(Some(SRC_DROP), "SHOW TABLES; SELECT a FROM fresh");
        let source_before = source_now();
        // `NAME` absent, then present with a table of its own: neither is
        // touched.
        exec(None, &format!("DROP DATABASE IF EXISTS {INTO_DROP}"));
        for present in [false, true] {
            if present {
                exec(
                    None,
                    &format!("CREATE DATABASE {INTO_DROP}; CREATE TABLE {INTO_DROP}.mine (m INT); INSERT INTO {INTO_DROP}.mine VALUES (7)"),
                );
            }
            let o = restore("end");
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(err.trim().lines().count(), 1, "{}", text(&o));
            assert!(err.contains("a DROP DATABASE statement at"), "{err}");
            assert!(
                err.contains("give a time (or GTID) before this transaction; nothing was touched"),
                "{err}"
            );
            if present {
                assert_eq!(
                    exec(None, &format!("SHOW TABLES FROM {INTO_DROP}")).trim(),
                    "mine"
                );
                assert_eq!(exec(Some(INTO_DROP), "SELECT m FROM mine").trim(), "7");
            } else {
                assert_eq!(
                    exec(None, &format!("SHOW DATABASES LIKE '{INTO_DROP}'")).trim(),
                    ""
                );
            }
            assert_eq!(source_now(), source_before);
        }
        // Before the drop: restored into `NAME`, the source untouched.
        exec(None, &format!("DROP DATABASE {INTO_DROP}"));
        let o = restore(&rfc(before_drop));
        assert!(o.status.success(), "{}", text(&o));
        same_state(NOTED, INTO_DROP).unwrap();
        assert_eq!(source_now(), source_before);
        for db in [SRC_DROP, INTO_DROP, NOTED] {
            exec(None, &format!("DROP DATABASE IF EXISTS {db}"));
        }
    });
    drop(s.dir);
}

/// The daemon alone proves a whole chain: `run` with the binlog archive on
/// archives the transactions between two dumps, and its monthly drill (here
/// every minute) restores the first dump, replays the archive to the
/// second's snapshot and finds the second dump's tables: the drill passes,
/// its log names the chain, the state file and `health` record the pass.
/// (The mirror of the failing chain above.)
#[tokio::test(flavor = "multi_thread")]
async fn the_daemons_drill_passes_on_a_whole_chain() {
    use selmai_backup::daemon::state::State;

    use crate::binlog::{daemon_vars, wait_for_daemon, Daemon};
    use crate::support::own_server::OwnServer;

    let s = OwnServer::start();
    let env = s.env();
    env.exec(
        None,
        "CREATE DATABASE steady CHARACTER SET utf8mb4;
         CREATE TABLE steady.t (id INT PRIMARY KEY AUTO_INCREMENT, s VARCHAR(40), f DOUBLE) ENGINE=InnoDB;
         INSERT INTO steady.t (s, f) VALUES ('before the first dump', 1.5);",
    );
    let dir = tempfile::tempdir().unwrap();
    let bucket_name = unique_bucket("pitr-drill");
    create_bucket(&bucket_name).await;
    let archiving = daemon_vars(&s, dir.path(), &bucket_name, &[("DRILL_SCHEDULE", "off")]);
    let dumped = |o: &Output| {
        assert!(o.status.success(), "backup: {}", text(o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        out.lines()
            .find_map(|l| {
                Path::new(l.trim())
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| panic!("no file written: {out}"))
    };
    let first = dumped(&run(&archiving, &["backup", "--no-prune"]));
    // The archive runs while the transactions between the dumps commit;
    // the second dump is taken by the command beside it.
    let mut daemon = Daemon::start(&archiving);
    let second = tokio::task::block_in_place(|| {
        env.exec(
            Some("steady"),
            "INSERT INTO t (s, f) VALUES ('after the first dump', 2.5), ('gone', 0);
             BEGIN; UPDATE t SET f = f * 3 WHERE id = 1; DELETE FROM t WHERE s = 'gone'; COMMIT;
             ALTER TABLE t ADD COLUMN extra INT DEFAULT 7;
             CREATE TABLE u (k VARCHAR(10) PRIMARY KEY) ENGINE=InnoDB; INSERT INTO u VALUES ('déjà');",
        );
        // The daemon is up and has the transactions. It holds BACKUP_DIR's
        // lock while it catches up the bucket at start, and a one-off
        // backup meanwhile is refused (exit 7): try again until it is free.
        wait_for_daemon(&s, dir.path(), false);
        let deadline = Instant::now() + Duration::from_secs(60);
        let second = loop {
            let o = run(&archiving, &["backup", "--no-prune"]);
            if o.status.code() == Some(7) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            break dumped(&o);
        };
        env.exec(
            Some("steady"),
            "INSERT INTO t (s) VALUES ('after the second dump')",
        );
        wait_for_daemon(&s, dir.path(), true);
        assert!(daemon.stop().success());
        second
    });
    assert_ne!(first, second);

    // The same daemon with its drill due every minute; nothing else runs
    // in it that could hold the lock.
    let drilling = daemon_vars(
        &s,
        dir.path(),
        &bucket_name,
        &[
            ("DRILL_SCHEDULE", "* * * * *"),
            ("BACKUP_CATCH_UP", "never"),
        ],
    );
    let mut child = tool::spawn(&drilling, &["run"]);
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let log = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                log.lock().unwrap().push(line);
            }
        })
    };
    let started = Utc::now();
    let drilled = tokio::task::block_in_place(|| {
        let waited = Instant::now();
        loop {
            let state = State::load(dir.path()).unwrap();
            if let Some(r) = state.last_run(Kind::Drill).filter(|r| r.started >= started) {
                break r.clone();
            }
            assert!(
                waited.elapsed() < Duration::from_secs(180),
                "no drill ran in three minutes; the log: {}",
                log.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let health = tokio::task::block_in_place(|| {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let status = child.wait().unwrap();
        reader.join().unwrap();
        assert!(status.success(), "{status}");
        run(&drilling, &["health"])
    });
    let log = log.lock().unwrap().join("\n");
    assert_eq!(drilled.outcome, Outcome::Success, "{drilled:?}\n{log}");
    assert_eq!(drilled.file.as_deref(), Some(second.as_str()), "{log}");
    assert!(
        log.contains(&format!(
            "restore test of {first} with the binlog archive to {second}'s snapshot"
        )),
        "{log}"
    );
    assert!(!log.contains("drill of the binlog chain skipped"), "{log}");
    assert!(
        text(&health).contains("last restore drill passed"),
        "{}",
        text(&health)
    );
}
