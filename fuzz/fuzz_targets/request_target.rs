//! The path and Host checks and the head size (`check_path`, `check_host`,
//! `head_size`), on request heads as they come off the wire.
//!
//! Input: a request head. It is parsed by httparse (the parser inside
//! hyper) and, as hyper would, turned into a URI and a header map.
//! Properties: a path that passes has no dot segment, empty segment,
//! backslash or control character, neither as sent nor decoded once or
//! twice; a Host that passes is one authority; `head_size` is the length
//! of the head as written in its usual form, as another parse counts it.
#![no_main]

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use notebookd::front::target::{check_host, check_path, head_size};

fn plain(path: &str) -> bool {
    !path.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f)
        && !path.contains("//")
        && !path.split('/').any(|s| s == "." || s == "..")
}

fn decode(path: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(path).decode_utf8_lossy()
}

fuzz_target!(|data: &[u8]| {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else {
        return;
    };
    let (Some(method), Some(target)) = (req.method, req.path) else {
        return;
    };
    let Ok(method) = http::Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = target.parse::<http::Uri>() else {
        return;
    };
    let mut headers = HeaderMap::new();
    for h in req.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        headers.append(name, value);
    }

    let path = uri.path();
    if check_path(path).is_ok() {
        let once = decode(path);
        let twice = decode(&once);
        assert!(path.starts_with('/'));
        for (form, p) in [
            ("as sent", path),
            ("decoded once", &once),
            ("decoded twice", &twice),
        ] {
            assert!(plain(p), "{path:?} passes but {form} it is {p:?}");
        }
    }

    if check_host(&headers).is_ok() {
        assert_eq!(headers.get_all(http::header::HOST).iter().count(), 1);
        let host = headers[http::header::HOST]
            .to_str()
            .expect("a passing Host is ASCII");
        assert!(!host.is_empty() && host.len() <= 300);
        assert!(
            !host.contains(['/', '@', '?', '#', ' ', '%']),
            "Host {host:?} passes"
        );
    }

    // The usual form of this head: `Name: value` fields, CRLF line ends.
    let target = uri.path_and_query().map_or("", |pq| pq.as_str());
    let mut wire = format!("{method} {target} HTTP/1.1\r\n").into_bytes();
    for (name, value) in &headers {
        wire.extend_from_slice(name.as_str().as_bytes());
        wire.extend_from_slice(b": ");
        wire.extend_from_slice(value.as_bytes());
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut again = httparse::Request::new(&mut fields);
    if let Ok(httparse::Status::Complete(n)) = again.parse(&wire) {
        assert_eq!(n, wire.len());
        assert_eq!(
            head_size(&method, target, &headers),
            n,
            "head {:?}",
            String::from_utf8_lossy(&wire)
        );
    }
});
