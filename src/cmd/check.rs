//! `selmai-backup check`: the preflight on demand. Prints every finding of
//! the backup preflight (what `run` checks at start: privileges,
//! `max_allowed_packet`, free space, server version) and, with `--restore`,
//! of the restore preflight for that backup; exits like the job would
//! refuse (3 for a database problem, 8 for space). Touches nothing.

use crate::config::Settings;
use crate::preflight::{self, Report};
use crate::restore::open;

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Also judge a restore of this backup (a name, a path, or `latest`):
    /// the privileges it needs, RESTORE_DEFINER, room for the safety snapshot.
    #[arg(long, value_name = "FILE")]
    pub restore: Option<String>,
    /// With --restore: the database it would go into (default DB_NAME).
    #[arg(long, value_name = "NAME", requires = "restore")]
    pub into: Option<String>,
}

/// Print the reports; `Err` (with the exit code of the problem) on a fatal finding.
pub async fn run(args: Args, settings: &Settings) -> anyhow::Result<()> {
    let backup = preflight::for_backup(settings).await?;
    println!("backup preflight:");
    print!("{backup}");
    let restore = match &args.restore {
        None => Report::default(),
        Some(file) => {
            let db = settings.db()?;
            let into = args.into.clone().unwrap_or_else(|| db.name.clone());
            let source = open::locate(file, &settings.prefix, &super::targets(settings)?).await?;
            let report = preflight::for_restore(settings, &db, &into, &source, true).await?;
            println!("restore preflight ({} into `{into}`):", source.name);
            print!("{report}");
            report
        }
    };
    backup.into_result()?;
    restore.into_result()?;
    Ok(())
}
