//! The daemon's life: start, the signal loop, reload, shutdown.
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

use crate::auth::session::SessionSecret;
use crate::config::Config;
use crate::control::{self, ReloadRequest};
use crate::server::{self, App, DoorKeeper, Settings};
use crate::supervise::{JupyterState, LaunchPlan, Supervisor, reap};
use crate::systemd;
use crate::workers::Workers;

/// Everything `--check-config` checks: the config file, the TLS files, the
/// Jupyter command. Returns the config and notes worth printing.
pub fn check(path: &Path) -> anyhow::Result<(Config, Vec<String>)> {
    let config = Config::load(path)?;
    let mut notes = Vec::new();
    if config.tls.enabled {
        crate::tls::load_certified_key(&config.tls.cert, &config.tls.key)?;
    } else {
        notes.push(
            "tls.enabled = false: serving plain HTTP (put a TLS-terminating proxy in front)".into(),
        );
    }
    if config.auth.password_hash.is_none() {
        notes.push("auth.password_hash is empty: only a \"set a password\" page is served until you run `sudo nbctl passwd`".into());
    }
    let cmd = &config.jupyter.command;
    if crate::supervise::flavour::find_program(
        cmd,
        config.jupyter.env.get("PATH").map(String::as_str),
    )
    .is_none()
    {
        anyhow::bail!(
            "{}: jupyter.command: {cmd:?} is not an executable file{} (install Debian's python3-notebook, or set jupyter.command to the jupyter of a venv)",
            path.display(),
            if cmd.contains('/') { "" } else { " in PATH" }
        );
    }
    Ok((config, notes))
}

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
    let listeners = server::bind(&config.server.listen.0)
        .await
        .map_err(anyhow::Error::msg)?;

    let supervisor = Supervisor::spawn(LaunchPlan::from_config(&config));
    let app = Arc::new(App::new(settings, supervisor.clone()));
    let (keeper, door) = DoorKeeper::new(config.limits.max_connections as usize);
    // One thread per core serves the client connections (see workers.rs).
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let workers = Arc::new(Workers::start(cores).context("cannot start the worker threads")?);
    for listener in listeners {
        tokio::spawn(server::accept_loop(
            app.clone(),
            listener,
            door.clone(),
            workers.clone(),
        ));
    }
    drop(door);
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
    let control =
        control::serve(app.clone(), reload_tx, &config.server.runtime_dir).with_context(|| {
            format!(
                "cannot create the control socket in {}",
                config.server.runtime_dir.display()
            )
        })?;
    if let Some(interval) = systemd::watchdog_interval() {
        tokio::spawn(watchdog(supervisor.clone(), interval));
    }

    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sighup = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;
    let mut jupyter = supervisor.status();
    let mut ready_sent = false;
    let mut reloader = Reloader {
        app: app.clone(),
        path: config_path.to_owned(),
        secret,
    };
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
    let _ = std::fs::remove_file(control::socket_path(
        &app.settings().config.server.runtime_dir,
    ));
    tracing::info!("stopped");
    Ok(())
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

struct Reloader {
    app: Arc<App>,
    path: std::path::PathBuf,
    secret: SessionSecret,
}

impl Reloader {
    /// Re-reads the config and TLS files. On any error the running config stays.
    async fn reload(&mut self) -> Result<String, String> {
        systemd::reloading();
        tracing::info!("reloading {}", self.path.display());
        let result = self.prepare();
        let outcome = match result {
            Ok((settings, secret)) => {
                let old = self.app.settings();
                let password_changed =
                    old.config.auth.password_hash != settings.config.auth.password_hash;
                let secret_changed = secret.differs_from(&self.secret);
                let old_plan = LaunchPlan::from_config(&old.config);
                let new_plan = LaunchPlan::from_config(&settings.config);
                self.secret = secret;
                self.app.replace_settings(settings);
                let mut notes = vec!["configuration reloaded".to_string()];
                if password_changed || secret_changed {
                    self.app.sessions.clear();
                    notes.push(if password_changed {
                        "password changed: every session ended".into()
                    } else {
                        "session secret changed: every session ended".into()
                    });
                }
                if old_plan != new_plan {
                    self.app.supervisor.relaunch(new_plan).await;
                    notes.push("Jupyter settings changed: Jupyter is restarting".into());
                }
                let message = notes.join("; ");
                tracing::info!("{message}");
                Ok(message)
            }
            Err(e) => {
                tracing::error!("reload refused, the running configuration stays: {e}");
                Err(e)
            }
        };
        let record = control::ReloadRecord {
            at: std::time::SystemTime::now(),
            outcome: outcome.clone(),
        };
        *self
            .app
            .last_reload
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(record);
        systemd::ready(match &outcome {
            Ok(_) => "serving Jupyter (configuration reloaded)",
            Err(_) => "serving Jupyter (last reload refused; see the log)",
        });
        outcome
    }

    fn prepare(&self) -> Result<(Settings, SessionSecret), String> {
        let (config, _) = check(&self.path).map_err(|e| format!("{e:#}"))?;
        let old = self.app.settings();
        let fixed = [
            (
                "server.listen",
                config.server.listen != old.config.server.listen,
            ),
            (
                "server.state_dir",
                config.server.state_dir != old.config.server.state_dir,
            ),
            (
                "server.runtime_dir",
                config.server.runtime_dir != old.config.server.runtime_dir,
            ),
            (
                "limits.max_connections",
                config.limits.max_connections != old.config.limits.max_connections,
            ),
        ];
        if let Some((key, _)) = fixed.iter().find(|(_, changed)| *changed) {
            return Err(format!(
                "{key} changed, which needs a restart, not a reload: run `systemctl restart notebook` (or restart notebookd)"
            ));
        }
        let secret = SessionSecret::load_or_create(&config.server.state_dir)
            .map_err(|e| format!("cannot read the session secret: {e}"))?;
        let settings = Settings::build(config, &secret)?;
        Ok((settings, secret))
    }
}
