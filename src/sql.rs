//! The streaming SQL statement splitter used by `restore` (execute statements
//! one at a time) and `verify` (split to the end to prove a file is
//! well-formed).
//!
//! It reads what `mariadb-dump` writes, and our own dumps, which use the same
//! dialect: plain SQL, `DELIMITER ;;` around compound statements, executable
//! comments (`/*!40101 ... */`, `/*M!100616 ... */`) and the sandbox-mode
//! first line (`/*M!999999\- enable the sandbox mode */`). It splits where the
//! `mariadb` command-line client would, so a file that the client restores is
//! restored statement for statement.
//!
//! Responsible for: finding statement boundaries in a byte stream (quotes,
//! comments, `DELIMITER` lines, the sandbox-mode line), numbering statements
//! and reporting the line each one starts on, and rejecting input that ends
//! inside a quote or comment.
//!
//! Not responsible for: decompression (the reader sits behind a decoder from
//! `codec`), executing statements or deciding which server errors are fatal
//! (`restore`), and other `mariadb` client commands (`source`, `use` without a
//! delimiter, `\g`, ...), which dumps do not contain. It never validates SQL
//! beyond its lexical structure, and never requires UTF-8: string literals
//! may hold raw binary.
//!
//! Two layers: [`Splitter`] is the push-based core (bytes in, statements out,
//! no I/O, so it is tested exhaustively with every chunk boundary), and
//! [`StatementReader`] drives it from any tokio `AsyncRead`.

mod split;

use std::collections::VecDeque;

use tokio::io::{AsyncRead, AsyncReadExt};

pub use split::Splitter;

/// How much the reader asks of its input at a time. Big enough that the
/// per-read overhead disappears next to scanning, small enough to stay in
/// cache.
const READ_CHUNK: usize = 128 * 1024;

/// One complete statement, without its delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The statement's bytes as written (comments inside it included),
    /// without leading and trailing whitespace.
    pub sql: Vec<u8>,
    /// 1-based position among the statements returned, i.e. the statements
    /// that will be executed (skipped empty ones and `DELIMITER` lines do not
    /// count).
    pub number: u64,
    /// 1-based line of the input where the statement starts.
    pub line: u64,
}

impl Statement {
    /// A short, printable form for logs and error messages: lossy UTF-8,
    /// whitespace runs collapsed to one space, control characters shown as
    /// U+FFFD, and at most `max` characters followed by `...` when cut.
    pub fn excerpt(&self, max: usize) -> String {
        let mut out = String::with_capacity(max.min(self.sql.len()) + 3);
        let mut count = 0usize;
        let mut space_pending = false;
        // utf8_chunks is lazy, so a 1 GB INSERT costs only the prefix shown.
        for chunk in self.sql.utf8_chunks() {
            let invalid = (!chunk.invalid().is_empty()).then_some(char::REPLACEMENT_CHARACTER);
            for c in chunk.valid().chars().chain(invalid) {
                if c.is_whitespace() {
                    space_pending = count > 0;
                    continue;
                }
                let needed = if space_pending { 2 } else { 1 };
                if count + needed > max {
                    out.push_str("...");
                    return out;
                }
                if space_pending {
                    out.push(' ');
                    count += 1;
                    space_pending = false;
                }
                // A dump's binary data must not reach a terminal as escape codes.
                out.push(if c.is_control() {
                    char::REPLACEMENT_CHARACTER
                } else {
                    c
                });
                count += 1;
            }
        }
        out
    }
}

/// Why the input could not be split into statements.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// Reading the input failed (for a compressed file, this is also where a
    /// corrupt or truncated compressed stream shows up).
    #[error("could not read the SQL input; the file may be truncated or corrupted")]
    Io(#[from] std::io::Error),
    /// The input ended inside a quote or comment.
    #[error(
        "the SQL input ends inside an unterminated {what} that starts at line {line}; \
         the dump is probably truncated (was the backup interrupted?)"
    )]
    Unterminated {
        /// `"string literal"`, `"quoted identifier"` or `"comment"`.
        what: &'static str,
        /// 1-based line where the quote or comment opens.
        line: u64,
    },
    /// A `DELIMITER` line the `mariadb` client would reject too.
    #[error("invalid DELIMITER command at line {line}: {reason}; fix that line of the dump")]
    InvalidDelimiter {
        /// 1-based line of the `DELIMITER` command.
        line: u64,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Splits the SQL read from any tokio `AsyncRead` (typically a decompressor)
/// into statements, one [`next`](Self::next) at a time.
///
/// Memory use is bounded by the largest statement plus one read chunk, so
/// multi-gigabyte dumps stream through.
#[derive(Debug)]
pub struct StatementReader<R> {
    inner: R,
    splitter: Splitter,
    chunk: Box<[u8]>,
    ready: VecDeque<Statement>,
    scratch: Vec<Statement>,
    bytes_read: u64,
    done: bool,
}

impl<R: AsyncRead + Unpin> StatementReader<R> {
    /// Reads SQL from `inner`, starting with the delimiter `;`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            splitter: Splitter::new(),
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            ready: VecDeque::new(),
            scratch: Vec::new(),
            bytes_read: 0,
            done: false,
        }
    }

    /// The next statement, `Ok(None)` at the end of the input.
    ///
    /// Statements before a malformed spot are all returned before its error.
    /// Cancel-safe: dropping the future loses no input.
    pub async fn next(&mut self) -> Result<Option<Statement>, SplitError> {
        loop {
            if let Some(statement) = self.ready.pop_front() {
                return Ok(Some(statement));
            }
            if self.done {
                return Ok(None);
            }
            if self.splitter.has_error() {
                // Stop reading: the rest of a multi-GB file cannot make it valid.
                self.done = true;
                return self.splitter.finish();
            }
            let n = self.inner.read(&mut self.chunk).await?;
            if n == 0 {
                self.done = true;
                return self.splitter.finish();
            }
            self.bytes_read += n as u64;
            self.splitter.push(&self.chunk[..n], &mut self.scratch);
            self.ready.extend(self.scratch.drain(..));
        }
    }

    /// Bytes read from the input so far (uncompressed SQL when the input is
    /// a decoder).
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// Gives the input back, e.g. to check it was read to its end.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

#[cfg(test)]
mod tests {
    //! The reader, the excerpt, and splitting real files: the Sakila sample
    //! and a committed `mariadb-dump` fixture. Lexical cases are in `split`.

    use std::path::{Path, PathBuf};

    use rstest::rstest;

    use super::*;

    fn statement(sql: &[u8]) -> Statement {
        Statement {
            sql: sql.to_vec(),
            number: 1,
            line: 1,
        }
    }

    #[rstest]
    #[case::short(b"SELECT 1", 20, "SELECT 1")]
    #[case::exact_fit(b"SELECT 1", 8, "SELECT 1")]
    #[case::cut(b"SELECT 12345", 8, "SELECT 1...")]
    #[case::cut_at_space(b"SELECT 12345", 6, "SELECT...")]
    #[case::collapsed(b"INSERT\n  INTO\tt\r\n VALUES (1)", 100, "INSERT INTO t VALUES (1)")]
    #[case::multibyte(
        b"SELECT '\xc5\xbc\xc3\xb3\xc5\x82\xc4\x87'",
        11,
        "SELECT '\u{17c}\u{f3}\u{142}..."
    )]
    #[case::invalid_utf8(b"SELECT '\xff\xfe'", 20, "SELECT '\u{fffd}\u{fffd}'")]
    #[case::control(b"SELECT '\x00\x1b[31m'", 20, "SELECT '\u{fffd}\u{fffd}[31m'")]
    #[case::zero(b"SELECT 1", 0, "...")]
    fn excerpt(#[case] sql: &[u8], #[case] max: usize, #[case] expected: &str) {
        assert_eq!(statement(sql).excerpt(max), expected);
    }

    /// An `AsyncRead` that hands out its data a few bytes at a time, as a
    /// decompressor may.
    struct Trickle {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let end = self
                .at
                .saturating_add(self.step)
                .min(self.data.len())
                .min(self.at + buf.remaining());
            buf.put_slice(&self.data[self.at..end]);
            self.at = end;
            std::task::Poll::Ready(Ok(()))
        }
    }

    async fn read_all<R: AsyncRead + Unpin>(
        reader: &mut StatementReader<R>,
    ) -> Result<Vec<Statement>, SplitError> {
        let mut all = Vec::new();
        while let Some(statement) = reader.next().await? {
            all.push(statement);
        }
        Ok(all)
    }

    #[rstest]
    #[case::whole(usize::MAX)]
    #[case::bytes(1)]
    #[case::odd(7)]
    #[tokio::test]
    async fn reader_returns_every_statement(#[case] step: usize) {
        let data = b"SELECT 1;\nDELIMITER ;;\nCREATE TRIGGER t BEGIN SET @a=';'; END;;\nDELIMITER ;\nSELECT 2".to_vec();
        let mut reader = StatementReader::new(Trickle { data, at: 0, step });
        let all = read_all(&mut reader).await.unwrap();
        let sql: Vec<_> = all
            .iter()
            .map(|s| String::from_utf8_lossy(&s.sql).into_owned())
            .collect();
        assert_eq!(
            sql,
            [
                "SELECT 1",
                "CREATE TRIGGER t BEGIN SET @a=';'; END",
                "SELECT 2"
            ]
        );
        assert_eq!(
            all.iter().map(|s| (s.number, s.line)).collect::<Vec<_>>(),
            [(1, 1), (2, 3), (3, 5)]
        );
        assert_eq!(reader.bytes_read(), 84);
        assert_eq!(reader.next().await.unwrap(), None, "stays at the end");
    }

    #[tokio::test]
    async fn reader_reports_statements_before_the_error() {
        let data = b"SELECT 1;\nSELECT 'unterminated;\n".to_vec();
        let mut reader = StatementReader::new(&data[..]);
        assert_eq!(reader.next().await.unwrap().unwrap().sql, b"SELECT 1");
        let err = reader.next().await.unwrap_err();
        assert!(
            matches!(
                err,
                SplitError::Unterminated {
                    what: "string literal",
                    line: 2
                }
            ),
            "{err:?}"
        );
        assert_eq!(reader.next().await.unwrap(), None);
    }

    #[tokio::test]
    async fn reader_stops_at_a_bad_delimiter_line_without_reading_on() {
        let mut data = b"SELECT 1;\nDELIMITER\nSELECT 2;\n".to_vec();
        data.extend(std::iter::repeat_n(b'x', 4 * READ_CHUNK));
        let mut reader = StatementReader::new(&data[..]);
        assert_eq!(reader.next().await.unwrap().unwrap().sql, b"SELECT 1");
        let err = reader.next().await.unwrap_err();
        assert!(
            matches!(err, SplitError::InvalidDelimiter { line: 2, .. }),
            "{err:?}"
        );
        assert_eq!(reader.bytes_read(), READ_CHUNK as u64);
    }

    #[tokio::test]
    async fn reader_passes_io_errors_on() {
        let data = b"SELECT 1;\nSELECT".to_vec();
        let failing = tokio::io::AsyncReadExt::chain(&data[..], FailingRead);
        let mut reader = StatementReader::new(failing);
        assert_eq!(reader.next().await.unwrap().unwrap().sql, b"SELECT 1");
        assert!(matches!(reader.next().await, Err(SplitError::Io(_))));
    }

    struct FailingRead;

    impl AsyncRead for FailingRead {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "corrupt deflate stream",
            )))
        }
    }

    #[test]
    fn error_messages_say_what_and_where() {
        let err = SplitError::Unterminated {
            what: "string literal",
            line: 12,
        };
        assert_eq!(
            err.to_string(),
            "the SQL input ends inside an unterminated string literal that starts at line 12; \
             the dump is probably truncated (was the backup interrupted?)"
        );
        let err = SplitError::InvalidDelimiter {
            line: 3,
            reason: "DELIMITER must be followed by the new delimiter",
        };
        assert_eq!(
            err.to_string(),
            "invalid DELIMITER command at line 3: DELIMITER must be followed by the new delimiter; fix that line of the dump"
        );
    }

    fn split_file(path: &Path) -> Vec<Statement> {
        let data =
            std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let mut splitter = Splitter::new();
        let mut all = Vec::new();
        // Chunks of an awkward size, so boundaries land inside tokens too.
        for chunk in data.chunks(4093) {
            splitter.push(chunk, &mut all);
        }
        all.extend(splitter.finish().unwrap());
        assert_eq!(splitter.bytes_consumed(), data.len() as u64);
        all
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn sakila(file: &str) -> PathBuf {
        // shared/ sits beside the repository, on developer machines and in CI.
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/data/sakila")
            .join(file)
    }

    fn first_words(all: &[Statement], n: usize) -> Vec<String> {
        all.iter()
            .map(|s| {
                String::from_utf8_lossy(&s.sql)
                    .split_whitespace()
                    .take(n)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// The expected counts come from the file structure, independently of the
    /// splitter: with the delimiter tracked through the `DELIMITER` lines, the
    /// statements are exactly the non-comment lines ending in the current
    /// delimiter, as no string or comment in these files spans a line end
    /// after a delimiter. Counted with (`LC_ALL=C`):
    ///
    /// ```text
    /// awk -v d=';' '{sub(/\r$/,""); t=$0; gsub(/^[ \t]+|[ \t]+$/,"",t)}
    ///   toupper(substr(t,1,10))=="DELIMITER " {d=substr(t,11); next}
    ///   t ~ /^(--|#)/ {next}
    ///   length(t)>=length(d) && substr(t,length(t)-length(d)+1)==d {n++}
    ///   END {print n}' FILE
    /// ```
    ///
    /// Schema: 6 set-up statements, 16 tables, 1 `/*!50610 ALTER TABLE */`, 3
    /// triggers, 7 views, 6 routines and 3 closing `SET`s = 42, with 14
    /// `DELIMITER` lines.
    #[test]
    fn splits_the_sakila_schema() {
        let all = split_file(&sakila("sakila-schema.sql"));
        assert_eq!(all.len(), 42);
        let words = first_words(&all, 2);
        let count = |prefix: &str| words.iter().filter(|w| w.starts_with(prefix)).count();
        assert_eq!(count("CREATE TABLE"), 16);
        assert_eq!(count("CREATE TRIGGER"), 3);
        assert_eq!(count("CREATE VIEW") + count("CREATE DEFINER"), 7);
        assert_eq!(count("CREATE PROCEDURE"), 3);
        assert_eq!(count("CREATE FUNCTION"), 3);
        assert_eq!(
            (all[0].number, all[0].line),
            (1, 18),
            "the licence comment is skipped"
        );
        let last = all.last().unwrap();
        assert_eq!(
            (last.number, last.line, &last.sql[..]),
            (42, 648, &b"SET UNIQUE_CHECKS=@OLD_UNIQUE_CHECKS"[..])
        );
        // Routine bodies keep their inner `;` and comments, lose the custom delimiter.
        let balance = all
            .iter()
            .find(|s| s.sql.starts_with(b"CREATE FUNCTION get_customer_balance"))
            .unwrap();
        assert_eq!(balance.line, 520);
        assert!(balance.sql.ends_with(b"END"), "{}", balance.excerpt(80));
        assert!(contains(&balance.sql, b"#OK, WE NEED"));
    }

    /// 61 = the non-comment lines ending in `;` (a CRLF file, no
    /// `DELIMITER`): 3 set-up `SET`s and `USE`, per table `SET AUTOCOMMIT=0`
    /// and `COMMIT` (15 each), 17 INSERTs, 3 single-statement triggers, `LOCK
    /// TABLES`, 2 `/*!40000 ALTER TABLE */` and `UNLOCK TABLES` around
    /// `staff`, and 3 closing `SET`s.
    #[test]
    fn splits_the_sakila_data() {
        let all = split_file(&sakila("sakila-data.sql"));
        assert_eq!(all.len(), 61);
        let words = first_words(&all, 2);
        let count = |prefix: &str| words.iter().filter(|w| w.starts_with(prefix)).count();
        assert_eq!(count("COMMIT"), 15);
        assert_eq!(count("INSERT INTO"), 17);
        assert_eq!(count("CREATE TRIGGER"), 3);
        assert!(all
            .iter()
            .all(|s| !s.sql.ends_with(b";") && !s.sql.ends_with(b"\r")));
        let staff = all
            .iter()
            .find(|s| s.sql.starts_with(b"INSERT INTO `staff`"))
            .unwrap();
        assert!(
            staff.sql.len() > 30_000,
            "the PNG blob stays in one statement"
        );
    }

    /// `tests/fixtures/mariadb-dump-routines.sql`: `mariadb-dump --routines
    /// --events --triggers` of a small database from MariaDB 10.11 (its
    /// source and how to regenerate it are in
    /// `mariadb-dump-routines.source.sql`). 128 statements by the same awk
    /// count as for Sakila; the sandbox-mode first line is not one of them.
    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/mariadb-dump-routines.sql")
    }

    #[test]
    fn splits_a_real_mariadb_dump() {
        let all = split_file(&fixture());
        assert_eq!(all.len(), 128);
        let first = &all[0];
        assert_eq!(
            (first.line, &first.sql[..]),
            (
                8,
                &b"/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */"[..]
            )
        );
        let find = |prefix: &[u8]| {
            all.iter()
                .find(|s| s.sql.starts_with(prefix))
                .unwrap_or_else(|| {
                    panic!(
                        "no statement starts with {}",
                        String::from_utf8_lossy(prefix)
                    )
                })
        };
        let trigger = find(b"/*!50003 CREATE*/ /*!50017 DEFINER");
        assert!(
            trigger.sql.ends_with(b"END \n*/"),
            "{}",
            trigger.excerpt(200)
        );
        assert!(contains(&trigger.sql, b"SET @x = 'it''s ;; here';"));
        let event = find(b"/*!50106 CREATE*/ /*!50117 DEFINER");
        assert!(event.sql.ends_with(b"END \n*/"));
        let function = find(b"CREATE DEFINER=`selmai_test`@`localhost` FUNCTION `f_twice`");
        assert!(function.sql.ends_with(b"END"));
        let procedure = find(b"CREATE DEFINER=`selmai_test`@`localhost` PROCEDURE `p_count`");
        assert!(procedure.sql.ends_with(b"END"));
        // Raw binary and every quoting trick survive byte for byte.
        let rows = find(b"INSERT INTO `odd;name` VALUES");
        assert!(contains(&rows.sql, b"'\\0\xff\\r\\n\\';'"));
        assert!(rows
            .sql
            .ends_with(b"(6,'after trigger',NULL,NULL,'2026-11-24 05:49:07')"));
        let numbers: Vec<u64> = all.iter().map(|s| s.number).collect();
        assert_eq!(numbers, (1..=128).collect::<Vec<_>>());
    }

    /// What restore does with `mariadb-dump | gzip`: the reader behind the
    /// codec's gzip decoder gives the same statements as splitting the plain
    /// file, and a truncated `.gz` is an error, not a shorter restore.
    #[tokio::test]
    async fn reads_a_gzipped_dump_through_the_codec() {
        use tokio::io::AsyncWriteExt;

        use crate::format::codec::Compression;

        let sql = std::fs::read(fixture()).unwrap();
        let mut encoder = async_compression::tokio::write::GzipEncoder::new(Vec::new());
        encoder.write_all(&sql).await.unwrap();
        encoder.shutdown().await.unwrap();
        let gz = encoder.into_inner();

        let decoder = Compression::Gzip(6).decoder(std::io::Cursor::new(gz.clone()));
        let mut reader = StatementReader::new(decoder);
        assert_eq!(read_all(&mut reader).await.unwrap(), split_file(&fixture()));
        assert_eq!(reader.bytes_read(), sql.len() as u64);

        let truncated = gz[..gz.len() / 2].to_vec();
        let decoder = Compression::Gzip(6).decoder(std::io::Cursor::new(truncated));
        let err = read_all(&mut StatementReader::new(decoder))
            .await
            .unwrap_err();
        assert!(matches!(err, SplitError::Io(_)), "{err:?}");
    }
}
