//! The `selmai-backup` binary: parse the command line, read the
//! configuration, set up logging, run the subcommand, map errors to exit codes.

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use selmai_backup::cmd::{self, Cli, Command};
use selmai_backup::config::{LogSettings, Settings};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Docker reserves health check exit codes other than 0 and 1.
    let health = matches!(cli.command, Command::Health(_));
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("selmai-backup: configuration error: {e}");
            return ExitCode::from(if health {
                cmd::exit::FAILURE
            } else {
                cmd::exit::CONFIG
            });
        }
    };
    init_logging(&settings.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("selmai-backup: cannot start the async runtime: {e}");
            return ExitCode::from(cmd::exit::FAILURE);
        }
    };
    let result = runtime.block_on(cmd::run(cli, settings));
    // An abandoned backup may leave a blocking task (the encoder) winding
    // down; never let it hold the exit past Docker's stop timeout.
    runtime.shutdown_timeout(Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::from(cmd::exit::OK),
        Err(e) if health => {
            eprintln!("selmai-backup: {}", cmd::one_line(&e));
            ExitCode::from(cmd::exit::FAILURE)
        }
        Err(e) => {
            eprintln!("selmai-backup: error: {}", cmd::one_line(&e));
            ExitCode::from(cmd::exit_code(&e))
        }
    }
}

fn init_logging(log: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // No colour codes in `docker logs` or files: only on a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if log.json {
        builder.json().init();
    } else {
        builder.with_target(false).init();
    }
}
