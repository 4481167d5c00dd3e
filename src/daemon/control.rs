//! The control socket: how `nbctl status` and `nbctl reload` talk to the
//! running daemon.
//!
//! A unix socket at `RUNTIME_DIR/control.sock`, mode 0660 in a directory
//! that only the service user and its group can enter: root and members of
//! group `notebook` may connect, nobody else. The protocol is one JSON line
//! each way: `{"command":"status"}`, `{"command":"reload"}`,
//! `{"command":"sessions"}`, `{"command":"tokens"}` or
//! `{"command":"revoke","arg":"ID|--all"}`, `{"command":"probe-ticket"}` in,
//! one JSON object out.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::reload::{LastReload, ReloadRecord};
use crate::auth::sessions::Via;
use crate::front::App;

pub const SOCKET_NAME: &str = "control.sock";
const MAX_REQUEST: u64 = 4096;
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A reload may restart Jupyter; give it time.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the control socket of a daemon with this runtime directory lives.
pub fn socket_path(runtime_dir: &Path) -> PathBuf {
    runtime_dir.join(SOCKET_NAME)
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ControlRequest {
    pub command: String,
    /// The command's argument, e.g. the session id prefix of `revoke`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<String>,
}

/// How many hex digits of a session id `nbctl sessions list` shows and
/// `revoke` needs at least: enough to name one session, not the whole id.
pub const SESSION_ID_PREFIX: usize = 12;
const MIN_REVOKE_PREFIX: usize = 6;

/// A reload asked for over the socket, answered by the daemon's main loop.
pub struct ReloadRequest {
    pub done: oneshot::Sender<Result<String, String>>,
}

/// Serves the control socket until the returned task is aborted.
pub fn serve(
    app: Arc<App>,
    reloads: mpsc::Sender<ReloadRequest>,
    last_reload: LastReload,
    runtime_dir: &Path,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let path = socket_path(runtime_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o660))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let app = app.clone();
            let reloads = reloads.clone();
            let last_reload = last_reload.clone();
            tokio::spawn(async move {
                if let Err(e) = answer(stream, &app, &reloads, &last_reload).await {
                    tracing::debug!("control connection: {e}");
                }
            });
        }
    }))
}

async fn answer(
    stream: UnixStream,
    app: &App,
    reloads: &mpsc::Sender<ReloadRequest>,
    last_reload: &LastReload,
) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
    tokio::time::timeout(IO_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let reply = match serde_json::from_str::<ControlRequest>(line.trim()) {
        Ok(req) if req.command == "status" => status(app, last_reload.get()),
        Ok(req) if req.command == "sessions" => sessions(app),
        Ok(req) if req.command == "tokens" => tokens(app),
        Ok(req) if req.command == "revoke" => revoke(app, req.arg.as_deref().unwrap_or("")),
        Ok(req) if req.command == "reload" => {
            let (done, result) = oneshot::channel();
            let outcome = if reloads.send(ReloadRequest { done }).await.is_err() {
                Err("the daemon is shutting down".to_string())
            } else {
                match tokio::time::timeout(RELOAD_TIMEOUT, result).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => Err("the daemon dropped the reload".to_string()),
                    Err(_) => Err("the reload did not finish in time".to_string()),
                }
            };
            match outcome {
                Ok(message) => serde_json::json!({"ok": true, "message": message}),
                Err(error) => serde_json::json!({"ok": false, "error": error}),
            }
        }
        Ok(req) if req.command == "acme-renew" => {
            if app.settings().config.tls.acme.enabled {
                app.acme.renew_now();
                serde_json::json!({"ok": true, "message": "ordering a new certificate now"})
            } else {
                serde_json::json!({"ok": false, "error": "ACME is off (tls.acme.enabled = false)"})
            }
        }
        Ok(req) if req.command == "probe-ticket" => match app.probe_tickets.issue() {
            Some(ticket) => serde_json::json!({"ok": true, "ticket": ticket}),
            None => serde_json::json!({"ok": false, "error": "no random source for a ticket"}),
        },
        Ok(req) if req.command == "unlock" => {
            let cleared = app.login.unlock_all();
            tracing::info!("login limits cleared by nbctl unlock ({cleared} tracked networks)");
            serde_json::json!({"ok": true, "cleared": cleared})
        }
        Ok(req) => {
            serde_json::json!({"ok": false, "error": format!("unknown command {:?}; known: status, reload, acme-renew, unlock, sessions, revoke, tokens, probe-ticket", req.command)})
        }
        Err(e) => serde_json::json!({"ok": false, "error": format!("bad request: {e}")}),
    };
    let mut text = reply.to_string();
    text.push('\n');
    tokio::time::timeout(IO_TIMEOUT, write.write_all(text.as_bytes()))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "reply not read"))??;
    Ok(())
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

fn rfc3339(unix: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// What `nbctl sessions list` shows: every session, most recently seen first.
fn sessions(app: &App) -> serde_json::Value {
    let list: Vec<serde_json::Value> = app
        .sessions
        .list()
        .into_iter()
        .map(|s| {
            let at = |t: u64| rfc3339(i64::try_from(t).unwrap_or(i64::MAX));
            let (via, token) = match &s.via {
                Via::Password => ("password", None),
                Via::Token(name) => ("token", Some(name.clone())),
            };
            serde_json::json!({
                "id": s.id.get(..SESSION_ID_PREFIX).unwrap_or(&s.id),
                "client": s.client,
                "user_agent": s.user_agent,
                "via": via,
                "token": token,
                "created": at(s.created),
                "created_unix": s.created,
                "last_seen": at(s.last_seen),
                "last_seen_unix": s.last_seen,
                "websockets": s.websockets,
            })
        })
        .collect();
    serde_json::json!({"ok": true, "sessions": list})
}

/// When each API token was last used (kept in memory only), for `nbctl token list`.
fn tokens(app: &App) -> serde_json::Value {
    // Changes nbctl just made are seen now, not at the next tick.
    let _ = app.tokens.reload_if_changed();
    let usage: serde_json::Map<String, serde_json::Value> = app
        .tokens
        .usage()
        .into_iter()
        .map(|(name, last_used, websockets)| {
            let last = (last_used > 0).then_some(last_used);
            (
                name,
                serde_json::json!({
                    "last_used": last.and_then(|t| rfc3339(i64::try_from(t).unwrap_or(i64::MAX))),
                    "last_used_unix": last,
                    "websockets": websockets,
                }),
            )
        })
        .collect();
    serde_json::json!({"ok": true, "tokens": usage})
}

/// `nbctl sessions revoke ID|--all`: ends sessions and closes their connections.
fn revoke(app: &App, which: &str) -> serde_json::Value {
    if which == "--all" {
        let ended = app.sessions.end_all();
        tracing::info!("nbctl sessions revoke --all: {ended} session(s) ended");
        return serde_json::json!({"ok": true, "ended": ended});
    }
    if which.len() < MIN_REVOKE_PREFIX || !which.chars().all(|c| c.is_ascii_hexdigit()) {
        return serde_json::json!({"ok": false, "error": format!(
            "{which:?} is not a session id: give at least {MIN_REVOKE_PREFIX} hex digits of an id that `nbctl sessions list` shows, or --all"
        )});
    }
    match app.sessions.end_matching(which) {
        0 => serde_json::json!({"ok": false, "error": format!(
            "no session has an id starting with {which}; `nbctl sessions list` shows the open ones"
        )}),
        ended => {
            tracing::info!("nbctl sessions revoke {which}: {ended} session(s) ended");
            serde_json::json!({"ok": true, "ended": ended})
        }
    }
}

/// What `nbctl status` shows.
pub fn status(app: &App, last_reload: Option<ReloadRecord>) -> serde_json::Value {
    let settings = app.settings();
    let config = &settings.config;
    let jupyter = app.jupyter();
    let now = unix_secs(SystemTime::now());
    let served = settings.served_cert();
    let cert = served.as_ref().and_then(|s| {
        let c = s.leaf.as_ref()?;
        Some(serde_json::json!({
            "subject": c.subject,
            "not_after": rfc3339(c.not_after),
            "not_after_unix": c.not_after,
            "not_before_unix": c.not_before,
            "days_left": (c.not_after - now).div_euclid(86400),
            "serial": c.serial,
            "source": s.source,
            "since": rfc3339(unix_secs(s.since)),
        }))
    });
    let last_error = match &last_reload {
        Some(ReloadRecord {
            outcome: Err(e), ..
        }) => Some(format!("reload refused: {e}")),
        _ => jupyter.last_error.clone().map(|e| format!("jupyter: {e}")),
    };
    let last_reload = last_reload.map(|r| {
        let (ok, message) = match r.outcome {
            Ok(m) => (true, m),
            Err(e) => (false, e),
        };
        serde_json::json!({
            "ok": ok,
            "at": rfc3339(unix_secs(r.at)),
            "at_unix": unix_secs(r.at),
            "message": message,
        })
    });
    serde_json::json!({
        "ok": true,
        "version": crate::VERSION,
        "pid": std::process::id(),
        "uptime_secs": app.started.elapsed().as_secs(),
        "listen": config.server.listen.0.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "base_url": config.server.base_url.as_str(),
        "tls": {
            "enabled": config.tls.enabled,
            "cert": config.tls.cert.to_string(),
            "certificate": cert,
        },
        "password_set": config.auth.password_hash.is_some(),
        "sessions": app.sessions.len(),
        "connections": app.open_connections(),
        "websockets": app.upstream.open_websockets(),
        "jupyter": jupyter,
        "last_reload": last_reload,
        "acme": config.tls.acme.enabled.then(|| app.acme.report()),
        "last_error": last_error,
    })
}

/// Why a control request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("notebookd is not running (no control socket at {0})")]
    NotRunning(PathBuf),
    #[error("cannot connect to {path}: {source}{hint}")]
    Connect {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("control socket {0}: {1}")]
    Protocol(PathBuf, String),
}

/// Sends one command to the daemon and returns its JSON answer.
pub async fn request(
    runtime_dir: &Path,
    command: &str,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    request_with(runtime_dir, command, None, timeout).await
}

/// [`request`] with the command's argument.
pub async fn request_with(
    runtime_dir: &Path,
    command: &str,
    arg: Option<&str>,
    timeout: Duration,
) -> Result<serde_json::Value, ControlError> {
    let path = socket_path(runtime_dir);
    let stream = match UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Err(ControlError::NotRunning(path));
        }
        Err(source) => {
            let hint = if source.kind() == std::io::ErrorKind::PermissionDenied {
                " (run as root, or as a member of group notebook)"
            } else {
                ""
            };
            return Err(ControlError::Connect { path, source, hint });
        }
    };
    let protocol = |e: String| ControlError::Protocol(path.clone(), e);
    check_peer(&stream).map_err(protocol)?;
    let exchange = async {
        let (read, mut write) = stream.into_split();
        let mut req = serde_json::to_string(&ControlRequest {
            command: command.into(),
            arg: arg.map(str::to_string),
        })
        .map_err(|e| e.to_string())?;
        req.push('\n');
        write
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(read)
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?;
        serde_json::from_str::<serde_json::Value>(&line).map_err(|e| format!("bad answer: {e}"))
    };
    let mut answer = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| protocol(format!("no answer within {}s", timeout.as_secs())))?
        .map_err(protocol)?;
    strip_controls(&mut answer);
    Ok(answer)
}

/// Refuses a control socket served by anyone but root, the caller's own
/// user, or the notebookd process itself. The socket's directory belongs
/// to the service's user, and so do its kernels: a cell could replace the
/// socket with its own listener and feed root's nbctl whatever it likes.
/// So a peer of another user must be the service's main process (systemd's
/// MainPID of notebook.service, when systemd knows one) running a notebookd
/// binary.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let cred = stream
        .peer_cred()
        .map_err(|e| format!("cannot see who serves it: {e}"))?;
    let uid = cred.uid();
    if uid == 0 || uid == nix::unistd::geteuid().as_raw() {
        return Ok(());
    }
    let Some(pid) = cred.pid().filter(|p| *p > 0) else {
        return Err(format!(
            "it is served by user {uid}, not by notebookd; not trusted"
        ));
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let is_notebookd = exe
        .as_ref()
        .and_then(|e| e.file_name())
        .is_some_and(|n| n == "notebookd");
    if !is_notebookd {
        return Err(format!(
            "it is served by process {pid} of user {uid} ({}), not by notebookd; not trusted (restart the service: `systemctl restart notebook`)",
            exe.map_or("unknown program".into(), |e| e.display().to_string())
        ));
    }
    if let Some(main) = systemd_main_pid() {
        if main != pid {
            return Err(format!(
                "it is served by process {pid}, but notebook.service's main process is {main}; not trusted (restart the service: `systemctl restart notebook`)"
            ));
        }
    }
    Ok(())
}

/// notebook.service's main pid, if systemd runs it.
fn systemd_main_pid() -> Option<i32> {
    let out = std::process::Command::new("systemctl")
        .args(["show", "--property=MainPID", "--value", "notebook.service"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    (out.status.success() && pid > 0).then_some(pid)
}

/// Replaces control characters in every string of `value` (a terminal
/// would obey escape sequences in what the daemon says).
pub fn strip_controls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) if s.chars().any(char::is_control) => {
            *s = s
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_controls),
        serde_json::Value::Object(map) => map.values_mut().for_each(strip_controls),
        _ => {}
    }
}
