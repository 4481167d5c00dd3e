//! API tokens on requests (the HTTP side of [`crate::auth::tokens`]):
//! finding one (`Authorization: token T` or `Bearer T`, `?token=T` on a GET
//! or a WebSocket upgrade), and what Jupyter is sent instead.
//!
//! A token request is not a browser's: Jupyter itself exempts token
//! requests from its XSRF check, so notebookd satisfies that check for them
//! (a fresh random `_xsrf` cookie and the matching `X-XSRFToken`) and drops
//! the `Origin` (cross-origin use is notebookd's call, not Jupyter's).
//! The token itself is removed, from the header and from the query, so it
//! never reaches Jupyter or its access log.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Uri};

/// A token found on a request.
pub struct Presented {
    pub value: String,
    /// Found in `?token=` (a link or a WebSocket URL), not in a header.
    pub in_query: bool,
}

const X_XSRF_TOKEN: HeaderName = HeaderName::from_static("x-xsrftoken");

/// The token a request carries, if any.
pub fn presented<B>(req: &Request<B>) -> Option<Presented> {
    if let Some(v) = req.headers().get(header::AUTHORIZATION) {
        let text = v.to_str().ok()?.trim();
        let (scheme, value) = text.split_once(' ')?;
        if scheme.eq_ignore_ascii_case("token") || scheme.eq_ignore_ascii_case("bearer") {
            return Some(Presented {
                value: value.trim().to_string(),
                in_query: false,
            });
        }
        return None;
    }
    let query_allowed = req.method() == Method::GET || super::proxy::is_upgrade(req.headers());
    if !query_allowed {
        return None;
    }
    let query = req.uri().query()?;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| Presented {
            value: v.into_owned(),
            in_query: true,
        })
}

/// `path?query` without its `token` parameters; the other parameters keep
/// their exact spelling.
pub fn without_token(uri: &Uri) -> String {
    let path = uri.path();
    let Some(query) = uri.query() else {
        return path.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            key != "token" && !pair.is_empty()
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Makes a token-authenticated request ready for Jupyter: no token, no
/// Origin, and an XSRF cookie and header that match.
pub fn prepare_for_jupyter<B>(req: &mut Request<B>) -> Result<(), getrandom::Error> {
    if req.uri().query().is_some() {
        let target = without_token(req.uri());
        if let Ok(uri) = target.parse::<Uri>() {
            *req.uri_mut() = uri;
        }
    }
    let h = req.headers_mut();
    h.remove(header::AUTHORIZATION);
    h.remove(header::ORIGIN);
    let mut raw = [0u8; 16];
    getrandom::getrandom(&mut raw)?;
    let xsrf = hex::encode(raw);
    replace_xsrf_cookie(h, &xsrf);
    if let Ok(v) = HeaderValue::from_str(&xsrf) {
        h.insert(X_XSRF_TOKEN, v);
    }
    Ok(())
}

/// The request's cookies, with `_xsrf` (if any) replaced by `value`.
fn replace_xsrf_cookie(h: &mut HeaderMap, value: &str) {
    let mut kept = String::new();
    for c in h
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && !c.starts_with("_xsrf="))
    {
        kept.push_str(c);
        kept.push_str("; ");
    }
    kept.push_str("_xsrf=");
    kept.push_str(value);
    h.remove(header::COOKIE);
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(kept)) {
        h.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(method: Method, uri: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn found_where_jupyters_clients_put_it() {
        let t = |r: &Request<()>| presented(r).map(|p| (p.value, p.in_query));
        assert_eq!(
            t(&req(Method::POST, "/api/kernels", Some("token abc"))),
            Some(("abc".into(), false))
        );
        assert_eq!(
            t(&req(Method::GET, "/api/x", Some("BEARER abc"))),
            Some(("abc".into(), false))
        );
        assert_eq!(t(&req(Method::GET, "/api/x", Some("Basic abc"))), None);
        assert_eq!(
            t(&req(Method::GET, "/lab?a=1&token=abc", None)),
            Some(("abc".into(), true))
        );
        // Not on a POST: a form could carry it to another site's page.
        assert_eq!(t(&req(Method::POST, "/api/x?token=abc", None)), None);
    }

    #[test]
    fn the_token_is_taken_out_and_xsrf_put_in() {
        let mut r = req(
            Method::GET,
            "/api/kernels/k/channels?session_id=a%20b&token=secret&x",
            Some("token secret"),
        );
        r.headers_mut()
            .insert(header::COOKIE, HeaderValue::from_static("_xsrf=old; a=1"));
        r.headers_mut()
            .insert(header::ORIGIN, HeaderValue::from_static("https://site"));
        prepare_for_jupyter(&mut r).unwrap();
        assert_eq!(
            r.uri().to_string(),
            "/api/kernels/k/channels?session_id=a%20b&x"
        );
        assert!(r.headers().get(header::AUTHORIZATION).is_none());
        assert!(r.headers().get(header::ORIGIN).is_none());
        let xsrf = r.headers()["x-xsrftoken"].to_str().unwrap().to_string();
        assert_eq!(xsrf.len(), 32);
        assert_eq!(r.headers()[header::COOKIE], format!("a=1; _xsrf={xsrf}"));
        assert_eq!(without_token(&"/lab?token=x".parse().unwrap()), "/lab");
    }
}
