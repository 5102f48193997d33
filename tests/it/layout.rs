//! The crate's layout: no circle of imports among the modules of `src/`,
//! and no module importing one on a higher floor (a command, the daemon,
//! the preflight report).
//!
//! Reads the source files, not the compiled crate: every `crate::` and
//! `super::` path outside comments is an edge from the file's module to the
//! longest module that path names. A folder and its root file are one unit
//! (edges between a module and its own descendants are left out). Fails with
//! the circle or the offending edge, so the message says what to move.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules that only the ones listed with them may import; the
/// floors above everything else, highest first.
const UPPER_FLOORS: &[(&str, &[&str])] = &[
    ("cmd", &["cmd"]),
    ("preflight", &["cmd", "preflight"]),
    ("daemon", &["cmd", "preflight", "daemon"]),
    // The read path is above the write path: a restore takes a safety
    // snapshot (a backup); a backup never restores.
    ("restore", &["cmd", "preflight", "daemon", "restore"]),
    // The binlog archive stores segments through the write path's off-site
    // copy; point-in-time restore reads it.
    (
        "binlog",
        &["cmd", "preflight", "daemon", "restore", "binlog"],
    ),
    (
        "backup",
        &["cmd", "preflight", "daemon", "restore", "binlog", "backup"],
    ),
];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` -> `a::b`; `None` for the crate roots.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let name = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("::");
    (name != "lib" && name != "main").then_some(name)
}

/// The code of a file without its comment lines (doc links are not imports).
fn code(text: &str) -> String {
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths that start right after `at` in `code`: `a::b::C`, or each item
/// of a `{a, b::{c, d}}` group (only the leading path of each item matters).
fn paths_after(code: &str, at: usize) -> Vec<String> {
    let rest = &code[at..];
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut items = vec![String::new()];
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => items.push(String::new()),
                _ if depth == 0 => items.last_mut().unwrap().push(c),
                _ => {}
            }
        }
        return items
            .iter()
            .map(|i| i.split_whitespace().collect::<String>())
            .map(|i| i.trim_end_matches("::").to_owned())
            .filter(|i| !i.is_empty() && i != "self")
            .collect();
    }
    let end = rest
        .find(|c: char| !(is_ident(c) || c == ':'))
        .unwrap_or(rest.len());
    vec![rest[..end].trim_end_matches("::").to_owned()]
}

/// The longest known module that `path` (segments from the crate root) names.
fn resolve(modules: &BTreeSet<String>, path: &str) -> Option<String> {
    let segs: Vec<&str> = path.split("::").collect();
    (1..=segs.len())
        .rev()
        .map(|n| segs[..n].join("::"))
        .find(|m| modules.contains(m))
}

fn related(a: &str, b: &str) -> bool {
    a.starts_with(&format!("{b}::")) || b.starts_with(&format!("{a}::"))
}

/// Module -> the modules it imports, for every file under `src`.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut sources = BTreeMap::new();
    for f in &files {
        if let Some(m) = module_of(src, f) {
            sources.insert(m, code(&std::fs::read_to_string(f).unwrap()));
        }
    }
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let mut g = Graph::new();
    for (m, text) in &sources {
        let parent = m.rsplit_once("::").map(|(p, _)| p.to_owned());
        let mut edges = BTreeSet::new();
        for (prefix, base) in [("crate::", None), ("super::", parent.as_deref())] {
            for (at, _) in text.match_indices(prefix) {
                if at > 0 && is_ident(text[..at].chars().last().unwrap()) {
                    continue;
                }
                if prefix == "super::" && base.is_none() {
                    continue;
                }
                for p in paths_after(text, at + prefix.len()) {
                    let full = match base {
                        Some(b) => format!("{b}::{p}"),
                        None => p,
                    };
                    if let Some(to) = resolve(&modules, &full) {
                        if to != *m && !related(m, &to) {
                            edges.insert(to);
                        }
                    }
                }
            }
        }
        g.insert(m.clone(), edges);
    }
    g
}

/// One circle in `g`, as the list of modules around it, if there is any.
fn find_cycle(g: &Graph) -> Option<Vec<String>> {
    // 0 = not seen, 1 = on the current path, 2 = done.
    fn visit(
        g: &Graph,
        m: &str,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.to_owned(), 1);
        path.push(m.to_owned());
        for next in g.get(m).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = path.iter().position(|p| p == next).unwrap();
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(g, next, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(m.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(c) = visit(g, m, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

fn top(m: &str) -> &str {
    m.split("::").next().unwrap()
}

/// Edges that import an upper floor from below it.
fn floor_breaches(g: &Graph) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in g {
        for to in tos {
            for (floor, allowed) in UPPER_FLOORS {
                if top(to) == *floor && !allowed.contains(&top(from)) {
                    out.push(format!("{from} imports {to}"));
                }
            }
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn no_circle_of_imports_among_modules() {
    let g = graph(&src());
    assert!(g.len() > 40, "read only {} modules from src/", g.len());
    if let Some(cycle) = find_cycle(&g) {
        panic!(
            "a circle of imports: {}; move the shared item below both",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn nothing_imports_a_higher_floor() {
    let breaches = floor_breaches(&graph(&src()));
    assert!(
        breaches.is_empty(),
        "modules importing a higher floor (cmd > preflight > daemon > restore > binlog > backup > the rest): {}",
        breaches.join("; ")
    );
}

#[test]
fn the_check_sees_a_circle_and_a_breach() {
    // The same reading over a crate made up for the test: a `use
    // crate::{..}` group, a commented-out import, a `super::` path to the
    // parent (not an edge), a circle through a path in an expression, and
    // a stage that imports the daemon.
    let dir = tempfile::tempdir().unwrap();
    let files = [
        ("lib.rs", "pub mod a; pub mod b; pub mod c; pub mod daemon;"),
        (
            "a.rs",
            "pub mod inner;\nuse crate::{b::B, daemon};\n// use crate::c;",
        ),
        ("a/inner.rs", "use super::A;\nuse crate::c::C;"),
        ("b.rs", "pub struct B;"),
        ("c.rs", "pub struct C;\npub fn f() { crate::a::inner::g() }"),
        ("daemon.rs", "use crate::b::B;"),
    ];
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let g = graph(dir.path());
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(g["a"], names(&["b", "daemon"]));
    assert_eq!(g["a::inner"], names(&["c"]));
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a::inner".into(), "c".into(), "a::inner".into()])
    );
    assert_eq!(floor_breaches(&g), vec!["a imports daemon".to_owned()]);
}
