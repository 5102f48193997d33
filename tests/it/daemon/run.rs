//! `run`: catch-up at start, metrics, signals, schedules.

use super::*;

#[test]
fn run_catches_up_at_start_alerts_serves_metrics_and_stops_on_sigterm() {
    let db = small_db("d_run");
    let dir = tempfile::tempdir().unwrap();
    let hook = HttpSink::start(200);
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let vars = tool::vars_with(
        &db.name,
        dir.path(),
        &[
            ("TZ", "Europe/Paris"),
            ("BACKUP_SCHEDULE", "30 2 * * *"),
            ("FULL_SCHEDULE", "off"),
            ("NOTIFY_ON_SUCCESS", "true"),
            ("NOTIFY_WEBHOOK_URL", &format!("{}/hook", hook.url)),
            ("METRICS_LISTEN", &metrics_addr),
        ],
    );
    let mut d = Daemon::start(&vars);
    // No state file yet: auto catch-up runs a backup at once.
    d.wait_for("catching up", Duration::from_secs(10));
    let req = hook.expect(Duration::from_secs(60), "webhook");
    assert_eq!((req.method.as_str(), req.path.as_str()), ("POST", "/hook"));
    let ev = req.json();
    assert_eq!(ev["event"], "backup_succeeded", "{ev}");
    assert_eq!(ev["kind"], "db");
    let file = ev["file"].as_str().unwrap().to_owned();
    assert_eq!(backups(dir.path()), std::slice::from_ref(&file));
    let size = std::fs::metadata(dir.path().join(&file)).unwrap().len();
    assert_eq!(ev["size"], size);
    assert!(ev["duration"].as_f64().unwrap() > 0.0);
    assert!(ev["error"].is_null());

    // The next run is logged after the run, in the operator's time zone;
    // config without any of its paths is not scheduled, nor a kind set off.
    d.wait_for("next db backup at", Duration::from_secs(10));
    let log = d.drain();
    assert!(
        log.contains("CEST (Europe/Paris)") || log.contains("CET (Europe/Paris)"),
        "{log}"
    );
    assert!(
        log.contains("config backups are not scheduled")
            && log.contains("uploads backups are not scheduled: none of UPLOADS_PATHS exists")
            && log.contains("full backups are off (FULL_SCHEDULE=off)"),
        "{log}"
    );

    let (code, text) = http_get(&metrics_addr, "/metrics");
    assert_eq!(code, 200);
    for want in [
        format!("selmai_backup_last_size_bytes{{kind=\"db\"}} {size}"),
        format!("selmai_backup_bytes_written_total{{kind=\"db\"}} {size}"),
        "selmai_backup_failures_total{kind=\"db\"} 0".to_owned(),
    ] {
        assert!(text.lines().any(|l| l == want), "missing {want:?}:\n{text}");
    }
    assert!(text.contains("selmai_backup_last_success_timestamp_seconds{kind=\"db\"} "));
    assert!(text.contains("\nselmai_backup_free_bytes "), "{text}");
    let (code, body) = http_get(&metrics_addr, "/healthz");
    assert_eq!((code, body.starts_with("healthy")), (200, true), "{body}");
    assert_eq!(http_get(&metrics_addr, "/nope").0, 404);

    // The state file records the run; `health` agrees.
    let st = State::load(dir.path()).unwrap();
    let run = st.last_success(Kind::Db).unwrap();
    assert_eq!(
        (run.trigger, run.file.as_deref()),
        (Trigger::CatchUp, Some(file.as_str()))
    );
    assert_eq!(health(dir.path(), &[]).0, 0);

    // Idle: SIGTERM stops it at once, exit 0.
    d.signal("TERM");
    let (code, took) = d.wait_exit(Duration::from_secs(10));
    assert_eq!(code, 0, "{}", d.drain());
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[test]
fn sigterm_mid_backup_exits_0_within_10s_and_leaves_nothing_behind() {
    let db = big_db("d_sigterm");
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(&db.name, dir.path(), &[("BACKUP_CATCH_UP", "always")]);
    let mut d = Daemon::start(&vars);
    d.wait_for("backup started", Duration::from_secs(20));
    // Mid-dump: the partial file is growing.
    let partial_seen = {
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            let p = tool::files(dir.path())
                .into_iter()
                .find(|n| n.ends_with(".partial"))
                .map(|n| {
                    std::fs::metadata(dir.path().join(n))
                        .map(|m| m.len())
                        .unwrap_or(0)
                });
            if p.unwrap_or(0) > 0 || Instant::now() > end {
                break p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    assert!(
        partial_seen.is_some(),
        "no partial file: {:?}",
        tool::files(dir.path())
    );

    // No overlap: a one-off backup meanwhile is refused with the lock message.
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["backup"]));
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("another backup or restore is running"),
        "{err}"
    );
    assert!(
        tool::files(dir.path())
            .iter()
            .any(|n| n.ends_with(".partial")),
        "the backup finished before SIGTERM; the test database is too small"
    );

    d.signal("TERM");
    let (code, took) = d.wait_exit(Duration::from_secs(10));
    let log = d.drain();
    assert_eq!(code, 0, "{log}");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(log.contains("abandoning the running db backup"), "{log}");
    // Nothing but the lock and the state file.
    assert_eq!(tool::files(dir.path()), Vec::<String>::new(), "{log}");
    let st = State::load(dir.path()).unwrap();
    assert_eq!(st.runs.len(), 1);
    assert_eq!(st.runs[0].outcome, Outcome::Abandoned);

    // The dump connection went with the process.
    let env = db_env();
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        let n = env.exec(
            None,
            &format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = '{}'",
                db.name
            ),
        );
        if n.trim() == "0" {
            break;
        }
        assert!(Instant::now() < end, "dump connection still open: {n}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn sigterm_mid_full_backup_deletes_the_parts_already_stored() {
    let db = small_db("d_sigterm_full");
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let (config, uploads) = (src.path().join("config"), src.path().join("uploads"));
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join(".env"), "APP_ENV=production\n").unwrap();
    std::fs::create_dir_all(&uploads).unwrap();
    // A sparse 2 GiB upload: the last part takes long enough to be interrupted.
    std::fs::File::create(uploads.join("video.bin"))
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    let (config_s, uploads_s) = (config.display().to_string(), uploads.display().to_string());
    let vars = tool::vars_with(
        &db.name,
        dir.path(),
        &[
            ("BACKUP_CATCH_UP", "always"),
            ("BACKUP_SCHEDULE", "off"),
            ("CONFIG_SCHEDULE", "off"),
            ("UPLOADS_SCHEDULE", "off"),
            ("DRILL_SCHEDULE", "off"),
            ("CONFIG_PATHS", &config_s),
            ("UPLOADS_PATHS", &uploads_s),
        ],
    );
    let mut d = Daemon::start(&vars);
    d.wait_for(".uploads.tar.gz", Duration::from_secs(60));
    // The database and config parts are stored under their final names.
    let stored = tool::files(dir.path());
    assert!(
        stored
            .iter()
            .any(|n| n.ends_with(".config.tar.gz.manifest.json"))
            && stored.iter().any(|n| n.ends_with(".sql.gz.manifest.json")),
        "{stored:?}"
    );

    d.signal("TERM");
    let (code, _) = d.wait_exit(Duration::from_secs(10));
    let log = d.drain();
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("abandoning the running full backup"), "{log}");
    // No part outlives its unfinished set.
    assert_eq!(tool::files(dir.path()), Vec::<String>::new(), "{log}");
    let st = State::load(dir.path()).unwrap();
    assert_eq!(st.runs.len(), 1);
    assert_eq!(
        (st.runs[0].kind, st.runs[0].outcome),
        (Kind::Full, Outcome::Abandoned)
    );
}

#[test]
fn sigint_while_idle_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with("nodb", dir.path(), &[("BACKUP_CATCH_UP", "never")]);
    let mut d = Daemon::start(&vars);
    let line = d.wait_for("next db backup at", Duration::from_secs(10));
    assert!(line.contains("(UTC)"), "{line}");
    d.signal("INT");
    assert_eq!(d.wait_exit(Duration::from_secs(5)).0, 0);
}

#[test]
fn drill_schedule_turns_the_drill_off_or_moves_it() {
    let dir = tempfile::tempdir().unwrap();
    let start = |drill: &str, until: &str| {
        let vars = tool::vars_with(
            "nodb",
            dir.path(),
            &[("BACKUP_CATCH_UP", "never"), ("DRILL_SCHEDULE", drill)],
        );
        let mut d = Daemon::start(&vars);
        d.wait_for(until, Duration::from_secs(10));
        d.signal("TERM");
        assert_eq!(d.wait_exit(Duration::from_secs(5)).0, 0);
        d.drain()
    };
    // Waiting for a scheduler line, not the "off" line logged before the
    // signal handlers are installed.
    let log = start("off", "next db backup at");
    assert!(
        log.contains("drill backups are off (DRILL_SCHEDULE=off)") && !log.contains("next drill"),
        "{log}"
    );
    let log = start("15 6 3 * *", "next drill backup at");
    assert!(
        log.contains("next drill backup at") && log.contains("15 6 3 * *"),
        "{log}"
    );
    assert!(!log.contains("0 5 2 * *"), "{log}");

    let vars = tool::vars_with("nodb", dir.path(), &[("DRILL_SHEDULE", "off")]);
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["run"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("did you mean DRILL_SCHEDULE"), "{err}");
}

#[test]
fn bad_schedule_is_a_startup_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("BACKUP_SCHEDULE", "0 2 * *"),
        ("CONFIG_SCHEDULE", "every sunday"),
        ("FULL_SCHEDULE", "0 4 31 2 *"),
        ("DRILL_SCHEDULE", "monthly"),
        ("TZ", "Paris"),
    ] {
        let vars = tool::vars_with("nodb", dir.path(), &[(var, value)]);
        let (code, _, err) = tool::outcome(&tool::run(&vars, &["run"]));
        assert_eq!(code, 2, "{var}={value}: {err}");
        assert!(err.contains(var), "{err}");
    }
    let vars: Vec<_> = tool::vars("nodb", dir.path())
        .into_iter()
        .filter(|(k, _)| k != "DB_USER")
        .collect();
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["run"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("DB_USER"), "{err}");
}
