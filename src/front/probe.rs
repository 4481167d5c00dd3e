//! `{base}_notebookd/probe`: what reached this notebookd, for `nbctl doctor`
//! checking `server.public_url` end to end (through a proxy or not).
//!
//! It faces the internet, so it answers only a request that carries a probe
//! ticket (`X-Notebookd-Probe`) that this daemon handed out over the control
//! socket (root and group notebook) less than a minute ago; each ticket
//! works once, and at most [`MAX_TICKETS`] are outstanding. Any other
//! request gets a 403 that says nothing about the connection. A ticket
//! proves that the answer comes from this daemon (another server never
//! issued it), and it is worthless to whoever sees it on the way: it unlocks
//! one answer, about the request that carries it. That answer says what
//! arrived: whether the connection is TLS, whether its peer is a trusted
//! proxy (and the peer's address, which the fix for `trusted_proxies`
//! needs), the X-Forwarded-Proto it brought, and whether it was a WebSocket
//! upgrade. A real upgrade gets a 101 and a WebSocket close at once.
//!
//! A header, not a query parameter: proxies log request lines, not headers.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use sha1::Digest;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;

use super::client::ClientInfo;
use super::limits::ConnectionSlot;
use super::{Body, json, respond};

/// The request header that carries the ticket.
pub const TICKET_HEADER: &str = "x-notebookd-probe";

/// How long a ticket stays good: doctor uses it at once.
const TICKET_LIFETIME: Duration = Duration::from_secs(60);

/// Outstanding tickets at most; issuing another drops the oldest.
pub const MAX_TICKETS: usize = 16;

/// The body of the refusal, also how doctor recognises a notebookd that did
/// not issue its ticket.
pub const REFUSED: &str = "no valid probe ticket";

/// How long an upgraded probe may take to receive its close frame.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// A close frame, status 1000 (normal): the probe's whole conversation.
const CLOSE_FRAME: [u8; 4] = [0x88, 0x02, 0x03, 0xe8];

/// The probe tickets handed out and not yet used or expired.
#[derive(Default)]
pub struct ProbeTickets {
    issued: Mutex<Vec<([u8; 16], Instant)>>,
}

impl ProbeTickets {
    /// A new ticket (32 hex digits), or `None` without a random source.
    pub fn issue(&self) -> Option<String> {
        let mut ticket = [0u8; 16];
        getrandom::getrandom(&mut ticket).ok()?;
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        issued.retain(|(_, at)| now.duration_since(*at) < TICKET_LIFETIME);
        if issued.len() >= MAX_TICKETS {
            issued.remove(0);
        }
        issued.push((ticket, now));
        Some(hex::encode(ticket))
    }

    /// Whether `presented` is an outstanding ticket; it is used up.
    pub fn redeem(&self, presented: &[u8]) -> bool {
        let mut ticket = [0u8; 16];
        if presented.len() != 32 || hex::decode_to_slice(presented, &mut ticket).is_err() {
            return false;
        }
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        issued.retain(|(_, at)| now.duration_since(*at) < TICKET_LIFETIME);
        let found = issued
            .iter()
            .position(|(t, _)| bool::from(t.ct_eq(&ticket)));
        if let Some(i) = found {
            issued.remove(i);
        }
        found.is_some()
    }
}

/// What a WebSocket client asks for, if the request is a valid opening
/// handshake (RFC 6455 section 4.2.1): the key to answer.
fn websocket_key(req: &Request<Incoming>) -> Option<HeaderValue> {
    let h = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        h.get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    let valid = req.method() == Method::GET
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
        && h.get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v.as_bytes() == b"13");
    valid
        .then(|| h.get(header::SEC_WEBSOCKET_KEY).cloned())
        .flatten()
        .filter(|k| k.len() <= 64)
}

/// `Sec-WebSocket-Accept` for `key`.
pub fn accept_value(key: &[u8]) -> String {
    let mut sha = sha1::Sha1::new();
    sha.update(key);
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Answers the probe.
pub fn answer(
    tickets: &ProbeTickets,
    client: &ClientInfo,
    mut req: Request<Incoming>,
) -> Response<Body> {
    let h = req.headers();
    let ticketed = h
        .get(TICKET_HEADER)
        .is_some_and(|t| tickets.redeem(t.as_bytes()));
    if !ticketed {
        let mut resp = json(
            StatusCode::FORBIDDEN,
            &serde_json::json!({ "error": REFUSED }),
        );
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    }
    let connection_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let short = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.chars().take(64).collect::<String>())
    };
    let body = serde_json::json!({
        "probe": true,
        "tls": client.tls,
        "via_trusted_proxy": client.via_trusted_proxy,
        "peer": client.peer.ip().to_string(),
        "forwarded_proto": short("x-forwarded-proto"),
        "connection_upgrade": connection_upgrade,
        "upgrade": short("upgrade"),
    });
    let Some(key) = websocket_key(&req) else {
        let mut resp = json(StatusCode::OK, &body);
        resp.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return resp;
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    // The connection keeps its place under limits.max_connections until closed.
    let slot = req.extensions_mut().remove::<ConnectionSlot>();
    tokio::spawn(async move {
        let _slot = slot;
        let close = async {
            let upgraded = on_upgrade.await.ok()?;
            let mut io = hyper_util::rt::TokioIo::new(upgraded);
            io.write_all(&CLOSE_FRAME).await.ok()?;
            io.shutdown().await.ok()
        };
        let _ = tokio::time::timeout(CLOSE_DEADLINE, close).await;
    });
    let mut resp = respond(StatusCode::SWITCHING_PROTOCOLS, "application/json", "");
    resp.headers_mut().remove(header::CONTENT_TYPE);
    let headers = resp.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_value(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ticket_works_once() {
        let tickets = ProbeTickets::default();
        let t = tickets.issue().unwrap();
        assert_eq!(t.len(), 32);
        assert!(!tickets.redeem(b"00000000000000000000000000000000"));
        assert!(!tickets.redeem(&t.as_bytes()[..31]));
        assert!(!tickets.redeem(b"zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"));
        assert!(tickets.redeem(t.as_bytes()));
        assert!(!tickets.redeem(t.as_bytes()));
    }

    #[test]
    fn outstanding_tickets_are_bounded_oldest_out() {
        let tickets = ProbeTickets::default();
        let all: Vec<String> = (0..MAX_TICKETS + 1)
            .map(|_| tickets.issue().unwrap())
            .collect();
        assert_eq!(tickets.issued.lock().unwrap().len(), MAX_TICKETS);
        assert!(!tickets.redeem(all[0].as_bytes()));
        assert!(all[1..].iter().all(|t| tickets.redeem(t.as_bytes())));
    }

    #[test]
    fn an_old_ticket_is_refused() {
        let tickets = ProbeTickets::default();
        let t = tickets.issue().unwrap();
        if let Some(past) = Instant::now().checked_sub(TICKET_LIFETIME) {
            tickets.issued.lock().unwrap()[0].1 = past;
            assert!(!tickets.redeem(t.as_bytes()));
        }
    }

    #[test]
    fn accept_value_of_the_rfc_example() {
        assert_eq!(
            accept_value(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
