//! The config file, `/etc/notebook/notebook.toml`, and its validation.
//!
//! Two stages: the TOML text is deserialized into [`Config`] (unknown keys
//! refused, each value parsed by a type that knows its accepted forms), then
//! [`Config::validate`] checks what involves more than one value. Every error
//! names the file, the line and column, the key, and what would be accepted.
//! `notebookd --check-config` and `nbctl config check` run exactly this, plus
//! loading the TLS files (see [`crate::daemon::check`]).

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::auth::password::PasswordHash;

/// Where the config lives unless `--config` or `NOTEBOOK_CONFIG` say otherwise.
pub const DEFAULT_PATH: &str = "/etc/notebook/notebook.toml";
/// The environment variable both binaries read for the config path.
pub const PATH_ENV: &str = "NOTEBOOK_CONFIG";

/// The whole configuration, with every default filled in.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: Server,
    pub tls: Tls,
    pub auth: Auth,
    pub jupyter: Jupyter,
    pub embed: Embed,
    pub limits: Limits,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Server {
    /// Addresses to listen on; one string or a list.
    pub listen: ListenAddrs,
    /// URL prefix of everything served, Jupyter included.
    pub base_url: BaseUrl,
    /// Peers whose `X-Forwarded-For`/`X-Forwarded-Proto` are believed.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Notebooks' default home and notebookd's secrets.
    pub state_dir: AbsPath,
    /// The private Jupyter socket and the control socket.
    pub runtime_dir: AbsPath,
    /// How long open requests may take to finish at shutdown.
    pub shutdown_timeout: HumanDuration,
    /// The URL users type, e.g. `https://nb.example.org/`; empty: not said.
    /// `nbctl doctor` checks the certificate's names against it.
    pub public_url: String,
    /// Origins whose API-token requests get CORS answers (never with cookies).
    pub cors_origins: Vec<FrameAncestor>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: ListenAddrs(vec![SocketAddr::from(([0, 0, 0, 0], 9999))]),
            base_url: BaseUrl("/".into()),
            trusted_proxies: Vec::new(),
            state_dir: AbsPath::new("/var/lib/notebook"),
            runtime_dir: AbsPath::new("/run/notebook"),
            shutdown_timeout: HumanDuration::secs(10),
            public_url: String::new(),
            cors_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    pub enabled: bool,
    pub cert: AbsPath,
    pub key: AbsPath,
    /// `Strict-Transport-Security` max-age; `0s` sends none.
    pub hsts_max_age: HumanDuration,
    /// Certificates from an ACME CA (Let's Encrypt, step-ca) instead of the files.
    pub acme: Acme,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            enabled: true,
            cert: AbsPath::new("/etc/notebook/tls/cert.pem"),
            key: AbsPath::new("/etc/notebook/tls/key.pem"),
            hsts_max_age: HumanDuration::secs(365 * 86400),
            acme: Acme::default(),
        }
    }
}

/// Let's Encrypt's production directory, `tls.acme.directory`'s default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`tls.acme.staging = true`).
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// `[tls.acme]`: certificates obtained and renewed by notebookd itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Acme {
    pub enabled: bool,
    /// The names the certificate is for; the first is its subject.
    pub domains: Vec<String>,
    /// Where the CA sends expiry warnings, e.g. `mailto:admin@example.org`.
    pub contact: Vec<String>,
    /// The ACME directory URL; empty: Let's Encrypt (production, or staging).
    pub directory: String,
    pub staging: bool,
    pub challenge: AcmeChallenge,
    /// Plain-HTTP listeners: they answer HTTP-01 challenges and redirect
    /// everything else to https.
    pub http_listen: ListenAddrs,
    /// PEM roots to trust for the directory (a private CA such as step-ca).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<AbsPath>,
    /// Renew this long before expiry; `0s`: when a third of the lifetime is
    /// left. The CA's renewal window (RFC 9773), where offered, can only
    /// make renewal earlier.
    pub renew_before: HumanDuration,
}

impl Default for Acme {
    fn default() -> Self {
        Acme {
            enabled: false,
            domains: Vec::new(),
            contact: Vec::new(),
            directory: String::new(),
            staging: false,
            challenge: AcmeChallenge::TlsAlpn01,
            http_listen: ListenAddrs(Vec::new()),
            ca_bundle: None,
            renew_before: HumanDuration::secs(0),
        }
    }
}

impl Acme {
    /// The directory URL to use.
    pub fn directory_url(&self) -> &str {
        match (self.directory.trim(), self.staging) {
            ("", false) => LETS_ENCRYPT,
            ("", true) => LETS_ENCRYPT_STAGING,
            (url, _) => url,
        }
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if !self.enabled {
            return Ok(());
        }
        if self.domains.is_empty() {
            return Err((
                "tls.acme.domains",
                "needs the names users type, e.g. [\"nb.example.org\"], when tls.acme.enabled = true".into(),
            ));
        }
        for d in &self.domains {
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.contains('.')
                && d.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                });
            if !ok {
                return Err((
                    "tls.acme.domains",
                    format!(
                        "{d:?} is not a DNS name (ACME certifies names like \"nb.example.org\"; IP addresses and wildcards are not supported)"
                    ),
                ));
            }
        }
        for c in &self.contact {
            if !c.starts_with("mailto:") || !c.contains('@') {
                return Err((
                    "tls.acme.contact",
                    format!("{c:?} is not a contact URL: write \"mailto:admin@example.org\""),
                ));
            }
        }
        let url = self.directory_url();
        if !url.starts_with("https://") {
            return Err((
                "tls.acme.directory",
                format!("{url:?}: an ACME directory is an https:// URL, e.g. \"{LETS_ENCRYPT}\""),
            ));
        }
        if self.challenge == AcmeChallenge::Http01 && self.http_listen.0.is_empty() {
            return Err((
                "tls.acme.http_listen",
                "challenge = \"http-01\" needs a plain-HTTP listener the CA reaches on port 80, e.g. \"0.0.0.0:80\"".into(),
            ));
        }
        Ok(())
    }
}

/// How the CA checks that this machine answers for the domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum AcmeChallenge {
    /// Answered on the TLS listener itself (the CA connects to port 443).
    #[serde(rename = "tls-alpn-01")]
    TlsAlpn01,
    /// Answered on `http_listen` (the CA connects to port 80).
    #[serde(rename = "http-01")]
    Http01,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Auth {
    /// Empty means "no password yet": the daemon serves a page saying how to set one.
    #[serde(deserialize_with = "optional_password_hash")]
    pub password_hash: Option<PasswordHash>,
    /// A session ends this long after login, whatever happens.
    pub session_lifetime: HumanDuration,
    /// A session ends after this long without a request.
    pub session_idle_timeout: HumanDuration,
    /// Login attempts allowed per client address within `login_window`.
    pub login_attempts: u32,
    pub login_window: HumanDuration,
    /// Clients whose logins are never counted or limited (the owner's VPN).
    pub trusted_clients: Vec<TrustedProxy>,
}

impl Default for Auth {
    fn default() -> Self {
        Auth {
            password_hash: None,
            session_lifetime: HumanDuration::secs(7 * 86400),
            session_idle_timeout: HumanDuration::secs(12 * 3600),
            login_attempts: 10,
            login_window: HumanDuration::secs(60),
            trusted_clients: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Jupyter {
    pub flavour: Flavour,
    /// The `jupyter` launcher: a name looked up in PATH, or an absolute path.
    pub command: String,
    /// Extra command-line arguments for the Jupyter server.
    pub args: Vec<String>,
    /// Extra environment for the Jupyter server and its kernels.
    pub env: BTreeMap<String, String>,
    /// Where notebooks live.
    pub root_dir: AbsPath,
    pub startup_timeout: HumanDuration,
    pub stop_timeout: HumanDuration,
    /// A Jupyter Enterprise Gateway or Kernel Gateway that runs the kernels
    /// (`http://` or `https://`); empty: kernels run on this machine.
    pub gateway_url: String,
    /// A file holding the gateway's auth token (root:notebook 0640); empty: none.
    /// The token is read at each start of Jupyter and handed over in its
    /// environment, never on a command line.
    pub gateway_token_file: String,
    /// PEM certificates to trust for the gateway's TLS; empty: the system's.
    pub gateway_ca: String,
    /// How long a request to the gateway may take (a kernel start included).
    pub gateway_request_timeout: HumanDuration,
    /// How long connecting to the gateway may take.
    pub gateway_connect_timeout: HumanDuration,
    /// `KERNEL_USERNAME` for the gateway's kernels; empty: the service's user.
    pub gateway_kernel_username: String,
    /// `KERNEL_WORKING_DIR` for the gateway's kernels (a directory on the
    /// cluster); empty: jupyter_server sends the notebook's local directory.
    pub gateway_kernel_working_dir: String,
    /// Longest wait for Jupyter's answer to a request, from the end of the
    /// request (`504 Gateway Timeout` after it).
    pub response_timeout: HumanDuration,
}

impl Jupyter {
    /// The gateway URL, if kernels run on a gateway.
    pub fn gateway(&self) -> Option<&str> {
        let url = self.gateway_url.trim();
        (!url.is_empty()).then_some(url)
    }

    /// A path-valued key that may be empty ("not set").
    pub fn optional_path(value: &str) -> Option<&Path> {
        let v = value.trim();
        (!v.is_empty()).then(|| Path::new(v))
    }
}

impl Default for Jupyter {
    fn default() -> Self {
        Jupyter {
            flavour: Flavour::Auto,
            command: "jupyter".into(),
            args: Vec::new(),
            env: BTreeMap::new(),
            root_dir: AbsPath::new("/var/lib/notebook/notebooks"),
            startup_timeout: HumanDuration::secs(60),
            stop_timeout: HumanDuration::secs(10),
            gateway_url: String::new(),
            gateway_token_file: String::new(),
            gateway_ca: String::new(),
            // jupyter_server's defaults: a kernel launch may take 40s, plus a pad.
            gateway_request_timeout: HumanDuration::secs(42),
            gateway_connect_timeout: HumanDuration::secs(40),
            gateway_kernel_username: String::new(),
            gateway_kernel_working_dir: String::new(),
            response_timeout: HumanDuration::secs(300),
        }
    }
}

/// Which Jupyter application notebookd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Flavour {
    /// `notebook` if installed, else `lab`, else `server`.
    Auto,
    /// `jupyter server`: the bare server (REST API, kernels, no UI of its own).
    Server,
    /// `jupyter notebook`: Notebook 7, or the classic 6.x.
    Notebook,
    /// `jupyter lab`.
    Lab,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Embed {
    /// Origins allowed to show the notebook in an iframe.
    pub frame_ancestors: Vec<FrameAncestor>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_connections: u32,
    /// Time allowed for a client to send a request's headers.
    pub header_read_timeout: HumanDuration,
    /// An idle keep-alive connection is closed after this long.
    pub keep_alive_timeout: HumanDuration,
    /// Largest request head (request line and headers) in bytes.
    pub max_header_bytes: u32,
    pub max_headers: u32,
    /// Longest request target (path and query) in bytes.
    pub max_uri_bytes: u32,
    /// Longest wait for the next bytes of a request body (`408` after it).
    pub body_read_timeout: HumanDuration,
    /// Longest wait for a client to take the next bytes of a response
    /// (or WebSocket message); the connection is closed after it.
    pub send_timeout: HumanDuration,
    /// Open connections from one address (an IPv6 client: its /64) at once.
    pub max_connections_per_client: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_read_timeout: HumanDuration::secs(10),
            keep_alive_timeout: HumanDuration::secs(75),
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_uri_bytes: 8 * 1024,
            body_read_timeout: HumanDuration::secs(30),
            send_timeout: HumanDuration::secs(60),
            max_connections_per_client: 256,
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text` as if it were the content of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let config: Config =
            toml::from_str(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
        config
            .validate()
            .map_err(|(key, message)| ConfigError::at_key(path, text, key, message))?;
        config
            .validate_written(text)
            .map_err(|(key, message)| ConfigError::at_key(path, text, key, message))?;
        Ok(config)
    }

    /// Checks that involve more than one value. Returns the key to blame and why.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.server.listen.0.is_empty() {
            return Err((
                "server.listen",
                "needs at least one address, e.g. \"0.0.0.0:9999\"".into(),
            ));
        }
        if self.server.state_dir == self.server.runtime_dir {
            return Err((
                "server.runtime_dir",
                "must differ from server.state_dir (sockets are removed at each start)".into(),
            ));
        }
        if self.jupyter.command.trim().is_empty() {
            return Err((
                "jupyter.command",
                "must name the jupyter launcher, e.g. \"jupyter\" or \"/opt/venv/bin/jupyter\""
                    .into(),
            ));
        }
        for key in self.jupyter.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err((
                    "jupyter.env",
                    format!("{key:?} is not a valid environment variable name"),
                ));
            }
        }
        self.validate_gateway()?;
        let limits = &self.limits;
        let ranges: [(&'static str, u32, u32, u32); 5] = [
            (
                "limits.max_connections",
                limits.max_connections,
                1,
                1_000_000,
            ),
            (
                "limits.max_header_bytes",
                limits.max_header_bytes,
                8192,
                16 * 1024 * 1024,
            ),
            ("limits.max_headers", limits.max_headers, 16, 10_000),
            (
                "limits.max_uri_bytes",
                limits.max_uri_bytes,
                256,
                1024 * 1024,
            ),
            (
                "limits.max_connections_per_client",
                limits.max_connections_per_client,
                1,
                1_000_000,
            ),
        ];
        for (key, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err((key, format!("{value} is out of range: use {min} to {max}")));
            }
        }
        let nonzero = [
            ("limits.header_read_timeout", limits.header_read_timeout),
            ("limits.keep_alive_timeout", limits.keep_alive_timeout),
            ("limits.body_read_timeout", limits.body_read_timeout),
            ("limits.send_timeout", limits.send_timeout),
            ("auth.session_lifetime", self.auth.session_lifetime),
            ("auth.session_idle_timeout", self.auth.session_idle_timeout),
            ("auth.login_window", self.auth.login_window),
            ("jupyter.startup_timeout", self.jupyter.startup_timeout),
            ("jupyter.response_timeout", self.jupyter.response_timeout),
        ];
        for (key, value) in nonzero {
            if value.0.is_zero() {
                return Err((key, "must be longer than 0s, e.g. \"30s\"".into()));
            }
        }
        self.tls.acme.validate()?;
        if self.auth.login_attempts == 0 {
            return Err((
                "auth.login_attempts",
                "must be at least 1 (0 would lock everyone out)".into(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// The `jupyter.gateway_*` keys: a URL Jupyter can use, absolute paths.
    fn validate_gateway(&self) -> Result<(), (&'static str, String)> {
        let j = &self.jupyter;
        if let Some(url) = j.gateway() {
            gateway_url_problem(url).map_or(Ok(()), |why| Err(("jupyter.gateway_url", why)))?;
        }
        let paths: [(&'static str, &str); 2] = [
            ("jupyter.gateway_token_file", &j.gateway_token_file),
            ("jupyter.gateway_ca", &j.gateway_ca),
        ];
        for (key, value) in paths {
            if Jupyter::optional_path(value).is_some_and(|p| !p.is_absolute()) {
                return Err((
                    key,
                    format!(
                        "{value:?} is not an absolute path; write it from /, e.g. \"/etc/notebook/gateway.token\""
                    ),
                ));
            }
        }
        let env_values: [(&'static str, &str); 2] = [
            (
                "jupyter.gateway_kernel_username",
                &j.gateway_kernel_username,
            ),
            (
                "jupyter.gateway_kernel_working_dir",
                &j.gateway_kernel_working_dir,
            ),
        ];
        for (key, value) in env_values {
            if value.contains('\0') || value.contains('\n') {
                return Err((key, "cannot contain a NUL byte or a line break".into()));
            }
        }
        for (key, value) in [
            ("jupyter.gateway_request_timeout", j.gateway_request_timeout),
            ("jupyter.gateway_connect_timeout", j.gateway_connect_timeout),
        ] {
            if value.0 < Duration::from_secs(1) {
                return Err((key, "must be at least 1s, e.g. \"40s\"".into()));
            }
        }
        Ok(())
    }

    /// Checks of what the file says itself, not of defaults it leaves out:
    /// a shorter `session_lifetime` alone is fine (sessions then end at
    /// their lifetime), an idle timeout written longer than the lifetime is
    /// a mistake (it can never apply).
    fn validate_written(&self, text: &str) -> Result<(), (&'static str, String)> {
        let (idle, lifetime) = (self.auth.session_idle_timeout, self.auth.session_lifetime);
        if idle.get() > lifetime.get() && key_span(text, "auth.session_idle_timeout").is_some() {
            return Err((
                "auth.session_idle_timeout",
                format!(
                    "{idle} is longer than auth.session_lifetime ({lifetime}), so it never applies: make it shorter than {lifetime}, or remove it"
                ),
            ));
        }
        Ok(())
    }
}

/// Why `url` cannot be a `jupyter.gateway_url`, if it cannot.
pub fn gateway_url_problem(url: &str) -> Option<String> {
    const FORMS: &str = "expected http://HOST:PORT or https://HOST[:PORT][/PATH], e.g. \"https://gateway.example.com:8888\"";
    let uri: http::Uri = match url.parse() {
        Ok(u) => u,
        Err(_) => return Some(format!("{url:?} is not a URL; {FORMS}")),
    };
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => {
            return Some(format!(
                "{url:?} must start with http:// or https://; {FORMS}"
            ));
        }
    }
    let Some(authority) = uri.authority() else {
        return Some(format!("{url:?} names no host; {FORMS}"));
    };
    if authority.as_str().contains('@') {
        // A password in the URL would show in `nbctl config show` and in Jupyter's logs.
        // Not quoted back: it holds a secret.
        return Some(
            "the URL holds credentials (user:password@); put the gateway's token in the file named by jupyter.gateway_token_file instead".into(),
        );
    }
    if authority.host().is_empty() {
        return Some(format!("{url:?} names no host; {FORMS}"));
    }
    if uri.query().is_some() || url.contains('#') {
        return Some(format!("{url:?} has a query or fragment; {FORMS}"));
    }
    None
}

/// The candidate closest to `word` (a mistyped key), if one is close enough
/// to be what was meant. Shared by the config loader and `nbctl config`.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|k| (strsim::jaro_winkler(k, word), k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k)
}

/// What to add to a TOML error so that it says how to fix it: a
/// did-you-mean for an unknown key, quotes for an unquoted duration or word.
fn toml_hint(text: &str, offset: usize, message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (unknown, rest) = rest.split_once('`')?;
        let expected = rest.split('`').skip(1).step_by(2);
        return closest(unknown, expected).map(|k| format!("did you mean `{k}`?"));
    }
    let line_start = text[..offset.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let (key, value) = line.split_once('=')?;
    let value = value.split('#').next().unwrap_or("").trim();
    let key = key.trim();
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &value[digits.len()..];
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !unit.is_empty() {
        return Some(format!("durations are strings: {key} = \"{value}\""));
    }
    let bare = !value.is_empty()
        && !value.starts_with(['"', '\'', '[', '{'])
        && !matches!(value, "true" | "false")
        && value.parse::<f64>().is_err();
    bare.then(|| format!("text values are quoted: {key} = \"{value}\""))
}

fn optional_password_hash<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<PasswordHash>, D::Error> {
    let text = String::deserialize(d)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(de::Error::custom)
}

/// A config error, located in the file where possible.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}{}", path.display(), read_hint(source))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", format_invalid(path, *location, key, message))]
    Invalid {
        path: PathBuf,
        /// Line and column, both from 1.
        location: Option<(usize, usize)>,
        /// The dotted key, e.g. `server.listen`; empty for syntax errors.
        key: String,
        message: String,
    },
}

fn read_hint(e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            " (install the notebookd package, or pass --config PATH / set NOTEBOOK_CONFIG)"
        }
        std::io::ErrorKind::PermissionDenied => " (run as root, or as a member of group notebook)",
        _ => "",
    }
}

fn format_invalid(path: &Path, location: Option<(usize, usize)>, key: &str, msg: &str) -> String {
    let mut out = path.display().to_string();
    if let Some((line, column)) = location {
        out.push_str(&format!(":{line}:{column}"));
    }
    if !key.is_empty() {
        out.push_str(": ");
        out.push_str(key);
    }
    out.push_str(": ");
    out.push_str(msg);
    out
}

impl ConfigError {
    fn from_toml(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
        let span = e.span();
        let key = span
            .as_ref()
            .and_then(|s| key_path_at(text, s.start))
            .unwrap_or_default();
        ConfigError::Invalid {
            path: path.to_owned(),
            location: span.as_ref().map(|s| line_col(text, s.start)),
            key,
            message: {
                let message = e.message().trim();
                match toml_hint(text, span.map_or(0, |s| s.start), message) {
                    Some(hint) => format!("{message}; {hint}"),
                    None => message.to_string(),
                }
            },
        }
    }

    fn at_key(path: &Path, text: &str, key: &str, message: String) -> ConfigError {
        ConfigError::Invalid {
            path: path.to_owned(),
            location: key_span(text, key).map(|s| line_col(text, s.start)),
            key: key.to_string(),
            message,
        }
    }

    /// The dotted key this error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } if !key.is_empty() => Some(key),
            _ => None,
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// The span of the value (or, for tables, the header) of a dotted key.
pub fn key_span(text: &str, dotted: &str) -> Option<Range<usize>> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut item: &toml_edit::Item = doc.as_item();
    let mut key_span = None;
    for part in dotted.split('.') {
        let table = item.as_table_like()?;
        let (key, next) = table.get_key_value(part)?;
        key_span = key.span();
        item = next;
    }
    key_span.or_else(|| item.span())
}

/// The dotted key whose name or value covers byte `offset`, the innermost one.
pub fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut found = None;
    walk(doc.as_table(), String::new(), offset, &mut found);
    found
}

fn walk(
    table: &dyn toml_edit::TableLike,
    prefix: String,
    offset: usize,
    found: &mut Option<String>,
) {
    for (name, item) in table.iter() {
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        let key_span = table.get_key_value(name).and_then(|(k, _)| k.span());
        let covers =
            |s: Option<Range<usize>>| s.is_some_and(|s| s.start <= offset && offset <= s.end);
        let value_span = item.span();
        let in_table = item.as_table_like().is_some_and(|t| {
            t.iter().any(|(n, i)| {
                covers(t.get_key_value(n).and_then(|(k, _)| k.span())) || covers(i.span())
            })
        });
        if covers(key_span) || covers(value_span) || in_table {
            *found = Some(path.clone());
        }
        if let Some(inner) = item.as_table_like() {
            walk(inner, path, offset, found);
        }
    }
}

/// A value type of the config file: parsed from a string, and able to say
/// what it accepts.
pub(crate) trait ConfigValue: FromStr<Err = String> {
    const EXPECTING: &'static str;
}

pub(crate) struct ParseVisitor<T>(pub(crate) PhantomData<T>);

impl<T: ConfigValue> Visitor<'_> for ParseVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        v.parse().map_err(E::custom)
    }
}

macro_rules! config_value {
    ($ty:ty, $expecting:expr) => {
        impl $crate::config::ConfigValue for $ty {
            const EXPECTING: &'static str = $expecting;
        }
        impl<'de> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_str($crate::config::ParseVisitor::<$ty>(
                    ::std::marker::PhantomData,
                ))
            }
        }
        impl ::serde::Serialize for $ty {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

/// One listen address, e.g. `0.0.0.0:9999` or `[::]:9999`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.trim().parse().map(ListenAddr).map_err(|_| {
            format!("{s:?} is not ADDRESS:PORT; expected e.g. \"0.0.0.0:9999\" or \"[::]:9999\"")
        })
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.fmt(f)
    }
}
config_value!(
    ListenAddr,
    "ADDRESS:PORT, e.g. \"0.0.0.0:9999\" or \"[::]:9999\""
);

/// `server.listen`: one address or a list of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddrs(pub Vec<SocketAddr>);

impl<'de> Deserialize<'de> for ListenAddrs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ListenAddrs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("ADDRESS:PORT or a list of them, e.g. \"0.0.0.0:9999\" or [\"127.0.0.1:9999\", \"[::1]:9999\"]")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ListenAddrs, E> {
                let addr: ListenAddr = v.parse().map_err(E::custom)?;
                Ok(ListenAddrs(vec![addr.0]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListenAddrs, A::Error> {
                let mut out = Vec::new();
                while let Some(addr) = seq.next_element::<ListenAddr>()? {
                    if !out.contains(&addr.0) {
                        out.push(addr.0);
                    }
                }
                Ok(ListenAddrs(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for ListenAddrs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|a| a.to_string()))
    }
}

/// `server.base_url`: a path that starts and ends with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl(String);

impl BaseUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// `base_url` joined with a relative path (no leading slash).
    pub fn join(&self, rel: &str) -> String {
        format!("{}{}", self.0, rel)
    }
}

impl FromStr for BaseUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hint = "expected a path that starts and ends with /, e.g. \"/\" or \"/notebook/\"";
        let mut s = s.trim().to_string();
        if !s.starts_with('/') {
            return Err(format!("{s:?} does not start with /; {hint}"));
        }
        if !s.ends_with('/') {
            s.push('/');
        }
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
        let bad_segment = s.split('/').any(|seg| seg == "." || seg == "..");
        if !ok_chars || bad_segment || s.contains("//") {
            return Err(format!(
                "{s:?} may only hold letters, digits and - . _ ~ between single slashes; {hint}"
            ));
        }
        Ok(BaseUrl(s))
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
config_value!(
    BaseUrl,
    "a path that starts and ends with /, e.g. \"/notebook/\""
);

/// An absolute filesystem path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsPath(PathBuf);

impl AbsPath {
    pub fn new(p: impl Into<PathBuf>) -> AbsPath {
        AbsPath(p.into())
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl std::ops::Deref for AbsPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl FromStr for AbsPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let p = Path::new(s);
        if !p.is_absolute() {
            return Err(format!(
                "{s:?} is not an absolute path; write it from /, e.g. \"/var/lib/notebook\""
            ));
        }
        if s.contains('\0') {
            return Err("a path cannot contain a NUL byte".into());
        }
        Ok(AbsPath(p.to_owned()))
    }
}

impl fmt::Display for AbsPath {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        self.0.display().fmt(f)
    }
}
config_value!(AbsPath, "an absolute path, e.g. \"/var/lib/notebook\"");

/// A duration written with a unit: `30s`, `15m`, `12h`, `7d` (or combined, `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(s: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(s))
    }
    pub fn get(self) -> Duration {
        self.0
    }
}

impl FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || {
            format!(
                "{s:?} is not a duration; expected a number and a unit (ms, s, m, h, d), e.g. \"30s\", \"15m\" or \"1h30m\""
            )
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(err());
        }
        if text == "0" {
            return Ok(HumanDuration(Duration::ZERO));
        }
        let mut total = Duration::ZERO;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(err());
            }
            let n: u64 = rest[..digits].parse().map_err(|_| err())?;
            rest = &rest[digits..];
            let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let part = match &rest[..unit_len] {
                "ms" => Duration::from_millis(n),
                "s" => Duration::from_secs(n),
                "m" => Duration::from_secs(n.saturating_mul(60)),
                "h" => Duration::from_secs(n.saturating_mul(3600)),
                "d" => Duration::from_secs(n.saturating_mul(86400)),
                _ => return Err(err()),
            };
            rest = &rest[unit_len..];
            total = total.saturating_add(part);
        }
        if total > Duration::from_secs(100 * 365 * 86400) {
            return Err(format!("{s:?} is longer than 100 years"));
        }
        Ok(HumanDuration(total))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let d = self.0;
        if d.subsec_millis() != 0 {
            return write!(f, "{}ms", d.as_millis());
        }
        let s = d.as_secs();
        match s {
            0 => f.write_str("0s"),
            s if s % 86400 == 0 => write!(f, "{}d", s / 86400),
            s if s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}
config_value!(
    HumanDuration,
    "a duration such as \"30s\", \"15m\", \"12h\" or \"7d\""
);

/// A trusted proxy: an address (`127.0.0.1`, `::1`) or a network (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrustedProxy(pub ipnet::IpNet);

impl TrustedProxy {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.0.contains(&ip)
    }
}

/// IPv4-mapped IPv6 addresses (from a dual-stack socket) as plain IPv4.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for TrustedProxy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(TrustedProxy(net.trunc()));
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(TrustedProxy(ipnet::IpNet::from(ip)));
        }
        Err(format!(
            "{s:?} is not an IP address or network; expected e.g. \"127.0.0.1\", \"::1\" or \"10.0.0.0/8\""
        ))
    }
}

impl fmt::Display for TrustedProxy {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            self.0.addr().fmt(f)
        } else {
            self.0.fmt(f)
        }
    }
}
config_value!(
    TrustedProxy,
    "an IP address or network, e.g. \"127.0.0.1\" or \"10.0.0.0/8\""
);

/// An origin allowed to frame the notebook: `https://host[:port]` or
/// `https://*.example.com` (http too, for a plain-HTTP embedding site).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameAncestor(String);

impl FrameAncestor {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const ORIGIN_FORMS: &str = "expected an origin such as \"https://my.example.com\", \"https://my.example.com:8443\" or \"https://*.example.com\" (scheme and host only: no path, query, quotes, spaces, ; or a bare *)";

impl FromStr for FrameAncestor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("{s:?} {why}; {ORIGIN_FORMS}"));
        let lower = s.trim().to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return match lower.split_once(':') {
                Some((scheme, _))
                    if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphabetic()) =>
                {
                    bad(&format!(
                        "has the scheme {scheme}:, which cannot embed a page; it must start with https:// or http://"
                    ))
                }
                _ => bad("has no scheme"),
            };
        };
        if scheme != "https" && scheme != "http" {
            return bad("must start with https:// or http://");
        }
        // As copied from the address bar: one trailing slash, the default port.
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let default_port = if scheme == "https" { ":443" } else { ":80" };
        let rest = rest.strip_suffix(default_port).unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        if let Some(port) = port {
            match port.parse::<u16>() {
                Ok(p) if p > 0 && !port.starts_with('0') => {}
                _ => return bad("has a bad port"),
            }
        }
        let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        {
            inner.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            let name = host.strip_prefix("*.").unwrap_or(host);
            !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        };
        if !host_ok {
            return bad("is not scheme://host[:port]");
        }
        Ok(FrameAncestor(format!("{scheme}://{rest}")))
    }
}

impl fmt::Display for FrameAncestor {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
config_value!(
    FrameAncestor,
    "an origin such as \"https://my.example.com\" or \"https://*.example.com\""
);

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/notebook/notebook.toml"), text)
    }

    #[test]
    fn empty_file_is_all_defaults() {
        assert_eq!(parse("").ok(), Some(Config::default()));
    }

    #[test]
    fn unknown_key_is_located() {
        let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlsiten = 3\n").unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(
                "/etc/notebook/notebook.toml:3:1: server.lsiten: unknown field `lsiten`"
            ),
            "{text}"
        );
    }

    #[test]
    fn bad_listen_names_the_fix() {
        let err = parse("[server]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains(":2:10: server.listen:"), "{err}");
        assert!(err.contains("e.g. \"0.0.0.0:9999\""), "{err}");
        let err = parse("[server]\nlisten = 9999\n").unwrap_err().to_string();
        assert!(
            err.contains("server.listen: invalid type: integer `9999`, expected ADDRESS:PORT"),
            "{err}"
        );
    }

    #[test]
    fn listen_accepts_string_or_list() {
        let c = parse("[server]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n").unwrap();
        assert_eq!(c.server.listen.0.len(), 2);
        let c = parse("[server]\nlisten = \"[::]:9999\"\n").unwrap();
        assert_eq!(c.server.listen.0[0].to_string(), "[::]:9999");
    }

    #[test]
    fn durations() {
        assert_eq!(
            "1h30m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(5400)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert!("10".parse::<HumanDuration>().is_err());
        assert!("s".parse::<HumanDuration>().is_err());
        assert_eq!(HumanDuration::secs(7 * 86400).to_string(), "7d");
        let err = parse("[auth]\nsession_lifetime = \"forever\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("auth.session_lifetime"), "{err}");
    }

    #[test]
    fn base_url_is_normalised_and_checked() {
        assert_eq!("/nb".parse::<BaseUrl>().unwrap().as_str(), "/nb/");
        for bad in ["nb/", "/a/../b/", "/a//b/", "/a b/", "/a?x/"] {
            assert!(bad.parse::<BaseUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn cross_field_errors_point_at_the_key() {
        let err = parse("[limits]\nmax_headers = 1\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(":2:1: limits.max_headers: 1 is out of range"),
            "{err}"
        );
    }

    #[test]
    fn gateway_keys_are_checked() {
        let c = parse("[jupyter]\ngateway_url = \"https://gw.example:8888/eg\"\ngateway_token_file = \"/etc/notebook/gateway.token\"\n").unwrap();
        assert_eq!(c.jupyter.gateway(), Some("https://gw.example:8888/eg"));
        assert_eq!(Config::default().jupyter.gateway(), None);
        for (bad, why) in [
            ("gw.example:8888", "must start with http"),
            ("ftp://gw.example", "must start with http"),
            ("https://user:pw@gw.example", "holds credentials"),
            ("https://gw.example/?token=x", "query"),
            ("http://", "not a URL"),
        ] {
            let err = parse(&format!("[jupyter]\ngateway_url = {bad:?}\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(":2:1: jupyter.gateway_url: "), "{bad}: {err}");
            assert!(err.contains(why), "{bad}: {err}");
            assert!(!err.contains("pw@"), "{err}");
        }
        let err = parse("[jupyter]\ngateway_token_file = \"gateway.token\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("jupyter.gateway_token_file: "), "{err}");
        let err = parse("[jupyter]\ngateway_connect_timeout = \"0s\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1s"), "{err}");
    }

    #[test]
    fn errors_say_how_to_fix_them() {
        let err = parse("[auth]\nsession_lifetime = 1d\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("durations are strings: session_lifetime = \"1d\""),
            "{err}"
        );
        let err = parse("[jupyter]\nflavour = lab\n").unwrap_err().to_string();
        assert!(
            err.contains("text values are quoted: flavour = \"lab\""),
            "{err}"
        );
        let err = parse("[auth]\nsesion_lifetime = \"1d\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean `session_lifetime`?"), "{err}");
        let err = parse("[auth]\nsession_lifetime = \"1d\"\nsession_idle_timeout = \"2d\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.session_idle_timeout: 2d is longer than auth.session_lifetime (1d)"),
            "{err}"
        );
        // A short lifetime alone is fine: the default idle timeout never applies.
        parse("[auth]\nsession_lifetime = \"1h\"\n").unwrap();
    }

    #[test]
    fn frame_ancestors_are_normalised() {
        let fa = |s: &str| s.parse::<FrameAncestor>().map(|f| f.to_string());
        assert_eq!(
            fa("https://My.Example.com/").unwrap(),
            "https://my.example.com"
        );
        assert_eq!(
            fa("https://my.example.com:443").unwrap(),
            "https://my.example.com"
        );
        assert_eq!(
            fa("http://my.example.com:80/").unwrap(),
            "http://my.example.com"
        );
        assert_eq!(
            fa("https://my.example.com:8443").unwrap(),
            "https://my.example.com:8443"
        );
        let err = fa("javascript:alert(1)").unwrap_err();
        assert!(err.contains("has the scheme javascript:"), "{err}");
        assert!(fa("my.example.com").unwrap_err().contains("has no scheme"));
        assert!(fa("https://my.example.com/path").is_err());
        assert!(fa("https://my.example.com//").is_err());
    }

    #[test]
    fn syntax_error_has_location() {
        let err = parse("[server\n").unwrap_err().to_string();
        assert!(err.starts_with("/etc/notebook/notebook.toml:1:"), "{err}");
    }
}
