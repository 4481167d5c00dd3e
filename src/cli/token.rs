//! `nbctl token create|list|revoke`: API tokens in `STATE_DIR/tokens.json`
//! ([`crate::auth::tokens`]). nbctl edits the file (atomically, owned like
//! the state directory, mode 0600); the running daemon notices within a
//! second. Last-used times live in the daemon and are asked for over the
//! control socket when it runs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::CliError;
use super::file::{Access, write_atomic};
use crate::auth::session::unix_now;
use crate::auth::tokens::{MAX_TOKENS, TokensFile, new_token, valid_name};
use crate::config::{Config, HumanDuration};

fn state_dir(config_path: &Path) -> Result<PathBuf, CliError> {
    let config = Config::load(config_path).map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(config.server.state_dir.path().to_owned())
}

fn read(path: &Path) -> Result<TokensFile, CliError> {
    TokensFile::read(path).map_err(|e| CliError::Failed(e.to_string()))
}

/// Writes the file owned by the state directory's owner (the service user
/// when nbctl runs as root), readable by nobody else.
fn write(state_dir: &Path, path: &Path, file: &TokensFile) -> Result<(), CliError> {
    let meta = std::fs::metadata(state_dir).map_err(|e| {
        CliError::Failed(format!(
            "cannot use server.state_dir {}: {e} (start notebookd once to create it, or create it owned by the service user)",
            state_dir.display()
        ))
    })?;
    let access = Access::Exactly {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: 0o600,
    };
    write_atomic(path, file.to_text().as_bytes(), access)
        .map_err(|e| CliError::Failed(e.to_string()))
}

fn when(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

/// `nbctl token create NAME [--expires DURATION]`: the token alone on stdout.
pub fn create(config_path: &Path, name: &str, expires: Option<&str>) -> Result<(), CliError> {
    if !valid_name(name) {
        return Err(CliError::Usage(format!(
            "{name:?} is not a token name: use up to 64 letters, digits and - _ . @, e.g. `nbctl token create vscode-laptop`"
        )));
    }
    let expires = match expires {
        Some(text) => {
            let d: HumanDuration = text
                .parse()
                .map_err(|e: String| CliError::Usage(format!("--expires: {e}")))?;
            if d.get() < Duration::from_secs(1) {
                return Err(CliError::Usage(
                    "--expires must be at least 1s (leave it out for a token that lasts until revoked)".into(),
                ));
            }
            Some(unix_now().saturating_add(d.get().as_secs()))
        }
        None => None,
    };
    let dir = state_dir(config_path)?;
    let path = TokensFile::path(&dir);
    let mut file = read(&path)?;
    if file.tokens.iter().any(|t| t.name == name) {
        return Err(CliError::Failed(format!(
            "a token named {name} exists already; revoke it first (`nbctl token revoke {name}`) or choose another name"
        )));
    }
    if file.tokens.len() >= MAX_TOKENS {
        return Err(CliError::Failed(format!(
            "there are {MAX_TOKENS} tokens already; revoke unused ones (`nbctl token list`)"
        )));
    }
    let (token, entry) = new_token(name, expires)
        .map_err(|e| CliError::Failed(format!("cannot make a random token: {e}")))?;
    file.version = 1;
    file.tokens.push(entry);
    write(&dir, &path, &file)?;
    // Scripts capture stdout: the token alone; the rest goes to stderr.
    super::emit(&token)?;
    eprintln!(
        "token {name} created{}; it is shown only this once. Use it as `Authorization: token TOKEN` or `?token=TOKEN`",
        expires.map_or(String::new(), |e| format!(", valid until {}", when(e)))
    );
    Ok(())
}

/// `nbctl token list [--json]`.
pub fn list(config_path: &Path, json: bool) -> Result<(), CliError> {
    let dir = state_dir(config_path)?;
    let file = read(&TokensFile::path(&dir))?;
    // Last-used times, if the daemon runs and answers.
    let usage = super::daemon::runtime_dir(config_path)
        .ok()
        .and_then(|rt| super::daemon::ask_with(&rt, "tokens", None, Duration::from_secs(5)).ok())
        .map(|a| a["tokens"].clone())
        .unwrap_or(Value::Null);
    let rows: Vec<Value> = file
        .tokens
        .iter()
        .map(|t| {
            let used = &usage[&t.name];
            serde_json::json!({
                "name": t.name,
                "created": when(t.created),
                "created_unix": t.created,
                "expires": t.expires.map(when),
                "expires_unix": t.expires,
                "expired": t.expires.is_some_and(|e| unix_now() >= e),
                "last_used": used["last_used"],
                "last_used_unix": used["last_used_unix"],
                "websockets": used["websockets"].as_u64().unwrap_or(0),
            })
        })
        .collect();
    if json {
        let text =
            serde_json::to_string_pretty(&rows).map_err(|e| CliError::Failed(e.to_string()))?;
        return super::emit(&text);
    }
    if rows.is_empty() {
        return super::emit("no API tokens; make one with `nbctl token create NAME`");
    }
    let mut out = format!(
        "{:<24}  {:<20}  {:<28}  LAST USED\n",
        "NAME", "CREATED", "EXPIRES"
    );
    for r in &rows {
        let expires = match r["expires"].as_str() {
            Some(e) if r["expired"] == Value::Bool(true) => format!("{e} (expired)"),
            Some(e) => e.to_string(),
            None => "never".into(),
        };
        let last = r["last_used"].as_str().unwrap_or(if usage.is_null() {
            "(notebookd not running)"
        } else {
            "never"
        });
        out.push_str(&format!(
            "{:<24}  {:<20}  {:<28}  {last}\n",
            r["name"].as_str().unwrap_or("?"),
            r["created"].as_str().unwrap_or("?"),
            expires,
        ));
    }
    super::emit(out.trim_end())
}

/// `nbctl token revoke NAME`.
pub fn revoke(config_path: &Path, name: &str) -> Result<(), CliError> {
    let dir = state_dir(config_path)?;
    let path = TokensFile::path(&dir);
    let mut file = read(&path)?;
    let before = file.tokens.len();
    file.tokens.retain(|t| t.name != name);
    if file.tokens.len() == before {
        return Err(CliError::Failed(format!(
            "no token named {name}; `nbctl token list` shows them"
        )));
    }
    write(&dir, &path, &file)?;
    say!("token {name} revoked; notebookd closes its open connections within a second");
    Ok(())
}
