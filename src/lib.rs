//! notebookd: a Jupyter notebook appliance.
//!
//! The daemon (`notebookd`) is the only thing listening on the network: it
//! terminates TLS, owns login and sessions, and proxies a logged-in user's
//! requests (WebSockets included) to a real Jupyter server that it runs as a
//! child process on a private unix socket. The admin CLI (`nbctl`) edits the
//! config file, makes certificates and password hashes, and talks to the
//! running daemon over its control socket.
//!
//! Where things live:
//! - [`config`]: `/etc/notebook/notebook.toml` → a validated [`config::Config`].
//! - [`tls`]: certificate and key files → a rustls server config.
//! - [`auth`]: password hashes, session cookies, the login page and its limits.
//! - [`proxy`]: forwarding requests and WebSockets to Jupyter.
//! - [`headers`]: security headers, CSP `frame-ancestors`, cookie attributes.
//! - [`limits`]: per-connection clocks: header read timeout (408), idle keep-alive.
//! - [`supervise`]: the Jupyter child process: config, start, readiness, restart, stop.
//! - [`server`]: listeners, connections, routing of each request.
//! - [`workers`]: the threads (one per core) that serve client connections.
//! - [`control`]: the control socket (`nbctl status`, `nbctl reload`).
//! - [`systemd`]: sd_notify, watchdog, journald detection.
//! - [`daemon`]: ties the parts together: start, signals, reload, shutdown.
//! - [`cli`]: `nbctl` (its verbs), and the command lines of both binaries.

pub mod auth;
pub mod cli;
pub mod config;
pub mod control;
pub mod daemon;
pub mod headers;
pub mod limits;
pub mod logging;
pub mod pages;
pub mod proxy;
pub mod server;
pub mod supervise;
pub mod systemd;
pub mod tls;
pub mod workers;

/// The version of this build, as shown by `--version` and `nbctl status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
