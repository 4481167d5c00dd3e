//! `nbctl sessions list` and `nbctl sessions revoke`: the running daemon's
//! login sessions, over its control socket ([`crate::daemon::control`]).

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::CliError;
use super::daemon::{ask_with, runtime_dir};
use crate::daemon::control::ControlError;

const TIMEOUT: Duration = Duration::from_secs(10);

fn ask_daemon(config_path: &Path, command: &str, arg: Option<&str>) -> Result<Value, CliError> {
    let dir = runtime_dir(config_path)?;
    let answer = ask_with(&dir, command, arg, TIMEOUT).map_err(|e| match e {
        ControlError::NotRunning(socket) => CliError::NotRunning(format!(
            "notebookd is not running (no control socket at {}), so no session is open; start it with `systemctl start notebook`",
            socket.display()
        )),
        e => CliError::Failed(e.to_string()),
    })?;
    if answer["ok"] != Value::Bool(true) {
        return Err(CliError::Failed(
            answer["error"]
                .as_str()
                .unwrap_or("notebookd answered with an error (no message)")
                .to_string(),
        ));
    }
    Ok(answer)
}

/// `nbctl sessions list [--json]`.
pub fn list(config_path: &Path, json: bool) -> Result<(), CliError> {
    let answer = ask_daemon(config_path, "sessions", None)?;
    let sessions = answer["sessions"].as_array().cloned().unwrap_or_default();
    if json {
        let text =
            serde_json::to_string_pretty(&sessions).map_err(|e| CliError::Failed(e.to_string()))?;
        return super::emit(&text);
    }
    if sessions.is_empty() {
        return super::emit("no open sessions");
    }
    let mut out = format!(
        "{:<12}  {:<39}  {:<16}  {:<20}  {:<20}  {:>3}  USER AGENT\n",
        "ID", "CLIENT", "VIA", "CREATED", "LAST SEEN", "WS"
    );
    for s in &sessions {
        let text = |k: &str| s[k].as_str().unwrap_or("?").to_string();
        let via = match s["token"].as_str() {
            Some(name) => format!("token {name}"),
            None => text("via"),
        };
        out.push_str(&format!(
            "{:<12}  {:<39}  {:<16}  {:<20}  {:<20}  {:>3}  {}\n",
            text("id"),
            text("client"),
            via,
            text("created"),
            text("last_seen"),
            s["websockets"].as_u64().unwrap_or(0),
            text("user_agent"),
        ));
    }
    super::emit(out.trim_end())
}

/// `nbctl sessions revoke ID|--all`.
pub fn revoke(config_path: &Path, id: Option<&str>, all: bool) -> Result<(), CliError> {
    let which = match (id, all) {
        (_, true) => "--all",
        (Some(id), false) => id,
        (None, false) => {
            return Err(CliError::Usage(
                "name a session (an id from `nbctl sessions list`) or give --all".into(),
            ));
        }
    };
    let answer = ask_daemon(config_path, "revoke", Some(which))?;
    let ended = answer["ended"].as_u64().unwrap_or(0);
    let noun = if ended == 1 { "session" } else { "sessions" };
    say!("{ended} {noun} ended; their open connections are closed");
    Ok(())
}
