//! The account's privileges, read from `SHOW GRANTS` lines: global,
//! database (with `%` and `_` patterns), table and routine grants, roles
//! and `PUBLIC`, combined as the server combines them.

use std::collections::BTreeSet;

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// `*.*`
    Global,
    /// `db`.* (the name may hold `%` and `_` wildcards, `\` escapes them).
    Database(String),
    /// `db`.`table`
    Table(String, String),
    /// Anything else (`PROCEDURE db.p`, `PROXY`): not used by the checks.
    Other,
}

/// One `GRANT ... ON ... TO ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// Where.
    pub scope: Scope,
    /// Upper-case privilege names (`SELECT`, `SHOW VIEW` ...); column
    /// privileges (`SELECT (a)`) are left out.
    pub privileges: BTreeSet<String>,
    /// `ALL PRIVILEGES`.
    pub all: bool,
}

/// The parsed output of `SHOW GRANTS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants {
    /// Privilege grants.
    pub grants: Vec<Grant>,
    /// Roles granted (`GRANT role TO user`); their privileges count only
    /// when the role is active, and `SHOW GRANTS` then lists them as grants.
    pub roles: Vec<String>,
}

impl Grants {
    /// Parse `SHOW GRANTS` lines; lines that are not grants are ignored.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Grants {
        let mut out = Grants::default();
        for line in lines {
            let line = line.as_ref().trim();
            let Some(rest) = strip_word(line, "GRANT") else {
                continue;
            };
            let Some(to) = find_word(rest, "TO") else {
                continue;
            };
            let head = &rest[..to];
            match find_word(head, "ON") {
                None => out.roles.push(unquote(head.trim())),
                Some(on) => {
                    let (all, privileges) = parse_privileges(&head[..on]);
                    let scope = parse_scope(head[on + 2..].trim());
                    out.grants.push(Grant {
                        scope,
                        privileges,
                        all,
                    });
                }
            }
        }
        out
    }

    /// Whether `privilege` is granted on `*.*`.
    pub fn global(&self, privilege: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.scope == Scope::Global && (g.all || g.privileges.contains(privilege)))
    }

    /// Whether `privilege` (a database-level one) applies to every table of
    /// `database`: granted on `*.*` or on a database pattern matching it.
    pub fn on_database(&self, database: &str, privilege: &str) -> bool {
        self.grants.iter().any(|g| {
            let applies = match &g.scope {
                Scope::Global => true,
                Scope::Database(pattern) => db_matches(pattern, database),
                _ => false,
            };
            applies && (g.all || g.privileges.contains(privilege))
        })
    }

    /// Whether `privilege` is granted on the table `database`.`table` (or above).
    pub fn on_table(&self, database: &str, table: &str, privilege: &str) -> bool {
        self.on_database(database, privilege)
            || self.grants.iter().any(|g| {
                matches!(&g.scope, Scope::Table(d, t) if d == database && t == table)
                    && (g.all || g.privileges.contains(privilege))
            })
    }

    /// Tables of `database` with `privilege` granted on the table itself.
    pub fn tables_with(&self, database: &str, privilege: &str) -> Vec<String> {
        self.grants
            .iter()
            .filter_map(|g| match &g.scope {
                Scope::Table(d, t)
                    if d == database && (g.all || g.privileges.contains(privilege)) =>
                {
                    Some(t.clone())
                }
                _ => None,
            })
            .collect()
    }
}

/// `s` after a leading case-insensitive `word` and whitespace.
pub(super) fn strip_word<'a>(s: &'a str, word: &str) -> Option<&'a str> {
    let head = s.get(..word.len())?;
    let next = s[word.len()..].chars().next();
    (head.eq_ignore_ascii_case(word) && next.is_some_and(char::is_whitespace))
        .then(|| s[word.len()..].trim_start())
}

/// Byte offset of the first ` word ` outside quotes and parentheses.
pub(super) fn find_word(s: &str, word: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut quote: Option<u8> = None;
    let mut depth = 0i32;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        match quote {
            Some(q) => {
                if c == b'\\' && q != b'`' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                b'`' | b'\'' | b'"' => quote = Some(c),
                b'(' => depth += 1,
                b')' => depth -= 1,
                _ if depth == 0
                    && (i == 0 || b[i - 1].is_ascii_whitespace())
                    && b.len() >= i + word.len()
                    && b[i..i + word.len()].eq_ignore_ascii_case(word.as_bytes())
                    && b.get(i + word.len()).is_some_and(u8::is_ascii_whitespace) =>
                {
                    return Some(i);
                }
                _ => {}
            },
        }
        i += 1;
    }
    None
}

/// `SELECT, SHOW VIEW, UPDATE (a, b)` -> (all, {SELECT, SHOW VIEW}).
pub(super) fn parse_privileges(list: &str) -> (bool, BTreeSet<String>) {
    let mut set = BTreeSet::new();
    let mut all = false;
    let mut depth = 0i32;
    let mut current = String::new();
    let mut column_level = false;
    let mut flush = |current: &mut String, column_level: &mut bool| {
        let name = current.split_whitespace().collect::<Vec<_>>().join(" ");
        let name = name.to_ascii_uppercase();
        if !*column_level && !name.is_empty() {
            if name == "ALL" || name == "ALL PRIVILEGES" {
                all = true;
            } else {
                set.insert(name);
            }
        }
        current.clear();
        *column_level = false;
    };
    for c in list.chars() {
        match c {
            '(' => {
                depth += 1;
                column_level = true;
            }
            ')' => depth -= 1,
            ',' if depth == 0 => flush(&mut current, &mut column_level),
            _ if depth == 0 => current.push(c),
            _ => {}
        }
    }
    flush(&mut current, &mut column_level);
    (all, set)
}

/// `*.*`, `` `db`.* ``, `` `db`.`t` ``, `PROCEDURE ...`.
pub(super) fn parse_scope(s: &str) -> Scope {
    if s == "*.*" {
        return Scope::Global;
    }
    let parts = split_dot(s);
    match parts.as_slice() {
        [db, star] if star == "*" => Scope::Database(db.clone()),
        [db, table] if !db.contains(' ') => Scope::Table(db.clone(), table.clone()),
        _ => Scope::Other,
    }
}

/// Split `a.b` on the dot outside backticks, unquoting each part.
pub(super) fn split_dot(s: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' if in_quote && chars.peek() == Some(&'`') => {
                cur.push('`');
                chars.next();
            }
            '`' => in_quote = !in_quote,
            '.' if !in_quote => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
}

/// A name without its backticks or quotes.
pub(super) fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['`', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            let doubled: String = [q, q].iter().collect();
            return s[1..s.len() - 1].replace(&doubled, &q.to_string());
        }
    }
    s.to_owned()
}

/// Whether the grant pattern `pattern` (`%`, `_`, `\` escapes, as stored
/// by the server) matches the database name `name`.
pub fn db_matches(pattern: &str, name: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum P {
        Lit(char),
        One,
        Any,
    }
    let mut pat = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // SHOW GRANTS may print the escape doubled (`test\\_%`).
            '\\' => {
                while chars.peek() == Some(&'\\') {
                    chars.next();
                }
                if let Some(n) = chars.next() {
                    pat.push(P::Lit(n));
                }
            }
            '%' => pat.push(P::Any),
            '_' => pat.push(P::One),
            c => pat.push(P::Lit(c)),
        }
    }
    let name: Vec<char> = name.chars().collect();
    // Classic wildcard matching with backtracking on the last `%`.
    let (mut p, mut n) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pat.get(p) {
            Some(P::Lit(c)) if *c == name[n] => {
                p += 1;
                n += 1;
            }
            Some(P::One) => {
                p += 1;
                n += 1;
            }
            Some(P::Any) => {
                star = Some((p, n));
                p += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pat[p..].iter().all(|x| *x == P::Any)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::USAGE;
    use rstest::rstest;

    #[rstest]
    #[case::all_global(
        &["GRANT ALL PRIVILEGES ON *.* TO `selmai_test`@`localhost` IDENTIFIED BY PASSWORD '*C8EF' WITH GRANT OPTION"],
        "selmai", "SHOW VIEW", true
    )]
    #[case::usage_only(&[USAGE], "selmai", "SELECT", false)]
    #[case::db_level(
        &[USAGE, "GRANT SELECT, SHOW VIEW, TRIGGER ON `selmai`.* TO `backup`@`%`"],
        "selmai", "SHOW VIEW", true
    )]
    #[case::other_db(
        &[USAGE, "GRANT SELECT ON `selmai_old`.* TO `backup`@`%`"],
        "selmai", "SELECT", false
    )]
    #[case::db_all(
        &[USAGE, "GRANT ALL PRIVILEGES ON `selmai`.* TO `backup`@`%`"],
        "selmai", "EVENT", true
    )]
    #[case::wildcard(
        &[USAGE, "GRANT SELECT ON `sel%`.* TO `backup`@`%`"],
        "selmai", "SELECT", true
    )]
    #[case::wildcard_miss(
        &[USAGE, "GRANT SELECT ON `sel%`.* TO `backup`@`%`"],
        "other", "SELECT", false
    )]
    #[case::underscore_is_one_char(
        &[USAGE, "GRANT SELECT ON `app_db`.* TO `backup`@`%`"],
        "appxdb", "SELECT", true
    )]
    #[case::escaped_underscore(
        &[USAGE, "GRANT SELECT ON `app\\_db`.* TO `backup`@`%`"],
        "appxdb", "SELECT", false
    )]
    #[case::escaped_underscore_matches_itself(
        &[USAGE, "GRANT SELECT ON `app\\_db`.* TO `backup`@`%`"],
        "app_db", "SELECT", true
    )]
    #[case::public_doubled_escape(
        &[USAGE, "GRANT SELECT, INSERT, CREATE VIEW, SHOW VIEW ON `test\\\\_%`.* TO PUBLIC"],
        "test_x", "SHOW VIEW", true
    )]
    #[case::backtick_in_name(
        &[USAGE, "GRANT SELECT ON `we``ird`.* TO `backup`@`%`"],
        "we`ird", "SELECT", true
    )]
    #[case::table_level_is_not_database_level(
        &[USAGE, "GRANT SELECT ON `selmai`.`users` TO `backup`@`%`"],
        "selmai", "SELECT", false
    )]
    #[case::column_level_ignored(
        &[USAGE, "GRANT SELECT (`id`, `name`), INSERT ON `selmai`.* TO `backup`@`%`"],
        "selmai", "SELECT", false
    )]
    #[case::after_column_level(
        &[USAGE, "GRANT SELECT (`id`, `name`), INSERT ON `selmai`.* TO `backup`@`%`"],
        "selmai", "INSERT", true
    )]
    #[case::lower_case(
        &[USAGE, "grant select, show view on `selmai`.* to `backup`@`%`"],
        "selmai", "SHOW VIEW", true
    )]
    #[case::routine_grant_ignored(
        &[USAGE, "GRANT EXECUTE ON PROCEDURE `selmai`.`p` TO `backup`@`%`"],
        "selmai", "EXECUTE", false
    )]
    fn database_privileges(
        #[case] lines: &[&str],
        #[case] db: &str,
        #[case] privilege: &str,
        #[case] want: bool,
    ) {
        let g = Grants::parse(lines);
        assert_eq!(g.on_database(db, privilege), want, "{g:?}");
    }

    #[test]
    fn global_only_privileges_need_star_star() {
        let g = Grants::parse(&[USAGE, "GRANT ALL PRIVILEGES ON `selmai`.* TO `backup`@`%`"]);
        assert!(!g.global("SUPER"));
        assert!(!g.global("SET USER"));
        let g = Grants::parse(&["GRANT SELECT, SET USER ON *.* TO `r`@`%`"]);
        assert!(g.global("SET USER"));
        assert!(!g.global("SUPER"));
    }

    #[test]
    fn tables_roles_and_proxy() {
        let g = Grants::parse(&[
            USAGE,
            "GRANT SELECT ON `mysql`.`proc` TO `backup`@`%`",
            "GRANT SELECT, INSERT ON `selmai`.`users` TO `backup`@`%`",
            "GRANT `backup_role` TO `backup`@`%`",
            "GRANT PROXY ON ''@'%' TO 'root'@'localhost' WITH GRANT OPTION",
            "SET DEFAULT ROLE `backup_role` FOR `backup`@`%`",
        ]);
        assert!(g.on_table("mysql", "proc", "SELECT"));
        assert!(!g.on_table("mysql", "user", "SELECT"));
        assert_eq!(g.tables_with("selmai", "SELECT"), ["users"]);
        assert_eq!(g.roles, ["backup_role"]);
        assert_eq!(g.grants.last().unwrap().scope, Scope::Other);
    }

    #[rstest]
    #[case("abc", "abc", true)]
    #[case("abc", "abcd", false)]
    #[case("a%", "a", true)]
    #[case("%c", "abc", true)]
    #[case("a%c%e", "abxcdde", true)]
    #[case("a%c%e", "abxcdd", false)]
    #[case("a_c", "abc", true)]
    #[case("a_c", "ac", false)]
    #[case("a\\%", "a%", true)]
    #[case("a\\%", "ab", false)]
    fn db_patterns(#[case] pattern: &str, #[case] name: &str, #[case] want: bool) {
        assert_eq!(db_matches(pattern, name), want);
    }
}
