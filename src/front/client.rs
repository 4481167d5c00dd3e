//! Who is asking: the TCP peer of a connection, and the client a request
//! speaks for once a trusted proxy's `X-Forwarded-*` headers are believed.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::Request;
use http::header::{HeaderMap, HeaderValue};
use hyper::body::Incoming;

use crate::config::{Config, canonical_ip};

/// The TCP peer of a client connection (its address formatted once for the
/// `X-Forwarded-For` and `X-Real-IP` of every request on it), and whether it
/// came over TLS.
pub struct Peer {
    pub addr: SocketAddr,
    ip: IpAddr,
    ip_header: HeaderValue,
    pub tls: bool,
}

impl Peer {
    pub fn new(addr: SocketAddr, tls: bool) -> Peer {
        let ip = canonical_ip(addr.ip());
        Peer {
            addr,
            ip,
            ip_header: ip_header(ip),
            tls,
        }
    }
}

fn ip_header(ip: IpAddr) -> HeaderValue {
    // An address is visible ASCII: always a valid value, used without a copy.
    HeaderValue::from_maybe_shared(Bytes::from(ip.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Who is asking, as far as notebookd may believe it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client's address: the peer, or, behind a trusted proxy, what it says.
    pub ip: IpAddr,
    /// `ip` as a header value.
    pub ip_header: HeaderValue,
    /// Whether the browser reached us over HTTPS (here or at a trusted proxy).
    pub https: bool,
    /// Whether this connection itself is TLS (not what a proxy says).
    pub tls: bool,
    pub via_trusted_proxy: bool,
    /// The X-Forwarded-For chain a trusted proxy sent.
    pub forwarded_for: Option<String>,
}

impl ClientInfo {
    pub fn new(conn: &Peer, req: &Request<Incoming>, config: &Config) -> ClientInfo {
        ClientInfo::from_headers(conn, req.headers(), config)
    }

    /// [`ClientInfo::new`] for a request with these headers.
    pub fn from_headers(conn: &Peer, headers: &HeaderMap, config: &Config) -> ClientInfo {
        let (peer, peer_ip, tls) = (conn.addr, conn.ip, conn.tls);
        let trusted = |ip: IpAddr| config.server.trusted_proxies.iter().any(|p| p.contains(ip));
        if !trusted(peer_ip) {
            return ClientInfo {
                peer,
                ip: peer_ip,
                ip_header: conn.ip_header.clone(),
                https: tls,
                tls,
                via_trusted_proxy: false,
                forwarded_for: None,
            };
        }
        let chain: Vec<String> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        // The rightmost address not added by a trusted proxy is the client.
        let mut ip = peer_ip;
        for entry in chain.iter().rev() {
            match entry.parse::<IpAddr>() {
                Ok(addr) => {
                    ip = canonical_ip(addr);
                    if !trusted(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let proto = headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().eq_ignore_ascii_case("https"));
        ClientInfo {
            peer,
            ip,
            ip_header: if ip == peer_ip {
                conn.ip_header.clone()
            } else {
                ip_header(ip)
            },
            https: tls || proto.unwrap_or(false),
            tls,
            via_trusted_proxy: true,
            forwarded_for: (!chain.is_empty()).then(|| chain.join(", ")),
        }
    }
}
