//! Forwarded-header parsing (`ClientInfo::from_headers`): who the client
//! is behind a trusted proxy, from `X-Forwarded-For` and
//! `X-Forwarded-Proto`.
//!
//! Input: a flag byte (bits 0-1: which peer; bit 2: TLS), then header
//! lines `Name: value`. Trusted proxies: 127.0.0.1, 10.0.0.0/8, ::1.
//! Properties: an untrusted peer's headers are ignored; behind a trusted
//! one the client is the peer or an address of the chain, and it is the
//! rightmost address that no trusted proxy added; the chain passed on is
//! no longer than what was sent.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::OnceLock;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use notebookd::config::{Config, canonical_ip};
use notebookd::front::client::{ClientInfo, Peer};

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        Config::parse(
            Path::new("notebook.toml"),
            "[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"::1\"]\n",
        )
        .expect("the fuzz config parses")
    })
}

fn trusted(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => v4.octets() == [127, 0, 0, 1] || v4.octets()[0] == 10,
        IpAddr::V6(v6) => v6.is_loopback(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let peer: SocketAddr = match flags & 3 {
        0 => "127.0.0.1:40000",
        1 => "[::ffff:10.1.2.3]:40000",
        2 => "[::1]:40000",
        _ => "203.0.113.9:40000",
    }
    .parse()
    .expect("a socket address");
    let tls = flags & 4 == 4;
    let mut headers = HeaderMap::new();
    for line in rest.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        headers.append(name, value);
    }

    let info = ClientInfo::from_headers(&Peer::new(peer, tls), &headers, config());
    let peer_ip = canonical_ip(peer.ip());
    assert_eq!(info.peer, peer);
    assert_eq!(info.ip_header.as_bytes(), info.ip.to_string().as_bytes());
    if !trusted(peer_ip) {
        assert_eq!(info.ip, peer_ip);
        assert!(!info.via_trusted_proxy && info.forwarded_for.is_none());
        assert_eq!(info.https, tls);
        return;
    }
    assert!(info.via_trusted_proxy);
    let sent: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    // The rightmost entry that is an address not of a trusted proxy,
    // unless an entry that is no address comes first.
    let mut expected = peer_ip;
    for entry in sent.iter().rev() {
        let Ok(ip) = entry.parse::<IpAddr>() else {
            break;
        };
        expected = canonical_ip(ip);
        if !trusted(expected) {
            break;
        }
    }
    assert_eq!(info.ip, expected, "chain {sent:?}");
    let sent_len: usize = sent.iter().map(|s| s.len() + 2).sum();
    match &info.forwarded_for {
        Some(chain) => assert!(chain.len() <= sent_len && !sent.is_empty()),
        None => assert!(sent.is_empty()),
    }
    if tls {
        assert!(info.https);
    }
});
