//! `nbctl`, the administrator's tool, and the command lines of both binaries.
//!
//! One module per verb group: [`passwd`], [`cert`], [`embed`], [`config`]
//! (config check/show/get/set/unset), [`daemon`] (status and reload over the
//! control socket), [`sessions`] (list and end login sessions), [`token`]
//! (API tokens). [`edit`] edits the config file keeping its comments,
//! [`file`] replaces files atomically, [`docs`] writes the man pages and
//! completions from [`args`].
//!
//! Exit status of every verb: 0 success, 1 failure, 2 bad usage (clap's own
//! errors, unknown keys, values of the wrong type, bad origins), 3 for
//! `nbctl status` when notebookd is not running.

/// Prints a line of information on standard output. Failing to print it
/// (a closed pipe, a full disk) must not fail or panic the command.
macro_rules! say {
    ($($arg:tt)*) => {
        let _ = $crate::cli::emit(&format!($($arg)*));
    };
}

pub mod args;
pub mod cert;
pub mod config;
pub mod daemon;
pub mod docs;
pub mod doctor;
pub mod edit;
pub mod embed;
pub mod file;
pub mod passwd;
pub mod sessions;
pub mod token;

use std::path::Path;

use args::{
    CertCommand, ConfigCommand, EmbedCommand, NbctlArgs, NbctlCommand, SessionsCommand,
    TokenCommand,
};

/// Why a command failed, and so its exit status.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line asks for something impossible: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The command could not be carried out: exit 1.
    #[error("{0}")]
    Failed(String),
    /// `nbctl status` found no running notebookd: exit 3.
    #[error("{0}")]
    NotRunning(String),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Failed(_) => 1,
            CliError::Usage(_) => 2,
            CliError::NotRunning(_) => 3,
        }
    }
}

/// Prints `text` and a newline on standard output: the result of a command
/// (a hash, a value, a listing), so failing to print it is an error. A
/// reader that stopped reading (`nbctl config show | head`) is not.
pub fn emit(text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError::Failed(format!(
            "cannot write to standard output: {e}"
        ))),
    }
}

/// Runs one `nbctl` command.
pub fn run(args: NbctlArgs) -> Result<(), CliError> {
    let path = args.config.as_path();
    match args.command {
        NbctlCommand::Passwd(a) => passwd::run(path, &a),
        NbctlCommand::Cert(CertCommand::Generate(a)) => cert::generate(path, &a),
        NbctlCommand::Cert(CertCommand::Show(a)) => cert::show(path, &a),
        NbctlCommand::Cert(CertCommand::Install(a)) => cert::install(path, &a),
        NbctlCommand::Cert(CertCommand::Acme(a)) => daemon::cert_acme(path, &a),
        NbctlCommand::Embed(EmbedCommand::Allow { origin, reload }) => {
            embed::allow(path, &origin, reload)
        }
        NbctlCommand::Embed(EmbedCommand::Deny { origin, reload }) => {
            embed::deny(path, &origin, reload)
        }
        NbctlCommand::Embed(EmbedCommand::List) => embed::list(path),
        NbctlCommand::Config(ConfigCommand::Check) => check_config(path),
        NbctlCommand::Config(ConfigCommand::Show { json }) => config::show(path, json),
        NbctlCommand::Config(ConfigCommand::Get { key }) => config::get(path, &key),
        NbctlCommand::Config(ConfigCommand::Set {
            key,
            values,
            reload,
            restart,
            create,
        }) => config::set(path, &key, &values, reload, restart, create),
        NbctlCommand::Config(ConfigCommand::Unset {
            key,
            reload,
            restart,
        }) => config::unset(path, &key, reload, restart),
        NbctlCommand::Status(a) => daemon::status(path, a.json),
        NbctlCommand::Doctor(a) => doctor::run(path, a.json),
        NbctlCommand::Reload(_) => daemon::reload(path),
        NbctlCommand::Unlock(_) => daemon::unlock(path),
        NbctlCommand::Sessions(SessionsCommand::List { json }) => sessions::list(path, json),
        NbctlCommand::Sessions(SessionsCommand::Revoke { id, all }) => {
            sessions::revoke(path, id.as_deref(), all)
        }
        NbctlCommand::Token(TokenCommand::Create { name, expires }) => {
            token::create(path, &name, expires.as_deref())
        }
        NbctlCommand::Token(TokenCommand::List { json }) => token::list(path, json),
        NbctlCommand::Token(TokenCommand::Revoke { name }) => token::revoke(path, &name),
    }
}

/// `nbctl generate-docs DIR`: writes the man pages and completions, and lists them.
pub fn generate_docs(dir: &Path) -> Result<(), CliError> {
    for f in docs::generate(dir)? {
        emit(&f.display().to_string())?;
    }
    Ok(())
}

/// `notebookd --check-config` and `nbctl config check`: what the daemon
/// would load, the TLS files and the Jupyter command included.
pub fn check_config(path: &Path) -> Result<(), CliError> {
    match crate::daemon::check(path) {
        Ok((_, notes)) => {
            for note in notes {
                eprintln!("note: {note}");
            }
            emit(&format!("{}: configuration OK", path.display()))
        }
        Err(e) => Err(CliError::Failed(format!("{e:#}"))),
    }
}
