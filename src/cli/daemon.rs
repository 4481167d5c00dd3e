//! `nbctl status` and `nbctl reload`, and the reload that follows every
//! change nbctl makes: questions to the running notebookd over its control
//! socket ([`crate::daemon::control`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::CliError;
use super::args::ReloadFlag;
use crate::config::{AbsPath, Config};
use crate::daemon::control::{self, ControlError};

const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// The daemon gives a reload up to two minutes (it may restart Jupyter).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(130);

/// Sends one command to the daemon whose runtime directory is `runtime_dir`.
fn ask(runtime_dir: &Path, command: &str, timeout: Duration) -> Result<Value, ControlError> {
    ask_with(runtime_dir, command, None, timeout)
}

/// [`ask`] with the command's argument.
pub fn ask_with(
    runtime_dir: &Path,
    command: &str,
    arg: Option<&str>,
    timeout: Duration,
) -> Result<Value, ControlError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ControlError::Protocol(control::socket_path(runtime_dir), e.to_string()))?;
    runtime.block_on(control::request_with(runtime_dir, command, arg, timeout))
}

/// The daemon's runtime directory from the config. A config that does not
/// validate still names it (that is when `nbctl reload` matters most): then
/// it is read leniently, and the default is the last resort.
pub fn runtime_dir(config_path: &Path) -> Result<PathBuf, CliError> {
    let text = std::fs::read_to_string(config_path).map_err(|source| {
        CliError::Failed(
            crate::config::ConfigError::Read {
                path: config_path.to_owned(),
                source,
            }
            .to_string(),
        )
    })?;
    if let Ok(config) = Config::parse(config_path, &text) {
        return Ok(config.server.runtime_dir.path().to_owned());
    }
    let lenient = toml::from_str::<toml::Table>(&text)
        .ok()
        .and_then(|t| {
            t.get("server")?
                .get("runtime_dir")?
                .as_str()
                .map(str::to_string)
        })
        .or_else(|| {
            // Not even TOML: look for the line itself.
            text.lines().find_map(|l| {
                let rest = l.trim().strip_prefix("runtime_dir")?.trim_start();
                let quoted = rest.strip_prefix('=')?.trim();
                Some(quoted.strip_prefix('"')?.split('"').next()?.to_string())
            })
        })
        .and_then(|s| s.parse::<AbsPath>().ok());
    Ok(lenient.map_or_else(
        || Config::default().server.runtime_dir.path().to_owned(),
        |p| p.path().to_owned(),
    ))
}

/// `nbctl status`.
pub fn status(config_path: &Path, json: bool) -> Result<(), CliError> {
    let dir = runtime_dir(config_path)?;
    let answer = match ask(&dir, "status", STATUS_TIMEOUT) {
        Ok(a) => a,
        Err(ControlError::NotRunning(socket)) => {
            return Err(CliError::NotRunning(format!(
                "notebookd is not running (no control socket at {}); start it with `systemctl start notebook`",
                socket.display()
            )));
        }
        Err(e) => return Err(CliError::Failed(e.to_string())),
    };
    if answer["ok"] != Value::Bool(true) {
        return Err(CliError::Failed(format!(
            "notebookd answered with an error: {}",
            answer["error"].as_str().unwrap_or("(no message)")
        )));
    }
    if json {
        let text =
            serde_json::to_string_pretty(&answer).map_err(|e| CliError::Failed(e.to_string()))?;
        super::emit(&text)?;
    } else {
        super::emit(describe_status(&answer).trim_end())?;
    }
    Ok(())
}

fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The status answer as lines for a person.
pub fn describe_status(a: &Value) -> String {
    let str_of = |v: &Value| v.as_str().map(str::to_string);
    let mut out = String::new();
    let mut line = |label: &str, text: String| {
        out.push_str(&format!("  {label:<13}{text}\n"));
    };
    let head = format!(
        "notebookd {}: running (pid {}, up {})\n",
        a["version"].as_str().unwrap_or("?"),
        a["pid"],
        duration(a["uptime_secs"].as_u64().unwrap_or(0))
    );
    let tls = a["tls"]["enabled"].as_bool().unwrap_or(false);
    let scheme = if tls { "https" } else { "http" };
    let base = a["base_url"].as_str().unwrap_or("/");
    let urls: Vec<String> = a["listen"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter_map(|x| x.as_str())
                .map(|addr| format!("{scheme}://{addr}{base}"))
                .collect()
        })
        .unwrap_or_default();
    line("listening", urls.join(", "));
    if tls {
        let cert = &a["tls"]["certificate"];
        let path = a["tls"]["cert"].as_str().unwrap_or("?");
        let text = match (str_of(&cert["not_after"]), cert["days_left"].as_i64()) {
            (Some(when), Some(days)) if days < 0 => {
                format!(
                    "{path}: EXPIRED on {when}; renew it (`sudo nbctl cert generate --force` or `cert install`)"
                )
            }
            (Some(when), Some(days)) => format!("{path}, valid until {when} ({days} days left)"),
            _ => format!("{path} (expiry unknown)"),
        };
        line("certificate", text);
    } else {
        line(
            "certificate",
            "none: TLS is off (tls.enabled = false)".into(),
        );
    }
    let j = &a["jupyter"];
    let mut jupyter = j["state"].as_str().unwrap_or("unknown").to_string();
    if let Some(flavour) = str_of(&j["flavour"]) {
        jupyter.push_str(&format!(", {flavour}"));
    }
    if let Some(v) = str_of(&j["server_version"]) {
        jupyter.push_str(&format!(", jupyter_server {v}"));
    }
    if let Some(pid) = j["pid"].as_u64() {
        jupyter.push_str(&format!(", pid {pid}"));
    }
    jupyter.push_str(&format!(
        ", {} restarts",
        j["restarts"].as_u64().unwrap_or(0)
    ));
    line("jupyter", jupyter);
    line(
        "sessions",
        format!(
            "{} logged in; {} connections, {} WebSockets",
            a["sessions"], a["connections"], a["websockets"]
        ),
    );
    line(
        "password",
        if a["password_set"].as_bool().unwrap_or(false) {
            "set".into()
        } else {
            "NOT SET: run `sudo nbctl passwd`".into()
        },
    );
    let reload = &a["last_reload"];
    if reload.is_object() {
        let at = reload["at"].as_str().unwrap_or("?");
        let message = reload["message"].as_str().unwrap_or("");
        let text = if reload["ok"].as_bool().unwrap_or(false) {
            format!("accepted at {at}: {message}")
        } else {
            format!("REFUSED at {at}: {message}")
        };
        line("last reload", text);
    }
    if let Some(e) = str_of(&a["last_error"]) {
        line("last error", e);
    }
    format!("{head}{out}")
}

/// How a reload went.
enum Reloaded {
    Accepted(String),
    NotRunning,
}

fn ask_reload(dir: &Path) -> Result<Reloaded, CliError> {
    match ask(dir, "reload", RELOAD_TIMEOUT) {
        Ok(a) if a["ok"] == Value::Bool(true) => Ok(Reloaded::Accepted(
            a["message"].as_str().unwrap_or("reloaded").to_string(),
        )),
        Ok(a) => Err(CliError::Failed(format!(
            "notebookd refused the new configuration and keeps running with the old one: {}",
            a["error"].as_str().unwrap_or("(no reason given)")
        ))),
        Err(ControlError::NotRunning(_)) => Ok(Reloaded::NotRunning),
        Err(e) => Err(CliError::Failed(e.to_string())),
    }
}

/// `nbctl reload`.
pub fn reload(config_path: &Path) -> Result<(), CliError> {
    let dir = runtime_dir(config_path)?;
    match ask_reload(&dir)? {
        Reloaded::Accepted(message) => {
            say!("notebookd reloaded: {message}");
            Ok(())
        }
        Reloaded::NotRunning => Err(CliError::Failed(format!(
            "notebookd is not running (no control socket at {}); start it with `systemctl start notebook`",
            control::socket_path(&dir).display()
        ))),
    }
}

/// Keys the daemon applies only when it starts: it refuses a reload that
/// changes them (see `Reloader::prepare` in [`crate::daemon`]).
pub const RESTART_KEYS: [&str; 4] = [
    "server.listen",
    "server.state_dir",
    "server.runtime_dir",
    "limits.max_connections",
];

/// After nbctl changed `what` (already saved): asks the running daemon to
/// reload, or says that it is not running (not an error: the change applies
/// when it starts).
pub fn after_change(config: &Config, what: &str, flag: ReloadFlag) -> Result<(), CliError> {
    if flag.no_reload {
        say!("not reloading notebookd (--no-reload): run `sudo nbctl reload` to apply the change");
        return Ok(());
    }
    match ask_reload(&config.server.runtime_dir) {
        Ok(Reloaded::Accepted(message)) => {
            say!("notebookd reloaded: {message}");
            Ok(())
        }
        Ok(Reloaded::NotRunning) => {
            say!("notebookd is not running; the change applies when it starts");
            Ok(())
        }
        Err(e) => Err(CliError::Failed(format!(
            "{what} was saved, but: {e}\nFix the problem, then run `sudo nbctl reload`."
        ))),
    }
}
