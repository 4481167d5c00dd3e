//! `server.public_url` end to end: doctor connects to the URL users type,
//! as a browser would, and asks notebookd's probe (`front/probe.rs`) what
//! arrived: this daemon or another server, through a proxy or not, with
//! which X-Forwarded-Proto, and whether a WebSocket upgrade passes. Each
//! probe request carries a one-time ticket the running daemon gave over
//! the control socket: only this daemon answers it.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};

use super::{Check, Verdict, check};
use crate::config::Config;

/// Connecting, the TLS handshake, and each read or write.
const TIMEOUT: Duration = Duration::from_secs(10);
/// More than any probe answer; a server that sends more is not notebookd.
const MAX_RESPONSE: u64 = 64 * 1024;

/// The fix for a proxy that drops the WebSocket upgrade (nginx's is the
/// shipped example).
const UPGRADE_FIX: &str = "pass the upgrade on; for nginx, in the location of notebookd: \
    `proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; \
    proxy_set_header Connection $notebook_connection;` with the example's \
    `map $http_upgrade $notebook_connection { default upgrade; '' ''; }` \
    (see /usr/share/doc/notebookd/examples/nginx-notebook.conf, packaging/examples/nginx-notebook.conf in the source)";

/// The parts of `server.public_url` a client needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    https: bool,
    host: String,
    port: u16,
    /// `Host:` and `Origin` as a browser sends them (the port only when not the default).
    authority: String,
    /// The path, ending in `/`.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let (scheme, rest) = url.trim().split_once("://")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return None,
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let path = path.split(['?', '#']).next().unwrap_or("/");
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6.split_once(']')?;
            (h.to_string(), tail.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p.parse().ok()?,
            None if https => 443,
            None => 80,
        };
        if host.is_empty() {
            return None;
        }
        let path = if path.ends_with('/') {
            path.to_string()
        } else {
            format!("{path}/")
        };
        Some(Target {
            https,
            host,
            port,
            authority: authority.to_string(),
            path,
        })
    }

    fn origin(&self) -> String {
        format!(
            "{}://{}",
            if self.https { "https" } else { "http" },
            self.authority
        )
    }
}

trait Io: Read + Write {}
impl<T: Read + Write> Io for T {}

/// How the TLS handshake went when the certificate was verified.
enum Connected {
    Verified(Box<dyn Io>),
    /// Verification failed (the message); connected again without it so
    /// the other checks still run.
    Unverified(Box<dyn Io>, String),
}

fn tcp(target: &Target) -> Result<TcpStream, String> {
    let addrs: Vec<_> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {}: {e}", target.host))?
        .collect();
    let mut last = format!("{} has no address", target.host);
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, TIMEOUT) {
            Ok(s) => {
                let _ = s.set_read_timeout(Some(TIMEOUT));
                let _ = s.set_write_timeout(Some(TIMEOUT));
                return Ok(s);
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(last)
}

/// The CAs doctor trusts besides the system's: the configured certificate
/// file's own root (a self-signed certificate) and the local CA next to it
/// (`nbctl cert generate --ca`), which the administrator's browsers trust.
fn extra_roots(config: &Config) -> Vec<openssl::x509::X509> {
    if !config.tls.enabled {
        return Vec::new();
    }
    let cert = config.tls.cert.path();
    let mut roots = Vec::new();
    for path in [cert.to_path_buf(), cert.with_file_name("ca.pem")] {
        if let Ok(pem) = std::fs::read(&path) {
            roots.extend(
                super::chain::certificates(&pem)
                    .into_iter()
                    .filter(|c| c.issued(c) == openssl::x509::X509VerifyResult::OK),
            );
        }
    }
    roots
}

fn connect(target: &Target, roots: &[openssl::x509::X509]) -> Result<Connected, String> {
    if !target.https {
        return Ok(Connected::Verified(Box::new(tcp(target)?)));
    }
    let tls_error = |e: &dyn std::fmt::Display| format!("TLS with {}: {e}", target.authority);
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(|e| tls_error(&e))?;
    for root in roots {
        let _ = builder.cert_store_mut().add_cert(root.clone());
    }
    let connector = builder.build();
    let verified = connector
        .configure()
        .map_err(|e| tls_error(&e))?
        .connect(&target.host, tcp(target)?);
    match verified {
        Ok(s) => Ok(Connected::Verified(Box::new(s))),
        Err(e) => {
            let why = match &e {
                openssl::ssl::HandshakeError::Failure(m) => {
                    let v = m.ssl().verify_result();
                    if v == openssl::x509::X509VerifyResult::OK {
                        return Err(tls_error(&e));
                    }
                    v.error_string().to_string()
                }
                _ => return Err(tls_error(&e)),
            };
            let mut config = connector.configure().map_err(|e| tls_error(&e))?;
            config.set_verify(SslVerifyMode::NONE);
            let s = config
                .verify_hostname(false)
                .connect(&target.host, tcp(target)?)
                .map_err(|e| tls_error(&e))?;
            Ok(Connected::Unverified(Box::new(s), why))
        }
    }
}

/// A response: status, headers (names lowercased), body.
pub(super) struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn decode_chunked(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..i])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size.filter(|s| *s > 0) else {
            break;
        };
        let start = i + 2;
        let end = (start + size).min(data.len());
        out.extend_from_slice(&data[start..end]);
        data = data.get(end + 2..).unwrap_or(&[]);
    }
    out
}

/// Sends `head` (a request without body) and reads the answer: the whole
/// body, or for a 101 only the head.
fn exchange(io: &mut dyn Io, head: &str) -> Result<Answer, String> {
    io.write_all(head.as_bytes())
        .and_then(|()| io.flush())
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if data.len() as u64 > MAX_RESPONSE {
            return Err("the answer's head is too large".into());
        }
        match io.read(&mut buf) {
            Ok(0) => return Err("the connection closed before an answer".into()),
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) => return Err(format!("no answer: {e}")),
        }
    };
    let text = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = text.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or("not an HTTP answer")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: data[head_end + 4..].to_vec(),
    };
    if status == 101 {
        return Ok(answer);
    }
    let length = answer
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    let mut rest = Vec::new();
    let want = length
        .unwrap_or(MAX_RESPONSE)
        .min(MAX_RESPONSE)
        .saturating_sub(answer.body.len() as u64);
    // Connection: close was asked: the body ends at its length or at EOF.
    let _ = io.take(want).read_to_end(&mut rest);
    answer.body.extend_from_slice(&rest);
    if answer
        .header("transfer-encoding")
        .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
    {
        answer.body = decode_chunked(&answer.body);
    }
    Ok(answer)
}

/// A probe ticket from the running daemon, or the reason there is none.
fn ticket(config: &Config) -> Result<String, String> {
    let answer =
        super::super::daemon::ask_with(&config.server.runtime_dir, "probe-ticket", None, TIMEOUT)
            .map_err(|e| e.to_string())?;
    match answer["ticket"].as_str() {
        Some(t) if answer["ok"] == true => Ok(t.to_string()),
        _ => Err(format!(
            "notebookd gave no probe ticket: {}",
            answer["error"].as_str().unwrap_or("(no message)")
        )),
    }
}

fn random_key() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 16];
    let _ = getrandom::getrandom(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What answered notebookd's probe at one address.
pub(super) enum Reached {
    /// This daemon: it took the ticket.
    ThisNotebookd,
    /// Another notebookd: it refused this daemon's ticket.
    OtherNotebookd,
    /// Some other server (what it answered).
    Other(String),
    /// Nothing answered (why).
    Unreachable(String),
    /// No ticket: notebookd does not run, or doctor may not ask it (why).
    NoTicket(String),
}

/// Asks the probe at `addr` (port: notebookd's first listener), sending
/// `host` as the name, whether it reached this notebookd. TLS is not
/// verified: the ticket is the proof, and the certificate has its own checks.
pub(super) fn probe_at(config: &Config, ip: std::net::IpAddr, host: &str) -> Reached {
    let Some(port) = config.server.listen.0.first().map(|a| a.port()) else {
        return Reached::NoTicket("server.listen is empty".into());
    };
    let ticket = match ticket(config) {
        Ok(t) => t,
        Err(e) => return Reached::NoTicket(e),
    };
    let addr = std::net::SocketAddr::new(ip, port);
    let stream = match TcpStream::connect_timeout(&addr, TIMEOUT) {
        Ok(s) => s,
        Err(e) => return Reached::Unreachable(format!("{addr}: {e}")),
    };
    let _ = stream.set_read_timeout(Some(TIMEOUT));
    let _ = stream.set_write_timeout(Some(TIMEOUT));
    let mut io: Box<dyn Io> = if config.tls.enabled {
        let tls = SslConnector::builder(SslMethod::tls_client()).map(|mut b| {
            b.set_verify(SslVerifyMode::NONE);
            b.build()
        });
        let connected = tls.map_err(|e| e.to_string()).and_then(|c| {
            c.configure()
                .map_err(|e| e.to_string())?
                .verify_hostname(false)
                .connect(host, stream)
                .map_err(|e| e.to_string())
        });
        match connected {
            Ok(s) => Box::new(s),
            Err(e) => return Reached::Other(format!("no TLS handshake at {addr}: {e}")),
        }
    } else {
        Box::new(stream)
    };
    let authority = if ip.is_ipv6() && host.parse::<std::net::Ipv6Addr>().is_ok() {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let head = format!(
        "GET {}_notebookd/probe HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: nbctl-doctor\r\nAccept: application/json\r\n{}: {ticket}\r\nConnection: close\r\n\r\n",
        config.server.base_url,
        crate::front::probe::TICKET_HEADER,
    );
    match exchange(&mut *io, &head) {
        Ok(a)
            if a.status == 200
                && serde_json::from_slice::<serde_json::Value>(&a.body)
                    .is_ok_and(|v| v["probe"] == true) =>
        {
            Reached::ThisNotebookd
        }
        Ok(a)
            if a.status == 403
                && String::from_utf8_lossy(&a.body).contains(crate::front::probe::REFUSED) =>
        {
            Reached::OtherNotebookd
        }
        Ok(a) => Reached::Other(format!(
            "{addr} answered HTTP {} without notebookd's probe",
            a.status
        )),
        Err(e) => Reached::Other(format!("{addr}: {e}")),
    }
}

/// `GET url` (verifying TLS against this system's CAs and `roots`): the
/// answer, and this machine's clock just before sending and just after the
/// answer's head arrived.
pub(super) fn get_timed(
    url: &str,
    roots: &[openssl::x509::X509],
) -> Result<(Answer, std::time::SystemTime, std::time::SystemTime), String> {
    let target = Target::parse(url).ok_or_else(|| format!("{url:?} is not an http(s) URL"))?;
    let mut io = match connect(&target, roots)? {
        Connected::Verified(io) => io,
        Connected::Unverified(_, why) => {
            return Err(format!(
                "the certificate of {} does not verify ({why})",
                target.authority
            ));
        }
    };
    let path = url
        .split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
        .unwrap_or("/");
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nbctl-doctor\r\nAccept: application/json\r\nConnection: close\r\n\r\n",
        target.authority
    );
    let sent = std::time::SystemTime::now();
    let answer = exchange(&mut *io, &head)?;
    Ok((answer, sent, std::time::SystemTime::now()))
}

/// Runs the end-to-end checks when `server.public_url` is set.
pub fn checks(config: &Config, out: &mut Vec<Check>) {
    let url = config.server.public_url.trim();
    if url.is_empty() {
        return;
    }
    let Some(target) = Target::parse(url) else {
        out.push(check(
            "public url",
            Verdict::Fail,
            format!("server.public_url {url:?} is not an http(s) URL"),
            Some("`sudo nbctl config set server.public_url https://NAME/`".into()),
        ));
        return;
    };
    let tickets = ticket(config).and_then(|a| ticket(config).map(|b| [a, b]));
    let [plain_ticket, upgrade_ticket] = match tickets {
        Ok(t) => t,
        Err(e) => {
            out.push(check(
                "public url",
                Verdict::Warn,
                format!("{url} was not checked: {e}"),
                Some("run doctor as root or as a member of group notebook (`sudo nbctl doctor`) while notebookd runs".into()),
            ));
            return;
        }
    };
    let roots = extra_roots(config);
    let probe_path = format!("{}_notebookd/probe", target.path);
    let request = |ticket: &str, extra: &str| {
        format!(
            "GET {probe_path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: nbctl-doctor\r\nAccept: application/json\r\n{}: {ticket}\r\n{extra}\r\n",
            target.authority,
            crate::front::probe::TICKET_HEADER,
        )
    };
    // 1. The plain probe: who answers, and what arrived there.
    let mut io = match connect(&target, &roots) {
        Ok(Connected::Verified(io)) => {
            if target.https {
                out.push(check(
                    "public url tls",
                    Verdict::Ok,
                    format!(
                        "{} presents a certificate this machine trusts for {}",
                        target.authority, target.host
                    ),
                    None,
                ));
            }
            io
        }
        Ok(Connected::Unverified(io, why)) => {
            out.push(check(
                "public url tls",
                Verdict::Fail,
                format!(
                    "{url}: the certificate does not verify ({why}); browsers warn or refuse (the checks below went on without verifying)"
                ),
                Some("serve a certificate for that name from a CA clients trust, with its full chain ([tls.acme], or the proxy's ssl_certificate = fullchain.pem); for a local CA, trust it on this machine too".into()),
            ));
            io
        }
        Err(e) => {
            out.push(check(
                "public url",
                Verdict::Fail,
                format!("{url}: {e}"),
                Some("check the DNS name, the firewall, and that notebookd (or the proxy in front) listens on that port".into()),
            ));
            return;
        }
    };
    let answer = match exchange(&mut *io, &request(&plain_ticket, "Connection: close\r\n")) {
        Ok(a) => a,
        Err(e) => {
            out.push(check(
                "public url",
                Verdict::Fail,
                format!("{url}: {e}"),
                Some("check that the proxy in front passes requests to notebookd".into()),
            ));
            return;
        }
    };
    drop(io);
    let refused_here = answer.status == 403
        && String::from_utf8_lossy(&answer.body).contains(crate::front::probe::REFUSED);
    let probe: Option<serde_json::Value> = (answer.status == 200)
        .then(|| serde_json::from_slice(&answer.body).ok())
        .flatten()
        .filter(|v: &serde_json::Value| v["probe"] == true);
    let Some(probe) = probe else {
        if refused_here {
            out.push(check(
                "public url",
                Verdict::Fail,
                format!("{url} reaches another notebookd, not the one running here (it refused this one's probe ticket)"),
                Some("point the DNS name (or the proxy's upstream) at this machine's notebookd".into()),
            ));
            return;
        }
        out.push(check(
            "public url",
            Verdict::Fail,
            format!(
                "{url} does not lead to notebookd: GET {probe_path} got HTTP {} without notebookd's answer",
                answer.status
            ),
            Some(format!(
                "make the proxy pass {} to notebookd unchanged (server.base_url is {}), or fix server.public_url",
                target.path, config.server.base_url
            )),
        ));
        return;
    };
    out.push(check(
        "public url",
        Verdict::Ok,
        format!("{url} reaches this notebookd"),
        None,
    ));

    // 2. Behind a proxy: does notebookd believe it, and does it say https?
    let behind_proxy = target.https && probe["tls"] == false;
    if behind_proxy {
        let peer = probe["peer"].as_str().unwrap_or("?");
        if probe["via_trusted_proxy"] == true {
            out.push(check(
                "trusted proxy",
                Verdict::Ok,
                format!("requests arrive through the proxy at {peer}, which server.trusted_proxies names"),
                None,
            ));
        } else {
            out.push(check(
                "trusted proxy",
                Verdict::Fail,
                format!(
                    "requests arrive through a proxy at {peer}, but server.trusted_proxies does not name it: every client looks like {peer} (one login limit for all) and plain http"
                ),
                Some(format!("`sudo nbctl config set server.trusted_proxies {peer}`")),
            ));
        }
        match probe["forwarded_proto"].as_str() {
            Some(p) if p.rsplit(',').next().is_some_and(|p| p.trim().eq_ignore_ascii_case("https")) => {
                out.push(check(
                    "forwarded proto",
                    Verdict::Ok,
                    "X-Forwarded-Proto: https arrives".into(),
                    None,
                ));
            }
            other => out.push(check(
                "forwarded proto",
                Verdict::Fail,
                format!(
                    "the proxy sends {}: notebookd takes the browser's connection for plain http (no Secure cookies, Origin checks fail)",
                    other.map_or("no X-Forwarded-Proto".to_string(), |p| format!("X-Forwarded-Proto: {p}"))
                ),
                Some("for nginx: `proxy_set_header X-Forwarded-Proto $scheme;` (as in /usr/share/doc/notebookd/examples/nginx-notebook.conf)".into()),
            )),
        }
    }

    // 3. A real WebSocket upgrade, as a browser's kernel connection makes it.
    let key = random_key();
    let upgrade = request(
        &upgrade_ticket,
        &format!(
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\nOrigin: {}\r\n",
            target.origin()
        ),
    );
    let answer = connect(&target, &roots).and_then(|c| {
        let mut io = match c {
            Connected::Verified(io) | Connected::Unverified(io, _) => io,
        };
        exchange(&mut *io, &upgrade)
    });
    let answer = match answer {
        Ok(a) => a,
        Err(e) => {
            out.push(check(
                "websocket",
                Verdict::Fail,
                format!("a WebSocket upgrade to {url}: {e}"),
                Some(UPGRADE_FIX.into()),
            ));
            return;
        }
    };
    let accept = crate::front::probe::accept_value(key.as_bytes());
    if answer.status == 101 && answer.header("sec-websocket-accept") == Some(accept.as_str()) {
        out.push(check(
            "websocket",
            Verdict::Ok,
            format!("a WebSocket upgrade through {url} reaches notebookd"),
            None,
        ));
        return;
    }
    let seen: Option<serde_json::Value> = (answer.status == 200)
        .then(|| serde_json::from_slice(&answer.body).ok())
        .flatten();
    let message = match (answer.status, &seen) {
        (200, Some(v)) if v["connection_upgrade"] == true && v["upgrade"].is_null() => {
            "the WebSocket upgrade does not pass through: notebookd got `Connection: upgrade` without the `Upgrade` header (the proxy drops it)".to_string()
        }
        (200, Some(v)) if v["connection_upgrade"] != true => {
            "the WebSocket upgrade does not pass through: notebookd got no `Connection: upgrade` (the proxy drops it); kernels will not connect".to_string()
        }
        (403, _) => "the WebSocket upgrade was refused as coming from another site: the Host or X-Forwarded-Proto notebookd got does not match the browser's Origin".to_string(),
        (status, _) => format!("the WebSocket upgrade got HTTP {status}, not 101 Switching Protocols; kernels will not connect"),
    };
    let fix = if answer.status == 403 {
        "for nginx: `proxy_set_header Host $http_host;` and `proxy_set_header X-Forwarded-Proto $scheme;` (see /usr/share/doc/notebookd/examples/nginx-notebook.conf)".to_string()
    } else {
        UPGRADE_FIX.to_string()
    };
    out.push(check("websocket", Verdict::Fail, message, Some(fix)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_of_public_urls() {
        let t = Target::parse("https://nb.example.org/notebook").unwrap();
        assert_eq!(
            t,
            Target {
                https: true,
                host: "nb.example.org".into(),
                port: 443,
                authority: "nb.example.org".into(),
                path: "/notebook/".into(),
            }
        );
        let t = Target::parse("http://[::1]:8080").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("::1", 8080, "/")
        );
        assert_eq!(t.origin(), "http://[::1]:8080");
        assert!(Target::parse("ftp://x/").is_none());
        assert!(Target::parse("https://:443/").is_none());
    }

    #[test]
    fn chunked_bodies() {
        assert_eq!(
            decode_chunked(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n"),
            b"Wikipedia"
        );
    }
}
