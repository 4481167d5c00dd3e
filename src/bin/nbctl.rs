//! `nbctl`: the administrator's tool for notebookd.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Administers the notebookd Jupyter notebook server.
#[derive(Debug, Parser)]
#[command(name = "nbctl", version, about, long_about = None)]
struct Args {
    /// The config file.
    #[arg(long, short = 'c', global = true, env = notebookd::config::PATH_ENV, default_value = notebookd::config::DEFAULT_PATH, value_name = "PATH")]
    config: PathBuf,
}

fn main() -> ExitCode {
    let _args = Args::parse();
    ExitCode::SUCCESS
}
