//! Forwarding a logged-in user's requests to Jupyter over its unix socket.
//!
//! Bodies stream both ways (a 1 GiB upload is never held in memory), the
//! Host header passes unchanged (Jupyter's Origin check compares against
//! it), hop-by-hop headers are dropped per RFC 9110 §7.6.1, and
//! `X-Forwarded-*` say who the client is. WebSocket upgrades (kernels,
//! terminals, events) are answered by Jupyter; the two upgraded streams are
//! then spliced with `copy_bidirectional`.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::UnixStream;

use crate::server::{ClientInfo, ConnectionSlot};

/// Splice buffers for upgraded connections: large enough for big kernel outputs.
const SPLICE_BUFFER: usize = 64 * 1024;

/// Connects to Jupyter's unix socket.
#[derive(Clone)]
pub struct UnixConnector {
    socket: Arc<PathBuf>,
}

impl tower_service::Service<Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let socket = self.socket.clone();
        Box::pin(async move { Ok(TokioIo::new(UnixStream::connect(&*socket).await?)) })
    }
}

/// The connection pool to Jupyter, and the WebSockets open through it.
pub struct Upstream {
    client: Client<UnixConnector, Incoming>,
    open_websockets: Arc<AtomicUsize>,
}

/// Why a request could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Jupyter is not listening (restarting, or not started yet).
    #[error("cannot connect to Jupyter: {0}")]
    Connect(String),
    #[error("Jupyter failed to answer: {0}")]
    Upstream(String),
}

impl Upstream {
    pub fn new(socket: PathBuf) -> Upstream {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .http1_max_buf_size(1024 * 1024)
            .build(UnixConnector {
                socket: Arc::new(socket),
            });
        Upstream {
            client,
            open_websockets: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn open_websockets(&self) -> usize {
        self.open_websockets.load(Ordering::Relaxed)
    }

    /// Sends `req` to Jupyter and returns its response, whose body streams from Jupyter.
    pub async fn forward(
        &self,
        mut req: Request<Incoming>,
        client: &ClientInfo,
        session_cookie: &str,
    ) -> Result<Response<Incoming>, ProxyError> {
        let upgrade = upgrade_protocol(req.headers());
        let downstream_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        // The client connection's place under limits.max_connections, kept by the WebSocket.
        let slot = req.extensions_mut().remove::<ConnectionSlot>();

        let (mut parts, body) = req.into_parts();
        // The request's own path and query (shared bytes, not copied), on Jupyter's socket.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(Authority::from_static("jupyter"));
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some(PathAndQuery::from_static("/"));
        }
        parts.uri = Uri::from_parts(uri).map_err(|e| ProxyError::Upstream(e.to_string()))?;
        parts.version = http::Version::HTTP_11;
        remove_hop_by_hop(&mut parts.headers);
        strip_cookie(&mut parts.headers, session_cookie);
        set_forwarded(&mut parts.headers, client);
        if let Some(proto) = &upgrade {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, proto.clone());
        }

        let mut resp = self
            .client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|e| {
                if e.is_connect() {
                    ProxyError::Connect(error_chain(&e))
                } else {
                    ProxyError::Upstream(error_chain(&e))
                }
            })?;

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
                    let _ = tokio::io::copy_bidirectional_with_sizes(
                        &mut down,
                        &mut up,
                        SPLICE_BUFFER,
                        SPLICE_BUFFER,
                    )
                    .await;
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

/// Drops the headers that describe one connection only, including those
/// the Connection header names. Transfer-Encoding is hyper's to set.
fn remove_hop_by_hop(headers: &mut HeaderMap) {
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
    if !headers.contains_key(header::COOKIE) {
        return;
    }
    let is_ours = |c: &str| c.strip_prefix(name).is_some_and(|v| v.starts_with('='));
    let capacity = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::len)
        .sum();
    let mut kept = String::with_capacity(capacity);
    for c in headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !is_ours(c))
    {
        if !kept.is_empty() {
            kept.push_str("; ");
        }
        kept.push_str(c);
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
    for name in [
        X_FORWARDED_FOR,
        X_FORWARDED_PROTO,
        X_FORWARDED_HOST,
        X_REAL_IP,
        X_SCHEME,
        header::FORWARDED,
    ] {
        headers.remove(name);
    }
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
