//! notebookd's integration tests: one binary, real parts (the notebookd
//! binary, a real Jupyter from the pinned venv, real TLS, real WebSockets).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(dead_code)] // shared helpers; not every test binary build uses all of them
mod support;

mod acme;
mod browser;
mod cert_reload;
mod config;
mod dev_run;
mod favicon;
mod front_door;
mod gateway;
mod hostile;
mod hsts;
mod jupyter_child;
mod layout;
mod nbctl;
mod nginx;
mod package;
mod passwords;
mod plain_http;
mod proxy;
mod quiet_logs;
mod remote_clients;
mod sd_notify;
mod sessions;
mod supervise;
mod supervisord;
mod systemd;
mod tokens;
