//! The process: start, the signal loop, reload ([`reload`]), the control
//! socket ([`control`]), systemd ([`systemd`]), logging ([`logging`]) and
//! shutdown.
//!
//! Start: load and check the config, bind the listeners, start Jupyter;
//! READY=1 once Jupyter answers. SIGHUP (or `nbctl reload`): re-read the
//! config and TLS files; a broken config is refused and the running one
//! kept. SIGTERM/SIGINT: STOPPING=1, stop accepting, let open requests
//! finish (up to `server.shutdown_timeout`), stop Jupyter and its kernels.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

mod check;
pub mod control;
pub mod logging;
pub mod memory;
pub mod nofile;
pub mod reload;
pub mod systemd;

use crate::auth::session::SessionSecret;
use crate::front::listen::{self, DoorKeeper};
use crate::front::workers::Workers;
use crate::front::{App, Settings};
use crate::jupyter::{JupyterState, LaunchPlan, Supervisor, reap};
pub use check::check;
use control::ReloadRequest;
use reload::{LastReload, Reloader};

fn prepare_dir(dir: &Path, mode: u32, what: &str) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("cannot create {what} {}", dir.display()))?;
    let meta =
        std::fs::metadata(dir).with_context(|| format!("cannot inspect {}", dir.display()))?;
    if meta.permissions().mode() & 0o777 & !mode != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot make {} mode {mode:o}", dir.display()))?;
    }
    Ok(())
}

/// Runs the daemon until SIGTERM/SIGINT.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let (config, notes) = check(config_path)?;
    for note in notes {
        tracing::warn!("{note}");
    }
    memory::tune_allocator();
    let files = nofile::raise(config.limits.max_connections).map_err(anyhow::Error::msg)?;
    tracing::debug!("open-file limit: {files}");
    prepare_dir(&config.server.state_dir, 0o700, "server.state_dir")?;
    prepare_dir(&config.server.runtime_dir, 0o750, "server.runtime_dir")?;
    let secret = SessionSecret::load_or_create(&config.server.state_dir).with_context(|| {
        format!(
            "cannot read or create the session secret in {}",
            config.server.state_dir.display()
        )
    })?;
    let settings = Settings::build(config.clone(), &secret).map_err(anyhow::Error::msg)?;
    if let Err(e) = reap::become_subreaper() {
        tracing::warn!(
            "cannot become a child subreaper ({e}): kernels of a crashed Jupyter may outlive it"
        );
    }
    let listeners = listen::bind(&config.server.listen.0)
        .await
        .map_err(anyhow::Error::msg)?;

    crate::jupyter::set_notebookd_config(
        &std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_owned()),
    );
    let supervisor = Supervisor::spawn(LaunchPlan::from_config(&config), systemd::status);
    let app = Arc::new(App::new(settings, supervisor.clone()));
    let (keeper, door) = DoorKeeper::new(config.limits.max_connections as usize);
    // One thread per core serves the client connections (see workers.rs).
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = Arc::new(Workers::start(cores).context("cannot start the worker threads")?);
    listen::accept_on_workers(&app, &listeners, &door, &workers)
        .context("cannot hand the listening sockets to the worker threads")?;
    drop((door, listeners));
    let scheme = if config.tls.enabled { "https" } else { "http" };
    for addr in &config.server.listen.0 {
        tracing::info!("listening on {scheme}://{addr}{}", config.server.base_url);
    }
    if !config.tls.enabled {
        tracing::warn!(
            "TLS is off (tls.enabled = false): serving plain HTTP; only do this behind a TLS-terminating proxy"
        );
    }

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let last_reload = LastReload::default();
    let control = control::serve(
        app.clone(),
        reload_tx,
        last_reload.clone(),
        &config.server.runtime_dir,
    )
    .with_context(|| {
        format!(
            "cannot create the control socket in {}",
            config.server.runtime_dir.display()
        )
    })?;
    tokio::spawn(crate::front::cert_watch::run(app.clone()));
    tokio::spawn(crate::front::acme::run(app.clone()));
    if config.tls.enabled && config.tls.acme.enabled {
        let http = listen::bind(&config.tls.acme.http_listen.0)
            .await
            .map_err(anyhow::Error::msg)?;
        for (listener, addr) in http.into_iter().zip(&config.tls.acme.http_listen.0) {
            tracing::info!("answering ACME HTTP-01 and redirecting to https on http://{addr}");
            let listener = tokio::net::TcpListener::from_std(listener)
                .with_context(|| format!("cannot listen on {addr}"))?;
            tokio::spawn(crate::front::acme::serve_http(app.clone(), listener));
        }
    }
    tokio::spawn(memory::release_after_closes(app.clone()));
    tokio::spawn(session_upkeep(app.clone()));
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(watchdog(supervisor.clone(), interval));
    }

    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut jupyter = supervisor.status();
    let mut ready_sent = false;
    let mut reloader = Reloader::new(app.clone(), config_path, secret, last_reload);
    let why = loop {
        tokio::select! {
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
            _ = sighup.recv() => {
                let _ = reloader.reload().await;
            }
            Some(req) = reload_rx.recv() => {
                let result = reloader.reload().await;
                let _ = req.done.send(result);
            }
            changed = jupyter.changed(), if !ready_sent => {
                if changed.is_err() {
                    continue;
                }
                if jupyter.borrow_and_update().state == JupyterState::Ready {
                    ready_sent = true;
                    let password = if app.settings().keys.is_some() { "" } else { "; no password set: run `sudo nbctl passwd`" };
                    tracing::info!("notebookd is ready{password}");
                    systemd::ready(&format!("serving Jupyter{password}"));
                }
            }
        }
    };

    tracing::info!("{why}: shutting down");
    systemd::stopping();
    control.abort();
    let deadline = app.settings().config.server.shutdown_timeout.get();
    if !keeper.drain(deadline).await {
        tracing::warn!(
            "some connections were still open after {}s (server.shutdown_timeout); closing them",
            deadline.as_secs()
        );
    }
    // Whatever is still open (WebSockets past the deadline) ends with its thread.
    let _ = tokio::task::spawn_blocking(move || workers.stop()).await;
    supervisor.stop().await;
    save_sessions(&app, true).await;
    let _ = std::fs::remove_file(control::socket_path(
        &app.settings().config.server.runtime_dir,
    ));
    tracing::info!("stopped");
    Ok(())
}

/// Once a second: ends the sessions past their lifetime or idle timeout
/// (closing their connections even when no request comes), and writes the
/// session table if it changed. Requests never write it themselves.
async fn session_upkeep(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tick.tick().await;
        let (lifetime, idle) = {
            let auth = &app.settings().config.auth;
            (
                auth.session_lifetime.get().as_secs(),
                auth.session_idle_timeout.get().as_secs(),
            )
        };
        let now = crate::auth::session::unix_now();
        let ended = app.sessions.sweep(now, lifetime, idle);
        if ended > 0 {
            tracing::info!("{ended} session(s) reached their lifetime or idle timeout and ended");
        }
        check_tokens(&app, now);
        // One log line per failure spell, not one a second.
        let ok = save_sessions(&app, !failing).await;
        failing = !ok;
    }
}

/// Picks up `nbctl token` changes (a `stat` a second) and ends what a
/// revoked or expired token had open: its WebSockets and the browser
/// sessions its links started.
fn check_tokens(app: &App, now: u64) {
    match app.tokens.reload_if_changed() {
        Ok(changes) => {
            for name in &changes.added {
                tracing::info!(token = %name, "API token added");
            }
            for name in &changes.removed {
                let ended = app.sessions.end_via_token(name);
                tracing::info!(token = %name, "API token revoked; {ended} session(s) it started ended");
            }
        }
        Err(e) => tracing::error!("{e}; no API token is accepted until it is fixed"),
    }
    for name in app.tokens.sweep(now) {
        let ended = app.sessions.end_via_token(&name);
        tracing::info!(token = %name, "API token expired; {ended} session(s) it started ended");
    }
}

/// Writes the session table if it changed; `false` if that failed.
async fn save_sessions(app: &Arc<App>, log_failure: bool) -> bool {
    let app = app.clone();
    let saved = tokio::task::spawn_blocking(move || {
        let dir = app.settings().config.server.state_dir.clone();
        (app.sessions.save(), dir)
    })
    .await;
    match saved {
        Ok((Err(e), dir)) => {
            if log_failure {
                tracing::error!(
                    "cannot write the session table in {} ({e}); sessions ended since the last write could come back after a restart: make the directory writable by the service user",
                    dir.display()
                );
            }
            false
        }
        _ => true,
    }
}

/// WATCHDOG=1 while the runtime and the supervisor are alive.
async fn watchdog(supervisor: Supervisor, interval: Duration) {
    // `jupyter --version` and a slow Jupyter stop can keep the supervisor busy
    // for a minute without it being stuck.
    let stale = interval.max(Duration::from_secs(120));
    let mut tick = tokio::time::interval(interval / 2);
    loop {
        tick.tick().await;
        if supervisor.last_heartbeat().elapsed() < stale {
            systemd::watchdog_ping();
        } else {
            tracing::error!("the Jupyter supervisor is stuck; no watchdog ping");
        }
    }
}
