//! Turning one row of text-protocol values into SQL literals, bit-exactly.
//!
//! The text protocol hands us every value as raw bytes, which we copy as
//! they are whenever that is exact: numbers (FLOAT is selected as DOUBLE
//! upstream), temporal values (session time zone is UTC) and text
//! (utf8mb4, escaped). Binary strings, BIT and GEOMETRY become hex literals.
//! Values larger than the configured limit are assembled in a user variable
//! over several statements, so no statement exceeds a small packet.

use mysql_async::consts::ColumnType as T;
use mysql_async::{Column, Value};

/// The `binary` character set id: a string column holding bytes, not text.
const BINARY_CHARSET: u16 = 63;

/// How the values of one result column are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnEncoding {
    /// Copied as is (numbers).
    Raw,
    /// Copied as is, but `-0` is written `-0e0` so the sign of zero survives.
    RawDouble,
    /// A quoted, escaped string literal (text, temporal values).
    Quoted,
    /// A hex literal (`0x...`).
    Hex,
}

impl ColumnEncoding {
    /// The encoding for a result column, from its type and character set.
    pub fn of(c: &Column) -> Self {
        match c.column_type() {
            T::MYSQL_TYPE_FLOAT | T::MYSQL_TYPE_DOUBLE => ColumnEncoding::RawDouble,
            T::MYSQL_TYPE_DECIMAL
            | T::MYSQL_TYPE_NEWDECIMAL
            | T::MYSQL_TYPE_TINY
            | T::MYSQL_TYPE_SHORT
            | T::MYSQL_TYPE_LONG
            | T::MYSQL_TYPE_LONGLONG
            | T::MYSQL_TYPE_INT24
            | T::MYSQL_TYPE_YEAR
            | T::MYSQL_TYPE_NULL => ColumnEncoding::Raw,
            T::MYSQL_TYPE_BIT | T::MYSQL_TYPE_GEOMETRY => ColumnEncoding::Hex,
            T::MYSQL_TYPE_DATE
            | T::MYSQL_TYPE_NEWDATE
            | T::MYSQL_TYPE_TIME
            | T::MYSQL_TYPE_TIME2
            | T::MYSQL_TYPE_DATETIME
            | T::MYSQL_TYPE_DATETIME2
            | T::MYSQL_TYPE_TIMESTAMP
            | T::MYSQL_TYPE_TIMESTAMP2 => ColumnEncoding::Quoted,
            _ if c.character_set() == BINARY_CHARSET => ColumnEncoding::Hex,
            _ => ColumnEncoding::Quoted,
        }
    }
}

/// One encoded row: the `(...)` tuple, and for large values the statements
/// to run before (set variables) and after (clear them).
pub struct EncodedRow<'a> {
    /// `(v1, v2, ...)`
    pub tuple: &'a [u8],
    /// `SET @selmai_vN = ...;` statements, empty when no value is large.
    pub prelude: &'a [u8],
    /// `SET @selmai_vN = NULL;` statements.
    pub cleanup: &'a [u8],
}

/// Reusable row encoder for one result set.
pub struct RowEncoder<'e> {
    encodings: &'e [ColumnEncoding],
    large: usize,
    tuple: Vec<u8>,
    prelude: Vec<u8>,
    cleanup: Vec<u8>,
}

impl<'e> RowEncoder<'e> {
    /// An encoder for columns with these encodings; values over `large` bytes go through variables.
    pub fn new(encodings: &'e [ColumnEncoding], large: usize) -> Self {
        RowEncoder {
            encodings,
            large: large.max(64),
            tuple: Vec::with_capacity(1024),
            prelude: Vec::new(),
            cleanup: Vec::new(),
        }
    }

    /// Encode one row of raw values.
    pub fn encode(&mut self, values: Vec<Option<Value>>) -> EncodedRow<'_> {
        self.tuple.clear();
        self.prelude.clear();
        self.cleanup.clear();
        self.tuple.push(b'(');
        for (i, v) in values.into_iter().enumerate() {
            if i > 0 {
                self.tuple.push(b',');
            }
            let bytes = match v {
                Some(Value::Bytes(b)) => b,
                Some(Value::NULL) | None => {
                    self.tuple.extend_from_slice(b"NULL");
                    continue;
                }
                // The text protocol only yields bytes; anything else is
                // written in its SQL form rather than dropped.
                Some(other) => {
                    self.tuple.extend_from_slice(other.as_sql(false).as_bytes());
                    continue;
                }
            };
            let enc = self
                .encodings
                .get(i)
                .copied()
                .unwrap_or(ColumnEncoding::Quoted);
            match enc {
                ColumnEncoding::Raw => self.tuple.extend_from_slice(&bytes),
                ColumnEncoding::RawDouble => {
                    if bytes == b"-0" {
                        self.tuple.extend_from_slice(b"-0e0");
                    } else {
                        self.tuple.extend_from_slice(&bytes);
                    }
                }
                ColumnEncoding::Quoted | ColumnEncoding::Hex if bytes.len() > self.large => {
                    let var = format!("@selmai_v{i}");
                    let mut first = true;
                    for chunk in chunks(&bytes, self.large, enc == ColumnEncoding::Quoted) {
                        if first {
                            self.prelude
                                .extend_from_slice(format!("SET {var} = ").as_bytes());
                        } else {
                            self.prelude.extend_from_slice(
                                format!("SET {var} = CONCAT({var}, ").as_bytes(),
                            );
                        }
                        literal(&mut self.prelude, chunk, enc);
                        self.prelude
                            .extend_from_slice(if first { b";\n" } else { b");\n" });
                        first = false;
                    }
                    self.tuple.extend_from_slice(var.as_bytes());
                    self.cleanup
                        .extend_from_slice(format!("SET {var} = NULL;\n").as_bytes());
                }
                ColumnEncoding::Quoted | ColumnEncoding::Hex => {
                    literal(&mut self.tuple, &bytes, enc)
                }
            }
        }
        self.tuple.push(b')');
        EncodedRow {
            tuple: &self.tuple,
            prelude: &self.prelude,
            cleanup: &self.cleanup,
        }
    }
}

fn literal(out: &mut Vec<u8>, bytes: &[u8], enc: ColumnEncoding) {
    if enc == ColumnEncoding::Hex && !bytes.is_empty() {
        hex_literal(out, bytes);
    } else {
        quoted_literal(out, bytes);
    }
}

/// Split `bytes` into pieces of at most `max` bytes; text is cut only
/// between UTF-8 characters so every piece is valid on its own.
fn chunks(bytes: &[u8], max: usize, text: bool) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        if text && end < rest.len() {
            while end > 1 && (rest[end] & 0xC0) == 0x80 {
                end -= 1;
            }
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// `0x` followed by the bytes in hex.
pub fn hex_literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(b"0x");
    let start = out.len();
    out.resize(start + bytes.len() * 2, 0);
    hex::encode_to_slice(bytes, &mut out[start..]).expect("buffer sized for hex");
}

/// A single-quoted literal with the escapes `mariadb-dump` uses.
pub fn quoted_literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'\'');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            0 => b"\\0",
            b'\'' => b"\\'",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            0x1a => b"\\Z",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'\'');
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case(b"plain", "'plain'")]
    #[case(b"it's", "'it\\'s'")]
    #[case(b"a\\b", "'a\\\\b'")]
    #[case(b"\0\n\r\x1a", "'\\0\\n\\r\\Z'")]
    #[case(b"", "''")]
    #[case("é😀".as_bytes(), "'é😀'")]
    fn quoting(#[case] input: &[u8], #[case] want: &str) {
        let mut out = Vec::new();
        quoted_literal(&mut out, input);
        assert_eq!(String::from_utf8(out).unwrap(), want);
    }

    #[test]
    fn hex() {
        let mut out = Vec::new();
        hex_literal(&mut out, &[0, 0xff, 0x1a]);
        assert_eq!(out, b"0x00ff1a");
    }

    #[test]
    fn row_with_null_empty_and_large_values() {
        let encs = [
            ColumnEncoding::Raw,
            ColumnEncoding::Quoted,
            ColumnEncoding::Hex,
            ColumnEncoding::Hex,
            ColumnEncoding::RawDouble,
        ];
        let mut e = RowEncoder::new(&encs, 64);
        let big = vec![0xabu8; 150];
        let row = e.encode(vec![
            Some(Value::Bytes(b"42".to_vec())),
            Some(Value::NULL),
            Some(Value::Bytes(Vec::new())),
            Some(Value::Bytes(big)),
            Some(Value::Bytes(b"-0".to_vec())),
        ]);
        assert_eq!(row.tuple, b"(42,NULL,'',@selmai_v3,-0e0)");
        let prelude = String::from_utf8(row.prelude.to_vec()).unwrap();
        assert_eq!(prelude.lines().count(), 3, "{prelude}");
        assert!(prelude.starts_with("SET @selmai_v3 = 0xabab"));
        assert!(prelude
            .lines()
            .nth(1)
            .unwrap()
            .starts_with("SET @selmai_v3 = CONCAT(@selmai_v3, 0xab"));
        assert_eq!(row.cleanup, b"SET @selmai_v3 = NULL;\n");
    }

    #[test]
    fn text_chunks_never_split_a_character() {
        let s = "😀".repeat(100); // 4 bytes each
        for max in [64usize, 65, 66, 67] {
            for c in chunks(s.as_bytes(), max, true) {
                assert!(std::str::from_utf8(c).is_ok());
                assert!(c.len() <= max);
            }
        }
    }
}
