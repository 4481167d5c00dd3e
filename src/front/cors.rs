//! CORS for API-token clients on other sites (`server.cors_origins`):
//! notebookd answers their preflights itself and marks the answers to
//! their token requests readable. Never with credentials: cookies stay
//! usable from this site only.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};

use super::{Body, respond};
use crate::config::FrameAncestor;

const ALLOW_METHODS: &str = "GET, POST, PUT, PATCH, DELETE, OPTIONS";
const ALLOW_HEADERS: &str = "Authorization, Content-Type, X-Requested-With";

/// The request's `Origin` if it is one of `allowed` (`https://*.site` matches subdomains).
pub fn allowed_origin(headers: &HeaderMap, allowed: &[FrameAncestor]) -> Option<HeaderValue> {
    if allowed.is_empty() {
        return None;
    }
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?.to_ascii_lowercase();
    let ok = allowed.iter().any(|a| {
        let a = a.as_str();
        match a.split_once("://*.") {
            Some((scheme, domain)) => text
                .strip_prefix(scheme)
                .and_then(|r| r.strip_prefix("://"))
                .is_some_and(|host| host.ends_with(&format!(".{domain}"))),
            None => text == a,
        }
    });
    ok.then(|| origin.clone())
}

/// A CORS preflight (`OPTIONS` with `Access-Control-Request-Method`).
pub fn is_preflight<B>(req: &Request<B>) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// notebookd's answer to a preflight: 204 for an allowed origin, 403 otherwise.
pub fn preflight<B>(req: &Request<B>, allowed: &[FrameAncestor]) -> Response<Body> {
    match allowed_origin(req.headers(), allowed) {
        Some(origin) => {
            let mut resp = respond(StatusCode::NO_CONTENT, "text/plain; charset=utf-8", "");
            let h = resp.headers_mut();
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(ALLOW_METHODS),
            );
            h.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOW_HEADERS),
            );
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            h.insert(header::VARY, HeaderValue::from_static("Origin"));
            resp
        }
        None => respond(
            StatusCode::FORBIDDEN,
            "text/plain; charset=utf-8",
            "This origin is not in server.cors_origins.",
        ),
    }
}

/// Marks a token request's answer readable by the allowed `origin`.
pub fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    headers.remove(header::ACCESS_CONTROL_ALLOW_CREDENTIALS);
}
