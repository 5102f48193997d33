//! A directory tree as data, to compare what an archive gave back with
//! what went in.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// (relative path, type, mode, mtime, content or link target) of every entry under `root`.
pub(crate) fn tree(root: &Path) -> Vec<(PathBuf, &'static str, u32, i64, Vec<u8>)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, &'static str, u32, i64, Vec<u8>)>) {
        let mut kids: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        kids.sort_by_key(|e| e.file_name());
        for e in kids {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().to_owned();
            let mode = m.mode() & 0o7777;
            if m.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.push((rel, "symlink", 0, m.mtime(), t.into_os_string().into_vec()));
            } else if m.is_dir() {
                out.push((rel, "dir", mode, m.mtime(), Vec::new()));
                walk(root, &p, out);
            } else {
                out.push((rel, "file", mode, m.mtime(), fs::read(&p).unwrap()));
            }
        }
    }
    use std::os::unix::ffi::OsStringExt;
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v
}
