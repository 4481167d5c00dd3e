//! Forwarding a logged-in user's requests to Jupyter over its unix socket.
//!
//! Bodies stream both ways (a 1 GiB upload is never held in memory), the
//! Host header passes unchanged (Jupyter's Origin check compares against
//! it), hop-by-hop headers are dropped per RFC 9110 §7.6.1, and
//! `X-Forwarded-*` say who the client is. WebSocket upgrades (kernels,
//! terminals, events) are answered by Jupyter; the two upgraded streams are
//! then spliced ([`super::splice`]).

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use super::client::ClientInfo;
use super::jupyter_socket::JupyterSocket;
use super::limits::{ConnectionSlot, Deadlines, ProgressBody};
use crate::auth::sessions::Ending;

/// What a request to Jupyter carries: the client's body, with its progress
/// deadline (`limits.body_read_timeout`).
type UpstreamBody = ProgressBody<Incoming>;

/// How long a connection to Jupyter may wait unused for the next client connection.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Unused connections to Jupyter kept for the next client connections.
const MAX_IDLE: usize = 16;
/// Jupyter's answers are read into buffers of up to this size.
const MAX_READ_BUFFER: usize = 1024 * 1024;

/// Jupyter's socket, the connections to it that wait for a client connection,
/// and the WebSockets open through it.
pub struct Upstream {
    socket: PathBuf,
    idle: Mutex<Vec<Idle>>,
    open_websockets: Arc<AtomicUsize>,
}

/// A connection to Jupyter whose client connection ended, kept for the next
/// one: its sender (its task ends when the sender is dropped).
struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
    /// The worker thread that runs its task and whose I/O driver watches its
    /// socket: only a client connection on that thread takes it over (see
    /// workers.rs).
    thread: std::thread::ThreadId,
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Jupyter is not listening (restarting, or not started yet).
    #[error("cannot connect to Jupyter: {0}")]
    Connect(String),
    #[error("Jupyter failed to answer: {0}")]
    Upstream(String),
    /// The client stopped sending the request body (`limits.body_read_timeout`).
    #[error("the client stopped sending the request body")]
    ClientTimedOut,
    /// Jupyter sent no response head within `jupyter.response_timeout` of
    /// the end of the request.
    #[error("Jupyter did not answer within {}s (jupyter.response_timeout)", .0.as_secs())]
    Timeout(Duration),
}

/// The connection to Jupyter of one client connection.
///
/// A client connection sends one request at a time, so one connection to
/// Jupyter serves all of them. That connection runs in a task of its own on
/// the client connection's worker thread (spawned by [`Upstream::connect`]):
/// waking it never involves another thread, and the client connection's
/// task is not polled for Jupyter's socket (measured with callgrind: 4 to
/// 5% fewer instructions per proxied request than polling both in one task).
/// The task ends when Jupyter closes the connection, when it is upgraded to
/// a WebSocket, or when its sender is dropped.
#[derive(Default)]
pub struct UpstreamConn {
    /// Taken out while a request is sent; put back with the response.
    sender: Mutex<Option<SendRequest<UpstreamBody>>>,
}

impl UpstreamConn {
    fn take_sender(&self) -> Option<SendRequest<UpstreamBody>> {
        // Only this connection's requests take the lock, one at a time, and nothing in it panics.
        self.sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }

    fn put_sender(&self, sender: SendRequest<UpstreamBody>) {
        *self
            .sender
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sender);
    }
}

impl Upstream {
    pub fn new(socket: PathBuf) -> Upstream {
        Upstream {
            socket,
            idle: Mutex::new(Vec::new()),
            open_websockets: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A new connection to Jupyter, run by a task on this worker thread.
    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, ProxyError> {
        let stream = JupyterSocket::connect(&self.socket)
            .await
            .map_err(|e| ProxyError::Connect(format!("{}: {e}", self.socket.display())))?;
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_READ_BUFFER)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ProxyError::Connect(error_chain(&e)))?;
        // An upgrade ends this task and hands the socket to the WebSocket's.
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!("connection to Jupyter ended: {e}");
            }
        });
        Ok(sender)
    }

    /// An unused connection another client connection on this thread left,
    /// if one is still open. One that Jupyter closed a moment ago may still
    /// look open: [`Upstream::send`] sends its request again on another.
    fn take_idle(&self) -> Option<SendRequest<UpstreamBody>> {
        let here = std::thread::current().id();
        let mut idle = self.idle.lock().ok()?;
        while let Some(i) = idle.iter().rposition(|i| i.thread == here) {
            let idle = idle.swap_remove(i);
            if idle.since.elapsed() < IDLE_TIMEOUT && idle.sender.is_ready() {
                return Some(idle.sender);
            }
        }
        None
    }

    /// Closes the unused connections to Jupyter. Each keeps its read
    /// buffer, which a download grows towards `MAX_READ_BUFFER` (measured:
    /// about 0.5 MiB each after four parallel 1 GiB downloads), so kept
    /// after a burst of client connections they would hold its memory; the
    /// next client connections connect anew (a unix socket: microseconds).
    /// Dropping a sender ends its connection's task.
    pub fn close_idle(&self) {
        let idle = self
            .idle
            .lock()
            .map(|mut idle| std::mem::take(&mut *idle))
            .unwrap_or_default();
        drop(idle);
    }

    /// Keeps the connection of a client connection that ended, for the next one.
    pub fn release(&self, conn: UpstreamConn) {
        let sender = conn
            .sender
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(sender) = sender.filter(SendRequest::is_ready) else {
            return;
        };
        if let Ok(mut idle) = self.idle.lock() {
            idle.retain(|i| i.since.elapsed() < IDLE_TIMEOUT);
            if idle.len() < MAX_IDLE {
                idle.push(Idle {
                    sender,
                    since: Instant::now(),
                    thread: std::thread::current().id(),
                });
            }
        }
    }

    /// The client connection's sender to Jupyter, opening (or taking over) a
    /// connection if it has none. `true` if the connection served before.
    async fn sender(
        &self,
        conn: &UpstreamConn,
    ) -> Result<(SendRequest<UpstreamBody>, bool), ProxyError> {
        if let Some(sender) = conn.take_sender() {
            if !sender.is_closed() {
                return Ok((sender, true));
            }
        }
        match self.take_idle() {
            Some(sender) => Ok((sender, true)),
            None => Ok((self.connect().await?, false)),
        }
    }

    /// Sends `req` on the client connection's connection to Jupyter. A request
    /// that a used connection could not even start to send (Jupyter had closed
    /// it) is sent again on another one.
    async fn send(
        &self,
        conn: &UpstreamConn,
        mut req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        loop {
            let (mut sender, reused) = self.sender(conn).await?;
            if let Err(e) = sender.ready().await {
                if reused {
                    continue;
                }
                return Err(ProxyError::Upstream(error_chain(&e)));
            }
            match sender.try_send_request(req).await {
                Ok(resp) => {
                    conn.put_sender(sender);
                    return Ok(resp);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(ProxyError::Upstream(error_chain(&e.into_error()))),
                },
            }
        }
    }

    pub fn open_websockets(&self) -> usize {
        self.open_websockets.load(Ordering::Relaxed)
    }

    /// Sends `req` to Jupyter on the client connection's connection `conn`
    /// and returns the response, whose body streams from Jupyter. A WebSocket
    /// it opens closes when `ending` (the session's end signal) fires.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        client: &ClientInfo,
        conn: &UpstreamConn,
        deadlines: Deadlines,
        ending: Arc<Ending>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let upgrade = upgrade_protocol(req.headers());
        let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        // The client connection's place under limits.max_connections, kept by
        // the WebSocket (only an upgrade carries it).
        let slot = upgrade
            .as_ref()
            .and_then(|_| req.extensions_mut().remove::<ConnectionSlot>());

        // The target stays as the client sent it: origin-form (the router refuses others).
        let (mut parts, body) = req.into_parts();
        parts.version = http::Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        strip_cookie(&mut parts.headers, crate::auth::session::COOKIE_NAME);
        set_forwarded(&mut parts.headers, client);
        if let Some(proto) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }

        let body = ProgressBody::new(body, deadlines.body);
        let progress = body.progress();
        let sent = self.send(conn, Request::from_parts(parts, body));
        tokio::pin!(sent);
        // Jupyter's time to answer counts from the end of the request body (an
        // upload takes what it takes; its own progress deadline bounds it).
        let wait = deadlines.response;
        let mut deadline = tokio::time::Instant::now() + wait;
        let result = loop {
            tokio::select! {
                r = &mut sent => break r,
                () = tokio::time::sleep_until(deadline) => match progress.ended() {
                    Some(ended) if ended.elapsed() >= wait => return Err(ProxyError::Timeout(wait)),
                    Some(ended) => deadline = ended + wait,
                    None => deadline = tokio::time::Instant::now() + wait,
                },
            }
        };
        let mut resp = match result {
            Ok(resp) => resp,
            Err(_) if progress.timed_out() => return Err(ProxyError::ClientTimedOut),
            Err(e) => return Err(e),
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            if let Some(downstream) = downstream_upgrade {
                let upstream = hyper::upgrade::on(&mut resp);
                let counter = self.open_websockets.clone();
                tokio::spawn(async move {
                    let _slot = slot;
                    let (down, up) = tokio::join!(downstream, upstream);
                    let (Ok(down), Ok(up)) = (down, up) else {
                        return;
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let mut down = TokioIo::new(down);
                    let mut up = TokioIo::new(up);
                    // No buffers held while the WebSocket is idle (see splice.rs).
                    let splice = super::splice::splice(&mut down, &mut up);
                    let _counted = ending.websocket();
                    // Dropping both streams closes them: the client's
                    // connection and Jupyter's (the kernel keeps running).
                    tokio::select! {
                        _ = splice => {}
                        () = ending.ended() => {}
                    }
                    counter.fetch_sub(1, Ordering::Relaxed);
                });
                // A 101 keeps its Connection/Upgrade headers: they are the point of it.
                return Ok(resp);
            }
        }
        remove_hop_by_hop(resp.headers_mut());
        Ok(resp)
    }
}

/// Jupyter's response body on its way to the client, cut when the session
/// that asked for it ends: a download in progress stops with a logout or a
/// revocation (checked at each frame, so within one frame of Jupyter's).
pub struct ProxiedBody {
    inner: Incoming,
    ending: Option<Arc<Ending>>,
}

impl ProxiedBody {
    pub fn new(inner: Incoming, ending: Option<Arc<Ending>>) -> ProxiedBody {
        ProxiedBody { inner, ending }
    }
}

/// Why a response body stopped short.
#[derive(Debug, thiserror::Error)]
#[error("the session ended while the response was being sent")]
pub struct SessionEnded;

impl hyper::body::Body for ProxiedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.ending.as_ref().is_some_and(|e| e.is_ended()) {
            // An error, not an end: the client must not take a cut file for a whole one.
            return Poll::Ready(Some(Err(Box::new(SessionEnded))));
        }
        Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(|e| Box::new(e) as Self::Error)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The protocol a request asks to upgrade to (`websocket`), if it really asks.
fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if asks {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

/// True when the request asks for a protocol upgrade (WebSocket).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    upgrade_protocol(headers).is_some()
}

const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Headers a `Connection` token may not remove: Jupyter's Host and Origin
/// checks, its XSRF check, the length of the body and who is asking
/// depend on them (`Connection: host` would otherwise take away the Host
/// that was validated, and with it Jupyter's Origin check).
const NOT_HOP_BY_HOP: [HeaderName; 7] = [
    header::HOST,
    header::COOKIE,
    header::CONTENT_LENGTH,
    header::AUTHORIZATION,
    header::ORIGIN,
    header::CONTENT_TYPE,
    HeaderName::from_static("x-xsrftoken"),
];

/// Drops the headers that describe one connection only, including those
/// the Connection header names (but never [`NOT_HOP_BY_HOP`]).
/// Transfer-Encoding is hyper's to set.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests and responses carry none of them, or only Connection:
    // one look at the names present (no hashing) instead of nine removals.
    if !headers
        .keys()
        .any(|name| HOP_BY_HOP.contains(name) || name == header::TRANSFER_ENCODING)
    {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        // `keep-alive` and `upgrade`, the usual tokens, go below anyway:
        // no HeaderName is made for them.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !HOP_BY_HOP
                    .iter()
                    .chain(NOT_HOP_BY_HOP.iter())
                    .any(|h| t.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Removes notebookd's own session cookie from what Jupyter sees: the
/// other cookies, trimmed, joined with `; ` into one header (one allocation).
fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let name = name.as_bytes();
    let is_ours = |c: &[u8]| {
        c.strip_prefix(name)
            .is_some_and(|v| v.first() == Some(&b'='))
    };
    let mut capacity = 0;
    let mut count = 0;
    for v in headers.get_all(header::COOKIE) {
        capacity += v.len();
        count += 1;
    }
    if count == 0 {
        return;
    }
    let mut kept = Vec::with_capacity(capacity);
    for value in headers.get_all(header::COOKIE) {
        // memchr finds the separators: this runs for every proxied request.
        let bytes = value.as_bytes();
        let mut start = 0;
        for end in memchr::memchr_iter(b';', bytes).chain([bytes.len()]) {
            let c = bytes[start..end].trim_ascii();
            start = end + 1;
            if c.is_empty() || is_ours(c) {
                continue;
            }
            if !kept.is_empty() {
                kept.extend_from_slice(b"; ");
            }
            kept.extend_from_slice(c);
        }
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        // Visible ASCII taken from valid values: always a valid value, used without a copy.
        if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(kept)) {
            headers.insert(header::COOKIE, v);
        }
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_SCHEME: HeaderName = HeaderName::from_static("x-scheme");

fn set_forwarded(headers: &mut HeaderMap, client: &ClientInfo) {
    let for_value = match (&client.forwarded_for, client.via_trusted_proxy) {
        (Some(chain), true) => {
            HeaderValue::from_str(&format!("{chain}, {}", client.peer.ip())).ok()
        }
        _ => Some(client.ip_header.clone()),
    };
    let host = headers.get(header::HOST).cloned();
    // What a client claims is dropped; browsers send none of these, so
    // usually there is nothing to remove (found without hashing).
    let claimed = [
        X_FORWARDED_FOR,
        X_FORWARDED_HOST,
        X_REAL_IP,
        X_SCHEME,
        header::FORWARDED,
    ];
    if headers.keys().any(|name| claimed.contains(name)) {
        for name in claimed {
            headers.remove(name);
        }
    }
    // The rest are replaced by the inserts below.
    if let Some(v) = for_value {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_REAL_IP, client.ip_header.clone());
    headers.insert(
        X_FORWARDED_PROTO,
        HeaderValue::from_static(if client.https { "https" } else { "http" }),
    );
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST, host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("Keep-Alive, x-private, UPGRADE"),
        );
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key(header::ACCEPT));
    }

    #[test]
    fn connection_cannot_remove_what_checks_depend_on() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static(
                "host, Cookie, content-length, authorization, origin, x-xsrftoken",
            ),
        );
        for name in [
            "host",
            "cookie",
            "content-length",
            "authorization",
            "origin",
            "x-xsrftoken",
        ] {
            h.insert(name, HeaderValue::from_static("kept"));
        }
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 6, "{h:?}");
        assert!(!h.contains_key(header::CONNECTION));
    }

    #[test]
    fn session_cookie_is_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("_xsrf=abc; notebookd-session=secret; other=1"),
        );
        strip_cookie(&mut h, "notebookd-session");
        assert_eq!(h.get(header::COOKIE).unwrap(), "_xsrf=abc; other=1");
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("notebookd-session=secret"),
        );
        strip_cookie(&mut h, "notebookd-session");
        assert!(h.get(header::COOKIE).is_none());
    }

    #[test]
    fn only_the_session_cookie_is_stripped() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("notebookd-sessionx=1;  notebookd-session=secret"),
        );
        h.append(header::COOKIE, HeaderValue::from_static(" ; _xsrf=abc;"));
        strip_cookie(&mut h, "notebookd-session");
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["notebookd-sessionx=1; _xsrf=abc"]);
    }

    #[test]
    fn forwarded_headers_name_the_client_only() {
        let peer: std::net::SocketAddr = "192.0.2.7:5555".parse().unwrap();
        let client = ClientInfo {
            peer,
            ip: peer.ip(),
            ip_header: HeaderValue::from_static("192.0.2.7"),
            https: true,
            tls: true,
            via_trusted_proxy: false,
            forwarded_for: None,
        };
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("nb.example:9999"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-scheme", HeaderValue::from_static("http"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        set_forwarded(&mut h, &client);
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-real-ip"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "nb.example:9999");
        assert!(!h.contains_key("x-scheme") && !h.contains_key(header::FORWARDED));
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn upgrade_needs_connection_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(!is_upgrade(&h));
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert!(is_upgrade(&h));
    }
}
