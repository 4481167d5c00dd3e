//! Kernels on a Jupyter Enterprise Gateway or Kernel Gateway
//! (`jupyter.gateway_url`): what the Jupyter child needs to use one, and
//! whether the gateway answers.
//!
//! jupyter_server (and the classic Notebook 6.x) has its own gateway client,
//! `GatewayClient`, configured from `JUPYTER_GATEWAY_*` environment
//! variables. notebookd sets those at each start of Jupyter: the token is read
//! from `jupyter.gateway_token_file` then and travels only in the child's
//! environment (readable by its own user and root), never on a command line,
//! where `ps` would show it to every user of the machine.
//!
//! Neither jupyter_server's gateway client nor the gateways set TCP_NODELAY,
//! so each small kernel message waited for the peer's delayed ACK (40 ms on
//! Linux). notebookd gives Jupyter a small server extension,
//! `notebookd_gateway`, that sets TCP_NODELAY on the kernel WebSockets
//! Jupyter opens to the gateway and acknowledges what arrives on them as
//! soon as Jupyter reads it (TCP_QUICKACK after every read). The gateway's
//! own side still holds a message until the previous one is acknowledged;
//! only the gateway can turn that off (README, "Kernels on a cluster").
//!
//! Health: `GET {base_url}api/kernelspecs` through Jupyter's socket, which
//! jupyter_server answers by asking the gateway, is the path a user's
//! request takes; its answer says whether the gateway answers and accepts
//! the token, without notebookd holding a client of its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, Jupyter};

/// The gateway part of a [`super::LaunchPlan`]; the token itself is not in
/// it (it is read from `token_file` at each launch), so the plan can be
/// logged and compared freely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayPlan {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca: Option<PathBuf>,
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    pub kernel_username: Option<String>,
    pub kernel_working_dir: Option<String>,
}

impl GatewayPlan {
    /// `None` when kernels run on this machine.
    pub fn from_config(c: &Config) -> Option<GatewayPlan> {
        let j = &c.jupyter;
        let nonempty = |s: &str| {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        };
        Some(GatewayPlan {
            url: j.gateway()?.trim_end_matches('/').to_owned(),
            token_file: Jupyter::optional_path(&j.gateway_token_file).map(Path::to_owned),
            ca: Jupyter::optional_path(&j.gateway_ca).map(Path::to_owned),
            request_timeout: j.gateway_request_timeout.get(),
            connect_timeout: j.gateway_connect_timeout.get(),
            kernel_username: nonempty(&j.gateway_kernel_username),
            kernel_working_dir: nonempty(&j.gateway_kernel_working_dir),
        })
    }

    /// The environment Jupyter's `GatewayClient` reads. Reads the token file.
    pub fn env(&self) -> Result<BTreeMap<String, String>, String> {
        let mut env = BTreeMap::new();
        env.insert("JUPYTER_GATEWAY_URL".into(), self.url.clone());
        if let Some(path) = &self.token_file {
            env.insert("JUPYTER_GATEWAY_AUTH_TOKEN".into(), read_token(path)?);
        }
        if let Some(ca) = &self.ca {
            env.insert("JUPYTER_GATEWAY_CA_CERTS".into(), ca.display().to_string());
        }
        env.insert(
            "JUPYTER_GATEWAY_REQUEST_TIMEOUT".into(),
            self.request_timeout.as_secs_f64().to_string(),
        );
        env.insert(
            "JUPYTER_GATEWAY_CONNECT_TIMEOUT".into(),
            self.connect_timeout.as_secs_f64().to_string(),
        );
        // jupyter_server sends every KERNEL_* variable of its environment
        // with a kernel start; the gateway runs (or labels) the kernel as this user.
        let user = self.kernel_username.clone().or_else(service_user);
        if let Some(user) = user {
            env.insert("KERNEL_USERNAME".into(), user);
        }
        if let Some(dir) = &self.kernel_working_dir {
            env.insert("KERNEL_WORKING_DIR".into(), dir.clone());
        }
        Ok(env)
    }
}

/// The name of the user notebookd runs as (the service's user, `notebook`).
fn service_user() -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// Reads the gateway token from `path`: one line, surrounding whitespace
/// dropped. The error never quotes the file's content.
pub fn read_token(path: &Path) -> Result<String, String> {
    let fix = "(it holds the gateway's auth token; make it readable by the service: \
               `sudo chown root:notebook FILE && sudo chmod 0640 FILE`)";
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read jupyter.gateway_token_file {}: {e} {}",
            path.display(),
            fix.replace("FILE", &path.display().to_string())
        )
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(format!(
            "jupyter.gateway_token_file {} is empty (write the gateway's auth token into it, or set jupyter.gateway_token_file = \"\" for a gateway without one)",
            path.display()
        ));
    }
    if token.contains(['\n', '\r', '\0']) {
        return Err(format!(
            "jupyter.gateway_token_file {} holds more than one line (write only the token)",
            path.display()
        ));
    }
    Ok(token.to_owned())
}

/// A SHA-256 of a token: enough to tell two apart, and no secret in memory
/// dumps of the supervisor's state.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> TokenDigest {
        use sha2::Digest;
        TokenDigest(sha2::Sha256::digest(token.as_bytes()).into())
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// The server extension's module name, as Jupyter imports it.
pub const EXTENSION: &str = "notebookd_gateway";
/// Where (relative to the private Jupyter dir) the extension's module lives.
pub const PYTHON_DIR: &str = "python";
const EXTENSION_PY: &str = include_str!("gateway/notebookd_gateway.py");

/// The extension's file, as (path relative to the private Jupyter dir, content).
pub fn files() -> Vec<(String, String)> {
    vec![(
        format!("{PYTHON_DIR}/{EXTENSION}.py"),
        EXTENSION_PY.to_string(),
    )]
}

/// Whether the gateway answers, as the last health check saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayState {
    /// Not checked yet (Jupyter is starting).
    Unknown,
    /// It answered `GET api/kernelspecs`.
    Ok,
    /// No answer: down, unreachable, or too slow.
    Unreachable,
    /// It answered 401/403: the token is wrong or missing.
    Refused,
    /// Something else went wrong (see the message).
    Error,
}

/// The gateway's health, for `nbctl status` and `/_notebookd/health`.
/// Never holds the URL or the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayHealth {
    pub state: GatewayState,
    pub message: String,
}

impl GatewayHealth {
    pub fn unknown() -> GatewayHealth {
        GatewayHealth {
            state: GatewayState::Unknown,
            message: "not checked yet".into(),
        }
    }

    /// Reads jupyter_server's answer to `GET api/kernelspecs` in gateway mode.
    pub fn from_answer(status: u16) -> GatewayHealth {
        let (state, message) = match status {
            200 => (GatewayState::Ok, "the kernel gateway answers".to_string()),
            401 | 403 => (
                GatewayState::Refused,
                "the kernel gateway (jupyter.gateway_url) refuses the token: check jupyter.gateway_token_file".to_string(),
            ),
            // jupyter_server maps a refused or timed-out connection to 503,
            // an unknown host to 404, and anything else it caught to 500/505.
            404 | 503 | 504 | 599 => (GatewayState::Unreachable, unreachable_message()),
            other => (
                GatewayState::Error,
                format!(
                    "the kernel gateway (jupyter.gateway_url) gave an error (HTTP {other}); see the gateway's log"
                ),
            ),
        };
        GatewayHealth { state, message }
    }

    pub fn unreachable() -> GatewayHealth {
        GatewayHealth {
            state: GatewayState::Unreachable,
            message: unreachable_message(),
        }
    }

    pub fn is_ok(&self) -> bool {
        self.state == GatewayState::Ok
    }
}

fn unreachable_message() -> String {
    "the kernel gateway (jupyter.gateway_url) does not answer: is it running and reachable from this machine?".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_carries_settings_and_the_token_from_its_file() {
        let dir = std::env::temp_dir().join(format!("nbd-gw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token = dir.join("token");
        std::fs::write(&token, "s3cret\n").unwrap();
        let plan = GatewayPlan {
            url: "https://gw.example:8888".into(),
            token_file: Some(token.clone()),
            ca: Some("/etc/notebook/gw-ca.pem".into()),
            request_timeout: Duration::from_secs(42),
            connect_timeout: Duration::from_millis(1500),
            kernel_username: Some("alice".into()),
            kernel_working_dir: None,
        };
        let env = plan.env().unwrap();
        assert_eq!(env["JUPYTER_GATEWAY_URL"], "https://gw.example:8888");
        assert_eq!(env["JUPYTER_GATEWAY_AUTH_TOKEN"], "s3cret");
        assert_eq!(env["JUPYTER_GATEWAY_CA_CERTS"], "/etc/notebook/gw-ca.pem");
        assert_eq!(env["JUPYTER_GATEWAY_REQUEST_TIMEOUT"], "42");
        assert_eq!(env["JUPYTER_GATEWAY_CONNECT_TIMEOUT"], "1.5");
        assert_eq!(env["KERNEL_USERNAME"], "alice");
        assert!(!env.contains_key("KERNEL_WORKING_DIR"));
        std::fs::write(&token, "").unwrap();
        let err = plan.env().unwrap_err();
        assert!(err.contains("is empty"), "{err}");
        std::fs::remove_file(&token).unwrap();
        let err = plan.env().unwrap_err();
        assert!(err.contains("chmod 0640"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn health_from_answers() {
        assert!(GatewayHealth::from_answer(200).is_ok());
        assert_eq!(GatewayHealth::from_answer(403).state, GatewayState::Refused);
        assert_eq!(
            GatewayHealth::from_answer(503).state,
            GatewayState::Unreachable
        );
        assert!(
            GatewayHealth::from_answer(503)
                .message
                .contains("does not answer")
        );
        assert_eq!(GatewayHealth::from_answer(500).state, GatewayState::Error);
    }
}
