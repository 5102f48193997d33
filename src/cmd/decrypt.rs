//! `selmai-backup decrypt <IN> <OUT|->`: turn an encrypted backup (`.enc`,
//! or an old `.gpg`) back into the compressed SQL file it was made from, on
//! any machine, without a database. The output appears under its final name
//! only once the whole input has been authenticated.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;

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
}

/// Decrypt `input` into `output` with BACKUP_PASSPHRASE.
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let source = open::locate(&args.input, &settings.prefix, &super::targets(settings)?).await?;
    let (mut plain, counter, hash) =
        open::open_plain(&source, settings.passphrase.as_ref()).await?;
    if args.output == "-" {
        let mut out = tokio::io::stdout();
        // Standard output cannot be taken back: a failure after some bytes
        // went out still ends with a non-zero exit.
        tokio::io::copy(&mut plain, &mut out).await?;
        out.flush().await?;
        open::check_manifest(&source, counter.get(), &hash.hex())?;
        return Ok(());
    }
    let out_path = PathBuf::from(&args.output);
    let partial = PathBuf::from(format!("{}.partial", args.output));
    let result = async {
        let mut f = tokio::fs::File::create(&partial).await?;
        let n = tokio::io::copy(&mut plain, &mut f).await?;
        f.sync_all().await?;
        open::check_manifest(&source, counter.get(), &hash.hex())?;
        tokio::fs::rename(&partial, &out_path).await?;
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
