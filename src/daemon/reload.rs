//! Reloading (SIGHUP or `nbctl reload`): re-read the config and TLS files,
//! swap in the new settings, end sessions when the password or session
//! secret changed, restart Jupyter when its settings changed; a broken
//! config is refused and the running one kept. Keys only a restart can
//! apply keep their running values, and the outcome names them. The outcome of the last
//! reload is kept for `nbctl status`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use super::check::check;
use super::systemd;
use crate::auth::session::SessionSecret;
use crate::front::{App, Settings};
use crate::jupyter::LaunchPlan;

/// The outcome of a reload (SIGHUP or `nbctl reload`), kept for `nbctl status`.
#[derive(Debug, Clone)]
pub struct ReloadRecord {
    pub at: SystemTime,
    /// What changed, or why the new config was refused.
    pub outcome: Result<String, String>,
}

/// The last reload's record, shared by the reloader and the control socket.
#[derive(Clone, Default)]
pub struct LastReload(Arc<Mutex<Option<ReloadRecord>>>);

impl LastReload {
    pub fn get(&self) -> Option<ReloadRecord> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set(&self, record: ReloadRecord) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(record);
    }
}

pub struct Reloader {
    app: Arc<App>,
    path: PathBuf,
    secret: SessionSecret,
    last: LastReload,
}

impl Reloader {
    pub fn new(app: Arc<App>, path: &Path, secret: SessionSecret, last: LastReload) -> Reloader {
        Reloader {
            app,
            path: path.to_owned(),
            secret,
            last,
        }
    }

    /// Re-reads the config and TLS files. On any error the running config stays.
    pub async fn reload(&mut self) -> Result<String, String> {
        systemd::reloading();
        tracing::info!("reloading {}", self.path.display());
        let result = self.prepare();
        let outcome = match result {
            Ok((settings, secret, waiting)) => {
                let old = self.app.settings();
                let password_changed =
                    old.config.auth.password_hash != settings.config.auth.password_hash;
                let secret_changed = secret.differs_from(&self.secret);
                let old_plan = LaunchPlan::from_config(&old.config);
                let new_plan = LaunchPlan::from_config(&settings.config);
                self.secret = secret;
                self.app.replace_settings(settings);
                // ACME plans again with the new settings (and asks the CA
                // for its renewal window again) instead of at its next wake-up.
                self.app.acme.recheck();
                let mut notes = vec!["configuration reloaded".to_string()];
                if !waiting.is_empty() {
                    notes.push(format!(
                        "{} changed but take(s) effect only after a restart (`systemctl restart notebook`); the running value(s) stay",
                        waiting.join(", ")
                    ));
                }
                if password_changed || secret_changed {
                    self.app.sessions.end_all();
                    notes.push(if password_changed {
                        "password changed: every session ended".into()
                    } else {
                        "session secret changed: every session ended".into()
                    });
                }
                // A new gateway token in the same file is a new Jupyter setting too.
                if old_plan != new_plan || self.app.supervisor.gateway_token_changed(&new_plan) {
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
        self.last.set(ReloadRecord {
            at: SystemTime::now(),
            outcome: outcome.clone(),
        });
        systemd::ready(match &outcome {
            Ok(_) => "serving Jupyter (configuration reloaded)",
            Err(_) => "serving Jupyter (last reload refused; see the log)",
        });
        outcome
    }

    /// The new settings, the session secret, and the restart-only keys
    /// that changed: those keep their running values (one pending restart
    /// must not make every later reload fail, `nbctl passwd` included).
    fn prepare(&self) -> Result<(Settings, SessionSecret, Vec<&'static str>), String> {
        let (mut config, _) = check(&self.path).map_err(|e| format!("{e:#}"))?;
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
        let waiting: Vec<&'static str> = fixed
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| *key)
            .collect();
        config.server.listen = old.config.server.listen.clone();
        config.server.state_dir = old.config.server.state_dir.clone();
        config.server.runtime_dir = old.config.server.runtime_dir.clone();
        config.limits.max_connections = old.config.limits.max_connections;
        let secret = SessionSecret::load_or_create(&config.server.state_dir)
            .map_err(|e| format!("cannot read the session secret: {e}"))?;
        let settings = Settings::build(config, &secret)?;
        Ok((settings, secret, waiting))
    }
}
