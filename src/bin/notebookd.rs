//! `notebookd`: the daemon. Parses arguments, sets up logging, runs
//! [`notebookd::daemon`], and maps its outcome to an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Serves a Jupyter notebook over TLS behind its own login.
#[derive(Debug, Parser)]
#[command(name = "notebookd", version, about, long_about = None)]
struct Args {
    /// The config file.
    #[arg(long, short = 'c', env = notebookd::config::PATH_ENV, default_value = notebookd::config::DEFAULT_PATH, value_name = "PATH")]
    config: PathBuf,

    /// Check the config (and the TLS files and Jupyter command it names), then exit: 0 if valid, 1 if not.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.check_config {
        return match notebookd::daemon::check(&args.config) {
            Ok((_, notes)) => {
                for note in notes {
                    eprintln!("note: {note}");
                }
                println!("{}: configuration OK", args.config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    notebookd::logging::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(notebookd::daemon::run(&args.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}
