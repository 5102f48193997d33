//! Fidelity (RELIABILITY.md 1-3): back up, restore, and prove with
//! `mariadb-dump` and `CHECKSUM TABLE` that nothing changed. Covers Sakila,
//! the corner-case database with a 20 MiB BLOB, every compression, restore
//! into the same name after a DROP, our files read by the stock client, and
//! files of the old `mariadb-dump | gzip` script read by our restore.

use std::process::Command;

use rstest::rstest;

use crate::support::tool;
use crate::support::{assert_same_database, checksums, db_env, mariadb_dump, row_counts, TestDb};

#[tokio::test(flavor = "multi_thread")]
async fn sakila_round_trips_exactly() {
    let src = TestDb::new("rt_sakila");
    src.load_sakila();
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    assert_eq!(
        out.manifest
            .tables
            .iter()
            .filter(|t| t.kind == "table")
            .count(),
        16
    );
    assert_eq!(out.manifest.views.len(), 7);
    assert_eq!(out.manifest.triggers.len(), 6);
    assert_eq!(out.manifest.routines.len(), 6);
    let rental = out
        .manifest
        .tables
        .iter()
        .find(|t| t.name == "rental")
        .unwrap();
    assert_eq!(rental.rows, 16044);

    let dst = TestDb::new("rt_sakila_dst");
    tool::restore(dir.path(), &out.file, &dst.name).await;
    assert_same_database(&src, &dst);
}

#[tokio::test(flavor = "multi_thread")]
async fn corner_cases_survive_drop_and_restore_under_the_same_name() {
    let db = TestDb::new("rt_corner");
    db.load_corner_cases();
    let blob_sha = db.insert_big_blob(20);
    let before = mariadb_dump(&db);
    // CHECKSUM TABLE is bitwise: it is what proves FLOAT values exact, since
    // mariadb-dump prints them with 6 digits and would not see a change.
    let sums = checksums(&db);
    let counts = row_counts(&db);

    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&db.name, dir.path()).await;
    let snap = out
        .manifest
        .snapshot
        .as_ref()
        .expect("binary logging is on in the test server");
    assert!(
        snap.file.starts_with("binlog.") && snap.position > 0,
        "{snap:?}"
    );
    assert!(
        snap.gtid.as_deref().is_some_and(|g| g.starts_with("0-1-")),
        "{snap:?}"
    );
    for (table, rows) in &counts {
        let m = out.manifest.tables.iter().find(|t| &t.name == table);
        assert_eq!(
            m.map(|t| t.rows),
            Some(*rows),
            "manifest row count of {table}"
        );
    }

    db.exec(&format!("DROP DATABASE `{}`", db.name));
    tool::restore(dir.path(), "latest", &db.name).await;
    assert_eq!(
        mariadb_dump(&db),
        before,
        "the restored database dumps differently"
    );
    assert_eq!(checksums(&db), sums);
    assert_eq!(row_counts(&db), counts);
    let got = db.exec("SELECT SHA2(data, 256) FROM big_blob WHERE id = 1");
    assert_eq!(got.trim(), blob_sha);
    // Every restored table reproduces the fingerprint taken inside the snapshot.
    let mut conn = mysql_async::Conn::new(db.opts()).await.unwrap();
    for t in out.manifest.tables.iter().filter(|t| t.kind == "table") {
        let read = selmai_backup::dump::table_fingerprint(
            &mut conn,
            &db.name,
            &t.name,
            t.history_rows.is_some(),
        )
        .await
        .unwrap();
        assert_eq!(read.rows, t.rows, "{}", t.name);
        assert_eq!(
            Some(read.fingerprint.hex()),
            t.fingerprint,
            "fingerprint of {}",
            t.name
        );
    }
    conn.disconnect().await.unwrap();
    // The database came back with its original character set.
    let cs = db.exec(&format!(
        "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{}'",
        db.name
    ));
    assert_eq!(cs.trim(), "utf8mb4");
}

#[rstest]
#[case::gzip("gzip")]
#[case::zstd("zstd")]
#[case::none("none")]
#[tokio::test(flavor = "multi_thread")]
async fn every_compression_round_trips(#[case] compression: &str) {
    let src = TestDb::new(&format!("rt_comp_{compression}"));
    src.load_corner_cases();
    let dir = tempfile::tempdir().unwrap();
    let s = tool::settings(
        &src.name,
        dir.path(),
        &[("BACKUP_COMPRESSION", compression)],
    );
    let out = tool::try_backup(&s, &selmai_backup::dump::NoHooks)
        .await
        .unwrap();
    let ext = match compression {
        "gzip" => ".sql.gz",
        "zstd" => ".sql.zst",
        _ => ".sql",
    };
    assert!(out.file.ends_with(ext), "{}", out.file);
    let dst = TestDb::new(&format!("rt_comp_{compression}_dst"));
    tool::restore(dir.path(), &out.file, &dst.name).await;
    assert_same_database(&src, &dst);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stock_client_restores_our_backups() {
    let src = TestDb::new("rt_stock_src");
    src.load_corner_cases();
    src.insert_big_blob(20);
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    let dst = TestDb::new("rt_stock_dst");
    // gunzip -c FILE | mariadb DB
    dst.load_sql(tool::gunzip(&dir.path().join(&out.file)));
    assert_same_database(&src, &dst);
}

#[tokio::test(flavor = "multi_thread")]
async fn our_restore_reads_the_old_scripts_mariadb_dump_gzip_files() {
    let src = TestDb::new("rt_legacy_src");
    src.load_sakila();
    let dir = tempfile::tempdir().unwrap();
    // What scripts/backup.sh did: mysqldump | gzip > selmai_backup_YYYYMMDD_HHMMSS.sql.gz
    let file = legacy_file(
        dir.path(),
        &src.name,
        &["--routines", "--triggers", "--events"],
    );

    let ours = TestDb::new("rt_legacy_ours");
    tool::restore(dir.path(), "latest", &ours.name).await;
    let stock = TestDb::new("rt_legacy_stock");
    stock.load_sql(tool::gunzip(&file));
    assert_same_database(&stock, &ours);
    assert_same_database(&src, &ours);
}

#[tokio::test(flavor = "multi_thread")]
async fn restore_by_path_outside_the_backup_dir() {
    let src = TestDb::new("rt_path_src");
    src.load_corner_cases();
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    let elsewhere = tempfile::tempdir().unwrap();
    for f in [
        out.file.clone(),
        selmai_backup::format::manifest::name_for(&out.file),
    ] {
        std::fs::copy(dir.path().join(&f), elsewhere.path().join(&f)).unwrap();
    }
    let dst = TestDb::new("rt_path_dst");
    let empty = tempfile::tempdir().unwrap();
    let spec = elsewhere.path().join(&out.file).display().to_string();
    tool::restore(empty.path(), &spec, &dst.name).await;
    assert_same_database(&src, &dst);
}

#[tokio::test(flavor = "multi_thread")]
async fn statements_only_for_newer_servers_do_not_stop_a_restore() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("selmai_backup_20250101_000000.sql"),
        "-- MariaDB dump 10.19 (a hand-written dump)\nCREATE TABLE x (a INT);\n/*!999999 SELECT 1 */;\nINSERT INTO x VALUES (1);\n",
    )
    .unwrap();
    let dst = TestDb::new("rt_newer");
    // The server takes a comment-only statement as a no-op.
    let summary = tool::restore(dir.path(), "latest", &dst.name).await;
    assert_eq!(summary.statements, 3);
    assert_eq!(dst.exec("SELECT COUNT(*) FROM x").trim(), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_statement_is_named_even_on_a_parallel_loader() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("selmai_backup_20250101_000000.sql"),
        "-- MariaDB dump 10.19 (a hand-written dump)\nCREATE TABLE a (id INT PRIMARY KEY);\nCREATE TABLE b (id INT PRIMARY KEY);\nINSERT INTO a VALUES (1);\nINSERT INTO b VALUES (1);\n\nINSERT INTO b VALUES (1);\nCREATE VIEW v AS SELECT * FROM a;\n",
    )
    .unwrap();
    let dst = TestDb::new("rt_failing");
    let err = tool::try_restore(dir.path(), "latest", &dst.name)
        .await
        .unwrap_err();
    match err {
        selmai_backup::restore::RestoreError::Statement {
            number, line, code, ..
        } => {
            assert_eq!(
                (number, line, code),
                (5, 7, 1062),
                "duplicate key in statement 5, line 7 (after the header line)"
            )
        }
        other => panic!("{other}"),
    }
    // The statement after the failure did not run.
    assert_eq!(
        dst.exec("SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE()")
            .trim(),
        "0"
    );
}

/// A restore spreads the rows of an InnoDB table with a primary key over
/// several connections; every other table keeps the order of the file,
/// which `mariadb-dump` (no ORDER BY) would show if it changed. Small
/// statements and small large-value chunks make many INSERTs per table and
/// many values assembled in user variables, each of which must reach the
/// connection of its INSERT.
#[tokio::test(flavor = "multi_thread")]
async fn rows_spread_over_connections_leave_every_table_identical() {
    let src = TestDb::new("rt_spread_src");
    src.exec(
        "CREATE TABLE keyed (id INT PRIMARY KEY, note VARCHAR(40), payload BLOB) ENGINE=InnoDB;
         INSERT INTO keyed SELECT seq, CONCAT('row ', seq), IF(seq % 7 = 0, REPEAT(CHAR(65 + seq % 26), 5000), NULL) FROM seq_1_to_3000;
         CREATE TABLE heap (n INT, note VARCHAR(40)) ENGINE=InnoDB;
         INSERT INTO heap SELECT (seq * 7919) % 3001, CONCAT('heap ', seq) FROM seq_1_to_3000;
         CREATE TABLE flat (id INT PRIMARY KEY, note VARCHAR(40)) ENGINE=MyISAM;
         INSERT INTO flat SELECT seq, CONCAT('flat ', seq) FROM seq_1_to_3000;
         DELETE FROM flat WHERE id % 3 = 0;
         INSERT INTO flat SELECT seq + 3000, 'refill' FROM seq_1_to_1000;
         CREATE TABLE after_all (id INT PRIMARY KEY) ENGINE=InnoDB;
         INSERT INTO after_all VALUES (1), (2);
         CREATE VIEW counted AS SELECT COUNT(*) AS n FROM keyed;",
    );
    let dir = tempfile::tempdir().unwrap();
    let s = tool::settings(&src.name, dir.path(), &[]);
    let small = selmai_backup::dump::DumpOptions {
        statement_bytes: 4096,
        large_value_bytes: 1024,
        ..Default::default()
    };
    selmai_backup::backup::pipeline::backup_db(
        &s.db().unwrap(),
        &selmai_backup::backup::pipeline::Encoding::of(&s),
        &s.prefix,
        &tool::volume(dir.path()),
        &small,
        &selmai_backup::dump::NoHooks,
    )
    .await
    .unwrap_or_else(|e| panic!("backup failed: {e}"));
    let dst = TestDb::new("rt_spread_dst");
    tool::restore(dir.path(), "latest", &dst.name).await;
    assert_same_database(&src, &dst);
}

/// `mariadb-dump --no-autocommit` wraps each table's rows in `SET
/// autocommit=0` ... `COMMIT`: every connection that loaded rows must
/// commit them, or they vanish when it disconnects.
#[tokio::test(flavor = "multi_thread")]
async fn mariadb_dump_no_autocommit_files_keep_every_row() {
    let src = TestDb::new("rt_noauto_src");
    src.load_sakila();
    let dir = tempfile::tempdir().unwrap();
    legacy_file(
        dir.path(),
        &src.name,
        &["--no-autocommit", "--net-buffer-length=16384"],
    );
    let ours = TestDb::new("rt_noauto_ours");
    tool::restore(dir.path(), "latest", &ours.name).await;
    assert_eq!(row_counts(&ours.name), row_counts(&src.name));
    assert_eq!(checksums(&ours.name), checksums(&src.name));
}

/// What the old `scripts/backup.sh` wrote: `mariadb-dump --single-transaction
/// ARGS DB | gzip` in `dir/selmai_backup_20250120_020000.sql.gz`.
pub(crate) fn legacy_file(dir: &std::path::Path, db: &str, args: &[&str]) -> std::path::PathBuf {
    let env = db_env();
    let dump = Command::new("mariadb-dump")
        .args(["--no-defaults", "--protocol=TCP", "--single-transaction"])
        .args(args)
        .arg(format!("-h{}", env.host))
        .arg(format!("-P{}", env.port))
        .arg(format!("-u{}", env.user))
        .arg(db)
        .env("MYSQL_PWD", &env.password)
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let file = dir.join("selmai_backup_20250120_020000.sql.gz");
    std::fs::write(&file, tool::gzip(&dump.stdout)).unwrap();
    file
}

/// Every row of the system-versioned tables of `db`, history included,
/// with its period values (as the client prints them).
fn versioned_rows(db: &TestDb) -> String {
    db.exec(
        "SELECT id, v, row_start, row_end FROM audit FOR SYSTEM_TIME ALL ORDER BY row_start, id;
         SELECT n, amount, valid_from, valid_to FROM ledger FOR SYSTEM_TIME ALL ORDER BY valid_from, n;",
    )
}

/// A database with two system-versioned tables (implicit and explicit
/// period columns, with and without a primary key) that have history.
fn versioned_db(tag: &str) -> TestDb {
    let db = TestDb::new(tag);
    db.exec(
        "CREATE TABLE audit (id INT PRIMARY KEY, v VARCHAR(20)) WITH SYSTEM VERSIONING;
         INSERT INTO audit VALUES (1, 'a'), (2, 'b'), (3, 'c');
         CREATE TABLE ledger (n INT, amount DECIMAL(10,2),
           valid_from TIMESTAMP(6) GENERATED ALWAYS AS ROW START,
           valid_to TIMESTAMP(6) GENERATED ALWAYS AS ROW END,
           PERIOD FOR SYSTEM_TIME (valid_from, valid_to)) WITH SYSTEM VERSIONING;
         INSERT INTO ledger (n, amount) VALUES (1, 10.00), (2, 20.00);",
    );
    // One statement per client call: each change gets its own time.
    for sql in [
        "UPDATE audit SET v = 'a2' WHERE id = 1",
        "DELETE FROM audit WHERE id = 2",
        "UPDATE audit SET v = 'a3' WHERE id = 1",
        "UPDATE ledger SET amount = amount + 1 WHERE n = 1",
        "DELETE FROM ledger WHERE n = 2",
    ] {
        std::thread::sleep(std::time::Duration::from_millis(5));
        db.exec(sql);
    }
    db
}

/// System-versioned tables keep their history: every row `FOR SYSTEM_TIME
/// ALL`, with its ROW START and ROW END, is the same after a restore (ours,
/// and the stock client reading our file), not only the current rows.
#[tokio::test(flavor = "multi_thread")]
async fn system_versioned_history_round_trips_with_its_period_values() {
    let src = versioned_db("rt_versioned");
    let before = versioned_rows(&src);
    let history: u64 = src
        .exec("SELECT COUNT(*) FROM audit FOR SYSTEM_TIME ALL WHERE row_end < NOW(6)")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(history, 3, "the fixture has history: {before}");

    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    let audit = out.manifest.tables.iter().find(|t| t.name == "audit");
    assert_eq!(audit.map(|t| (t.rows, t.history_rows)), Some((2, Some(3))));
    let dst = TestDb::new("rt_versioned_dst");
    // The preflight says what restoring the history needs, and that this
    // server and user have it.
    let (code, stdout, err) = tool::outcome(&tool::run(
        &tool::vars(&dst.name, dir.path()),
        &["check", "--restore", &out.file],
    ));
    assert_eq!(code, 0, "{err}");
    assert!(
        stdout.contains("ok: the backup holds the history of 2 system-versioned tables: this server restores it (system_versioning_insert_history, secure_timestamp=NO)"),
        "{stdout}"
    );
    tool::restore(dir.path(), &out.file, &dst.name).await;
    assert_eq!(versioned_rows(&dst), before);
    assert_same_database(&src, &dst);
    // The table is still versioned after the restore: a change adds history.
    dst.exec("UPDATE audit SET v = 'c2' WHERE id = 3");
    assert_eq!(
        dst.exec("SELECT COUNT(*) FROM audit FOR SYSTEM_TIME ALL")
            .trim(),
        "6"
    );

    let stock = TestDb::new("rt_versioned_stock");
    let warnings = stock.load_sql(tool::gunzip(&dir.path().join(&out.file)));
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(versioned_rows(&stock), before);
}

/// Views `WITH CHECK OPTION` over views whose names sort after them (and a
/// chain of such views), with a trigger and an event after them in the
/// file: everything restores, and the check option still holds.
#[tokio::test(flavor = "multi_thread")]
async fn checked_views_over_views_restore_whatever_their_names() {
    let src = TestDb::new("rt_checked_views");
    src.exec(
        "CREATE TABLE stock (id INT PRIMARY KEY, qty INT);
         INSERT INTO stock VALUES (1, 5), (2, 50), (3, 500);
         CREATE VIEW z_positive AS SELECT id, qty FROM stock WHERE qty > 0;
         CREATE VIEW m_small AS SELECT id, qty FROM z_positive WHERE qty < 100 WITH CASCADED CHECK OPTION;
         CREATE VIEW a_tiny AS SELECT id, qty FROM m_small WHERE qty < 10 WITH LOCAL CHECK OPTION;
         CREATE VIEW b_checked AS SELECT id, qty FROM z_positive WITH CHECK OPTION;
         CREATE TABLE log (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(20));
         CREATE TRIGGER stock_ai AFTER INSERT ON stock FOR EACH ROW INSERT INTO log (what) VALUES ('insert');
         CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM log;",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = tool::backup(&src.name, dir.path()).await;
    let dst = TestDb::new("rt_checked_views_dst");
    tool::restore(dir.path(), &out.file, &dst.name).await;
    assert_same_database(&src, &dst);
    assert_eq!(
        dst.exec("SELECT COUNT(*) FROM information_schema.VIEWS WHERE TABLE_SCHEMA = DATABASE() AND CHECK_OPTION <> 'NONE'")
            .trim(),
        "3"
    );
    // The check options work in the copy: through a_tiny, qty 500 is
    // refused (by m_small's cascaded check).
    {
        use mysql_async::prelude::Queryable;
        let mut conn = mysql_async::Conn::new(dst.opts()).await.unwrap();
        let refused = conn
            .query_drop("INSERT INTO a_tiny VALUES (9, 500)")
            .await
            .unwrap_err();
        assert!(
            refused.to_string().contains("CHECK OPTION failed"),
            "the check option holds: {refused}"
        );
        conn.disconnect().await.unwrap();
    }
    dst.exec("INSERT INTO a_tiny VALUES (9, 5)");
    assert_eq!(dst.exec("SELECT COUNT(*) FROM log").trim(), "1");

    // The stock client reads our file too.
    let stock = TestDb::new("rt_checked_views_stock");
    stock.load_sql(tool::gunzip(&dir.path().join(&out.file)));
    assert_same_database(&src, &stock);
}
