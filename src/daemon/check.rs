//! What `notebookd --check-config` and `nbctl config check` check, and
//! what start and reload check first: the config file, the TLS files, the
//! Jupyter command.

use std::path::Path;

use crate::config::Config;

/// Everything `--check-config` checks: the config file, the TLS files, the
/// Jupyter command. Returns the config and notes worth printing.
pub fn check(path: &Path) -> anyhow::Result<(Config, Vec<String>)> {
    let config = Config::load(path)?;
    let mut notes = Vec::new();
    if config.tls.enabled && config.tls.acme.enabled {
        // The certificate comes from the CA; tls.cert and tls.key are not read.
    } else if config.tls.enabled {
        crate::front::tls::load_certified_key(&config.tls.cert, &config.tls.key)?;
    } else {
        notes.push(
            "tls.enabled = false: serving plain HTTP (put a TLS-terminating proxy in front)".into(),
        );
    }
    if config.auth.password_hash.is_none() {
        notes.push("auth.password_hash is empty: only a \"set a password\" page is served until you run `sudo nbctl passwd`".into());
    }
    let cmd = &config.jupyter.command;
    if crate::jupyter::flavour::find_program(
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
