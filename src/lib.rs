//! notebookd: a Jupyter notebook appliance.
//!
//! The daemon (`notebookd`) is the only thing listening on the network: it
//! terminates TLS, owns login and sessions, and proxies a logged-in user's
//! requests (WebSockets included) to a real Jupyter server that it runs as a
//! child process on a private unix socket. The admin CLI (`nbctl`) edits the
//! config file, makes certificates and password hashes, and talks to the
//! running daemon over its control socket.
//!
//! The modules, each using only those below it:
//! - [`cli`]: `nbctl` (its verbs), and the command lines of both binaries.
//! - [`daemon`]: the process: start, signals, reload, the control socket
//!   (`nbctl status`, `nbctl reload`), systemd notifications, logging.
//! - [`front`]: the HTTP edge, in the order a request meets it: listen,
//!   TLS, limits, route, login, headers, pages, proxy to Jupyter.
//! - [`jupyter`]: the Jupyter child process: its config, start, readiness,
//!   restart, stop, and the frontend assets notebookd adds.
//! - [`config`]: `/etc/notebook/notebook.toml` → a validated [`config::Config`].
//! - [`auth`]: policy without HTTP: password hashes, session cookies and
//!   records, login attempt limits.
//! - [`private_file`]: the files notebookd keeps for itself, written whole.

pub mod auth;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod front;
pub mod jupyter;
pub mod private_file;

/// The version of this build, as shown by `--version` and `nbctl status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
