//! Tests of the test harness itself (`support.rs`) and its fixtures. A
//! yardstick that never fails proves nothing, so these show that
//! `assert_same_database` passes on a faithful copy and fails on each kind of
//! difference a bad restore causes: a changed row, a missing row, a FLOAT
//! off by one ulp. They also record what stock `mariadb-dump | mariadb` loses
//! on the corner-case fixture, which is why the project has its own dumper.

use std::panic::{catch_unwind, AssertUnwindSafe};

use mysql_async::prelude::Queryable;
use sha2::{Digest, Sha256};

use crate::support::{
    assert_same_database, checksums, compare_databases, copy_with_mariadb_dump, db_env,
    mariadb_dump, row_counts, TestDb,
};

/// The 256 byte values in order, as the fixture builds them.
fn all_bytes() -> Vec<u8> {
    (0..=255u8).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn schema_exists(name: &str) -> bool {
    let n = db_env().exec(
        None,
        &format!("SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{name}'"),
    );
    n.trim() == "1"
}

#[test]
fn test_db_names_are_unique_identifiers_and_dropped() {
    let a = TestDb::new("Harness Drop-Test!");
    let b = TestDb::new("Harness Drop-Test!");
    assert_ne!(a.name, b.name);
    let prefix = format!("t_harness_drop_test__{}_", std::process::id());
    assert!(a.name.starts_with(&prefix), "{}", a.name);
    assert!(a
        .name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
    let name = a.name.clone();
    assert!(schema_exists(&name));
    drop(a);
    assert!(!schema_exists(&name), "{name} was not dropped");
    // The database is created utf8mb4 although the server default is latin1,
    // so fixtures without explicit charsets get 4-byte characters right.
    assert_eq!(
        b.exec(&format!(
            "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA \
             WHERE SCHEMA_NAME = '{}'",
            b.name
        ))
        .trim(),
        "utf8mb4"
    );
}

#[test]
fn corner_cases_fixture_loads_cleanly_with_the_intended_values() {
    let db = TestDb::new("harness_fixture");
    let warnings = db.load_corner_cases();
    // The one expected warning: creating an event while the scheduler is off
    // (it is off on purpose in tests, and the event is DISABLEd anyway).
    let unexpected: Vec<&String> = warnings
        .iter()
        .filter(|w| !w.starts_with("Warning (Code 1105): Event scheduler is switched off"))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected warnings: {unexpected:#?}"
    );

    // Each value is checked as stored, so a case the client or server
    // silently mangled at load time cannot pass every round trip as "equal".
    let all = all_bytes();
    let cases: Vec<(&str, String)> = vec![
        // 4-byte UTF-8: U+1F600 and U+20000 (CJK Extension B).
        ("SELECT HEX(LEFT(v, 1)) FROM text_cases WHERE id = 1", "F09F9880".into()),
        ("SELECT HEX(LEFT(v, 1)) FROM text_cases WHERE id = 2", "F0A08080".into()),
        ("SELECT HEX(v), HEX(t) FROM text_cases WHERE id = 4", "610062\t7800007900".into()),
        ("SELECT HEX(v), HEX(c) FROM text_cases WHERE id = 5", "611A62\t1A".into()),
        ("SELECT HEX(v) FROM text_cases WHERE id = 6", hex::encode_upper(br"C:\dir\file")),
        ("SELECT HEX(v) FROM text_cases WHERE id = 7", hex::encode_upper(br#"it's "quoted" `back`"#)),
        (
            "SELECT v IS NULL, v = '', v = 'NULL' FROM text_cases WHERE id IN (9, 10, 11) ORDER BY id",
            "1\tNULL\tNULL\n0\t1\t0\n0\t0\t1".into(),
        ),
        // Stored as latin1 bytes (FC = ü, DF = ß, F6 = ö), not double-encoded.
        ("SELECT HEX(name) FROM latin1_text WHERE id = 3", "4772FCDF6520617573204BF66C6E".into()),
        ("SELECT HEX(vb) FROM binary_cases WHERE id = 1", hex::encode_upper(&all)),
        (
            "SELECT LENGTH(lb), SHA2(lb, 256) FROM binary_cases WHERE id = 1",
            format!("262144\t{}", sha256_hex(&all.repeat(1024))),
        ),
        ("SELECT HEX(b) FROM binary_cases WHERE id = 3", "61000000".into()),
        (
            "SELECT bi, biu, HEX(b64), zf FROM int_cases WHERE id = 2",
            "9223372036854775807\t18446744073709551615\tFFFFFFFFFFFFFFFF\t4294967295".into(),
        ),
        (
            "SELECT d FROM decimal_cases WHERE id = 2",
            "-99999999999999999999999999999999999.999999999999999999999999999999".into(),
        ),
        // CAST to DOUBLE shows all the bits of a FLOAT that printing hides.
        (
            "SELECT CAST(f AS DOUBLE), d FROM float_cases WHERE id IN (1, 4, 8) ORDER BY id",
            "3.4028234663852886e38\t1.7976931348623157e308\n\
             1.401298464324817e-45\t5e-324\n\
             1.0000001192092896\t1.0000000000000002"
                .into(),
        ),
        (
            "SELECT d, dt, dt6, ts6, tm6, y FROM temporal_cases WHERE id = 1",
            "0000-00-00\t0000-00-00 00:00:00\t0000-00-00 00:00:00.000000\t\
             0000-00-00 00:00:00.000000\t-838:59:59.999999\t0000"
                .into(),
        ),
        ("SELECT tm6 FROM temporal_cases WHERE id = 2", "838:59:59.999999".into()),
        ("SELECT JSON_VALUE(doc, '$.c.d') FROM json_cases WHERE id = 1", "é😀\\0\"x".into()),
        ("SELECT e, s FROM enum_set_cases WHERE id = 2", "it's\tread,write,exec,it's".into()),
        ("SELECT u, ip FROM uuid_inet_cases WHERE id = 1",
            "123e4567-e89b-12d3-a456-426614174000\t2001:db8::ff00:42:8329".into()),
        ("SELECT ST_AsText(p), ST_SRID(g) FROM spatial_cases WHERE id = 2", "POINT(0 0)\t4326".into()),
        ("SELECT secret, total_stored FROM invisible_generated WHERE id = 1", "not default\t29.97".into()),
        ("SELECT COUNT(*) FROM no_pk_duplicates WHERE a = 1", "3".into()),
        ("SELECT COUNT(*) FROM `odd ``name`` tåble 表`", "1".into()),
        ("SELECT COUNT(*) FROM empty_table", "0".into()),
        ("SELECT name_upper FROM audited WHERE id = 1", "ALPHA".into()),
        ("SELECT old_name, new_name FROM audit_log", "beta\tgamma".into()),
        ("SELECT next_not_cached_value FROM order_seq", "150".into()),
        ("SELECT * FROM v_on_view WHERE id = 1", "1\t29.97".into()),
        ("SELECT gross FROM v_priced WHERE id = 3", "1.86".into()),
    ];
    for (sql, expected) in &cases {
        assert_eq!(db.exec(sql).trim_end(), expected, "{sql}");
    }

    // The schema objects, counted from information_schema.
    let schema = &db.name;
    let objects: Vec<(String, &str)> = vec![
        (format!("SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = '{schema}' ORDER BY 2"),
            "PROCEDURE\tcount_rows\nFUNCTION\tprice_with_tax"),
        (format!("SELECT TRIGGER_NAME, ACTION_TIMING, EVENT_MANIPULATION FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = '{schema}' ORDER BY 1"),
            "audited_au\tAFTER\tUPDATE\naudited_bi\tBEFORE\tINSERT"),
        (format!("SELECT EVENT_NAME, STATUS FROM information_schema.EVENTS WHERE EVENT_SCHEMA = '{schema}'"),
            "nightly_cleanup\tDISABLED"),
        (format!("SELECT TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = '{schema}' ORDER BY 1"),
            "v_base\nv_on_view\nv_priced"),
        (format!("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{schema}' AND TABLE_TYPE = 'SEQUENCE'"),
            "order_seq"),
        (format!("SELECT AUTO_INCREMENT, ROW_FORMAT FROM information_schema.TABLES WHERE TABLE_SCHEMA = '{schema}' AND TABLE_NAME = 'table_options'"),
            "5000\tCompact"),
        (format!("SELECT COLUMN_NAME, EXTRA FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = '{schema}' AND TABLE_NAME = 'invisible_generated' AND EXTRA <> '' ORDER BY ORDINAL_POSITION"),
            "secret\tINVISIBLE\ntotal_virtual\tVIRTUAL GENERATED\ntotal_stored\tSTORED GENERATED\nlabel\tVIRTUAL GENERATED"),
        (format!("SELECT TABLE_NAME, REFERENCED_TABLE_NAME FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = '{schema}' ORDER BY 1"),
            "fk_cycle_a\tfk_cycle_b\nfk_cycle_b\tfk_cycle_a"),
        (format!("SELECT INDEX_TYPE FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = '{schema}' AND INDEX_NAME = 'ft_title_body' LIMIT 1"),
            "FULLTEXT"),
    ];
    for (sql, expected) in &objects {
        assert_eq!(db.exec(sql).trim_end(), *expected, "{sql}");
    }
}

#[test]
fn sakila_copied_by_mariadb_dump_compares_equal_and_a_changed_row_does_not() {
    let orig = TestDb::new("harness_sakila");
    orig.load_sakila();
    let counts = row_counts(&orig);
    assert_eq!(counts.len(), 16, "{counts:?}");
    assert_eq!(counts["rental"], 16044);
    assert_eq!(counts["film_text"], 1000);

    let copy = TestDb::new("harness_sakila_copy");
    copy_with_mariadb_dump(&orig, &copy);
    assert_same_database(&orig, &copy);

    copy.exec("UPDATE customer SET email = 'changed@example.org' WHERE customer_id = 1");
    let mismatch = compare_databases(&orig, &copy).expect_err("a changed row must be noticed");
    assert_eq!(mismatch.checksum_tables(), ["customer"], "{mismatch}");
    assert!(mismatch.row_counts.is_empty(), "{mismatch}");
    let diff = mismatch
        .dump_diff
        .as_deref()
        .expect("the dump shows a changed email");
    assert!(
        diff.contains("-(1,1,'MARY','SMITH','MARY.SMITH@sakilacustomer.org'")
            && diff.contains("+(1,1,'MARY','SMITH','changed@example.org'"),
        "{diff}"
    );
}

#[test]
fn float_one_ulp_off_is_caught_by_the_checksum_although_the_dumps_are_equal() {
    let orig = TestDb::new("harness_ulp");
    orig.exec(
        "CREATE TABLE f (id INT PRIMARY KEY, x FLOAT, y DOUBLE);
         INSERT INTO f VALUES (1, 1.5, 1.5), (2, 1.0, 1.0);",
    );
    let copy = TestDb::new("harness_ulp_copy");
    copy_with_mariadb_dump(&orig, &copy);
    assert_same_database(&orig, &copy);

    // 1 + 2^-23 is the next float after 1.0, stored exactly.
    copy.exec("UPDATE f SET x = 1.00000011920928955078125 WHERE id = 2");
    assert_eq!(
        copy.exec("SELECT x, CAST(x AS DOUBLE) FROM f WHERE id = 2")
            .trim(),
        "1\t1.0000001192092896",
        "the client prints the changed FLOAT as 1"
    );
    let mismatch = compare_databases(&orig, &copy).expect_err("one ulp must be noticed");
    assert!(
        mismatch.dump_diff.is_none(),
        "mariadb-dump prints both as 1, so only the checksum can see it:\n{mismatch}"
    );
    assert_eq!(mismatch.checksum_tables(), ["f"], "{mismatch}");

    // A DOUBLE one ulp off shows in the dump too (printed with 17 digits).
    copy.exec("UPDATE f SET x = 1.0, y = 1.0000000000000002 WHERE id = 2");
    let mismatch = compare_databases(&orig, &copy).expect_err("one ulp must be noticed");
    assert_eq!(mismatch.checksum_tables(), ["f"], "{mismatch}");
    assert!(mismatch.dump_diff.is_some(), "{mismatch}");
}

#[test]
fn assert_same_database_panics_with_a_readable_diff() {
    let a = TestDb::new("harness_panic");
    a.exec(
        "CREATE TABLE t (id INT PRIMARY KEY, v TEXT);
         INSERT INTO t VALUES (1, 'one'), (2, 'two'), (3, 'three');",
    );
    let b = TestDb::new("harness_panic_copy");
    copy_with_mariadb_dump(&a, &b);
    b.exec("DELETE FROM t WHERE id = 2");

    let panic = catch_unwind(AssertUnwindSafe(|| assert_same_database(&a, &b)))
        .expect_err("a missing row must fail the assertion");
    let message = panic
        .downcast_ref::<String>()
        .expect("the panic message is a String");
    for expected in [
        "rows in t: - Some(3) + Some(2)",
        "CHECKSUM TABLE t:",
        "-(2,'two'),",
        " (1,'one'),",
    ] {
        assert!(
            message.contains(expected),
            "{expected:?} not in:\n{message}"
        );
    }
}

#[test]
fn stock_mariadb_dump_loses_float_precision_on_the_corner_cases() {
    let orig = TestDb::new("harness_stock");
    orig.load_corner_cases();
    let copy = TestDb::new("harness_stock_copy");
    copy_with_mariadb_dump(&orig, &copy);

    let mismatch = compare_databases(&orig, &copy)
        .expect_err("stock mariadb-dump prints FLOAT with 6 digits; the harness must notice");
    eprintln!("what `mariadb-dump | mariadb` changed:\n{mismatch}");
    // Everything else survives the stock round trip: only the FLOATs change,
    // and the dump text cannot show it because it is printed from the same
    // 6 digits on both sides.
    assert_eq!(mismatch.checksum_tables(), ["float_cases"], "{mismatch}");
    assert!(mismatch.row_counts.is_empty(), "{mismatch}");
    assert!(mismatch.dump_diff.is_none(), "{mismatch}");
    assert!(mismatch.defaults.is_none(), "{mismatch}");
    assert_eq!(checksums(&orig).len(), checksums(&copy).len());

    // The damage, value by value: every FLOAT not exact in 6 digits moved.
    let floats = |db: &TestDb| {
        db.exec("SELECT id, CAST(f AS DOUBLE) FROM float_cases ORDER BY id")
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let (before, after) = (floats(&orig), floats(&copy));
    let changed: Vec<String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| format!("{b} -> {}", a.split('\t').nth(1).unwrap_or("")))
        .collect();
    eprintln!(
        "FLOATs changed by mariadb-dump | mariadb:\n{}",
        changed.join("\n")
    );
    assert!(
        changed
            .iter()
            .any(|c| c == "1\t3.4028234663852886e38 -> 3.402820018375656e38"),
        "{changed:#?}"
    );
    assert!(
        changed
            .iter()
            .any(|c| c.starts_with("10\t16777216 -> 16777200")),
        "{changed:#?}"
    );
    // DOUBLEs are printed with 17 significant digits and survive.
    assert_eq!(
        orig.exec("SELECT GROUP_CONCAT(d ORDER BY id) FROM float_cases"),
        copy.exec("SELECT GROUP_CONCAT(d ORDER BY id) FROM float_cases")
    );
    // The dumps of the two are indeed byte for byte the same.
    assert_eq!(mariadb_dump(&orig), mariadb_dump(&copy));
}

#[tokio::test]
async fn big_blob_is_deterministic_and_reads_back_over_mysql_async() {
    const MIB: usize = 17; // more than the client's default 16M packet
    let db = TestDb::new("harness_blob");
    let sha = db.insert_big_blob(MIB);
    assert_eq!(db.exec("SELECT SHA2(data, 256) FROM big_blob").trim(), sha);
    // Golden value: the same bytes on every run and machine.
    assert_eq!(sha, GOLDEN_BIG_BLOB_17_SHA256);

    let mut conn = mysql_async::Conn::new(db.opts())
        .await
        .expect("connecting with TestDb::opts");
    let data: Vec<u8> = conn
        .query_first("SELECT data FROM big_blob WHERE id = 1")
        .await
        .expect("reading the blob")
        .expect("one row");
    conn.disconnect().await.expect("disconnecting");
    assert_eq!(data.len(), MIB << 20);
    assert_eq!(sha256_hex(&data), sha);
    // Every byte value occurs: the blob exercises escaping fully.
    let mut seen = [false; 256];
    data.iter().for_each(|b| seen[*b as usize] = true);
    assert!(seen.iter().all(|s| *s));
}

const GOLDEN_BIG_BLOB_17_SHA256: &str =
    "d206373753572d294fb6f3c608c5e2f6eba23d2d7e8f477c3d2ba1b6ca30851a";
