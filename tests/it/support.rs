//! Shared helpers for the integration tests: where the test server is, a
//! throw-away database per test, loading SQL through the real `mariadb`
//! client, and judging a restore the way RELIABILITY.md does (the
//! `mariadb-dump` of two databases is identical, and `CHECKSUM TABLE` and the
//! row count of every table are equal).
//!
//! Not responsible for starting the servers: `scripts/services.sh` does that
//! (and `scripts/test.sh` runs it). Everything here is synchronous and goes
//! through the stock `mariadb` / `mariadb-dump` binaries on purpose: the
//! yardstick must not share code (or bugs) with the dumper it judges.
//!
//! The helpers panic with a message naming the database and the failing
//! command: they are test preconditions, not code under test.
//!
//! Every helper more than one test file uses lives here: the tool run as
//! a process or through the library (`tool`), a private MariaDB server a
//! test may restart or kill (`own_server`), the S3 test server
//! (`bucket`), the binlog archive run in the test process (`archiver`),
//! HTTP and SMTP sinks (`sinks`), directory trees (`tree`), the SFTP test
//! server and a private sshd a test may kill (`sshd`).

pub mod archiver;
pub mod bucket;
pub mod own_server;
pub mod sinks;
pub mod sshd;
pub mod tool;
pub mod tree;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

/// Where the test MariaDB server is and how to log in to it.
#[derive(Debug, Clone)]
pub struct DbEnv {
    /// Host name or address (TCP only: the sidecar never uses a socket).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User with all privileges.
    pub user: String,
    /// That user's password; handed to child processes in `MYSQL_PWD` only.
    pub password: String,
}

/// The test server from `TEST_DB_HOST/PORT/USER/PASSWORD`, with the
/// defaults `scripts/services.sh` uses.
pub fn db_env() -> DbEnv {
    let var = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let port = var("TEST_DB_PORT", "33306");
    DbEnv {
        host: var("TEST_DB_HOST", "127.0.0.1"),
        port: port
            .parse()
            .unwrap_or_else(|_| panic!("TEST_DB_PORT={port:?} is not a port number")),
        user: var("TEST_DB_USER", "selmai_test"),
        password: var("TEST_DB_PASSWORD", "selmai-test-password"),
    }
}

impl DbEnv {
    /// Connection options for `mysql_async` (over TCP, never switching to
    /// the server's socket, as in production where the server is in another
    /// container), optionally with a default database.
    pub fn mysql_opts(&self, db: Option<&str>) -> mysql_async::Opts {
        mysql_async::OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(Some(self.password.clone()))
            .db_name(db.map(str::to_owned))
            .prefer_socket(false)
            .into()
    }

    /// `program` (`mariadb`, `mariadb-dump`) with the connection arguments.
    /// The password goes in the environment: a command line is readable by
    /// every user in `/proc/*/cmdline`.
    pub fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        // --no-defaults must come first; it keeps a developer's ~/.my.cnf
        // from changing what the tests see.
        cmd.arg("--no-defaults")
            .arg("--protocol=TCP")
            .arg(format!("--host={}", self.host))
            .arg(format!("--port={}", self.port))
            .arg(format!("--user={}", self.user))
            // Without this the client derives its charset from the locale,
            // which under CI's bare environment (no LANG) is not UTF-8.
            .arg("--default-character-set=utf8mb4")
            .env("MYSQL_PWD", &self.password);
        cmd
    }

    /// Runs the `mariadb` client on `db` (or no database) with `sql` on
    /// standard input; panics with its stderr when it fails.
    fn mariadb(&self, db: Option<&str>, extra_args: &[&str], sql: Vec<u8>) -> Output {
        let mut cmd = self.client("mariadb");
        // The server allows 64M packets; the client's own default (16M) would
        // refuse a statement holding a big blob before the server sees it.
        cmd.arg("--max-allowed-packet=1G").args(extra_args);
        if let Some(db) = db {
            cmd.arg(db);
        }
        let out = run_with_stdin(cmd, sql);
        if !out.status.success() {
            panic!(
                "mariadb client on database {}: {}\nstderr: {}",
                db.unwrap_or("(none)"),
                out.status,
                tail(&out.stderr)
            );
        }
        out
    }

    /// Runs `sql` (any number of statements, `DELIMITER` allowed) in `db`,
    /// or in no database, and returns the tab-separated rows it printed,
    /// without column names. Panics on error.
    pub fn exec(&self, db: Option<&str>, sql: &str) -> String {
        let out = self.mariadb(
            db,
            &["--batch", "--skip-column-names"],
            sql.as_bytes().to_vec(),
        );
        String::from_utf8(out.stdout)
            .expect("mariadb printed invalid UTF-8; select binary columns through HEX()")
    }
}

/// Feeds `input` to the child's stdin from a thread while collecting its
/// stdout and stderr, so that neither side can block the other on a full pipe.
fn run_with_stdin(mut cmd: Command, input: Vec<u8>) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e}; scripts/services.sh installs the MariaDB client")
        });
    let mut stdin = child.stdin.take().expect("stdin was piped");
    // A write error means the client exited early (an SQL error); its exit
    // status and stderr, checked by the caller, tell why.
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {program}: {e}"));
    writer.join().expect("stdin writer thread panicked");
    out
}

/// The last few lines of a child's stderr, for a panic message.
fn tail(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Path of a file under `tests/fixtures/`.
pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The Sakila sample database, in `shared/` next to the repository (CI
/// clones the repository beside `shared/`, so this is never a `/work` path).
pub fn sakila_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/sakila")
}

/// A database that exists for the lifetime of one test: unique name
/// (`t_<tag>_<pid>_<counter>`, so tests and test processes run in
/// parallel), dropped again on `Drop`.
///
/// Set `SELMAI_TEST_KEEP_DB=1` to keep the databases of failing tests for a
/// post-mortem; their names are printed.
pub struct TestDb {
    /// The database name; a plain identifier, no quoting needed.
    pub name: String,
    env: DbEnv,
}

impl AsRef<str> for TestDb {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

impl TestDb {
    /// Creates an empty database whose default character set is utf8mb4
    /// (the server's default is latin1). `tag` says which test owns it; any
    /// character that is not `[a-z0-9_]` is replaced.
    pub fn new(tag: &str) -> TestDb {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let tag: String = tag
            .chars()
            .map(|c| match c.to_ascii_lowercase() {
                c @ ('a'..='z' | '0'..='9' | '_') => c,
                _ => '_',
            })
            .take(40) // identifiers are at most 64 characters
            .collect();
        let name = format!("t_{tag}_{pid}_{n}");
        let env = db_env();
        // A database of this name can only be left over from an earlier
        // test process that had the same pid and was killed before its
        // Drop ran, so it is garbage.
        env.exec(
            None,
            &format!(
                "DROP DATABASE IF EXISTS `{name}`; \
                 CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;"
            ),
        );
        TestDb { name, env }
    }

    /// [`TestDb::new`] with a table `t` of `rows` rows of 256 hex digits
    /// (256 bytes of SQL each, about half of it once gzipped): a dump of a
    /// known size that spans many chunks and parts.
    pub fn with_hex_rows(tag: &str, rows: u32) -> TestDb {
        let db = TestDb::new(tag);
        db.exec(&format!(
            "CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(300));
             INSERT INTO t SELECT seq, CONCAT(SHA2(seq, 256), SHA2(-seq, 256), SHA2(seq, 512))
             FROM seq_1_to_{rows};"
        ));
        db
    }

    /// `mysql_async` options with this database as the default one.
    pub fn opts(&self) -> mysql_async::Opts {
        self.env.mysql_opts(Some(&self.name))
    }

    /// Runs `sql` in this database through the `mariadb` client (several
    /// statements and `DELIMITER` allowed) and returns what it printed: one
    /// line per row, tab-separated, no column names, NULL as `NULL`, special
    /// characters escaped as the client's batch mode does. Panics on error.
    pub fn exec(&self, sql: &str) -> String {
        self.env.exec(Some(&self.name), sql)
    }

    /// Loads SQL text into this database as `mariadb DB < file` would, and
    /// returns the warnings and notes the server raised (one line each, as
    /// the client prints them), so a test can insist on none. Panics on error.
    pub fn load_sql(&self, sql: impl Into<Vec<u8>>) -> Vec<String> {
        let out = self.env.mariadb(
            Some(&self.name),
            &["--batch", "--show-warnings"],
            sql.into(),
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| {
                ["Warning (Code ", "Note (Code ", "Error (Code "]
                    .iter()
                    .any(|p| l.starts_with(p))
            })
            .map(str::to_owned)
            .collect()
    }

    /// [`TestDb::load_sql`] of a file.
    pub fn load_sql_file(&self, path: impl AsRef<Path>) -> Vec<String> {
        let path = path.as_ref();
        let sql = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        self.load_sql(sql)
    }

    /// Loads `tests/fixtures/corner_cases.sql`; returns its warnings.
    pub fn load_corner_cases(&self) -> Vec<String> {
        self.load_sql_file(fixture_path("corner_cases.sql"))
    }

    /// Loads the Sakila schema and data into this database.
    ///
    /// The files create and switch to a database named `sakila` (and the
    /// schema file drops it first!), and one view names its tables as
    /// `sakila.film`; all of that is rewritten in memory so that Sakila lands
    /// in this uniquely named database and nothing else on the server is
    /// touched.
    pub fn load_sakila(&self) {
        let dir = sakila_dir();
        for file in ["sakila-schema.sql", "sakila-data.sql"] {
            let path = dir.join(file);
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "reading {}: {e} (Sakila lives in shared/data/sakila next to the repository)",
                    path.display()
                )
            });
            let sql = rewrite_sakila(&text);
            // Expected: rewards_report uses `SELECT expr INTO var;`, which
            // 10.11 deprecates (1287), and the data file's `ALTER TABLE ...
            // DISABLE KEYS` is a no-op on InnoDB (1031). Anything else is a
            // surprise.
            let warnings: Vec<String> = self
                .load_sql(sql)
                .into_iter()
                .filter(|w| {
                    let deprecated_select_into =
                        w.starts_with("Warning (Code 1287): '<select expression> INTO");
                    let disable_keys_on_innodb = w.starts_with("Note (Code 1031): ")
                        && w.ends_with("doesn't have this option");
                    !(deprecated_select_into || disable_keys_on_innodb)
                })
                .collect();
            assert!(
                warnings.is_empty(),
                "loading {file} into {} raised warnings:\n{}",
                self.name,
                warnings.join("\n")
            );
        }
    }

    /// Creates `big_blob(id INT PRIMARY KEY, data LONGBLOB)` holding one row
    /// of `mib` MiB of pseudo-random (incompressible, every byte value)
    /// bytes, the same bytes on every run. Returns their SHA-256 in hex, to
    /// compare with `SELECT SHA2(data, 256)` after a round trip.
    ///
    /// The value is built in a user variable 1 MiB at a time and inserted
    /// with a single statement, so that no statement is bigger than ~2 MiB
    /// of hex and the binary log gets one row image, not one per chunk. The
    /// server's max_allowed_packet (64M in tests) bounds `mib`.
    pub fn insert_big_blob(&self, mib: usize) -> String {
        const MIB: usize = 1 << 20;
        let mut rng = SplitMix64(0x5E1A_1B10_B000 + mib as u64);
        let mut hasher = Sha256::new();
        let mut sql = String::with_capacity(mib * (2 * MIB + 64) + 256);
        sql.push_str(
            "CREATE TABLE big_blob (id INT PRIMARY KEY, data LONGBLOB);\nSET @big_blob = X'';\n",
        );
        let mut chunk = vec![0u8; MIB];
        for _ in 0..mib {
            for word in chunk.chunks_mut(8) {
                word.copy_from_slice(&rng.next().to_le_bytes());
            }
            hasher.update(&chunk);
            sql.push_str("SET @big_blob = CONCAT(@big_blob, X'");
            sql.push_str(&hex::encode(&chunk));
            sql.push_str("');\n");
        }
        sql.push_str("INSERT INTO big_blob VALUES (1, @big_blob);\n");
        // CONCAT returns NULL (with only a warning) past max_allowed_packet:
        // check the length rather than trust the load.
        sql.push_str("SELECT LENGTH(data) FROM big_blob WHERE id = 1;\n");
        let out = self.env.mariadb(
            Some(&self.name),
            &["--batch", "--skip-column-names"],
            sql.into_bytes(),
        );
        let len = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            len,
            (mib * MIB).to_string(),
            "big_blob in {} has the wrong length; is max_allowed_packet on the server \
             smaller than {mib} MiB?",
            self.name
        );
        hex::encode(hasher.finalize())
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("SELMAI_TEST_KEEP_DB").is_some() {
            eprintln!("keeping database {} of a failed test", self.name);
            return;
        }
        // Best effort, and never a panic: this may run while a failed test
        // unwinds, where a second panic would abort the whole test binary.
        let _ = self
            .env
            .client("mariadb")
            .arg("--batch")
            .arg("--execute")
            .arg(format!("DROP DATABASE IF EXISTS `{}`", self.name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Removes what ties the Sakila files to a database named `sakila`, and
/// fails if a newer copy of the files does it in a way this does not know.
fn rewrite_sakila(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim().to_ascii_uppercase();
        if matches!(
            trimmed.as_str(),
            "DROP SCHEMA IF EXISTS SAKILA;" | "CREATE SCHEMA SAKILA;" | "USE SAKILA;"
        ) {
            continue;
        }
        // Only the actor_info view qualifies names, always as " sakila.x".
        out.push_str(&line.replace(" sakila.", " "));
        out.push('\n');
    }
    let lower = out.to_ascii_lowercase();
    for needle in [
        "use sakila",
        "schema sakila",
        "database sakila",
        " sakila.",
        "`sakila`",
    ] {
        assert!(
            !lower.contains(needle),
            "Sakila file still mentions {needle:?} after rewriting; update rewrite_sakila"
        );
    }
    out
}

/// A tiny deterministic generator (SplitMix64): the blob must be the same on
/// every run and every machine, and needs no cryptographic quality.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// `mariadb-dump` of database `db` (schema, data, routines, events,
/// triggers), normalised so that dumps of two databases with different
/// names compare equal: the header lines naming host, database and server
/// version are dropped, and the database name in comments becomes `<db>`.
/// Binary values are hex (`--hex-blob`), so the text is valid UTF-8.
pub fn mariadb_dump(db: impl AsRef<str>) -> String {
    let db = db.as_ref();
    let out = dump_command(db)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run mariadb-dump: {e}"));
    if !out.status.success() {
        panic!(
            "mariadb-dump of {db}: {}\nstderr: {}",
            out.status,
            tail(&out.stderr)
        );
    }
    let text = String::from_utf8(out.stdout)
        .unwrap_or_else(|e| panic!("mariadb-dump of {db} is not UTF-8: {e}"));
    normalise_dump(&text, db)
}

fn dump_command(db: &str) -> Command {
    let mut cmd = db_env().client("mariadb-dump");
    cmd.args([
        "--skip-dump-date",
        "--hex-blob",
        "--routines",
        "--events",
        "--triggers",
        "--single-transaction",
        "--max-allowed-packet=1G",
        db,
    ]);
    cmd
}

fn normalise_dump(text: &str, db: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        if [
            "-- MariaDB dump ",
            "-- Host: ",
            "-- Server version",
            "-- Dump completed",
        ]
        .iter()
        .any(|p| line.starts_with(p))
        {
            continue;
        }
        if line.starts_with("--") {
            out.push_str(&line.replace(db, "<db>"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// Copies database `src` into the existing database `dst` the stock way,
/// `mariadb-dump src | mariadb dst`, streaming between the two processes.
pub fn copy_with_mariadb_dump(src: impl AsRef<str>, dst: impl AsRef<str>) {
    let (src, dst) = (src.as_ref(), dst.as_ref());
    let env = db_env();
    let mut dump = dump_command(src)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run mariadb-dump: {e}"));
    let mut load = env.client("mariadb");
    load.args(["--max-allowed-packet=1G", "--batch", dst]);
    let load = load
        .stdin(Stdio::from(dump.stdout.take().expect("stdout was piped")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run mariadb: {e}"))
        .wait_with_output()
        .expect("waiting for mariadb");
    let dump = dump.wait_with_output().expect("waiting for mariadb-dump");
    assert!(
        dump.status.success(),
        "mariadb-dump of {src}: {}\nstderr: {}",
        dump.status,
        tail(&dump.stderr)
    );
    assert!(
        load.status.success(),
        "mariadb loading the dump of {src} into {dst}: {}\nstderr: {}",
        load.status,
        tail(&load.stderr)
    );
}

/// Names of the base tables of `db` (no views, no sequences), sorted.
fn base_tables(db: &str) -> Vec<String> {
    // HEX() so that any table name (spaces, backticks, tabs) survives the
    // client's tab-separated output unambiguously.
    let out = db_env().exec(
        None,
        &format!(
            "SELECT HEX(TABLE_NAME) FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = '{db}' AND TABLE_TYPE = 'BASE TABLE' ORDER BY TABLE_NAME"
        ),
    );
    out.lines()
        .map(|h| {
            let bytes = hex::decode(h).expect("HEX() output is hex");
            String::from_utf8(bytes).expect("table names are UTF-8")
        })
        .collect()
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// Runs one single-row statement per table of `db`, in one client session,
/// and maps each table to the last column of its row.
fn per_table(db: &str, statement: impl Fn(&str) -> String) -> BTreeMap<String, String> {
    let tables = base_tables(db);
    if tables.is_empty() {
        return BTreeMap::new();
    }
    let sql: String = tables.iter().map(|t| statement(&quote_ident(t))).collect();
    let out = db_env().exec(Some(db), &sql);
    let values: Vec<&str> = out.lines().collect();
    assert_eq!(
        values.len(),
        tables.len(),
        "expected one row per table of {db}, got:\n{out}"
    );
    tables
        .into_iter()
        .zip(values)
        .map(|(t, line)| (t, line.rsplit('\t').next().unwrap_or("").to_owned()))
        .collect()
}

/// `CHECKSUM TABLE` of every base table of `db`, by table name. Unlike the
/// text of a dump, the checksum sees the stored bytes: a FLOAT that prints
/// the same but differs in its last bit changes it.
pub fn checksums(db: impl AsRef<str>) -> BTreeMap<String, String> {
    per_table(db.as_ref(), |t| format!("CHECKSUM TABLE {t};\n"))
}

/// `COUNT(*)` of every base table of `db`, by table name.
pub fn row_counts(db: impl AsRef<str>) -> BTreeMap<String, u64> {
    per_table(db.as_ref(), |t| format!("SELECT COUNT(*) FROM {t};\n"))
        .into_iter()
        .map(|(t, n)| {
            let n = n
                .parse()
                .unwrap_or_else(|_| panic!("COUNT(*) of {t} gave {n:?}"));
            (t, n)
        })
        .collect()
}

/// How two databases differ, as found by [`compare_databases`]. Each part is
/// empty when that check passed.
#[derive(Debug, Default)]
pub struct Mismatch {
    /// The two databases compared.
    pub names: (String, String),
    /// Default character set and collation, when they differ.
    pub defaults: Option<(String, String)>,
    /// A unified-style excerpt around the first differing lines of the
    /// normalised dumps.
    pub dump_diff: Option<String>,
    /// Tables whose `CHECKSUM TABLE` differs (None: table missing on that side).
    pub checksums: BTreeMap<String, (Option<String>, Option<String>)>,
    /// Tables whose row count differs (None: table missing on that side).
    pub row_counts: BTreeMap<String, (Option<u64>, Option<u64>)>,
}

impl Mismatch {
    fn is_empty(&self) -> bool {
        self.defaults.is_none()
            && self.dump_diff.is_none()
            && self.checksums.is_empty()
            && self.row_counts.is_empty()
    }

    /// Names of the tables whose checksum differs.
    pub fn checksum_tables(&self) -> Vec<&str> {
        self.checksums.keys().map(String::as_str).collect()
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = &self.names;
        writeln!(f, "databases {a} (-) and {b} (+) differ")?;
        if let Some((da, db)) = &self.defaults {
            writeln!(f, "default charset/collation: - {da} + {db}")?;
        }
        for (t, (ca, cb)) in &self.checksums {
            writeln!(f, "CHECKSUM TABLE {t}: - {ca:?} + {cb:?}")?;
        }
        for (t, (na, nb)) in &self.row_counts {
            writeln!(f, "rows in {t}: - {na:?} + {nb:?}")?;
        }
        match &self.dump_diff {
            Some(diff) => write!(f, "mariadb-dump differs:\n{diff}"),
            None => writeln!(f, "mariadb-dump output is identical"),
        }
    }
}

fn diff_maps<V: PartialEq + Clone>(
    a: &BTreeMap<String, V>,
    b: &BTreeMap<String, V>,
) -> BTreeMap<String, (Option<V>, Option<V>)> {
    a.keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| (k.clone(), (a.get(k).cloned(), b.get(k).cloned())))
        .collect()
}

/// Compares databases `a` and `b` on everything a restore is judged by:
/// default charset and collation, the normalised `mariadb-dump`, and the
/// checksum and row count of every base table.
pub fn compare_databases(a: impl AsRef<str>, b: impl AsRef<str>) -> Result<(), Box<Mismatch>> {
    let (a, b) = (a.as_ref(), b.as_ref());
    let defaults = |db: &str| {
        db_env()
            .exec(
                None,
                &format!(
                    "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME \
                     FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{db}'"
                ),
            )
            .trim()
            .to_owned()
    };
    let (def_a, def_b) = (defaults(a), defaults(b));
    let mismatch = Mismatch {
        names: (a.to_owned(), b.to_owned()),
        defaults: (def_a != def_b).then_some((def_a, def_b)),
        dump_diff: first_difference(&mariadb_dump(a), &mariadb_dump(b)),
        checksums: diff_maps(&checksums(a), &checksums(b)),
        row_counts: diff_maps(&row_counts(a), &row_counts(b)),
    };
    if mismatch.is_empty() {
        Ok(())
    } else {
        Err(Box::new(mismatch))
    }
}

/// Panics, showing how they differ, unless databases `a` and `b` are the
/// same by [`compare_databases`].
#[track_caller]
pub fn assert_same_database(a: impl AsRef<str>, b: impl AsRef<str>) {
    if let Err(mismatch) = compare_databases(a, b) {
        panic!("{mismatch}");
    }
}

/// Lines of context shown around a difference, and at most how many
/// differing lines of each side are shown.
const CONTEXT: usize = 3;
const MAX_SHOWN: usize = 12;
/// Characters shown of one line: dump lines holding a whole extended INSERT
/// run to megabytes, so long lines are cut to a window around the first
/// differing character.
const LINE_WINDOW: usize = 240;

/// A unified-diff-style excerpt of the first region where `a` and `b`
/// differ (after their common first and last lines), or None when equal.
fn first_difference(a: &str, b: &str) -> Option<String> {
    if a == b {
        return None;
    }
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let prefix = la.iter().zip(&lb).take_while(|(x, y)| x == y).count();
    let suffix = la[prefix..]
        .iter()
        .rev()
        .zip(lb[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (only_a, only_b) = (
        &la[prefix..la.len() - suffix],
        &lb[prefix..lb.len() - suffix],
    );
    // Where the first differing lines first differ: the window of every
    // shown line is placed there, so `-` and `+` lines line up.
    let column = match (only_a.first(), only_b.first()) {
        (Some(x), Some(y)) => x
            .char_indices()
            .zip(y.chars())
            .find(|((_, cx), cy)| cx != cy)
            .map_or(x.len().min(y.len()), |((i, _), _)| i),
        _ => 0,
    };
    let start = prefix.saturating_sub(CONTEXT);
    let mut out = format!(
        "@@ -{},{} +{},{} @@{}\n",
        prefix + 1,
        only_a.len(),
        prefix + 1,
        only_b.len(),
        if column > 0 {
            format!(" (lines cut to {LINE_WINDOW} chars around column {column})")
        } else {
            String::new()
        }
    );
    for line in &la[start..prefix] {
        out.push_str(&format!(" {}\n", clip(line, column)));
    }
    for (sign, lines) in [('-', only_a), ('+', only_b)] {
        for line in lines.iter().take(MAX_SHOWN) {
            out.push_str(&format!("{sign}{}\n", clip(line, column)));
        }
        if lines.len() > MAX_SHOWN {
            out.push_str(&format!(
                "{sign}... {} more lines\n",
                lines.len() - MAX_SHOWN
            ));
        }
    }
    for line in la[la.len() - suffix..].iter().take(CONTEXT) {
        out.push_str(&format!(" {}\n", clip(line, column)));
    }
    Some(out)
}

/// At most [`LINE_WINDOW`] characters of `line`, starting a little before
/// byte offset `column`.
fn clip(line: &str, column: usize) -> String {
    if line.chars().count() <= LINE_WINDOW {
        return line.to_owned();
    }
    let from = column.saturating_sub(LINE_WINDOW / 3);
    let from = (0..=from)
        .rev()
        .find(|i| line.is_char_boundary(*i))
        .unwrap_or(0);
    let shown: String = line[from..].chars().take(LINE_WINDOW).collect();
    let before = if from > 0 { "…" } else { "" };
    let after = if from + shown.len() < line.len() {
        "…"
    } else {
        ""
    };
    format!("{before}{shown}{after}")
}
