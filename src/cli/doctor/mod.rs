//! `nbctl doctor`: the checks of what administrators get wrong, each with
//! its fix. One line per check (`ok`, `warn`, `fail`), `--json`, exit 1 if
//! any check fails.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::CliError;
use crate::config::Config;

mod acme;
mod chain;
mod jupyter;
mod public_url;
mod systemd;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

/// One check: what it looked at, what it found, and the fix.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    pub name: &'static str,
    pub verdict: Verdict,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

fn check(name: &'static str, verdict: Verdict, message: String, fix: Option<String>) -> Check {
    Check {
        name,
        verdict,
        message,
        fix,
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether certificate name `pattern` (maybe `*.example.org`) covers `host`.
fn name_matches(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(rest) => host
            .split_once('.')
            .is_some_and(|(first, tail)| !first.is_empty() && tail == rest),
        None => pattern == host,
    }
}

/// The host of `server.public_url`, if set.
fn public_host(config: &Config) -> Option<String> {
    let url = config.server.public_url.trim();
    if url.is_empty() {
        return None;
    }
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    Some(host.to_string())
}

fn certificate_checks(config: &Config, out: &mut Vec<Check>) {
    if !config.tls.enabled && !config.server.trusted_proxies.is_empty() {
        out.push(check(
            "certificate",
            Verdict::Ok,
            "TLS is off here: the proxy in server.trusted_proxies terminates it".into(),
            None,
        ));
        return;
    }
    if !config.tls.enabled {
        out.push(check(
            "certificate",
            Verdict::Warn,
            "TLS is off (tls.enabled = false)".into(),
            Some("only behind a proxy that terminates TLS; set trusted_proxies for it".into()),
        ));
        return;
    }
    if config.tls.acme.enabled {
        out.push(check(
            "certificate",
            Verdict::Ok,
            format!(
                "from ACME ({}) for {}",
                config.tls.acme.directory_url(),
                config.tls.acme.domains.join(", ")
            ),
            None,
        ));
        return;
    }
    let (cert_path, key_path) = (config.tls.cert.path(), config.tls.key.path());
    let loaded = crate::front::tls::load_certified_key(cert_path, key_path);
    match &loaded {
        Ok(_) => out.push(check(
            "certificate files",
            Verdict::Ok,
            format!(
                "{} and {} load and belong together",
                cert_path.display(),
                key_path.display()
            ),
            None,
        )),
        Err(e) => {
            out.push(check(
                "certificate files",
                Verdict::Fail,
                e.to_string(),
                Some(
                    "`sudo nbctl cert generate --force`, or `sudo nbctl cert install CERT KEY`"
                        .into(),
                ),
            ));
        }
    }
    let Ok(pem) = std::fs::read(cert_path) else {
        return;
    };
    // Also when the files do not load: a file out of order (the key then
    // does not match its first certificate) is explained here.
    let served = chain::certificates(&pem);
    if !served.is_empty() {
        out.push(chain::chain_check(cert_path, &served));
    }
    if loaded.is_err() {
        return;
    }
    if let Some(leaf) = served.first() {
        chain::listen_checks(
            &config.server.listen.0,
            leaf,
            public_host(config).is_some(),
            out,
        );
    }
    let Some(Ok(der)) = CertificateDer::pem_slice_iter(&pem).next() else {
        return;
    };
    let Some(leaf) = crate::front::tls::CertSummary::of(&der) else {
        return;
    };
    let left = leaf.not_after - now();
    let days = left.div_euclid(86400);
    out.push(if left < 0 {
        check(
            "certificate expiry",
            Verdict::Fail,
            format!(
                "{} EXPIRED {} day{} ago",
                cert_path.display(),
                -days,
                if days == -1 { "" } else { "s" }
            ),
            Some("renew it: `sudo nbctl cert generate --force`, `sudo nbctl cert install CERT KEY`, or [tls.acme]".into()),
        )
    } else if days < 14 {
        check(
            "certificate expiry",
            Verdict::Warn,
            format!(
                "{} expires in {days} day{}",
                cert_path.display(),
                if days == 1 { "" } else { "s" }
            ),
            Some("renew it soon (or let [tls.acme] do it)".into()),
        )
    } else {
        check(
            "certificate expiry",
            Verdict::Ok,
            format!("valid for {days} more days"),
            None,
        )
    });
    if leaf.not_before > now() + 300 {
        out.push(check(
            "clock",
            Verdict::Fail,
            "the certificate is not valid yet: this machine's clock or the certificate's is wrong"
                .into(),
            Some(
                "check the time (`timedatectl`; enable NTP with `timedatectl set-ntp true`)".into(),
            ),
        ));
    }
    match public_host(config) {
        None => out.push(check(
            "certificate names",
            Verdict::Warn,
            format!(
                "server.public_url is not set; the certificate names {}",
                leaf.dns_names.join(", ")
            ),
            Some(
                "set the URL users type: `sudo nbctl config set server.public_url https://NAME/`"
                    .into(),
            ),
        )),
        Some(host) => {
            let ip_ok = host.parse::<std::net::IpAddr>().is_ok() && leaf.dns_names.is_empty();
            if leaf.dns_names.iter().any(|n| name_matches(n, &host)) || ip_ok {
                out.push(check(
                    "certificate names",
                    Verdict::Ok,
                    format!("the certificate names {host} (server.public_url)"),
                    None,
                ));
            } else {
                out.push(check(
                    "certificate names",
                    Verdict::Fail,
                    format!(
                        "the certificate is for {} but users type {host} (server.public_url): browsers refuse it",
                        if leaf.dns_names.is_empty() {
                            "no DNS name".to_string()
                        } else {
                            leaf.dns_names.join(", ")
                        }
                    ),
                    Some(format!("`sudo nbctl cert generate --force --host {host}`, or a CA's certificate for {host}")),
                ));
            }
        }
    }
    match std::fs::metadata(key_path) {
        Ok(m) if m.mode() & 0o004 != 0 => out.push(check(
            "key permissions",
            Verdict::Fail,
            format!(
                "{} is readable by every user (mode {:o})",
                key_path.display(),
                m.mode() & 0o777
            ),
            Some(format!(
                "`sudo chown root:notebook {0} && sudo chmod 0640 {0}`",
                key_path.display()
            )),
        )),
        Ok(m) => out.push(check(
            "key permissions",
            Verdict::Ok,
            format!("{} is mode {:o}", key_path.display(), m.mode() & 0o777),
            None,
        )),
        Err(_) => {}
    }
}

/// The DNS names users type (`server.public_url`) and ACME asks for
/// (`tls.acme.domains`) resolve; which addresses they give is reported (the
/// public URL and ACME domain checks then connect to see whether they lead
/// here).
fn resolve_checks(config: &Config, out: &mut Vec<Check>) {
    let mut names: Vec<String> = public_host(config).into_iter().collect();
    if config.tls.enabled && config.tls.acme.enabled {
        names.extend(config.tls.acme.domains.iter().cloned());
    }
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() || name.parse::<std::net::IpAddr>().is_ok() || !seen.insert(name.clone())
        {
            continue;
        }
        // A wildcard has no address of its own: ACME checks it by DNS-01.
        if name.starts_with("*.") {
            continue;
        }
        match dns_lookup::lookup_host(&name) {
            Ok(addrs) if !addrs.is_empty() => {
                let mut addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                addrs.sort();
                addrs.dedup();
                out.push(check(
                    "name resolves",
                    Verdict::Ok,
                    format!("{name} resolves to {}", addrs.join(", ")),
                    None,
                ));
            }
            Ok(_) | Err(_) => out.push(check(
                "name resolves",
                Verdict::Fail,
                format!("{name} does not resolve: users (and an ACME CA) cannot reach it"),
                Some(format!(
                    "create the DNS record: an A (and AAAA) record for {name} with this machine's public address; check with `getent hosts {name}`"
                )),
            )),
        }
    }
}

fn jupyter_check(config: &Config, out: &mut Vec<Check>) {
    let cmd = &config.jupyter.command;
    match crate::jupyter::flavour::find_program(
        cmd,
        config.jupyter.env.get("PATH").map(String::as_str),
    ) {
        Some(path) => out.push(check(
            "jupyter command",
            Verdict::Ok,
            format!("{cmd} is {}", path.display()),
            None,
        )),
        None => out.push(check(
            "jupyter command",
            Verdict::Fail,
            format!("jupyter.command {cmd:?} is not an executable file"),
            Some("install Debian's python3-notebook, or set jupyter.command to the jupyter of a venv".into()),
        )),
    }
    if out.last().is_some_and(|c| c.verdict == Verdict::Ok) {
        jupyter::checks(config, out);
    }
}

/// Whether the daemon runs (the public URL check needs it to answer).
fn daemon_checks(config_path: &Path, config: &Config, out: &mut Vec<Check>) -> bool {
    match super::daemon::running_status(config_path) {
        Ok(answer) => {
            out.push(check(
                "daemon",
                Verdict::Ok,
                format!(
                    "notebookd is running (pid {}), Jupyter {}",
                    answer["pid"],
                    answer["jupyter"]["state"].as_str().unwrap_or("?")
                ),
                None,
            ));
            if config.tls.acme.enabled {
                let acme = &answer["acme"];
                let line = super::daemon::describe_acme(acme).unwrap_or_default();
                let failing = acme["state"] == "failing";
                out.push(check(
                    "acme",
                    if failing { Verdict::Fail } else { Verdict::Ok },
                    line,
                    failing.then(|| {
                        format!(
                            "check {}; then `sudo nbctl cert acme --renew` to try again at once",
                            acme["hint"]
                                .as_str()
                                .unwrap_or("the log (`journalctl -u notebook`)")
                        )
                    }),
                ));
            }
            true
        }
        Err(e) => {
            out.push(check(
                "daemon",
                Verdict::Warn,
                e.to_string(),
                Some("`sudo systemctl start notebook` (or run notebookd)".into()),
            ));
            false
        }
    }
}

fn systemd_check(out: &mut Vec<Check>) {
    let Ok(result) = std::process::Command::new("systemctl")
        .args(["is-enabled", "notebook.service"])
        .output()
    else {
        return; // no systemd here (a container, supervisord)
    };
    let state = String::from_utf8_lossy(&result.stdout).trim().to_string();
    if state.is_empty() {
        return;
    }
    if state == "not-found" {
        // Run by hand or under supervisord on a machine that has systemd.
        out.push(check(
            "systemd unit",
            Verdict::Ok,
            "notebook.service is not installed here (notebookd runs by hand or under another supervisor)".into(),
            None,
        ));
        return;
    }
    out.push(if state == "enabled" {
        check(
            "systemd unit",
            Verdict::Ok,
            "notebook.service is enabled".into(),
            None,
        )
    } else {
        check(
            "systemd unit",
            Verdict::Warn,
            format!("notebook.service is {state}: it will not start at boot"),
            Some("`sudo systemctl enable --now notebook`".into()),
        )
    });
    let Ok(shown) = std::process::Command::new("systemctl")
        .args(["show", "notebook.service", "-p"])
        .arg(systemd::PROPERTIES)
        .output()
    else {
        return;
    };
    if shown.status.success() {
        out.push(systemd::UnitState::parse(&String::from_utf8_lossy(&shown.stdout)).check());
    }
}

/// Runs every check.
pub fn checks(config_path: &Path) -> Vec<Check> {
    let mut out = Vec::new();
    let config = match Config::load(config_path) {
        Ok(c) => {
            out.push(check(
                "config",
                Verdict::Ok,
                format!("{} is valid", config_path.display()),
                None,
            ));
            c
        }
        Err(e) => {
            out.push(check(
                "config",
                Verdict::Fail,
                e.to_string(),
                Some("fix the file (`nbctl config check` says the same)".into()),
            ));
            return out;
        }
    };
    certificate_checks(&config, &mut out);
    resolve_checks(&config, &mut out);
    jupyter_check(&config, &mut out);
    let running = daemon_checks(config_path, &config, &mut out);
    if config.tls.enabled && config.tls.acme.enabled {
        acme::domain_checks(&config, &mut out);
        acme::clock_check(&config, &mut out);
    }
    systemd_check(&mut out);
    if running {
        public_url::checks(&config, &mut out);
    }
    out
}

/// `nbctl doctor [--json]`.
pub fn run(config_path: &Path, json: bool) -> Result<(), CliError> {
    let results = checks(config_path);
    if json {
        let text =
            serde_json::to_string_pretty(&results).map_err(|e| CliError::Failed(e.to_string()))?;
        super::emit(&text)?;
    } else {
        let mut text = String::new();
        for c in &results {
            let verdict = match c.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
            };
            text.push_str(&format!("{verdict} {}: {}", c.name, c.message));
            if let Some(fix) = &c.fix {
                text.push_str(&format!("; fix: {fix}"));
            }
            text.push('\n');
        }
        super::emit(text.trim_end())?;
    }
    let failed = results
        .iter()
        .filter(|c| c.verdict == Verdict::Fail)
        .count();
    if failed > 0 {
        return Err(CliError::Failed(format!(
            "{failed} check{} failed",
            if failed == 1 { "" } else { "s" }
        )));
    }
    Ok(())
}
