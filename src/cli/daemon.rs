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

/// The status answer of the running daemon, or why there is none.
pub fn running_status(config_path: &Path) -> Result<Value, CliError> {
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
    Ok(answer)
}

/// `nbctl cert acme [--renew] [--json]`.
pub fn cert_acme(config_path: &Path, args: &super::args::CertAcmeArgs) -> Result<(), CliError> {
    let answer = running_status(config_path)?;
    let acme = &answer["acme"];
    if !acme.is_object() {
        return Err(CliError::Failed(
            "ACME is off in the running notebookd (tls.acme.enabled = false); set `tls.acme.enabled`, `tls.acme.domains` and reload".into(),
        ));
    }
    if args.renew {
        let dir = runtime_dir(config_path)?;
        let reply =
            ask(&dir, "acme-renew", STATUS_TIMEOUT).map_err(|e| CliError::Failed(e.to_string()))?;
        if reply["ok"] != Value::Bool(true) {
            return Err(CliError::Failed(format!(
                "notebookd refused: {}",
                reply["error"].as_str().unwrap_or("(no message)")
            )));
        }
        super::emit(
            "notebookd is ordering a new certificate; see `nbctl cert acme` for the outcome",
        )?;
        return Ok(());
    }
    if args.json {
        let text =
            serde_json::to_string_pretty(acme).map_err(|e| CliError::Failed(e.to_string()))?;
        super::emit(&text)?;
    } else {
        let cert = &answer["tls"]["certificate"];
        let mut text = describe_acme(acme).unwrap_or_default();
        text.push_str(&format!(
            "\nserved certificate: {}, serial {}, valid until {}",
            cert["source"].as_str().unwrap_or("?"),
            cert["serial"].as_str().unwrap_or("?"),
            cert["not_after"].as_str().unwrap_or("?")
        ));
        super::emit(&text)?;
    }
    if acme["state"] == "failing" {
        return Err(CliError::Failed(format!(
            "ACME is failing: {}",
            acme["last_error"].as_str().unwrap_or("see the log")
        )));
    }
    Ok(())
}

/// `nbctl status`.
pub fn status(config_path: &Path, json: bool) -> Result<(), CliError> {
    let dir = runtime_dir(config_path)?;
    let answer = match ask(&dir, "status", STATUS_TIMEOUT) {
        Ok(a) => a,
        Err(ControlError::NotRunning(socket)) => {
            if json {
                // Scripts get an answer in the form they asked for (and exit 3).
                let down = serde_json::json!({
                    "running": false,
                    "control_socket": socket.display().to_string(),
                    "config": config_path.display().to_string(),
                });
                super::emit(&down.to_string())?;
            }
            return Err(CliError::NotRunning(format!(
                "notebookd is not running (no control socket at {}); {}",
                socket.display(),
                how_to_start(config_path)
            )));
        }
        Err(e) => return Err(CliError::Failed(e.to_string())),
    };
    let mut answer = answer;
    if let Some(map) = answer.as_object_mut() {
        map.insert("running".into(), Value::Bool(true));
    }
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
        let path = cert["source"]
            .as_str()
            .or(a["tls"]["cert"].as_str())
            .unwrap_or("?");
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
        if let Some(acme) = describe_acme(&a["acme"]) {
            line("acme", acme);
        }
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
    let gateway = &j["gateway"];
    if gateway.is_object() {
        let state = gateway["state"].as_str().unwrap_or("unknown");
        let message = gateway["message"].as_str().unwrap_or("");
        line("gateway", format!("{state}: {message}"));
    }
    if let Some(health) = str_of(&j["health"]) {
        line("health", health);
    }
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

fn when(unix: &Value) -> String {
    unix.as_i64()
        .and_then(|t| time::OffsetDateTime::from_unix_timestamp(t).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "?".into())
}

/// The ACME state of a status answer as one line; `None` when ACME is off.
pub fn describe_acme(acme: &Value) -> Option<String> {
    if !acme.is_object() {
        return None;
    }
    let domains = acme["domains"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    let challenge = acme["challenge"].as_str().unwrap_or("?");
    let directory = acme["directory"].as_str().unwrap_or("?");
    Some(match acme["state"].as_str().unwrap_or("") {
        "failing" => format!(
            "FAILING for {domains} ({} failures, last at {}): {}; next try at {}; check {}",
            acme["failures"],
            when(&acme["last_error_at"]),
            acme["last_error"].as_str().unwrap_or("?"),
            when(&acme["next_attempt"]),
            acme["hint"].as_str().unwrap_or("the log"),
        ),
        "valid" => format!(
            "certificate for {domains} from {directory} ({challenge}); renewal at {} ({})",
            when(&acme["renew_at"]),
            renewal_reason(acme)
        ),
        "ordering" => {
            format!("ordering a certificate for {domains} from {directory} ({challenge})")
        }
        _ => format!("waiting to order a certificate for {domains} from {directory}"),
    })
}

/// Where the renewal time of an ACME status came from: the rule, and what
/// the CA said about its renewal window (RFC 9773, ARI).
fn renewal_reason(acme: &Value) -> String {
    let ari = &acme["ari"];
    let window = || format!("{} .. {}", when(&ari["start"]), when(&ari["end"]));
    let mut text = match acme["renew_rule"].as_str() {
        Some("ari") => format!(
            "picked at random in the CA's renewal window {} (ARI)",
            window()
        ),
        Some("renew_before") => "tls.acme.renew_before before expiry".to_string(),
        _ => "a third of the lifetime left".to_string(),
    };
    let not_ari = acme["renew_rule"] != "ari";
    match ari["state"].as_str() {
        Some("window") if not_ari => {
            text.push_str(&format!("; the CA's renewal window {} is later", window()));
        }
        Some("unsupported") => text.push_str("; the CA offers no renewal window (ARI)"),
        Some("failing") => text.push_str(&format!(
            "; the CA's renewal window could not be fetched ({}), next try at {}",
            ari["error"].as_str().unwrap_or("?"),
            when(&ari["next_check"])
        )),
        _ => {}
    }
    if ari["state"] == "window" {
        if let Some(e) = ari["error"].as_str() {
            text.push_str(&format!("; asking for it again failed ({e})"));
        }
        text.push_str(&format!("; asked again at {}", when(&ari["next_check"])));
    }
    if let Some(url) = ari["explanation_url"].as_str() {
        text.push_str(&format!("; the CA explains: {url}"));
    }
    text
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
            "notebookd is not running (no control socket at {}); {}",
            control::socket_path(&dir).display(),
            how_to_start(config_path)
        ))),
    }
}

/// Whether a notebookd answers on the control socket in `runtime_dir`.
pub fn is_running(runtime_dir: &Path) -> bool {
    ask(runtime_dir, "status", STATUS_TIMEOUT).is_ok()
}

/// How to start the notebookd of `config_path`, for what runs it here:
/// `./dev run` for a clone's `.dev/` config, the unit where systemd runs
/// and the package installed it, supervisord's program where it has one;
/// all of them when nothing tells.
pub fn how_to_start(config_path: &Path) -> String {
    let dev = config_path.parent().and_then(Path::file_name) == Some(".dev".as_ref());
    if dev {
        return "start it with `./dev run` in the clone that holds this .dev/".into();
    }
    let exists = |p: &str| Path::new(p).exists();
    let systemd = exists("/run/systemd/system")
        && [
            "/usr/lib/systemd/system/notebook.service",
            "/etc/systemd/system/notebook.service",
            "/lib/systemd/system/notebook.service",
        ]
        .into_iter()
        .any(exists);
    let supervisord = [
        "/etc/supervisor/conf.d/notebook.conf",
        "/etc/supervisord.d/notebook.ini",
        "/etc/supervisord.d/notebook.conf",
    ]
    .into_iter()
    .any(exists);
    match (systemd, supervisord) {
        (true, false) => "start it with `sudo systemctl start notebook`".into(),
        (false, true) => "start it with `sudo supervisorctl start notebook`".into(),
        _ => "start it with `sudo systemctl start notebook` (systemd) or `sudo supervisorctl start notebook` (supervisord), or run `notebookd --config PATH` in the foreground".into(),
    }
}

/// `nbctl unlock`.
pub fn unlock(config_path: &Path) -> Result<(), CliError> {
    let dir = runtime_dir(config_path)?;
    match ask(&dir, "unlock", Duration::from_secs(10)) {
        Ok(a) if a["ok"] == Value::Bool(true) => {
            say!(
                "notebookd: login limits cleared ({} tracked networks forgotten)",
                a["cleared"].as_u64().unwrap_or(0)
            );
            Ok(())
        }
        Ok(a) => Err(CliError::Failed(format!(
            "notebookd refused: {}",
            a["error"].as_str().unwrap_or("(no reason given)")
        ))),
        Err(ControlError::NotRunning(_)) => Err(CliError::Failed(format!(
            "notebookd is not running (no control socket at {}); nothing is locked",
            control::socket_path(&dir).display()
        ))),
        Err(e) => Err(CliError::Failed(e.to_string())),
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
