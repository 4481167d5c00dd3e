//! The command lines of both binaries, `notebookd` and `nbctl`, as clap
//! definitions. They live in the library so that the man pages and shell
//! completions are generated from exactly what the binaries parse
//! (see [`super::docs`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{DEFAULT_PATH, PATH_ENV};

/// Serves a Jupyter notebook over TLS behind its own login.
///
/// notebookd is the only process on the network: it terminates TLS, serves
/// its login page, checks a signed session cookie on every request and
/// proxies the rest, WebSockets included, to a real Jupyter server that it
/// runs as a child process on a private unix socket. It runs in the
/// foreground; under systemd (notebook.service) it logs to the journal and
/// reports readiness, otherwise it logs to standard error.
#[derive(Debug, Parser)]
#[command(name = "notebookd", version)]
pub struct NotebookdArgs {
    /// The config file.
    #[arg(long, short = 'c', env = PATH_ENV, default_value = DEFAULT_PATH, value_name = "PATH")]
    pub config: PathBuf,

    /// Check the config (and the TLS files and Jupyter command it names), then exit: 0 if valid, 1 if not.
    #[arg(long)]
    pub check_config: bool,
}

/// Administers the notebookd Jupyter notebook server.
///
/// nbctl sets the login password, makes and installs the TLS certificate,
/// chooses the sites that may embed the notebook, reads and changes the
/// config file (keeping its comments), and asks the running notebookd for
/// its status or to reload. Commands that change the config or the TLS
/// files ask the running daemon to reload afterwards.
#[derive(Debug, Parser)]
#[command(
    name = "nbctl",
    version,
    arg_required_else_help = true,
    after_help = "Exit status: 0 success, 1 failure, 2 bad usage, 3 `status` found no running notebookd."
)]
pub struct NbctlArgs {
    /// The config file.
    #[arg(long, short = 'c', global = true, env = PATH_ENV, default_value = DEFAULT_PATH, value_name = "PATH")]
    pub config: PathBuf,

    #[command(subcommand)]
    pub command: NbctlCommand,
}

#[derive(Debug, Subcommand)]
pub enum NbctlCommand {
    Passwd(PasswdArgs),
    #[command(subcommand)]
    Cert(CertCommand),
    #[command(subcommand)]
    Embed(EmbedCommand),
    #[command(subcommand)]
    Config(ConfigCommand),
    Status(StatusArgs),
    Reload(ReloadArgs),
    #[command(subcommand)]
    Sessions(SessionsCommand),
    #[command(subcommand)]
    Token(TokenCommand),
    Unlock(UnlockArgs),
    Doctor(DoctorArgs),
}

/// Checks what administrators get wrong, one line per check with its fix.
///
/// The config; the certificate (chain, expiry, names against
/// server.public_url and server.listen); the key's permissions; whether the
/// names of server.public_url and tls.acme.domains resolve; ACME: its
/// state, whether each domain leads to this machine (its addresses, and
/// notebookd's probe asked through the name), and this machine's clock
/// against the CA's (the Date of its directory); the Jupyter command, its
/// version and kernelspecs; the running daemon; the systemd unit (enabled,
/// active, drop-ins). With the daemon running, it
/// connects to server.public_url and asks notebookd what arrived: whether a
/// proxy in front is trusted and sends X-Forwarded-Proto, and whether a
/// WebSocket upgrade passes. Run it as root or a member of group notebook
/// for the checks that need the control socket. Exits with 1 if any check
/// fails, else 0.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The checks as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The hidden verb of the nbctl binary that writes the man pages and
/// completions. It is added here, not to [`NbctlArgs`], so that the pages
/// and completions generated from [`NbctlArgs`] do not mention it.
pub const GENERATE_DOCS: &str = "generate-docs";

/// What the nbctl binary was asked to do.
#[derive(Debug)]
pub enum Invocation {
    Run(NbctlArgs),
    /// `nbctl generate-docs DIR`.
    GenerateDocs(PathBuf),
}

/// Parses nbctl's command line (clap exits with 2 on usage errors).
pub fn parse_nbctl() -> Invocation {
    use clap::{CommandFactory, FromArgMatches};
    let command = NbctlArgs::command().subcommand(
        clap::Command::new(GENERATE_DOCS)
            .hide(true)
            .about(
                "Writes the man pages and shell completions into DIR (used to build the packages)",
            )
            .arg(
                clap::Arg::new("dir")
                    .value_name("DIR")
                    .required(true)
                    .value_parser(clap::value_parser!(PathBuf)),
            ),
    );
    let mut matches = command.get_matches();
    if let Some(dir) = matches
        .subcommand_matches(GENERATE_DOCS)
        .and_then(|m| m.get_one::<PathBuf>("dir"))
    {
        return Invocation::GenerateDocs(dir.clone());
    }
    match NbctlArgs::from_arg_matches_mut(&mut matches) {
        Ok(args) => Invocation::Run(args),
        Err(e) => e.exit(),
    }
}

/// Whether to ask the running notebookd to reload after a change.
#[derive(Debug, Clone, Copy, Args)]
pub struct ReloadFlag {
    /// Only change the files; do not ask the running notebookd to reload (run `nbctl reload` later).
    #[arg(long)]
    pub no_reload: bool,
}

/// Whether a change may restart the running Jupyter (and end its kernels).
#[derive(Debug, Clone, Copy, Args)]
pub struct RestartJupyterFlag {
    /// Go ahead when the change restarts the running Jupyter, which ends every running kernel (asked on a terminal otherwise).
    #[arg(long)]
    pub restart_jupyter: bool,
}

/// Sets the login password.
///
/// Prompts twice for the new password without echoing it (or reads it from
/// standard input with --stdin), writes its hash to auth.password_hash in
/// the config as `argon2:$argon2id$v=19$m=10240,t=10,p=8$...`, the form
/// jupyter_server.auth.passwd writes, and asks the running notebookd to
/// reload. Changing the password ends every existing login session.
#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Read the password from standard input: one line, optionally followed by the same password again as confirmation.
    #[arg(long)]
    pub stdin: bool,
    /// Only print the hash on standard output; change nothing.
    #[arg(long)]
    pub print: bool,
    /// Accept an empty password.
    #[arg(long)]
    pub allow_empty: bool,
    /// Accept a password shorter than 8 characters or one of the most common ones.
    #[arg(long)]
    pub allow_weak: bool,
    #[command(flatten)]
    pub reload: ReloadFlag,
}

/// Makes, shows or installs the TLS certificate and key.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    Generate(CertGenerateArgs),
    Show(CertShowArgs),
    Install(CertInstallArgs),
    Acme(CertAcmeArgs),
}

/// Shows the running daemon's ACME state (`[tls.acme]`), or asks it to renew now.
///
/// The state names when renewal is due and which rule set it: the time
/// picked in the CA's renewal window (RFC 9773 ARI) where the CA offers one
/// and it is earlier, else tls.acme.renew_before or a third of the lifetime
/// left. Exits with 1 if ACME is failing or off, 3 if notebookd is not running.
#[derive(Debug, Args)]
pub struct CertAcmeArgs {
    /// Order a new certificate now instead of waiting for renewal (or the next retry).
    #[arg(long)]
    pub renew: bool,
    /// The ACME state as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The kind of private key `nbctl cert generate` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyType {
    /// ECDSA on NIST P-256, signed with SHA-256: small, fast, accepted everywhere.
    EcP256,
    /// ECDSA on NIST P-384, signed with SHA-384.
    EcP384,
    /// RSA 2048 bits, signed with SHA-256.
    #[value(name = "rsa-2048")]
    Rsa2048,
    /// RSA 3072 bits, signed with SHA-256.
    #[value(name = "rsa-3072")]
    Rsa3072,
    /// RSA 4096 bits, signed with SHA-256.
    #[value(name = "rsa-4096")]
    Rsa4096,
}

/// Where certificate commands read and write; the config's tls.cert and tls.key unless given.
#[derive(Debug, Clone, Args)]
pub struct CertPaths {
    /// The certificate file, instead of the config's tls.cert.
    #[arg(long, value_name = "PATH")]
    pub cert: Option<PathBuf>,
    /// The private key file, instead of the config's tls.key.
    #[arg(long, value_name = "PATH")]
    pub key: Option<PathBuf>,
}

/// Makes a self-signed certificate and a new private key.
///
/// The certificate names every --host as a subject alternative name (by
/// default the machine's hostname, its fully qualified name, `localhost` and
/// its non-loopback IP addresses). The key is written with mode 0640, owned
/// by root and group notebook when that group exists (so the service can
/// read it), else 0600. Existing files are kept unless --force is given.
#[derive(Debug, Args)]
pub struct CertGenerateArgs {
    /// A DNS name (`nb.example.com`, `*.example.com`) or IP address the certificate is for; repeat for several.
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Days the certificate is valid (825 at most is what Apple devices accept).
    #[arg(long, default_value_t = 825, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
    /// The kind of private key.
    #[arg(long, value_enum, default_value_t = KeyType::EcP256)]
    pub key_type: KeyType,
    /// Replace an existing certificate and key.
    #[arg(long)]
    pub force: bool,
    /// Sign the certificate with a small local CA (ca.pem and ca-key.pem next
    /// to the certificate; made on first use, kept after), and print how to
    /// make browsers trust that CA on Linux, macOS and Windows.
    #[arg(long)]
    pub ca: bool,
    #[command(flatten)]
    pub paths: CertPaths,
    #[command(flatten)]
    pub reload: ReloadFlag,
}

/// Shows the certificate: names, issuer, validity, fingerprint, and whether the key matches.
///
/// Exits with 1 if the certificate cannot be read or has expired, or the key
/// cannot be read or does not belong to it.
#[derive(Debug, Args)]
pub struct CertShowArgs {
    #[command(flatten)]
    pub paths: CertPaths,
}

/// Installs a certificate and key obtained elsewhere (e.g. from a CA).
///
/// Checks them first: both parse as PEM, the key belongs to the first
/// certificate, each following certificate issued the one before it, none
/// has expired, and notebookd's TLS stack accepts them. Only then are they
/// copied into place (certificate 0644; key as for `cert generate`) and the
/// daemon reloaded. On any error nothing is changed.
#[derive(Debug, Args)]
pub struct CertInstallArgs {
    /// The PEM certificate chain: the server certificate first, then its issuers.
    #[arg(value_name = "CERT")]
    pub source_cert: PathBuf,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1; not encrypted).
    #[arg(value_name = "KEY")]
    pub source_key: PathBuf,
    #[command(flatten)]
    pub paths: CertPaths,
    #[command(flatten)]
    pub reload: ReloadFlag,
}

/// Chooses the sites that may show the notebook in an iframe (embed.frame_ancestors).
#[derive(Debug, Subcommand)]
pub enum EmbedCommand {
    /// Allows ORIGIN (e.g. https://my.example.com or https://*.example.com) to embed the notebook.
    Allow {
        /// scheme://host[:port], e.g. https://my.example.com or https://*.example.com.
        #[arg(value_name = "ORIGIN")]
        origin: String,
        #[command(flatten)]
        reload: ReloadFlag,
    },
    /// Stops allowing ORIGIN to embed the notebook.
    Deny {
        /// An origin now in the list (`nbctl embed list`).
        #[arg(value_name = "ORIGIN")]
        origin: String,
        #[command(flatten)]
        reload: ReloadFlag,
    },
    /// Lists the allowed origins, one per line.
    List,
}

/// Checks, shows and changes the config file.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validates the config, its TLS files and Jupyter command, as `notebookd --check-config` does.
    Check,
    /// Prints the effective config: every key, defaults filled in, secrets redacted.
    Show {
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
    /// Prints the effective value of KEY (e.g. server.listen).
    Get {
        /// A dotted key such as server.listen, or a section such as auth.
        #[arg(value_name = "KEY")]
        key: String,
    },
    /// Sets KEY to VALUE, typed by the config's schema; a list takes several values.
    ///
    /// The whole file is validated before it is written; comments, order and
    /// formatting of the rest of the file are kept. Examples:
    /// `nbctl config set server.listen 127.0.0.1:9999 '[::1]:9999'`,
    /// `nbctl config set auth.session_lifetime 1d`,
    /// `nbctl config set jupyter.env.MPLBACKEND Agg`.
    Set {
        /// A dotted key such as server.listen or jupyter.env.NAME.
        #[arg(value_name = "KEY")]
        key: String,
        /// The value: a string, number or true/false as the key takes; a list
        /// takes several (or one TOML list such as '["a", "b"]'). Put `--`
        /// before values that start with a dash.
        #[arg(value_name = "VALUE", required = true, num_args = 1..)]
        values: Vec<String>,
        #[command(flatten)]
        reload: ReloadFlag,
        #[command(flatten)]
        restart: RestartJupyterFlag,
        /// With jupyter.root_dir: create the directory if it does not exist.
        #[arg(long)]
        create: bool,
    },
    /// Removes KEY from the file, so that its default applies.
    Unset {
        /// A dotted key such as server.base_url.
        #[arg(value_name = "KEY")]
        key: String,
        #[command(flatten)]
        reload: ReloadFlag,
        #[command(flatten)]
        restart: RestartJupyterFlag,
    },
}

/// Shows the running notebookd: version, uptime, addresses, certificate expiry, Jupyter, sessions, errors.
///
/// Asks the daemon over its control socket (control.sock in
/// server.runtime_dir, /run/notebook by default; root and members of group
/// notebook may connect). Exits with 3 when notebookd is not running.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Asks the running notebookd to re-read its config and TLS files, like `systemctl reload notebook`.
///
/// Reports whether the new config was accepted. A config that does not
/// validate is refused, and the daemon keeps running with the old one.
#[derive(Debug, Args)]
pub struct ReloadArgs {}

/// Ends every login lockout of the running notebookd.
///
/// Clients that made too many login attempts wait (HTTP 429) until their
/// window passes, and after a flood from many addresses every client outside
/// auth.trusted_clients waits. This ends those waits at once, for example
/// when the owner locked themselves out.
#[derive(Debug, Args)]
pub struct UnlockArgs {}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        NbctlArgs::command().debug_assert();
        NotebookdArgs::command().debug_assert();
    }
}

/// Lists or ends the login sessions of the running notebookd.
///
/// Asks the daemon over its control socket. Ending a session closes every
/// open connection of it at once (kernel, terminal and event WebSockets
/// included); its cookie stops working, also after a restart.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// Lists the sessions: id prefix, client address, how it logged in, created, last seen, open WebSockets, user agent.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Ends one session (by the id prefix `nbctl sessions list` shows) or all of them.
    Revoke {
        /// The session's id, or at least 6 of its first hex digits.
        #[arg(
            value_name = "ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        id: Option<String>,
        /// End every session.
        #[arg(long)]
        all: bool,
    },
}

/// Creates, lists and revokes API tokens for scripts and remote clients.
///
/// Clients send a token as `Authorization: token T` (or `Bearer T`), or as
/// `?token=T` in a URL (VS Code, JupyterLab Desktop, PyCharm,
/// @jupyterlab/services, jupyter_server's GatewayClient). Tokens are kept
/// hashed in tokens.json in server.state_dir; the running notebookd picks
/// up changes within a second, without a restart.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Makes a new token and prints it once, alone on one line of standard output.
    Create {
        /// A name for the token (letters, digits, - _ . @), shown in listings and logs.
        #[arg(value_name = "NAME")]
        name: String,
        /// How long the token is valid, e.g. 30d or 12h; without it, until revoked.
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// Lists the tokens: name, created, expires, last used.
    List {
        /// Print them as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revokes a token: it stops working and its open connections close.
    Revoke {
        #[arg(value_name = "NAME")]
        name: String,
    },
}
