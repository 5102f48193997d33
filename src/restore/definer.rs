//! `DEFINER` clauses of views, routines, triggers and events at restore
//! time (`RESTORE_DEFINER`).
//!
//! A dump names the account that defined each object. On another server
//! that account often does not exist, and creating the object then fails
//! (error 1449) or needs a privilege the restoring user lacks (1227). This
//! module rewrites the clause in one statement's text: `keep` leaves it,
//! `strip` removes it (the server then uses the restoring user), `rewrite`
//! makes it `DEFINER=CURRENT_USER` explicitly. Only `CREATE` statements
//! other than `CREATE TABLE` are touched, and only in their head, so data
//! that happens to contain `DEFINER=` is never changed. Executing the
//! statements is `restore`'s business.

use std::str::FromStr;

pub use crate::config::restore::Definer;

impl FromStr for Definer {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "keep" => Ok(Definer::Keep),
            "strip" => Ok(Definer::Strip),
            "rewrite" => Ok(Definer::Rewrite),
            other => Err(format!("{other:?}: use keep, strip or rewrite")),
        }
    }
}

/// How far into a statement the clause is looked for.
const HEAD: usize = 1024;

impl Definer {
    /// `sql` with its `DEFINER` clause handled, or `None` when unchanged.
    pub fn apply(self, sql: &[u8]) -> Option<Vec<u8>> {
        if self == Definer::Keep || !creates_a_program(sql) {
            return None;
        }
        let head = &sql[..sql.len().min(HEAD)];
        let (start, end) = find_clause(head)?;
        let mut out = Vec::with_capacity(sql.len());
        out.extend_from_slice(&sql[..start]);
        if self == Definer::Rewrite {
            out.extend_from_slice(b"DEFINER=CURRENT_USER");
        }
        out.extend_from_slice(&sql[end..]);
        Some(out)
    }
}

/// Starts with `CREATE` (possibly inside a `/*!NNNNN` comment) and is not
/// `CREATE TABLE`/`DATABASE`/`SCHEMA`/`INDEX` ...: a view, routine, trigger or event.
fn creates_a_program(sql: &[u8]) -> bool {
    let words = words(&sql[..sql.len().min(HEAD)], 8);
    let Some(first) = words.first() else {
        return false;
    };
    if !first.eq_ignore_ascii_case("create") {
        return false;
    }
    words.iter().skip(1).any(|w| {
        [
            "view",
            "procedure",
            "function",
            "trigger",
            "event",
            "definer",
        ]
        .iter()
        .any(|k| w.eq_ignore_ascii_case(k))
    }) && !words
        .get(1)
        .is_some_and(|w| w.eq_ignore_ascii_case("table") || w.eq_ignore_ascii_case("database"))
}

/// Words of `sql`, treating versioned-comment markers (`/*!50013`, `*/`) as spaces.
fn words(sql: &[u8], n: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < sql.len() && out.len() < n {
        let b = sql[i];
        if b.is_ascii_alphabetic() || b == b'_' {
            let start = i;
            while i < sql.len() && (sql[i].is_ascii_alphanumeric() || sql[i] == b'_') {
                i += 1;
            }
            out.push(String::from_utf8_lossy(&sql[start..i]).into_owned());
        } else if b.is_ascii_digit() {
            // The version number of `/*!50013`.
            while i < sql.len() && sql[i].is_ascii_digit() {
                i += 1;
            }
        } else if b == b'`' || b == b'\'' || b == b'"' {
            i = skip_quoted(sql, i);
        } else {
            i += 1;
        }
    }
    out
}

/// Index just past the quoted token starting at `i` (doubled quotes escape).
fn skip_quoted(sql: &[u8], i: usize) -> usize {
    let q = sql[i];
    let mut j = i + 1;
    while j < sql.len() {
        if sql[j] == b'\\' && q != b'`' {
            j += 2;
            continue;
        }
        if sql[j] == q {
            if sql.get(j + 1) == Some(&q) {
                j += 2;
                continue;
            }
            return j + 1;
        }
        j += 1;
    }
    sql.len()
}

/// Byte range of `DEFINER = user@host` (or `= CURRENT_USER[()]`) in `head`.
fn find_clause(head: &[u8]) -> Option<(usize, usize)> {
    let mut i = 0;
    while i < head.len() {
        let b = head[i];
        if b == b'`' || b == b'\'' || b == b'"' {
            i = skip_quoted(head, i);
            continue;
        }
        let boundary = i == 0 || !(head[i - 1].is_ascii_alphanumeric() || head[i - 1] == b'_');
        if boundary && head.len() - i >= 7 && head[i..i + 7].eq_ignore_ascii_case(b"DEFINER") {
            let mut j = i + 7;
            while j < head.len() && head[j].is_ascii_whitespace() {
                j += 1;
            }
            if head.get(j) != Some(&b'=') {
                i += 7; // `SQL SECURITY DEFINER`
                continue;
            }
            j += 1;
            while j < head.len() && head[j].is_ascii_whitespace() {
                j += 1;
            }
            let end = account_end(head, j)?;
            return Some((i, end));
        }
        i += 1;
    }
    None
}

/// End of `user[@host]` or `CURRENT_USER[()]` starting at `j`.
fn account_end(head: &[u8], j: usize) -> Option<usize> {
    let part = |k: usize| -> Option<usize> {
        match head.get(k)? {
            b'`' | b'\'' | b'"' => Some(skip_quoted(head, k)),
            _ => {
                let mut e = k;
                while e < head.len()
                    && (head[e].is_ascii_alphanumeric()
                        || matches!(head[e], b'_' | b'.' | b'%' | b'-'))
                {
                    e += 1;
                }
                (e > k).then_some(e)
            }
        }
    };
    let mut end = part(j)?;
    if head[j..end].eq_ignore_ascii_case(b"CURRENT_USER") {
        if head[end..].starts_with(b"()") {
            end += 2;
        }
        return Some(end);
    }
    if head.get(end) == Some(&b'@') {
        end = part(end + 1)?;
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::view(
        "CREATE ALGORITHM=UNDEFINED DEFINER=`ghost`@`%` SQL SECURITY DEFINER VIEW `v` AS select 1",
        "CREATE ALGORITHM=UNDEFINED  SQL SECURITY DEFINER VIEW `v` AS select 1",
        "CREATE ALGORITHM=UNDEFINED DEFINER=CURRENT_USER SQL SECURITY DEFINER VIEW `v` AS select 1"
    )]
    #[case::procedure(
        "CREATE DEFINER=`a``b`@`localhost` PROCEDURE `p`() SELECT 'DEFINER=`x`@`y`'",
        "CREATE  PROCEDURE `p`() SELECT 'DEFINER=`x`@`y`'",
        "CREATE DEFINER=CURRENT_USER PROCEDURE `p`() SELECT 'DEFINER=`x`@`y`'"
    )]
    #[case::mariadb_dump_trigger(
        "/*!50003 CREATE*/ /*!50017 DEFINER='root'@'localhost'*/ /*!50003 TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a=1 */",
        "/*!50003 CREATE*/ /*!50017 */ /*!50003 TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a=1 */",
        "/*!50003 CREATE*/ /*!50017 DEFINER=CURRENT_USER*/ /*!50003 TRIGGER t BEFORE INSERT ON x FOR EACH ROW SET @a=1 */"
    )]
    #[case::current_user(
        "CREATE DEFINER=CURRENT_USER() EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT 1",
        "CREATE  EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT 1",
        "CREATE DEFINER=CURRENT_USER EVENT e ON SCHEDULE EVERY 1 DAY DO SELECT 1"
    )]
    fn clauses_are_stripped_or_rewritten(
        #[case] sql: &str,
        #[case] stripped: &str,
        #[case] rewritten: &str,
    ) {
        let s = Definer::Strip.apply(sql.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(s).unwrap(), stripped);
        let r = Definer::Rewrite.apply(sql.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(r).unwrap(), rewritten);
        assert_eq!(Definer::Keep.apply(sql.as_bytes()), None);
    }

    #[rstest]
    #[case("INSERT INTO t VALUES ('CREATE DEFINER=`x`@`y` VIEW')")]
    #[case("CREATE TABLE t (c VARCHAR(40) DEFAULT 'DEFINER=`x`@`y`')")]
    #[case("CREATE VIEW v AS SELECT 1")]
    fn other_statements_are_untouched(#[case] sql: &str) {
        assert_eq!(Definer::Strip.apply(sql.as_bytes()), None);
        assert_eq!(Definer::Rewrite.apply(sql.as_bytes()), None);
    }

    #[test]
    fn parses_modes() {
        assert_eq!("Strip".parse::<Definer>(), Ok(Definer::Strip));
        assert!("drop"
            .parse::<Definer>()
            .unwrap_err()
            .contains("keep, strip or rewrite"));
    }
}
