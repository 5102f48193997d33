//! The preflight (`selmai_backup::preflight`) against the real server, with
//! least-privilege users created for each test: a user with only SELECT is
//! warned of what each missing privilege costs, a view makes the missing
//! SHOW VIEW fatal, `run` logs the warnings at start and keeps running, a
//! user without SELECT is refused by `run` (exit 3), `check` prints both
//! reports and exits as the job would, a view whose DEFINER is gone is
//! named (it only restores into a database of the same name). While
//! `DRILL_SCHEDULE` is on, a user granted only on `DB_NAME` is warned that
//! the drill fails, and it does (ERROR 1044) until the README's GRANT.
//! A `BACKUP_DIR` nobody may write stops `run` at once (exit 8), before the
//! database is waited for, with the chown that fixes it.
//! And `DEFINER`s of an account that does not exist, restored by a user
//! without SUPER / SET USER: `RESTORE_DEFINER=keep` fails saying to use
//! rewrite, strip and rewrite restore objects that work, from our backups
//! and from `mariadb-dump` files. Triggers are refused by the preflight
//! before the database is touched: the test server logs binary and does not
//! trust function creators, so only SUPER may create them (error 1419).

use std::path::Path;

use selmai_backup::preflight::{self, PreflightError, Severity};

use crate::support::tool;
use crate::support::{db_env, mariadb_dump, DbEnv, TestDb};

/// A MariaDB account for one test (`<tag>_<pid>` at `localhost` and `%`,
/// so it wins over the anonymous `''@localhost`), dropped on `Drop`.
pub(crate) struct TestUser {
    pub(crate) name: String,
    password: String,
}

impl TestUser {
    /// Create the account with `grants` (`"SELECT ON `db`.*"` ...).
    pub(crate) fn new(tag: &str, grants: &[String]) -> TestUser {
        let name = format!("{tag}_{}", std::process::id());
        let password = format!("pw-{name}");
        let mut sql = String::new();
        for host in ["localhost", "%"] {
            sql.push_str(&format!(
                "DROP USER IF EXISTS '{name}'@'{host}'; CREATE USER '{name}'@'{host}' IDENTIFIED BY '{password}';\n"
            ));
            for g in grants {
                sql.push_str(&format!("GRANT {g} TO '{name}'@'{host}';\n"));
            }
        }
        db_env().exec(None, &sql);
        TestUser { name, password }
    }

    /// The variables that make the tool log in as this user.
    pub(crate) fn vars(&self) -> [(&str, &str); 2] {
        [("DB_USER", &self.name), ("DB_PASSWORD", &self.password)]
    }

    /// The test server, logged in as this user.
    pub(crate) fn env(&self) -> DbEnv {
        DbEnv {
            user: self.name.clone(),
            password: self.password.clone(),
            ..db_env()
        }
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let drop = format!(
            "DROP USER IF EXISTS '{0}'@'localhost'; DROP USER IF EXISTS '{0}'@'%';",
            self.name
        );
        // Not a panic while unwinding: that would abort the test binary.
        let _ = std::panic::catch_unwind(|| db_env().exec(None, &drop));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn select_only_user_is_warned_of_each_cost() {
    let db = TestDb::new("pf_select_only");
    db.exec(
        "CREATE TABLE files (id INT PRIMARY KEY, data LONGBLOB, note TEXT);
         INSERT INTO files VALUES (1, REPEAT('x', 300000), 'small'), (2, NULL, REPEAT('y', 1000));",
    );
    let user = TestUser::new("pf_ro", &[format!("SELECT ON `{}`.*", db.name)]);
    let dir = tempfile::tempdir().unwrap();
    let s = tool::settings(&db.name, dir.path(), &user.vars());
    let report = preflight::for_backup(&s).await.unwrap();
    let warnings: Vec<String> = report
        .at_least(Severity::Warning)
        .map(ToString::to_string)
        .collect();
    let who = format!("'{}'@'localhost'", user.name);
    assert_eq!(warnings.len(), 5, "{report}");
    assert_eq!(
        warnings[0],
        format!(
            "warning: missing SHOW VIEW on `{0}`: once the database has a view, every backup fails; GRANT SHOW VIEW ON `{0}`.* TO {who}",
            db.name
        )
    );
    assert!(
        warnings[1].contains("missing TRIGGER")
            && warnings[1].contains("triggers are invisible to this user and left out of backups"),
        "{report}"
    );
    assert!(
        warnings[2].contains("missing EVENT") && warnings[2].contains("events are invisible"),
        "{report}"
    );
    assert!(
        warnings[3].contains(&format!("GRANT SELECT ON `mysql`.`proc` TO {who}")),
        "{report}"
    );
    assert!(
        warnings[4].contains("the drill (DRILL_SCHEDULE) fails at every run"),
        "{report}"
    );
    let text = report.to_string();
    assert!(
        text.starts_with(&format!(
            "ok: BACKUP_DIR {} is writable\nok: server MariaDB 1",
            dir.path().display()
        )) && text.contains("free on BACKUP_DIR"),
        "{text}"
    );
    assert!(
        text.contains("the largest value is 300.0 kB (`files`.`data`)"),
        "{text}"
    );

    // The dump records the exact largest value for the restore's check.
    let out = tool::backup(&db.name, dir.path()).await;
    assert_eq!(out.manifest.largest_value, Some(300_000));

    // A view makes the missing SHOW VIEW fatal: the backup would fail.
    db.exec("CREATE VIEW v AS SELECT id FROM files");
    let err = preflight::for_backup(&s)
        .await
        .unwrap()
        .into_result()
        .unwrap_err();
    assert!(matches!(err, PreflightError::Database(_)), "{err}");
    assert!(
        err.to_string().contains(&format!(
            "missing SHOW VIEW on `{}`, which has 1 views",
            db.name
        )),
        "{err}"
    );
    // ... and it really does.
    let e = tool::try_backup(&s, &selmai_backup::dump::NoHooks)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("SHOW VIEW"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_view_whose_definer_is_gone_is_named() {
    let db = TestDb::new("pf_gone_definer");
    db.exec(
        "CREATE TABLE t (id INT PRIMARY KEY);
         CREATE VIEW fine AS SELECT id FROM t;
         CREATE DEFINER=`selmai_nobody_pf`@`%` SQL SECURITY DEFINER VIEW orphan AS SELECT id FROM t;",
    );
    let dir = tempfile::tempdir().unwrap();
    let report = preflight::for_backup(&tool::settings(&db.name, dir.path(), &[]))
        .await
        .unwrap();
    let warnings: Vec<String> = report
        .at_least(Severity::Warning)
        .map(ToString::to_string)
        .collect();
    assert_eq!(warnings.len(), 1, "{report}");
    assert!(
        warnings[0].starts_with(&format!(
            "warning: views `orphan` name database `{}` in their definitions",
            db.name
        )),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_drill_is_judged_on_its_scratch_databases_while_it_is_scheduled() {
    let db = TestDb::new("pf_drill");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1), (2);");
    // What the official MariaDB image gives the app's user.
    let user = TestUser::new("pf_drill", &[format!("ALL PRIVILEGES ON `{}`.*", db.name)]);
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(&db.name, dir.path(), &user.vars());
    let drill_finding = |report: &preflight::Report| {
        report
            .findings
            .iter()
            .filter(|f| f.message.contains("restore drill"))
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let report = preflight::for_backup(&tool::settings(&db.name, dir.path(), &user.vars()))
        .await
        .unwrap();
    let who = format!("'{}'@'localhost'", user.name);
    assert_eq!(
        drill_finding(&report),
        [format!(
            "warning: {}@localhost lacks SELECT, INSERT, CREATE, DROP, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT on the restore drill's scratch databases `selmai\\_drill\\_%`: backups work, but the drill (DRILL_SCHEDULE) fails at every run (ERROR 1044); GRANT SELECT, INSERT, CREATE, DROP, ALTER, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, ALTER ROUTINE, TRIGGER, EVENT ON `selmai\\_drill\\_%`.* TO {who}, or set DRILL_SCHEDULE=off",
            user.name
        )],
        "{report}"
    );
    // A warning only: backups work.
    assert!(report.clone().into_result().is_ok(), "{report}");
    // And it is true: the drill fails, creating its scratch database.
    assert_eq!(tool::outcome(&tool::run(&vars, &["backup"])).0, 0);
    let (code, out, err) =
        tool::outcome(&tool::run(&vars, &["verify", "latest", "--restore-test"]));
    assert_ne!(code, 0, "{out}{err}");
    assert!(err.contains("1044"), "{err}");

    // The README's GRANT for the app's user.
    db_env().exec(
        None,
        &format!(
            "GRANT ALL PRIVILEGES ON `selmai\\_drill\\_%`.* TO '{0}'@'localhost'; GRANT ALL PRIVILEGES ON `selmai\\_drill\\_%`.* TO '{0}'@'%';",
            user.name
        ),
    );
    let report = preflight::for_backup(&tool::settings(&db.name, dir.path(), &user.vars()))
        .await
        .unwrap();
    assert_eq!(
        drill_finding(&report),
        [format!(
            "ok: {}@localhost may run the restore drill in scratch databases `selmai\\_drill\\_%`",
            user.name
        )],
        "{report}"
    );
    let (code, out, err) =
        tool::outcome(&tool::run(&vars, &["verify", "latest", "--restore-test"]));
    assert_eq!(code, 0, "{out}{err}");

    // Not judged while the drill is off (DRILL_SCHEDULE=off).
    let mut off = tool::settings(&db.name, dir.path(), &user.vars());
    off.schedule.drill = None;
    let report = preflight::for_backup(&off).await.unwrap();
    assert!(drill_finding(&report).is_empty(), "{report}");
}

#[test]
fn run_logs_the_warnings_at_start_and_keeps_running() {
    use std::io::{BufRead, BufReader};

    let db = TestDb::new("pf_run_warns");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY)");
    let user = TestUser::new("pf_run_ro", &[format!("SELECT ON `{}`.*", db.name)]);
    let dir = tempfile::tempdir().unwrap();
    let mut vars = tool::vars_with(&db.name, dir.path(), &user.vars());
    vars.push(("BACKUP_CATCH_UP".into(), "never".into()));
    let mut child = tool::spawn(&vars, &["run"]);
    // The daemon runs until signalled: read its log up to the start line.
    let mut log = Vec::new();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let started = line.contains("daemon started");
        log.push(line);
        if started {
            break;
        }
    }
    // Keep draining: a closed pipe would fail the daemon's next log line.
    let rest = std::thread::spawn(move || lines.count());
    let _ = std::process::Command::new("kill")
        .arg("-INT")
        .arg(child.id().to_string())
        .status();
    let status = child.wait().unwrap();
    rest.join().unwrap();
    let log = log.join("\n");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("preflight for backups: missing TRIGGER on")),
        "{log}"
    );
    assert!(
        log.contains("INFO preflight for backups: server MariaDB"),
        "{log}"
    );
    assert_eq!(status.code(), Some(0), "{log}");
}

#[test]
fn run_refuses_a_user_without_select() {
    let db = TestDb::new("pf_no_select");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY)");
    let user = TestUser::new("pf_nosel", &[format!("INSERT ON `{}`.*", db.name)]);
    let dir = tempfile::tempdir().unwrap();
    let vars = tool::vars_with(&db.name, dir.path(), &user.vars());
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["run"]));
    assert_eq!(code, 3, "{err}");
    let want = format!(
        "selmai-backup: error: not starting: backups cannot work: preflight: {0}@localhost has no SELECT on `{1}`: nothing can be backed up; GRANT SELECT, SHOW VIEW, TRIGGER, EVENT ON `{1}`.* TO '{0}'@'localhost'",
        user.name, db.name
    );
    assert!(err.contains(&want), "{err}");
    assert!(!err.contains("daemon started"), "{err}");
}

/// What a least-privilege restore user gets on `db`: everything a restore
/// runs, and not SUPER or SET USER.
fn restore_grants(db: &str) -> String {
    format!(
        "SELECT, INSERT, CREATE, DROP, ALTER, INDEX, CREATE VIEW, SHOW VIEW, CREATE ROUTINE, \
         ALTER ROUTINE, TRIGGER, EVENT, LOCK TABLES ON `{db}`.*"
    )
}

/// The account that defines the objects of `src`, dropped by the test
/// after the backup: the target server does not have it.
///
/// It must exist while the backup is taken: for a view whose DEFINER is
/// missing, MariaDB's `SHOW CREATE VIEW` qualifies the columns with the
/// source database's name, and such a view only restores into a database
/// of that same name.
fn ghost_of(tag: &str, src: &TestDb) -> TestUser {
    TestUser::new(tag, &[format!("SELECT ON `{}`.*", src.name)])
}

/// Objects owned by `ghost`, an account the restore target does not have.
fn create_ghost_objects(db: &TestDb, ghost: &str) {
    db.exec(&format!(
        "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(40));
         INSERT INTO t VALUES (1, 'one'), (2, 'two');
         CREATE DEFINER=`{ghost}`@`%` SQL SECURITY DEFINER VIEW v AS SELECT id, note FROM t;
         CREATE DEFINER=`{ghost}`@`%` PROCEDURE p() SELECT COUNT(*) FROM t;
         CREATE DEFINER=`{ghost}`@`%` EVENT e ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM t WHERE id < 0;"
    ));
}

/// As `user` in `db`: the view reads, the procedure runs, and every object
/// is now `user`'s.
fn assert_objects_work(user: &TestUser, db: &str, how: &str) {
    let env = user.env();
    assert_eq!(
        env.exec(Some(db), "SELECT COUNT(*) FROM v").trim(),
        "2",
        "{how}"
    );
    assert_eq!(env.exec(Some(db), "CALL p()").trim(), "2", "{how}");
    let definers = env.exec(
        Some(db),
        &format!(
            "SELECT DEFINER FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{db}'
             UNION ALL SELECT DEFINER FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{db}'
             UNION ALL SELECT DEFINER FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{db}'"
        ),
    );
    let me = format!("{}@localhost", user.name);
    assert_eq!(
        definers.lines().collect::<Vec<_>>(),
        [me.as_str(); 3],
        "{how}"
    );
}

/// `restore FILE --into DB --yes` as `user`; (exit code, stderr).
fn restore_as(user: &TestUser, dir: &Path, file: &str, into: &str, definer: &str) -> (i32, String) {
    let mut extra = user.vars().to_vec();
    extra.push(("RESTORE_DEFINER", definer));
    let vars = tool::vars_with(into, dir, &extra);
    // Into another database than the backup's: --into says it is meant.
    let (code, _, err) = tool::outcome(&tool::run(
        &vars,
        &["restore", file, "--into", into, "--yes"],
    ));
    (code, err)
}

#[tokio::test(flavor = "multi_thread")]
async fn ghost_definers_restore_under_least_privilege_only_with_strip_or_rewrite() {
    let src = TestDb::new("pf_ghost_src");
    let ghost = ghost_of("pf_ghost", &src);
    create_ghost_objects(&src, &ghost.name);
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    drop(ghost);

    let keep = TestDb::new("pf_ghost_keep");
    let strip = TestDb::new("pf_ghost_strip");
    let rewrite = TestDb::new("pf_ghost_rewrite");
    let user = TestUser::new(
        "pf_restorer",
        &[
            restore_grants(&keep.name),
            restore_grants(&strip.name),
            restore_grants(&rewrite.name),
        ],
    );

    let (code, err) = restore_as(&user, dir.path(), &out.file, &keep.name, "keep");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("preflight: warning:") && err.contains("has neither SET USER nor SUPER"),
        "the preflight warns first: {err}"
    );
    assert!(
        err.contains("ERROR 1227")
            && err.contains(
                "the backup names a DEFINER this user cannot create objects for: set RESTORE_DEFINER=rewrite"
            ),
        "{err}"
    );

    for (db, mode) in [(&strip, "strip"), (&rewrite, "rewrite")] {
        let (code, err) = restore_as(&user, dir.path(), &out.file, &db.name, mode);
        assert_eq!(code, 0, "{mode}: {err}");
        assert!(!err.contains("preflight: warning"), "{mode}: {err}");
        assert_objects_work(&user, &db.name, mode);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_dump_file_with_ghost_definers_restores_with_rewrite() {
    let src = TestDb::new("pf_ghost_md_src");
    let ghost = ghost_of("pf_md_ghost", &src);
    create_ghost_objects(&src, &ghost.name);
    let sql = mariadb_dump(&src);
    assert!(
        sql.contains(&format!("DEFINER=`{}`@`%`", ghost.name)),
        "{sql}"
    );
    drop(ghost);
    let dir = tempfile::tempdir().unwrap();
    let file = "selmai_backup_20250101_000000.sql.gz";
    // `mariadb_dump` normalises the header away; a real file starts with it.
    let sql = format!("-- MariaDB dump 10.19  Distrib 10.11\n{sql}");
    std::fs::write(dir.path().join(file), tool::gzip(sql.as_bytes())).unwrap();

    let keep = TestDb::new("pf_ghost_md_keep");
    let dst = TestDb::new("pf_ghost_md_dst");
    let user = TestUser::new(
        "pf_md_restorer",
        &[restore_grants(&keep.name), restore_grants(&dst.name)],
    );
    let (code, err) = restore_as(&user, dir.path(), file, &keep.name, "keep");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("set RESTORE_DEFINER=rewrite"), "{err}");

    let (code, err) = restore_as(&user, dir.path(), file, &dst.name, "rewrite");
    assert_eq!(code, 0, "{err}");
    assert_objects_work(&user, &dst.name, "mariadb-dump, rewrite");
}

#[tokio::test(flavor = "multi_thread")]
async fn triggers_under_binary_logging_are_refused_before_anything_is_touched() {
    let flags = db_env().exec(None, "SELECT @@log_bin, @@log_bin_trust_function_creators");
    assert_eq!(
        flags.trim(),
        "1\t0",
        "scripts/services.sh starts MariaDB with --log-bin and untrusted function creators"
    );
    let src = TestDb::new("pf_trigger_src");
    let ghost = ghost_of("pf_tr_ghost", &src);
    src.exec(&format!(
        "CREATE TABLE t (id INT PRIMARY KEY, note VARCHAR(40));
         CREATE DEFINER=`{}`@`%` TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.note = UPPER(NEW.note);",
        ghost.name
    ));
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    drop(ghost);

    let dst = TestDb::new("pf_trigger_dst");
    dst.exec("CREATE TABLE precious (id INT); INSERT INTO precious VALUES (7);");
    let user = TestUser::new("pf_tr_restorer", &[restore_grants(&dst.name)]);
    let (code, err) = restore_as(&user, dir.path(), &out.file, &dst.name, "rewrite");
    assert_eq!(code, 3, "{err}");
    let want = format!(
        "selmai-backup: error: not restoring, the database was not touched: preflight: binary logging is on and {}@localhost lacks SUPER: the server refuses the backup's 1 triggers and stored functions (ERROR 1419)",
        user.name
    );
    assert!(err.contains(&want), "{err}");
    assert!(
        err.contains("SET GLOBAL log_bin_trust_function_creators = 1"),
        "{err}"
    );
    assert_eq!(dst.exec("SHOW TABLES").trim(), "precious");
    assert_eq!(dst.exec("SELECT id FROM precious").trim(), "7");
}

#[test]
fn check_prints_both_reports_and_exits_as_the_job_would() {
    let db = TestDb::new("pf_check");
    db.exec("CREATE TABLE t (id INT PRIMARY KEY); INSERT INTO t VALUES (1);");
    let dir = tempfile::tempdir().unwrap();
    let admin = tool::vars(&db.name, dir.path());
    assert_eq!(tool::outcome(&tool::run(&admin, &["backup"])).0, 0);

    let user = TestUser::new("pf_check", &[format!("SELECT ON `{}`.*", db.name)]);
    let vars = tool::vars_with(&db.name, dir.path(), &user.vars());
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["check"]));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!(
            "backup preflight:\nok: BACKUP_DIR {} is writable\nok: server MariaDB",
            dir.path().display()
        )),
        "{out}"
    );
    assert!(out.contains("warning: missing TRIGGER on"), "{out}");

    // SELECT alone cannot restore: refused, as `restore` would be.
    let (code, out, err) = tool::outcome(&tool::run(&vars, &["check", "--restore", "latest"]));
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("restore preflight (selmai_backup_"), "{out}");
    assert!(
        err.contains("lacks CREATE, DROP, INSERT on") && err.contains("tables cannot be replaced"),
        "{err}"
    );
}

#[test]
fn run_stops_at_once_when_signalled_while_the_preflight_waits_for_the_database() {
    use std::io::{BufRead, BufReader};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    // Port 1: nothing listens, so the preflight retries for DB_CONNECT_TIMEOUT.
    let vars = tool::vars_with(
        "nodb",
        dir.path(),
        &[("DB_PORT", "1"), ("DB_CONNECT_TIMEOUT", "60")],
    );
    let mut child = tool::spawn(&vars, &["run"]);
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    for line in lines.by_ref() {
        if line.unwrap().contains("database not reachable yet") {
            break;
        }
    }
    let rest = std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>());
    let _ = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let signalled = Instant::now();
    let status = child.wait().unwrap();
    let log = rest.join().unwrap().join("\n");
    assert!(signalled.elapsed() < Duration::from_secs(5), "{log}");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("during the preflight: stopping"), "{log}");
}

#[test]
fn run_refuses_an_unwritable_backup_dir_at_once_saying_which_chown() {
    use std::time::{Duration, Instant};

    // Not even root may create a file in /proc/self (the tests run as
    // root, to whom permission bits mean nothing); and the database is
    // unreachable, to show it is not waited for.
    let vars = tool::vars_with(
        "nodb",
        Path::new("/proc/self"),
        &[("DB_PORT", "1"), ("DB_CONNECT_TIMEOUT", "60")],
    );
    let started = Instant::now();
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["run"]));
    assert!(started.elapsed() < Duration::from_secs(20), "{err}");
    assert_eq!(code, 8, "{err}");
    let (uid, gid) = preflight::process_owner().unwrap();
    assert!(
        err.contains(&format!(
            "BACKUP_DIR /proc/self is not writable by uid {uid} ("
        )) && err.contains(&format!("sudo chown {uid}:{gid} backups")),
        "{err}"
    );
    // `check` says the same, with the same exit code.
    let (code, _, err) = tool::outcome(&tool::run(&vars, &["check"]));
    assert_eq!(code, 8, "{err}");
    assert!(
        err.contains("BACKUP_DIR /proc/self is not writable"),
        "{err}"
    );
}
