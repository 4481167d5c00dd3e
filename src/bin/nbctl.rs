//! `nbctl`: the administrator's tool for notebookd. Parses arguments, runs
//! [`notebookd::cli`], and maps its outcome to the documented exit status
//! (0 ok, 1 failure, 2 usage, 3 `status` found no daemon).

use std::process::ExitCode;

use notebookd::cli::args::{Invocation, parse_nbctl};

fn main() -> ExitCode {
    // clap exits with 2 on usage errors (0 for --help and --version).
    let result = match parse_nbctl() {
        Invocation::Run(args) => notebookd::cli::run(args),
        Invocation::GenerateDocs(dir) => notebookd::cli::generate_docs(&dir),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
