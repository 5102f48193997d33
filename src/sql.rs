//! Temporary minimal splitter with the agreed API; replaced by the full streaming splitter.

use tokio::io::{AsyncRead, AsyncReadExt};

/// One complete statement, without its delimiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// Statement bytes.
    pub sql: Vec<u8>,
    /// 1-based statement number.
    pub number: u64,
    /// 1-based line where it starts.
    pub line: u64,
}

impl Statement {
    /// Short printable excerpt.
    pub fn excerpt(&self, max: usize) -> String {
        let s = String::from_utf8_lossy(&self.sql);
        let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
        if s.chars().count() > max {
            format!("{}...", s.chars().take(max).collect::<String>())
        } else {
            s
        }
    }
}

/// Splitter errors.
#[derive(Debug, thiserror::Error)]
pub enum SplitError {
    /// Reading the input failed.
    #[error("reading the SQL stream failed: {0}")]
    Io(#[from] std::io::Error),
    /// EOF inside a quote or comment.
    #[error("the SQL ends inside an unterminated {what} that starts on line {line}: the file is truncated or corrupt")]
    Unterminated {
        /// What was open.
        what: &'static str,
        /// Where it started.
        line: u64,
    },
}

/// Push-based splitter.
#[derive(Default)]
pub struct Splitter {
    cur: Vec<u8>,
    delim: Vec<u8>,
    state: u8, // 0 normal, 1 ', 2 ", 3 `, 4 line comment, 5 block comment
    esc: bool,
    number: u64,
    line: u64,
    start_line: u64,
    consumed: u64,
}

impl Splitter {
    /// New splitter with delimiter `;`.
    pub fn new() -> Self {
        Splitter {
            delim: b";".to_vec(),
            line: 1,
            start_line: 1,
            ..Default::default()
        }
    }

    /// Bytes pushed so far.
    pub fn bytes_consumed(&self) -> u64 {
        self.consumed
    }

    fn emit(&mut self, out: &mut Vec<Statement>) {
        let s = std::mem::take(&mut self.cur);
        let t = trim(&s);
        if !t.is_empty() && !only_comments(t) {
            self.number += 1;
            out.push(Statement {
                sql: t.to_vec(),
                number: self.number,
                line: self.start_line,
            });
        }
    }

    /// Feed bytes.
    pub fn push(&mut self, input: &[u8], out: &mut Vec<Statement>) {
        self.consumed += input.len() as u64;
        for &b in input {
            if trim(&self.cur).is_empty() && self.state == 0 {
                self.start_line = self.line;
            }
            self.cur.push(b);
            if b == b'\n' {
                self.line += 1;
            }
            match self.state {
                0 => match b {
                    b'\'' => self.state = 1,
                    b'"' => self.state = 2,
                    b'`' => self.state = 3,
                    b'#' => self.state = 4,
                    b'-' if self.cur.ends_with(b"--") => self.state = 6,
                    b'*' if self.cur.ends_with(b"/*") => self.state = 5,
                    b'\n' => {
                        let line = trim(&self.cur);
                        let last = line.rsplit(|&c| c == b'\n').next().unwrap_or(line);
                        if last.len() > 10
                            && last[..10].eq_ignore_ascii_case(b"delimiter ")
                            && trim(&self.cur[..self.cur.len() - last.len() - 1]).is_empty()
                        {
                            self.delim = trim(&last[10..]).to_vec();
                            self.cur.clear();
                        }
                    }
                    _ => {}
                },
                1 | 2 => {
                    let q = if self.state == 1 { b'\'' } else { b'"' };
                    if self.esc {
                        self.esc = false;
                    } else if b == b'\\' {
                        self.esc = true;
                    } else if b == q {
                        self.state = 0;
                    }
                    continue;
                }
                3 => {
                    if b == b'`' {
                        self.state = 0;
                    }
                    continue;
                }
                4 => {
                    if b == b'\n' {
                        self.state = 0;
                    }
                    continue;
                }
                5 => {
                    if self.cur.ends_with(b"*/") {
                        self.state = 0;
                    }
                    continue;
                }
                6 => {
                    self.state = if b == b' ' || b == b'\t' { 4 } else { 0 };
                    continue;
                }
                _ => {}
            }
            if self.state == 0 && self.cur.ends_with(&self.delim) && !in_delimiter_line(&self.cur) {
                let n = self.cur.len() - self.delim.len();
                self.cur.truncate(n);
                self.emit(out);
            }
        }
    }

    /// End of input.
    pub fn finish(&mut self) -> Result<Option<Statement>, SplitError> {
        match self.state {
            1 | 2 => {
                return Err(SplitError::Unterminated {
                    what: "string literal",
                    line: self.start_line,
                })
            }
            3 => {
                return Err(SplitError::Unterminated {
                    what: "quoted identifier",
                    line: self.start_line,
                })
            }
            5 => {
                return Err(SplitError::Unterminated {
                    what: "comment",
                    line: self.start_line,
                })
            }
            _ => {}
        }
        let mut out = Vec::new();
        self.emit(&mut out);
        Ok(out.pop())
    }
}

fn in_delimiter_line(cur: &[u8]) -> bool {
    let start = cur.iter().rposition(|&c| c == b'\n').map_or(0, |p| p + 1);
    let line = trim(&cur[start..]);
    line.len() >= 10
        && line[..10].eq_ignore_ascii_case(b"delimiter ")
        && trim(&cur[..start]).is_empty()
}

fn trim(s: &[u8]) -> &[u8] {
    let a = s
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(s.len());
    let b = s
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(a, |p| p + 1);
    &s[a..b]
}

fn only_comments(s: &[u8]) -> bool {
    let mut rest = s;
    loop {
        rest = trim(rest);
        if rest.is_empty() {
            return true;
        }
        if rest.starts_with(b"/*!") || rest.starts_with(b"/*M!") {
            return false;
        }
        if rest.starts_with(b"/*") {
            match rest.windows(2).position(|w| w == b"*/") {
                Some(p) => rest = &rest[p + 2..],
                None => return true,
            }
        } else if rest.starts_with(b"#") || rest.starts_with(b"-- ") || rest == b"--" {
            match rest.iter().position(|&c| c == b'\n') {
                Some(p) => rest = &rest[p + 1..],
                None => return true,
            }
        } else {
            return false;
        }
    }
}

/// Async statement reader.
pub struct StatementReader<R> {
    inner: R,
    sp: Splitter,
    pending: std::collections::VecDeque<Statement>,
    buf: Vec<u8>,
    eof: bool,
}

impl<R: AsyncRead + Unpin> StatementReader<R> {
    /// Wrap a reader.
    pub fn new(inner: R) -> Self {
        StatementReader {
            inner,
            sp: Splitter::new(),
            pending: Default::default(),
            buf: vec![0; 64 * 1024],
            eof: false,
        }
    }

    /// Next statement, or None at the end.
    pub async fn next(&mut self) -> Result<Option<Statement>, SplitError> {
        loop {
            if let Some(s) = self.pending.pop_front() {
                return Ok(Some(s));
            }
            if self.eof {
                return Ok(None);
            }
            let n = self.inner.read(&mut self.buf).await?;
            if n == 0 {
                self.eof = true;
                if let Some(s) = self.sp.finish()? {
                    return Ok(Some(s));
                }
                return Ok(None);
            }
            let mut out = Vec::new();
            self.sp.push(&self.buf[..n], &mut out);
            self.pending.extend(out);
        }
    }
}
