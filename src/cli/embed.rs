//! `nbctl embed allow|deny|list`: the sites that may show the notebook in
//! an iframe (`embed.frame_ancestors`).

use std::path::Path;

use toml_edit::{Array, Value};

use super::CliError;
use super::args::ReloadFlag;
use super::edit::ConfigFile;
use crate::config::Config;
use crate::config::FrameAncestor;

const KEY: &str = "embed.frame_ancestors";

fn key_path() -> [String; 2] {
    ["embed".into(), "frame_ancestors".into()]
}

fn parse_origin(origin: &str) -> Result<FrameAncestor, CliError> {
    origin
        .parse::<FrameAncestor>()
        .map_err(|e| CliError::Usage(format!("not an origin: {e}")))
}

/// The list as written in the file (keeping its formatting), or a new one.
fn written_list(file: &ConfigFile) -> Result<Array, CliError> {
    match file.written_value(&key_path())? {
        None => Ok(Array::new()),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => Err(CliError::Failed(format!(
            "{KEY} in {} is not a list; fix it by hand (`nbctl config check` shows where)",
            file.path.display()
        ))),
    }
}

/// Where in the list `origin` is, comparing the normalized forms.
fn position(list: &Array, origin: &FrameAncestor) -> Option<usize> {
    list.iter().position(|v| {
        v.as_str()
            .and_then(|s| s.parse::<FrameAncestor>().ok())
            .is_some_and(|a| a == *origin)
    })
}

fn save(file: &ConfigFile, list: Array, reload: ReloadFlag) -> Result<Config, CliError> {
    let text = file
        .edited(&key_path(), Some(&Value::Array(list)))?
        .unwrap_or_else(|| file.text().to_string());
    let config = file.save(&text, KEY)?;
    print_list(&config);
    super::daemon::after_change(&config, &format!("`{KEY}`"), reload)?;
    Ok(config)
}

fn print_list(config: &Config) {
    let list = &config.embed.frame_ancestors;
    if list.is_empty() {
        say!("no site may embed the notebook now (only notebookd itself may frame it)");
    } else {
        let names: Vec<&str> = list.iter().map(FrameAncestor::as_str).collect();
        say!("allowed to embed the notebook: {}", names.join(", "));
    }
}

/// `nbctl embed allow ORIGIN`.
pub fn allow(path: &Path, origin: &str, reload: ReloadFlag) -> Result<(), CliError> {
    let origin = parse_origin(origin)?;
    let file = ConfigFile::open(path)?;
    let mut list = written_list(&file)?;
    if position(&list, &origin).is_some() {
        say!("{origin} is already allowed; nothing changed");
        return Ok(());
    }
    list.push(origin.as_str());
    let config = save(&file, list, reload)?;
    if !config.tls.enabled {
        eprintln!(
            "note: tls.enabled = false: browsers only keep the login cookie inside another site's iframe over HTTPS"
        );
    }
    Ok(())
}

/// `nbctl embed deny ORIGIN`.
pub fn deny(path: &Path, origin: &str, reload: ReloadFlag) -> Result<(), CliError> {
    let origin = parse_origin(origin)?;
    let file = ConfigFile::open(path)?;
    let mut list = written_list(&file)?;
    let Some(index) = position(&list, &origin) else {
        let current: Vec<String> = list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        let current = if current.is_empty() {
            "none".to_string()
        } else {
            current.join(", ")
        };
        return Err(CliError::Failed(format!(
            "{origin} is not in {KEY} (allowed now: {current}); nothing changed"
        )));
    };
    list.remove(index);
    save(&file, list, reload).map(|_| ())
}

/// `nbctl embed list`.
pub fn list(path: &Path) -> Result<(), CliError> {
    let config = Config::load(path).map_err(|e| CliError::Failed(e.to_string()))?;
    for origin in &config.embed.frame_ancestors {
        super::emit(origin.as_str())?;
    }
    if config.embed.frame_ancestors.is_empty() {
        eprintln!(
            "no site may embed the notebook (only notebookd itself may frame it); add one with `sudo nbctl embed allow https://my.example.com`"
        );
    }
    Ok(())
}
