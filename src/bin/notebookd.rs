//! `notebookd`: the daemon. Parses arguments, sets up logging, runs
//! [`notebookd::daemon`], and maps its outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use notebookd::cli::args::NotebookdArgs;

fn main() -> ExitCode {
    let args = NotebookdArgs::parse();
    if args.check_config {
        return match notebookd::cli::check_config(&args.config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    notebookd::daemon::logging::init();
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
