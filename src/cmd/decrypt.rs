//! `selmai-backup decrypt <IN> <OUT|->`: turn an encrypted backup (`.enc`,
//! or an old `.gpg`) back into the compressed SQL file it was made from, on
//! any machine, without a database. The output is written to a hidden
//! temporary name beside OUT (mode 0600) and appears under OUT only once
//! the whole input has been authenticated. OUT is never the input, and an
//! existing OUT is replaced only with `--force`.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use tokio::io::AsyncWriteExt;

use super::Refused;
use crate::config::Settings;
use crate::progress::human_bytes;
use crate::restore::open;

/// Arguments of `decrypt`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The encrypted backup: a path, or a name in BACKUP_DIR.
    pub input: String,
    /// Where to write the decrypted file (`-` for standard output).
    pub output: String,
    /// Replace OUTPUT when it exists (never when it is the input itself).
    #[arg(long)]
    pub force: bool,
}

/// Decrypt `input` into `output` with BACKUP_PASSPHRASE.
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let source = open::locate(&args.input, &settings.prefix, &super::targets(settings)?).await?;
    if args.output == "-" {
        let (mut plain, counter, hash) =
            open::open_plain(&source, settings.passphrase.as_ref()).await?;
        let mut out = tokio::io::stdout();
        // Standard output cannot be taken back: a failure after some bytes
        // went out still ends with a non-zero exit.
        tokio::io::copy(&mut plain, &mut out).await?;
        out.flush().await?;
        open::check_manifest(&source, counter.get(), &hash.hex())?;
        return Ok(());
    }
    let out_path = PathBuf::from(&args.output);
    let input_path = source.target.local_path(&source.name);
    let partial = check_output(&out_path, input_path.as_deref(), args.force)?;
    let (mut plain, counter, hash) =
        open::open_plain(&source, settings.passphrase.as_ref()).await?;
    let result = async {
        let f = crate::format::catalog::create_private(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let mut f = tokio::fs::File::from_std(f);
        let n = tokio::io::copy(&mut plain, &mut f)
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        f.sync_all()
            .await
            .with_context(|| format!("writing {}", partial.display()))?;
        drop(f);
        open::check_manifest(&source, counter.get(), &hash.hex())?;
        publish(&partial, &out_path, args.force)?;
        anyhow::Ok(n)
    }
    .await;
    match result {
        Ok(n) => {
            eprintln!(
                "decrypted {} into {} ({})",
                source.name,
                out_path.display(),
                human_bytes(n)
            );
            Ok(())
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&partial).await;
            Err(e)
        }
    }
}

/// Refuse an OUT that is the input (by any path: same device and inode),
/// an existing OUT without `force`, OUT in a missing directory or OUT that
/// is a directory; returns the temporary name to write to.
fn check_output(out: &Path, input: Option<&Path>, force: bool) -> anyhow::Result<PathBuf> {
    let name = out
        .file_name()
        .filter(|n| !n.is_empty() && *n != "." && *n != "..")
        .ok_or_else(|| {
            Refused(format!(
                "{} is not a file name: give the path of the file to write",
                out.display()
            ))
        })?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(Refused(format!(
                "{} is not a directory: cannot write {} there",
                dir.display(),
                out.display()
            ))
            .into())
        }
        Err(e) => {
            return Err(e).with_context(|| {
                format!(
                "cannot write {}: its directory {} is not usable; create it or choose another OUT",
                out.display(),
                dir.display()
            )
            })
        }
    }
    match std::fs::metadata(out) {
        Ok(m) => {
            let same = input
                .and_then(|i| std::fs::metadata(i).ok())
                .is_some_and(|i| i.dev() == m.dev() && i.ino() == m.ino());
            if same {
                return Err(Refused(format!(
                    "{} is the encrypted input itself: decrypting into it would destroy the backup; choose another OUT",
                    out.display()
                ))
                .into());
            }
            if m.is_dir() {
                return Err(Refused(format!(
                    "{} is a directory: give the path of the file to write, such as {}/backup.sql.gz",
                    out.display(),
                    out.display()
                ))
                .into());
            }
            if !force {
                return Err(Refused(format!(
                    "{} exists: choose another OUT, or pass --force to replace it",
                    out.display()
                ))
                .into());
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot check {}", out.display())),
    }
    Ok(dir.join(format!(
        ".{}.{}.partial",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// Move the finished file under its final name: replacing OUT only with
/// `force`, and without it never over a file that appeared meanwhile.
fn publish(partial: &Path, out: &Path, force: bool) -> anyhow::Result<()> {
    let renamed = if force {
        std::fs::rename(partial, out)
    } else {
        use rustix::fs::{renameat_with, RenameFlags, CWD};
        match renameat_with(CWD, partial, CWD, out, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::EXIST) => {
                return Err(Refused(format!(
                "{} appeared while decrypting: choose another OUT, or pass --force to replace it",
                out.display()
            ))
                .into())
            }
            // A file system without no-replace renames: OUT was checked
            // missing before decrypting.
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
                std::fs::rename(partial, out)
            }
            Err(e) => Err(io::Error::from(e)),
        }
    };
    renamed.with_context(|| format!("cannot rename {} to {}", partial.display(), out.display()))
}
