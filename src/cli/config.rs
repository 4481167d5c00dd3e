//! `nbctl config show|get|set|unset` (`config check` is [`super::check_config`]).

use std::path::Path;

use super::CliError;
use super::args::{ReloadFlag, RestartJupyterFlag};
use super::edit::{ConfigFile, Key, Schema, value_from_args};
use crate::config::Config;
use crate::jupyter::LaunchPlan;

const REDACTED: &str = "<redacted>";

fn load(path: &Path) -> Result<Config, CliError> {
    Config::load(path).map_err(|e| CliError::Failed(e.to_string()))
}

/// The effective config as a TOML table, defaults filled in, secrets redacted.
fn effective(config: &Config) -> Result<toml::Table, CliError> {
    let mut table = toml::Table::try_from(config)
        .map_err(|e| CliError::Failed(format!("cannot show the config: {e}")))?;
    if let Some(toml::Value::Table(auth)) = table.get_mut("auth") {
        let shown = if config.auth.password_hash.is_some() {
            REDACTED
        } else {
            ""
        };
        auth.insert("password_hash".into(), toml::Value::String(shown.into()));
    }
    Ok(table)
}

/// `nbctl config show`.
pub fn show(path: &Path, json: bool) -> Result<(), CliError> {
    let table = effective(&load(path)?)?;
    let text = if json {
        serde_json::to_string_pretty(&table).map_err(|e| CliError::Failed(e.to_string()))?
    } else {
        let body = toml::to_string(&table).map_err(|e| CliError::Failed(e.to_string()))?;
        format!(
            "# The effective configuration of {}: every key, defaults filled in, secrets redacted.\n\n{body}",
            path.display()
        )
    };
    super::emit(text.trim_end())?;
    Ok(())
}

/// A value as the user would write it after `config set`.
fn render(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Table(t) => toml::to_string(t)
            .unwrap_or_default()
            .trim_end()
            .to_string(),
        other => other.to_string(),
    }
}

/// `nbctl config get KEY`.
pub fn get(path: &Path, key: &str) -> Result<(), CliError> {
    let key = Schema::new()?.resolve(key)?;
    let table = effective(&load(path)?)?;
    let names: Vec<String> = match &key {
        Key::Section(s) => vec![s.clone()],
        Key::Setting { path, .. } => path.clone(),
    };
    let mut value = table.get(&names[0]);
    for name in &names[1..] {
        value = value.and_then(|v| v.get(name));
    }
    match value {
        Some(v) => super::emit(&render(v)),
        None => Err(CliError::Failed(format!(
            "`{}` is not set in {}",
            key.dotted(),
            path.display()
        ))),
    }
}

/// `nbctl config set KEY VALUE...`.
pub fn set(
    path: &Path,
    key: &str,
    words: &[String],
    reload: ReloadFlag,
    restart: RestartJupyterFlag,
    create: bool,
) -> Result<(), CliError> {
    let key = Schema::new()?.resolve(key)?;
    let value = value_from_args(&key, words)?;
    let Key::Setting { path: names, .. } = &key else {
        return Err(CliError::Usage(format!("`{}` is a section", key.dotted())));
    };
    let dotted = key.dotted();
    let file = ConfigFile::open(path)?;
    let text = file
        .edited(names, Some(&value))?
        .unwrap_or_else(|| file.text().to_string());
    let shown = if dotted == "auth.password_hash" {
        REDACTED.to_string()
    } else {
        value.to_string()
    };
    if text == file.text() {
        say!(
            "{dotted} is already {shown} in {}; nothing changed",
            path.display()
        );
        return Ok(());
    }
    let root_dir = (dotted == "jupyter.root_dir")
        .then(|| value.as_str().map(std::path::PathBuf::from))
        .flatten();
    if let Some(dir) = root_dir.as_deref().filter(|d| !d.is_dir()) {
        if !create {
            return Err(CliError::Usage(format!(
                "jupyter.root_dir: {} does not exist; nothing changed (create it for the service's user, e.g. `sudo install -d -o notebook -g notebook {}`, or pass --create)",
                dir.display(),
                dir.display()
            )));
        }
    }
    confirm_jupyter_restart(path, file.text(), &text, &dotted, reload, restart)?;
    if let Some(dir) = root_dir.as_deref().filter(|d| !d.is_dir()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            CliError::Failed(format!(
                "cannot create jupyter.root_dir {}: {e}; nothing changed",
                dir.display()
            ))
        })?;
        say!(
            "created {} (make sure the service's user may write there)",
            dir.display()
        );
    }
    let config = file.save(&text, &dotted)?;
    say!("{dotted} = {shown} in {}", path.display());
    apply(&config, &dotted, reload)
}

/// A change that restarts the running Jupyter ends every running kernel
/// (and the unsaved state in them): said before anything is written, and
/// done only with `--restart-jupyter` or a "yes" on a terminal.
fn confirm_jupyter_restart(
    path: &Path,
    before: &str,
    after: &str,
    dotted: &str,
    reload: ReloadFlag,
    restart: RestartJupyterFlag,
) -> Result<(), CliError> {
    if reload.no_reload || restart.restart_jupyter {
        return Ok(());
    }
    let (Ok(old), Ok(new)) = (Config::parse(path, before), Config::parse(path, after)) else {
        // The save says what is wrong with the new file; an old file that
        // does not load is not what a daemon runs.
        return Ok(());
    };
    if LaunchPlan::from_config(&old) == LaunchPlan::from_config(&new)
        || !super::daemon::is_running(&old.server.runtime_dir)
    {
        return Ok(());
    }
    let warning = format!(
        "changing {dotted} restarts the running Jupyter, which ends every running kernel (their unsaved state is lost)"
    );
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprint!("{warning}. Restart Jupyter now? [y/N] ");
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
            return Ok(());
        }
        return Err(CliError::Failed(
            "not restarting Jupyter; nothing changed".into(),
        ));
    }
    Err(CliError::Usage(format!(
        "{warning}; nothing changed (pass --restart-jupyter to go ahead, or --no-reload to change only the file)"
    )))
}

/// Reloads the daemon, or says that this key needs a restart.
fn apply(config: &Config, dotted: &str, reload: ReloadFlag) -> Result<(), CliError> {
    if super::daemon::RESTART_KEYS.contains(&dotted) {
        say!(
            "{dotted} takes effect when notebookd restarts: run `sudo systemctl restart notebook`"
        );
        return Ok(());
    }
    super::daemon::after_change(config, &format!("`{dotted}`"), reload)
}

/// `nbctl config unset KEY`.
pub fn unset(
    path: &Path,
    key: &str,
    reload: ReloadFlag,
    restart: RestartJupyterFlag,
) -> Result<(), CliError> {
    let key = Schema::new()?.resolve(key)?;
    let Key::Setting { path: names, .. } = &key else {
        return Err(CliError::Usage(format!(
            "`{}` is a section; unset its keys one by one",
            key.dotted()
        )));
    };
    let dotted = key.dotted();
    let file = ConfigFile::open(path)?;
    let Some(text) = file.edited(names, None)? else {
        say!(
            "{dotted} is not set in {}; its default applies; nothing changed",
            path.display()
        );
        return Ok(());
    };
    confirm_jupyter_restart(path, file.text(), &text, &dotted, reload, restart)?;
    let config = file.save(&text, &dotted)?;
    let default = effective(&config)
        .ok()
        .and_then(|t| {
            let mut v = t.get(&names[0]).cloned();
            for n in &names[1..] {
                v = v.and_then(|v| v.get(n).cloned());
            }
            v
        })
        .map(|v| format!(" (now {})", v))
        .unwrap_or_default();
    say!(
        "removed {dotted} from {}; its default applies{default}",
        path.display()
    );
    apply(&config, &dotted, reload)
}
