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
    check_gateway(path, &config, &mut notes)?;
    Ok((config, notes))
}

/// `jupyter.gateway_*`: the token file is readable (and not by everyone),
/// the CA file is readable. The URL's form was checked by [`Config::load`].
fn check_gateway(path: &Path, config: &Config, notes: &mut Vec<String>) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let j = &config.jupyter;
    if j.gateway().is_none() {
        return Ok(());
    }
    if let Some(token) = crate::config::Jupyter::optional_path(&j.gateway_token_file) {
        crate::jupyter::gateway::read_token(token)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if std::fs::metadata(token).is_ok_and(|m| m.permissions().mode() & 0o004 != 0) {
            notes.push(format!(
                "jupyter.gateway_token_file {} is readable by every user: `sudo chown root:notebook {0} && sudo chmod 0640 {0}`",
                token.display()
            ));
        }
    }
    if let Some(ca) = crate::config::Jupyter::optional_path(&j.gateway_ca) {
        if let Err(e) = std::fs::File::open(ca) {
            anyhow::bail!(
                "{}: jupyter.gateway_ca: cannot read {}: {e} (it must be a PEM file the service's user can read)",
                path.display(),
                ca.display()
            );
        }
    }
    Ok(())
}
