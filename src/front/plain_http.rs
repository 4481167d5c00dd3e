//! A plain `http://` request sent to a TLS listener (a typo in the address
//! bar, a script with the wrong scheme): recognised by its first byte and
//! answered in plain HTTP, as nginx's 497 does, instead of TLS garbage that
//! browsers show as "ERR_INVALID_HTTP_RESPONSE". A GET or HEAD with a sound
//! Host and path is redirected to the same address over `https://`;
//! anything else gets a one-line hint.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::target::{check_host, check_path};
use super::{App, Body, redirect, respond};

/// What the first byte of a connection on a TLS listener says it is.
pub enum FirstByte {
    /// A TLS record (or something for the handshake to refuse).
    Tls,
    /// An HTTP request line: every method starts with an upper-case letter,
    /// a TLS ClientHello with 0x16.
    PlainHttp,
    /// Closed, or nothing came before the deadline.
    Nothing,
}

/// Peeks at the first byte without consuming it, waiting up to `deadline`.
pub async fn first_byte(stream: &TcpStream, deadline: Duration) -> FirstByte {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(deadline, stream.peek(&mut byte)).await {
        Ok(Ok(1)) if byte[0].is_ascii_uppercase() => FirstByte::PlainHttp,
        Ok(Ok(1)) => FirstByte::Tls,
        _ => FirstByte::Nothing,
    }
}

/// Answers one plain-HTTP request on a TLS listener and closes the connection.
pub async fn answer(app: &Arc<App>, stream: TcpStream, peer: SocketAddr, deadline: Duration) {
    tracing::debug!(%peer, "plain HTTP on a TLS listener: answering with https:// directions");
    let settings = app.settings();
    let limits = &settings.config.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(deadline)
        .keep_alive(false)
        .max_buf_size(limits.max_header_bytes as usize)
        .max_headers(limits.max_headers as usize);
    let service = service_fn(move |req: Request<Incoming>| {
        let settings = settings.clone();
        async move {
            let mut resp = directions(&req);
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            // Not https: no HSTS, which a browser ignores over http anyway.
            settings.headers.own_page(resp.headers_mut(), false);
            Ok::<_, Infallible>(resp)
        }
    });
    let served = http.serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(deadline * 2, served).await;
}

/// The redirect to the same address over https, or the hint where a
/// redirect would not be sound (no usable Host, an odd target, a method
/// that a redirect would turn into a GET).
pub fn directions<B>(req: &Request<B>) -> http::Response<Body> {
    let host = check_host(req.headers())
        .ok()
        .and_then(|()| req.headers().get(header::HOST))
        .and_then(|h| h.to_str().ok());
    let target = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|_| req.uri().scheme().is_none() && req.uri().authority().is_none())
        .filter(|_| check_path(req.uri().path()).is_ok());
    let redirectable = matches!(*req.method(), Method::GET | Method::HEAD);
    match (host, target) {
        (Some(host), Some(target)) if redirectable => {
            let location = format!("https://{host}{target}");
            let mut resp = redirect(StatusCode::MOVED_PERMANENTLY, &location);
            *resp.body_mut() = http_body_util::Either::Right(http_body_util::Full::new(
                format!("This port speaks HTTPS: {location}\n").into(),
            ));
            resp
        }
        (Some(host), _) => respond(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            format!("This port speaks HTTPS, not plain HTTP: use https://{host}/\n"),
        ),
        (None, _) => respond(
            StatusCode::BAD_REQUEST,
            "text/plain; charset=utf-8",
            "This port speaks HTTPS, not plain HTTP: use an https:// address.\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, target: &str, host: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(target);
        if let Some(h) = host {
            b = b.header(header::HOST, h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn redirects_only_what_is_safe_to_redirect() {
        let r = directions(&req(Method::GET, "/tree?a=1", Some("localhost:9999")));
        assert_eq!(r.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            r.headers()[header::LOCATION],
            "https://localhost:9999/tree?a=1"
        );

        for (method, target, host) in [
            (Method::POST, "/login", Some("localhost:9999")),
            (Method::GET, "//evil.example/x", Some("localhost")),
            (Method::GET, "/a/../b", Some("localhost")),
            (Method::GET, "/", Some("evil.example/path")),
            (Method::GET, "/", None),
            (Method::GET, "http://evil.example/", Some("localhost")),
        ] {
            let r = directions(&req(method.clone(), target, host));
            assert_eq!(
                r.status(),
                StatusCode::BAD_REQUEST,
                "{method} {target} {host:?}"
            );
            assert!(r.headers().get(header::LOCATION).is_none());
        }
    }
}
