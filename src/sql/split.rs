//! The push-based core of the splitter: bytes in, complete statements out.
//!
//! Responsible for the lexical rules (quotes, comments, delimiters,
//! `DELIMITER` and sandbox-mode lines) and for keeping enough state that
//! input may be cut anywhere: inside a quote, a multi-byte character, a
//! comment opener, a multi-byte delimiter or the word `DELIMITER`.
//!
//! Not responsible for I/O ([`super::StatementReader`]) or for anything past
//! lexing: it does not know what a statement means.
//!
//! Speed: a restore streams gigabytes through here, so rather than a state
//! transition per byte it jumps to the next byte that can matter in the
//! current state (`memchr` inside quotes and comments, a 256-entry table in
//! statement text) and copies each statement out once.

use memchr::{memchr, memchr2, memchr_iter};

use super::{SplitError, Statement};

/// The word that starts the client command changing the delimiter.
const DELIMITER_COMMAND: &[u8] = b"delimiter";

/// Above this capacity the buffer is shrunk once it holds little again, so
/// one huge statement does not pin its memory for the rest of a restore.
const SHRINK_ABOVE: usize = 16 * 1024 * 1024;

/// Where the scanner is, lexically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between statements: nothing but whitespace, plain comments, empty
    /// statements and client command lines seen since the last delimiter.
    Idle,
    /// Inside a statement, outside quotes and comments.
    Text,
    /// Inside a quote opened by this byte (`'`, `"` or a backtick).
    Quote(u8),
    /// Inside a `#` or `-- ` comment, before the end of its line.
    LineComment { in_statement: bool },
    /// Inside a `/* ... */` comment (executable ones too: a delimiter in it
    /// never splits).
    BlockComment { in_statement: bool },
}

/// The bytes that can change the state in statement text. The delimiter's
/// first byte is added per delimiter.
const TEXT_SPECIALS: &[u8] = b"'\"`#-/";

/// Splits a byte stream into SQL statements the way the `mariadb` client
/// does, starting with the delimiter `;`.
///
/// Feed it with [`push`](Self::push) in chunks of any size and call
/// [`finish`](Self::finish) at the end of the input; the statements come out
/// in order, the same whatever the chunk boundaries.
#[derive(Debug)]
pub struct Splitter {
    /// Unconsumed input: the statement being collected and the bytes after it.
    buf: Vec<u8>,
    /// Offset in the whole input of `buf[0]`.
    base: u64,
    /// Scan position in `buf`: everything before it has been classified.
    pos: usize,
    state: State,
    /// Where the current statement starts in `buf` (its first significant byte).
    stmt_start: usize,
    /// Where the current quote or comment opened in `buf`, for error lines.
    open_at: usize,
    /// The line of a comment opened between statements: it is counted at
    /// once, so the comment's bytes need not be kept.
    open_line: u64,
    delimiter: Vec<u8>,
    /// `TEXT_SPECIALS` plus the delimiter's first byte.
    specials: [bool; 256],
    /// Newlines before `line_pos` have been counted: line `line` starts there or before.
    line_pos: usize,
    line: u64,
    /// Statements returned so far.
    number: u64,
    /// An error met in `push`, kept for `finish`, which is the only place
    /// allowed to report errors.
    error: Option<SplitError>,
}

impl Default for Splitter {
    fn default() -> Self {
        Self::new()
    }
}

/// The answer to "is there a delimiter here?" when the input may stop short.
enum Prefix {
    Full,
    /// The input ends inside something that may still become the delimiter.
    Partial,
    No,
}

/// What a `/*` seen between statements opens.
enum SlashStar {
    /// Not a comment at all (a lone `/`).
    NotComment,
    /// A comment to skip: a plain one, or the sandbox-mode marker.
    Skip,
    /// An executable comment: statement text for the server.
    Executable,
}

impl Splitter {
    /// A splitter at the start of an input, with the delimiter `;`.
    pub fn new() -> Self {
        let mut splitter = Self {
            buf: Vec::new(),
            base: 0,
            pos: 0,
            state: State::Idle,
            stmt_start: 0,
            open_at: 0,
            open_line: 0,
            delimiter: Vec::new(),
            specials: [false; 256],
            line_pos: 0,
            line: 1,
            number: 0,
            error: None,
        };
        splitter.set_delimiter(b";");
        splitter
    }

    /// Feeds the next bytes of the input; the statements they complete are
    /// appended to `out`. After an error (see [`has_error`](Self::has_error))
    /// further input is ignored.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Statement>) {
        if self.error.is_some() {
            return;
        }
        self.buf.extend_from_slice(input);
        if let Err(err) = self.scan(out, false) {
            self.error = Some(err);
            return;
        }
        self.compact();
    }

    /// Whether [`push`](Self::push) met malformed input: stop feeding and
    /// call [`finish`](Self::finish), which returns the error.
    pub fn has_error(&self) -> bool {
        self.error.is_some()
    }

    /// Ends the input: returns the last statement if it has no delimiter (the
    /// `mariadb` client executes it too), or the error if the input ends
    /// inside a quote or comment or `push` met one. Afterwards the splitter
    /// is empty and returns `Ok(None)`.
    pub fn finish(&mut self) -> Result<Option<Statement>, SplitError> {
        if let Some(err) = self.error.take() {
            self.reset();
            return Err(err);
        }
        let mut out = Vec::new();
        let scanned = self.scan(&mut out, true);
        // At the end of input only the undecided tail is rescanned, and a
        // delimiter that was complete would have been found by `push`.
        debug_assert!(
            out.is_empty(),
            "finish found a complete statement push missed"
        );
        let end = self.buf.len();
        let result = match (scanned, self.state) {
            (Err(err), _) => Err(err),
            (
                Ok(()),
                State::Idle
                | State::LineComment {
                    in_statement: false,
                },
            ) => Ok(None),
            (Ok(()), State::Text | State::LineComment { in_statement: true }) => {
                Ok(Some(self.statement(self.stmt_start, end)))
            }
            (Ok(()), State::Quote(quote)) => Err(SplitError::Unterminated {
                what: if quote == b'`' {
                    "quoted identifier"
                } else {
                    "string literal"
                },
                line: self.line_at(self.open_at),
            }),
            (Ok(()), State::BlockComment { in_statement }) => Err(SplitError::Unterminated {
                what: "comment",
                line: if in_statement {
                    self.line_at(self.open_at)
                } else {
                    self.open_line
                },
            }),
        };
        self.reset();
        result
    }

    /// Input bytes fully dealt with: returned as statements, or skipped as
    /// whitespace, comments, empty statements and `DELIMITER` lines. The
    /// bytes of a statement still being collected are not counted; after
    /// [`finish`](Self::finish) this is the length of the whole input.
    pub fn bytes_consumed(&self) -> u64 {
        self.base + self.keep_from() as u64
    }

    /// Forgets the buffered input, counting it as consumed.
    fn reset(&mut self) {
        self.line_at(self.buf.len());
        self.base += self.buf.len() as u64;
        self.buf.clear();
        self.pos = 0;
        self.line_pos = 0;
        self.stmt_start = 0;
        self.open_at = 0;
        self.state = State::Idle;
    }

    fn set_delimiter(&mut self, delimiter: &[u8]) {
        self.delimiter = delimiter.to_vec();
        self.specials = [false; 256];
        for &b in TEXT_SPECIALS {
            self.specials[usize::from(b)] = true;
        }
        self.specials[usize::from(delimiter[0])] = true;
    }

    /// The first byte still needed: the pending statement's start, if any.
    fn keep_from(&self) -> usize {
        match self.state {
            State::Idle
            | State::LineComment {
                in_statement: false,
            }
            | State::BlockComment {
                in_statement: false,
            } => self.pos,
            _ => self.stmt_start,
        }
    }

    /// Drops the bytes no longer needed, once per push, so that many short
    /// statements in a chunk cost one move of the remainder, not one each.
    fn compact(&mut self) {
        let keep = self.keep_from();
        if keep == 0 {
            return;
        }
        self.line_at(keep);
        self.buf.drain(..keep);
        self.base += keep as u64;
        self.pos -= keep;
        self.line_pos -= keep;
        self.stmt_start = self.stmt_start.saturating_sub(keep);
        self.open_at = self.open_at.saturating_sub(keep);
        if self.buf.capacity() > SHRINK_ABOVE && self.buf.len() < self.buf.capacity() / 4 {
            self.buf.shrink_to(self.buf.len().max(SHRINK_ABOVE / 4));
        }
    }

    /// The 1-based line of `buf[at]`. Lines are counted lazily, once per
    /// byte, only up to where a line number is needed; `at` never goes back.
    fn line_at(&mut self, at: usize) -> u64 {
        debug_assert!(at >= self.line_pos);
        self.line += memchr_iter(b'\n', &self.buf[self.line_pos..at]).count() as u64;
        self.line_pos = at;
        self.line
    }

    fn statement(&mut self, start: usize, end: usize) -> Statement {
        let mut end = end;
        while end > start && is_space(self.buf[end - 1]) {
            end -= 1;
        }
        let line = self.line_at(start);
        self.number += 1;
        Statement {
            sql: self.buf[start..end].to_vec(),
            number: self.number,
            line,
        }
    }

    /// Classifies `buf` from `pos` as far as it can. Without `eof`, it stops
    /// where the next bytes are needed to decide (a possible `--`, `/*`,
    /// delimiter or `DELIMITER` line at the end); with `eof`, the input is
    /// known to end there.
    fn scan(&mut self, out: &mut Vec<Statement>, eof: bool) -> Result<(), SplitError> {
        loop {
            let len = self.buf.len();
            match self.state {
                State::Idle => {
                    let skipped = self.buf[self.pos..].iter().position(|&b| !is_space(b));
                    let Some(skipped) = skipped else {
                        self.pos = len;
                        return Ok(());
                    };
                    let p = self.pos + skipped;
                    self.pos = p;
                    let rest = &self.buf[p..];
                    match prefix(rest, &self.delimiter, eof) {
                        // An empty statement: nothing to execute.
                        Prefix::Full => {
                            self.pos += self.delimiter.len();
                            continue;
                        }
                        Prefix::Partial => return Ok(()),
                        Prefix::No => {}
                    }
                    match rest[0] {
                        b'#' => {
                            self.state = State::LineComment {
                                in_statement: false,
                            };
                            self.pos += 1;
                        }
                        b'-' => match dash_dash(rest, eof) {
                            None => return Ok(()),
                            Some(true) => {
                                self.state = State::LineComment {
                                    in_statement: false,
                                };
                                self.pos += 2;
                            }
                            Some(false) => self.start_statement(p),
                        },
                        b'/' => match slash_star(rest, eof) {
                            None => return Ok(()),
                            Some(SlashStar::NotComment) => self.start_statement(p),
                            Some(SlashStar::Skip) => {
                                self.state = State::BlockComment {
                                    in_statement: false,
                                };
                                self.open_line = self.line_at(p);
                                self.pos += 2;
                            }
                            Some(SlashStar::Executable) => {
                                self.start_statement(p);
                                self.state = State::BlockComment { in_statement: true };
                                self.open_at = p;
                                self.pos += 2;
                            }
                        },
                        b'd' | b'D' => match self.delimiter_command(p, eof)? {
                            None => return Ok(()),
                            Some(Some(next)) => self.pos = next,
                            Some(None) => self.start_statement(p),
                        },
                        _ => self.start_statement(p),
                    }
                }
                State::Text => {
                    let specials = &self.specials;
                    let found = self.buf[self.pos..]
                        .iter()
                        .position(|&b| specials[usize::from(b)]);
                    let Some(found) = found else {
                        self.pos = len;
                        return Ok(());
                    };
                    let i = self.pos + found;
                    let rest = &self.buf[i..];
                    // The delimiter is tested first, as the client does: with
                    // `DELIMITER //`, `//` ends a statement even before a `*`.
                    match prefix(rest, &self.delimiter, eof) {
                        Prefix::Full => {
                            let statement = self.statement(self.stmt_start, i);
                            out.push(statement);
                            self.pos = i + self.delimiter.len();
                            self.state = State::Idle;
                            continue;
                        }
                        Prefix::Partial => {
                            self.pos = i;
                            return Ok(());
                        }
                        Prefix::No => {}
                    }
                    match rest[0] {
                        quote @ (b'\'' | b'"' | b'`') => {
                            self.state = State::Quote(quote);
                            self.open_at = i;
                            self.pos = i + 1;
                        }
                        b'#' => {
                            self.state = State::LineComment { in_statement: true };
                            self.pos = i + 1;
                        }
                        b'-' => match dash_dash(rest, eof) {
                            None => {
                                self.pos = i;
                                return Ok(());
                            }
                            Some(true) => {
                                self.state = State::LineComment { in_statement: true };
                                self.pos = i + 2;
                            }
                            Some(false) => self.pos = i + 1,
                        },
                        b'/' => match rest.get(1) {
                            None if !eof => {
                                self.pos = i;
                                return Ok(());
                            }
                            Some(b'*') => {
                                self.state = State::BlockComment { in_statement: true };
                                self.open_at = i;
                                self.pos = i + 2;
                            }
                            _ => self.pos = i + 1,
                        },
                        // The delimiter's first byte without the rest of it.
                        _ => self.pos = i + 1,
                    }
                }
                State::Quote(quote) => {
                    let rest = &self.buf[self.pos..];
                    // Backticks have no backslash escapes; a doubled quote
                    // of any kind needs no special case: it closes and
                    // reopens, leaving the state as it was.
                    let found = if quote == b'`' {
                        memchr(quote, rest)
                    } else {
                        memchr2(quote, b'\\', rest)
                    };
                    let Some(found) = found else {
                        self.pos = len;
                        return Ok(());
                    };
                    let i = self.pos + found;
                    if self.buf[i] == quote {
                        self.state = State::Text;
                        self.pos = i + 1;
                    } else if i + 1 < len {
                        self.pos = i + 2;
                    } else {
                        // A backslash as the last byte: the next chunk holds what it escapes.
                        self.pos = i;
                        return Ok(());
                    }
                }
                State::LineComment { in_statement } => match memchr(b'\n', &self.buf[self.pos..]) {
                    None => {
                        self.pos = len;
                        return Ok(());
                    }
                    Some(found) => {
                        self.pos += found + 1;
                        self.state = if in_statement {
                            State::Text
                        } else {
                            State::Idle
                        };
                    }
                },
                State::BlockComment { in_statement } => loop {
                    let Some(found) = memchr(b'*', &self.buf[self.pos..]) else {
                        self.pos = len;
                        return Ok(());
                    };
                    let i = self.pos + found;
                    match self.buf.get(i + 1) {
                        None => {
                            self.pos = i;
                            return Ok(());
                        }
                        Some(b'/') => {
                            self.pos = i + 2;
                            self.state = if in_statement {
                                State::Text
                            } else {
                                State::Idle
                            };
                            break;
                        }
                        Some(_) => self.pos = i + 1,
                    }
                },
            }
        }
    }

    fn start_statement(&mut self, at: usize) {
        self.stmt_start = at;
        self.pos = at;
        self.state = State::Text;
    }

    /// Handles a `DELIMITER` line starting at `buf[at]`, between statements.
    /// `None`: more input needed to tell; `Some(None)`: not a `DELIMITER`
    /// command; `Some(Some(next))`: done, scanning goes on at `next`.
    ///
    /// The client only takes the command at the start of a line; accepting
    /// it wherever a statement would start is a superset that cannot
    /// misread valid SQL, since no SQL statement starts with the word.
    fn delimiter_command(
        &mut self,
        at: usize,
        eof: bool,
    ) -> Result<Option<Option<usize>>, SplitError> {
        let rest = &self.buf[at..];
        let word = DELIMITER_COMMAND.len();
        let seen = rest.len().min(word);
        if !rest[..seen].eq_ignore_ascii_case(&DELIMITER_COMMAND[..seen]) {
            return Ok(Some(None));
        }
        match rest.get(word) {
            None if !eof => return Ok(None),
            None if rest.len() < word => return Ok(Some(None)),
            // `DELIMITER` at the very end: its missing argument is reported below.
            None => {}
            // Alone on its line it lacks its argument, reported below too.
            Some(b' ' | b'\t' | b'\r' | b'\n') => {}
            // Glued to more letters it is some other word.
            Some(_) => return Ok(Some(None)),
        }
        let line_end = match memchr(b'\n', &rest[word.min(rest.len())..]) {
            Some(found) => word + found,
            None if eof => rest.len(),
            None => return Ok(None),
        };
        match delimiter_argument(&rest[word.min(line_end)..line_end]) {
            Ok(delimiter) => {
                let delimiter = delimiter.to_vec();
                self.set_delimiter(&delimiter);
                Ok(Some(Some((at + line_end + 1).min(self.buf.len()))))
            }
            Err(reason) => Err(SplitError::InvalidDelimiter {
                line: self.line_at(at),
                reason,
            }),
        }
    }
}

/// Whitespace between tokens, as the server's lexer sees it.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

/// Whether `rest` starts with the delimiter, or might once more input comes.
fn prefix(rest: &[u8], delimiter: &[u8], eof: bool) -> Prefix {
    if rest.len() >= delimiter.len() {
        if rest.starts_with(delimiter) {
            Prefix::Full
        } else {
            Prefix::No
        }
    } else if !eof && delimiter.starts_with(rest) {
        Prefix::Partial
    } else {
        Prefix::No
    }
}

/// Whether `rest` (starting with `-`) opens a `-- ` comment; `None` when the
/// next bytes are needed. As in the server, the second dash must be followed
/// by whitespace or a control character (or the end), so `1--1` is arithmetic.
fn dash_dash(rest: &[u8], eof: bool) -> Option<bool> {
    match (rest.get(1), rest.get(2)) {
        (None, _) => eof.then_some(false),
        (Some(b'-'), None) => eof.then_some(true),
        (Some(b'-'), Some(&after)) => Some(after <= b' ' || after == 0x7f),
        (Some(_), _) => Some(false),
    }
}

/// What `rest` (starting with `/`, between statements) opens; `None` when the
/// next bytes are needed.
fn slash_star(rest: &[u8], eof: bool) -> Option<SlashStar> {
    let need_more = || if eof { Some(SlashStar::Skip) } else { None };
    match rest.get(1) {
        None => return eof.then_some(SlashStar::NotComment),
        Some(b'*') => {}
        Some(_) => return Some(SlashStar::NotComment),
    }
    // `/*!` and `/*M!` are executable comments: the server runs their content.
    let bang = match (rest.get(2), rest.get(3)) {
        (None, _) | (Some(b'M'), None) => return need_more(),
        (Some(b'!'), _) => 3,
        (Some(b'M'), Some(b'!')) => 4,
        _ => return Some(SlashStar::Skip),
    };
    // `/*M!999999\- ... */` asks the client for sandbox mode (no client
    // commands such as `\!` or `source`). This splitter runs none anyway, so
    // the line is skipped like a comment rather than sent to the server.
    let digits = rest[bang..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    match rest.get(bang + digits..bang + digits + 2) {
        Some(b"\\-") => Some(SlashStar::Skip),
        Some(_) => Some(SlashStar::Executable),
        None if eof => Some(SlashStar::Executable),
        None => None,
    }
}

/// The new delimiter from the rest of a `DELIMITER` line, with the client's
/// rules: the first word, or a quoted string; no backslash.
fn delimiter_argument(line: &[u8]) -> Result<&[u8], &'static str> {
    let start = line
        .iter()
        .position(|b| !is_space(*b))
        .unwrap_or(line.len());
    let line = &line[start..];
    let argument = match line.first() {
        None => return Err("DELIMITER must be followed by the new delimiter"),
        Some(&quote @ (b'\'' | b'"' | b'`')) => {
            let inner = &line[1..];
            &inner[..memchr(quote, inner).unwrap_or(inner.len())]
        }
        Some(_) => &line[..line.iter().position(|b| is_space(*b)).unwrap_or(line.len())],
    };
    if argument.is_empty() {
        return Err("DELIMITER must be followed by the new delimiter");
    }
    if argument.contains(&b'\\') {
        return Err("a delimiter cannot contain a backslash");
    }
    Ok(argument)
}

#[cfg(test)]
mod tests {
    //! Lexical cases, table-driven, each also checked with every chunk
    //! boundary: the result must not depend on how the input was cut.

    use rstest::rstest;

    use super::*;

    /// Splits `input` pushed in pieces of `size` bytes.
    fn split_in(input: &[u8], size: usize) -> (Vec<Statement>, Result<(), String>, u64) {
        let mut splitter = Splitter::new();
        let mut all = Vec::new();
        for chunk in input.chunks(size.max(1)) {
            splitter.push(chunk, &mut all);
        }
        let end = match splitter.finish() {
            Ok(last) => {
                all.extend(last);
                Ok(())
            }
            Err(err) => Err(format!("{err:?}")),
        };
        (all, end, splitter.bytes_consumed())
    }

    /// Splits `input` in one push, and checks that every other way of cutting
    /// it (every single boundary, then fixed piece sizes) gives the same.
    fn split_checked(input: &[u8]) -> (Vec<Statement>, Result<(), String>) {
        let (all, end, consumed) = split_in(input, input.len());
        for cut in 1..input.len() {
            let mut splitter = Splitter::new();
            let mut cut_all = Vec::new();
            splitter.push(&input[..cut], &mut cut_all);
            splitter.push(&input[cut..], &mut cut_all);
            let cut_end = splitter
                .finish()
                .map(|last| cut_all.extend(last))
                .map_err(|e| format!("{e:?}"));
            assert_eq!(
                (&cut_all, &cut_end),
                (&all, &end),
                "cut after byte {cut} of {:?}",
                String::from_utf8_lossy(input)
            );
        }
        for size in [1, 2, 3, 5, 7, 11, 13, 64] {
            let (pieces_all, pieces_end, pieces_consumed) = split_in(input, size);
            let context = format!(
                "pieces of {size} bytes of {:?}",
                String::from_utf8_lossy(input)
            );
            assert_eq!((&pieces_all, &pieces_end), (&all, &end), "{context}");
            if end.is_ok() {
                assert_eq!(pieces_consumed, consumed, "{context}");
            }
        }
        if end.is_ok() {
            assert_eq!(consumed, input.len() as u64, "bytes_consumed after finish");
        }
        (all, end)
    }

    fn texts(input: &[u8]) -> Vec<String> {
        let (all, end) = split_checked(input);
        end.unwrap();
        all.iter()
            .map(|s| String::from_utf8_lossy(&s.sql).into_owned())
            .collect()
    }

    #[rstest]
    // Delimiters.
    #[case::semicolons("SELECT 1; SELECT 2;", &["SELECT 1", "SELECT 2"])]
    #[case::no_final_delimiter("SELECT 1;\nSELECT 2\n", &["SELECT 1", "SELECT 2"])]
    #[case::empty_statements(";;\n ; SELECT 1;;;", &["SELECT 1"])]
    #[case::only_whitespace(" \n\t\r\n", &[])]
    #[case::empty("", &[])]
    #[case::double_semicolon(
        "DELIMITER ;;\nCREATE TRIGGER t BEGIN SET @a=1; SET @b=2; END;;\nDELIMITER ;\nSELECT 1;",
        &["CREATE TRIGGER t BEGIN SET @a=1; SET @b=2; END", "SELECT 1"]
    )]
    #[case::dollars(
        "DELIMITER $$\nCREATE PROCEDURE p() BEGIN SELECT 1; END $$\nSELECT 2$$ DELIMITER ;\nSELECT 3;",
        &["CREATE PROCEDURE p() BEGIN SELECT 1; END", "SELECT 2", "SELECT 3"]
    )]
    #[case::slashes(
        "DELIMITER //\nCREATE PROCEDURE p() BEGIN SELECT 1/2; /* x */ END //\nDELIMITER ;\n",
        &["CREATE PROCEDURE p() BEGIN SELECT 1/2; /* x */ END"]
    )]
    #[case::slashes_before_star("DELIMITER //\nSELECT 1//*x*/ SELECT 2//", &["SELECT 1", "*x*/ SELECT 2"])]
    #[case::partial_delimiter("DELIMITER $$\nSELECT 1 $ 2 $, '$$'$$", &["SELECT 1 $ 2 $, '$$'"])]
    #[case::lower_case_command("  delimiter $$ \nSELECT 1$$\n\tDeLiMiTeR ;\nSELECT 2;", &["SELECT 1", "SELECT 2"])]
    #[case::quoted_argument("DELIMITER ';;' trailing words\nSELECT 1;;", &["SELECT 1"])]
    #[case::command_after_comment("-- switch\n/* now */ DELIMITER $$\nSELECT 1; SELECT 2$$", &["SELECT 1; SELECT 2"])]
    #[case::word_not_command("delimiters;\nDELIMITER_X = 1;", &["delimiters", "DELIMITER_X = 1"])]
    #[case::command_at_end("SELECT 1;\nDELIMITER $$", &["SELECT 1"])]
    #[case::long_delimiter("DELIMITER END_OF_IT\nSELECT ';'END_OF_IT SELECT 2 END_OF", &["SELECT ';'", "SELECT 2 END_OF"])]
    // Comments.
    #[case::dash_comment("-- a; b\nSELECT 1;", &["SELECT 1"])]
    #[case::dash_tab_comment("--\tx;\nSELECT 1;", &["SELECT 1"])]
    #[case::dash_newline_comment("--\nSELECT 1;--\n", &["SELECT 1"])]
    #[case::dash_at_eof("SELECT 1;--", &["SELECT 1"])]
    #[case::dash_in_statement("SELECT 1 -- ;\n, 2;", &["SELECT 1 -- ;\n, 2"])]
    #[case::dash_arithmetic("SELECT 1--1;", &["SELECT 1--1"])]
    #[case::dash_not_comment("SELECT 5 --x;", &["SELECT 5 --x"])]
    #[case::single_dash("SELECT -1;-", &["SELECT -1", "-"])]
    #[case::hash_comment("# a; b\nSELECT 1 # ;\n;", &["SELECT 1 # ;"])]
    #[case::block_comment("/* a; */ SELECT /* ; */ 1;", &["SELECT /* ; */ 1"])]
    #[case::block_comment_multiline("/*\n;\n*/\nSELECT 1 /* x\n ; */;", &["SELECT 1 /* x\n ; */"])]
    #[case::empty_block_comment("/**/SELECT 1/**/;", &["SELECT 1/**/"])]
    #[case::slash_star_slash("/*/ ; */SELECT 1;", &["SELECT 1"])]
    #[case::comment_only_statement("SELECT 1; /* just this */ ;\n-- and this\n", &["SELECT 1"])]
    #[case::division("SELECT 4/2;/", &["SELECT 4/2", "/"])]
    #[case::hint("SELECT /*+ MAX_EXECUTION_TIME(1) */ 1;", &["SELECT /*+ MAX_EXECUTION_TIME(1) */ 1"])]
    // Executable comments.
    #[case::executable("/*!40101 SET NAMES utf8mb4 */;", &["/*!40101 SET NAMES utf8mb4 */"])]
    #[case::executable_mariadb("/*M!100616 SET @N=@@NOTE_VERBOSITY */;", &["/*M!100616 SET @N=@@NOTE_VERBOSITY */"])]
    #[case::executable_no_version("/*! STRAIGHT_JOIN */;", &["/*! STRAIGHT_JOIN */"])]
    #[case::executable_with_delimiter("/*!50003 SET @a=';'; SET @b=1 */;", &["/*!50003 SET @a=';'; SET @b=1 */"])]
    #[case::executable_in_statement(
        "CREATE DATABASE /*!32312 IF NOT EXISTS*/ `d` /*!40100 DEFAULT CHARACTER SET utf8mb4 */;",
        &["CREATE DATABASE /*!32312 IF NOT EXISTS*/ `d` /*!40100 DEFAULT CHARACTER SET utf8mb4 */"]
    )]
    #[case::executable_trigger(
        "DELIMITER ;;\n/*!50003 CREATE*/ /*!50017 DEFINER=`u`@`h`*/ /*!50003 TRIGGER t BEFORE INSERT ON x FOR EACH ROW\nBEGIN\n  SET @a = 1;\nEND */;;\nDELIMITER ;\n",
        &["/*!50003 CREATE*/ /*!50017 DEFINER=`u`@`h`*/ /*!50003 TRIGGER t BEFORE INSERT ON x FOR EACH ROW\nBEGIN\n  SET @a = 1;\nEND */"]
    )]
    #[case::sandbox_mariadb("/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump\n/*!40101 SET NAMES utf8mb4 */;", &["/*!40101 SET NAMES utf8mb4 */"])]
    #[case::sandbox_mysql_style("/*!999999\\- enable the sandbox mode */\nSELECT 1;", &["SELECT 1"])]
    #[case::m_not_executable("/*M comment */ SELECT 1;", &["SELECT 1"])]
    // Quotes.
    #[case::single_quotes("SELECT 'a;b', 'c';", &["SELECT 'a;b', 'c'"])]
    #[case::doubled_single("SELECT 'it''s;', '''';", &["SELECT 'it''s;', ''''"])]
    #[case::escaped_single("SELECT 'a\\';b';", &["SELECT 'a\\';b'"])]
    #[case::escaped_backslash("SELECT 'a\\\\'; SELECT 2;", &["SELECT 'a\\\\'", "SELECT 2"])]
    #[case::double_quotes("SELECT \"a;b\", \"a\\\";b\", \"a\"\";b\";", &["SELECT \"a;b\", \"a\\\";b\", \"a\"\";b\""])]
    #[case::quotes_in_quotes("SELECT '\"`;', \"'`;\", `'\";`;", &["SELECT '\"`;', \"'`;\", `'\";`"])]
    #[case::backticks("SELECT `a;b` FROM `x``;y`;", &["SELECT `a;b` FROM `x``;y`"])]
    #[case::backtick_no_escape("SELECT `a\\`;SELECT 2;", &["SELECT `a\\`", "SELECT 2"])]
    #[case::comment_openers_in_quotes("SELECT '-- ;', '# ;', '/* ;';", &["SELECT '-- ;', '# ;', '/* ;'"])]
    #[case::quote_in_comments("SELECT 1 -- it's\n; # don't\nSELECT /* ' */ 2;", &["SELECT 1 -- it's", "SELECT /* ' */ 2"])]
    #[case::quote_starts_statement("'a;b';", &["'a;b'"])]
    #[case::delimiter_command_in_string("SELECT '\nDELIMITER $$\n';", &["SELECT '\nDELIMITER $$\n'"])]
    // The delimiter inside each kind of quote and comment.
    #[case::custom_delimiter_everywhere(
        "DELIMITER ;;\nSELECT ';;', \";;\", `;;` /* ;; */ /*!1 ;; */ -- ;;\n # ;;\n, 1;;",
        &["SELECT ';;', \";;\", `;;` /* ;; */ /*!1 ;; */ -- ;;\n # ;;\n, 1"]
    )]
    #[case::dollar_delimiter_everywhere(
        "DELIMITER $$\nSELECT '$$', \"$$\", `$$` /* $$ */ -- $$\n # $$\n$$",
        &["SELECT '$$', \"$$\", `$$` /* $$ */ -- $$\n # $$"]
    )]
    // Line endings.
    #[case::crlf("SELECT 1;\r\nSELECT 2;\r\n", &["SELECT 1", "SELECT 2"])]
    #[case::crlf_comments("-- c\r\n# d\r\nSELECT 1 -- e\r\n;\r\n", &["SELECT 1 -- e"])]
    #[case::crlf_delimiter("DELIMITER $$\r\nSELECT 1; END$$\r\nDELIMITER ;\r\nSELECT 2;\r\n", &["SELECT 1; END", "SELECT 2"])]
    #[case::trailing_whitespace_kept_inside("SELECT\r\n  1\r\n ;", &["SELECT\r\n  1"])]
    fn splits(#[case] input: &str, #[case] expected: &[&str]) {
        assert_eq!(texts(input.as_bytes()), expected);
    }

    #[rstest]
    #[case::raw_bytes_in_string(b"INSERT INTO t VALUES ('\xff\x00;\xfe\\'\x80;');", &[&b"INSERT INTO t VALUES ('\xff\x00;\xfe\\'\x80;')"[..]])]
    #[case::split_utf8(
        b"SELECT '\xc5\xbc\xc3\xb3\xc5\x82\xc4\x87;'; SELECT '\xf0\x9f\x90\xac'",
        &[&b"SELECT '\xc5\xbc\xc3\xb3\xc5\x82\xc4\x87;'"[..], &b"SELECT '\xf0\x9f\x90\xac'"[..]]
    )]
    #[case::binary_outside_quotes(b"SELECT \x00\xff;\x01", &[&b"SELECT \x00\xff"[..], &b"\x01"[..]])]
    #[case::nul_after_dashes(b"SELECT 1 --\x00;\n;", &[&b"SELECT 1 --\x00;"[..]])]
    fn keeps_bytes(#[case] input: &[u8], #[case] expected: &[&[u8]]) {
        let (all, end) = split_checked(input);
        end.unwrap();
        let sql: Vec<&[u8]> = all.iter().map(|s| &s.sql[..]).collect();
        assert_eq!(sql, expected);
    }

    #[rstest]
    #[case::single_quote("SELECT 'abc", "string literal", 1)]
    #[case::later_line("SELECT 1;\n\nSELECT \"abc;\n", "string literal", 3)]
    #[case::escape_at_end("SELECT 'abc\\", "string literal", 1)]
    #[case::escaped_quote_at_end("SELECT 'abc\\'", "string literal", 1)]
    #[case::backtick("SELECT 1;\nSELECT `a;", "quoted identifier", 2)]
    #[case::comment("/* abc;", "comment", 1)]
    #[case::comment_between_statements("SELECT 1;\n\n /* never closed\n;\n", "comment", 3)]
    #[case::comment_in_statement("SELECT 1\n/* abc;\n", "comment", 2)]
    #[case::executable_comment("\n/*!40101 SET x=1;", "comment", 2)]
    #[case::star_at_end("SELECT 1 /* x *", "comment", 1)]
    #[case::after_custom_delimiter("DELIMITER $$\nSELECT 1$$\nSELECT '$$", "string literal", 3)]
    fn rejects_unterminated(#[case] input: &str, #[case] what: &str, #[case] line: u64) {
        let (_, end) = split_checked(input.as_bytes());
        assert_eq!(
            end,
            Err(format!("Unterminated {{ what: {what:?}, line: {line} }}"))
        );
    }

    #[rstest]
    #[case::missing(
        "DELIMITER\nSELECT 1;",
        1,
        "DELIMITER must be followed by the new delimiter"
    )]
    #[case::blank(
        "SELECT 1;\nDELIMITER   \r\nSELECT 2;",
        2,
        "DELIMITER must be followed by the new delimiter"
    )]
    #[case::empty_quotes(
        "\n\ndelimiter ''\n",
        3,
        "DELIMITER must be followed by the new delimiter"
    )]
    #[case::at_eof(
        "SELECT 1;\nDELIMITER",
        2,
        "DELIMITER must be followed by the new delimiter"
    )]
    #[case::backslash("DELIMITER \\\\\n", 1, "a delimiter cannot contain a backslash")]
    fn rejects_bad_delimiter_lines(#[case] input: &str, #[case] line: u64, #[case] reason: &str) {
        let (_, end) = split_checked(input.as_bytes());
        assert_eq!(
            end,
            Err(format!(
                "InvalidDelimiter {{ line: {line}, reason: {reason:?} }}"
            ))
        );
    }

    #[test]
    fn statements_before_a_bad_delimiter_line_come_out_and_pushing_stops() {
        let mut splitter = Splitter::new();
        let mut out = Vec::new();
        splitter.push(b"SELECT 1;\nDELIMITER\nSELECT 2;", &mut out);
        assert!(splitter.has_error());
        splitter.push(b"SELECT 3;", &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(
            splitter.finish(),
            Err(SplitError::InvalidDelimiter { line: 2, .. })
        ));
        assert!(matches!(splitter.finish(), Ok(None)));
    }

    #[test]
    fn numbers_and_lines() {
        let input = b"\n\n-- header\nSELECT 1;\nSELECT\n2;  SELECT 3;\n;;\nDELIMITER $$\n\n  /* c */ SELECT\n'a\nb'$$\r\nSELECT 5";
        let (all, end) = split_checked(input);
        end.unwrap();
        let got: Vec<(u64, u64)> = all.iter().map(|s| (s.number, s.line)).collect();
        assert_eq!(got, [(1, 4), (2, 5), (3, 6), (4, 10), (5, 13)]);
    }

    #[test]
    fn bytes_consumed_stops_at_the_pending_statement() {
        let mut splitter = Splitter::new();
        let mut out = Vec::new();
        splitter.push(b"SELECT 1;  SEL", &mut out);
        assert_eq!(splitter.bytes_consumed(), 11);
        splitter.push(b"ECT 2;\n-- tail\n", &mut out);
        assert_eq!(splitter.bytes_consumed(), 29);
        assert_eq!(splitter.finish().unwrap(), None);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn finish_returns_the_trailing_statement_once() {
        let mut splitter = Splitter::new();
        let mut out = Vec::new();
        splitter.push(b"SELECT 1; SELECT 2 -- no delimiter", &mut out);
        let last = splitter.finish().unwrap().unwrap();
        assert_eq!(
            (&last.sql[..], last.number, last.line),
            (&b"SELECT 2 -- no delimiter"[..], 2, 1)
        );
        assert_eq!(splitter.finish().unwrap(), None);
    }

    /// Generated inputs mixing every construct, so the chunk-boundary check
    /// also covers combinations nobody wrote a case for.
    #[test]
    fn any_chunking_gives_the_same_statements() {
        let parts: &[&str] = &[
            "SELECT 1;",
            " 'a;''b\\'' ",
            "\"x\\\"\"",
            "`c``d;`",
            "-- c;\n",
            "--x",
            "# h;\n",
            "/* b; */",
            "/*!401 e; */",
            "/*M!100616 m */",
            ";\n",
            "\nDELIMITER $$\n",
            "$$",
            "\nDELIMITER ;\n",
            "\r\n",
            "1-2/3",
        ];
        // A fixed pseudo-random sequence: reproducible without a dependency.
        let mut seed: u32 = 0x9e37_79b9;
        for _ in 0..60 {
            let mut input = String::new();
            for _ in 0..8 {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                input.push_str(parts[seed as usize % parts.len()]);
            }
            // Ending inside a quote or comment is fine too: the error must match.
            let _ = split_checked(input.as_bytes());
        }
    }

    /// Throughput on what dominates a restore: extended INSERTs of about
    /// 0.5 MB each (mariadb-dump's default), plus one-row INSERTs as the
    /// worst case for per-statement cost. Prints MB/s:
    /// `cargo test --release --lib sql::split -- --ignored --nocapture`
    #[test]
    #[ignore = "benchmark; run in release mode"]
    fn throughput() {
        const SIZE: usize = 256 << 20;
        fn extended(row_sql: impl Fn(u64) -> String) -> Vec<u8> {
            let mut input = Vec::with_capacity(SIZE + (1 << 20));
            let mut row = 0;
            while input.len() < SIZE {
                input.extend_from_slice(b"INSERT INTO `t` VALUES ");
                let start = input.len();
                while input.len() - start < 512 * 1024 {
                    row += 1;
                    input.extend_from_slice(row_sql(row).as_bytes());
                    input.push(b',');
                }
                input.pop();
                input.extend_from_slice(b";\n");
            }
            input
        }
        let text = extended(|row| {
            format!(
                "({row},1,'MARY{row}','SMITH','MARY.SMITH@sakilacustomer.org, it''s \\'quoted\\' ok',{},1,'2006-02-14 22:04:36','2006-02-15 04:57:20')",
                row % 600
            )
        });
        let numbers = extended(|row| {
            format!(
                "({row},{},{},-{}.99,NULL,{row}.5e3)",
                row % 599,
                row % 2,
                row % 11
            )
        });
        let mut single = Vec::with_capacity(SIZE + 1024);
        let mut row = 0u64;
        while single.len() < SIZE {
            row += 1;
            single.extend_from_slice(
                format!(
                    "INSERT INTO `t` VALUES ({row},'{}','2006-02-15 05:05:03');\n",
                    row * 7
                )
                .as_bytes(),
            );
        }
        for (name, input) in [
            ("text-heavy extended INSERTs", &text),
            ("numeric extended INSERTs", &numbers),
            ("one-row INSERTs", &single),
        ] {
            let mut splitter = Splitter::new();
            let mut out = Vec::new();
            let mut statements = 0;
            let started = std::time::Instant::now();
            for chunk in input.chunks(128 * 1024) {
                splitter.push(chunk, &mut out);
                statements += out.len();
                out.clear();
            }
            assert!(splitter.finish().unwrap().is_none());
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "{name}: {} MB, {statements} statements in {seconds:.3} s = {:.0} MB/s",
                input.len() >> 20,
                input.len() as f64 / seconds / 1e6
            );
        }
    }
}
