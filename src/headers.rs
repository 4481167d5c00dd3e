//! Response headers: security headers on everything, the `frame-ancestors`
//! directive of Jupyter's Content-Security-Policy, and cookie attributes for
//! embedding.
//!
//! notebookd edits only `frame-ancestors` in Jupyter's CSP and keeps every
//! other directive: Jupyter's `sandbox allow-scripts` on `/files/` and
//! nbconvert output is what stops uploaded HTML from running as the user.

use std::fmt;
use std::str::FromStr;

use http::header::{self, HeaderMap, HeaderValue};

use crate::config::config_value;

/// An origin allowed to frame the notebook: `https://host[:port]` or
/// `https://*.example.com` (http too, for a plain-HTTP embedding site).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameAncestor(String);

impl FrameAncestor {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

const ORIGIN_FORMS: &str = "expected an origin such as \"https://my.example.com\", \"https://my.example.com:8443\" or \"https://*.example.com\" (scheme and host only: no path, query, quotes, spaces, ; or a bare *)";

impl FromStr for FrameAncestor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| Err(format!("{s:?} {why}; {ORIGIN_FORMS}"));
        let lower = s.trim().to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return bad("has no scheme");
        };
        if scheme != "https" && scheme != "http" {
            return bad("must start with https:// or http://");
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => (h, Some(p)),
            _ => (rest, None),
        };
        if let Some(port) = port {
            match port.parse::<u16>() {
                Ok(p) if p > 0 && !port.starts_with('0') => {}
                _ => return bad("has a bad port"),
            }
        }
        let host_ok = if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        {
            inner.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            let name = host.strip_prefix("*.").unwrap_or(host);
            !name.is_empty()
                && name.len() <= 253
                && name.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        && !label.starts_with('-')
                        && !label.ends_with('-')
                })
        };
        if !host_ok {
            return bad("is not scheme://host[:port]");
        }
        Ok(FrameAncestor(lower))
    }
}

impl fmt::Display for FrameAncestor {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.0)
    }
}
config_value!(
    FrameAncestor,
    "an origin such as \"https://my.example.com\" or \"https://*.example.com\""
);

/// What the response headers should say, computed once per config.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    /// `frame-ancestors 'self' ORIGIN...`
    frame_ancestors: String,
    /// The full CSP of notebookd's own pages.
    own_csp: HeaderValue,
    hsts: Option<HeaderValue>,
    /// Cookies get `SameSite=None; Secure; Partitioned` (embedding over TLS) or `SameSite=Lax`.
    pub cross_site_cookies: bool,
}

impl HeaderPolicy {
    pub fn new(ancestors: &[FrameAncestor], tls: bool, hsts_max_age_secs: u64) -> HeaderPolicy {
        let mut frame_ancestors = String::from("frame-ancestors 'self'");
        for a in ancestors {
            frame_ancestors.push(' ');
            frame_ancestors.push_str(a.as_str());
        }
        let own = format!(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; {frame_ancestors}"
        );
        HeaderPolicy {
            // Validated origins are ASCII without control characters, so this cannot fail.
            own_csp: HeaderValue::from_str(&own)
                .unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'")),
            frame_ancestors,
            hsts: (tls && hsts_max_age_secs > 0).then(|| {
                HeaderValue::from_str(&format!("max-age={hsts_max_age_secs}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("max-age=31536000"))
            }),
            cross_site_cookies: tls && !ancestors.is_empty(),
        }
    }

    /// Headers for a page notebookd made itself (login, errors).
    pub fn own_page(&self, headers: &mut HeaderMap) {
        headers.insert(header::CONTENT_SECURITY_POLICY, self.own_csp.clone());
        self.common(headers);
    }

    /// Headers for a response that came from Jupyter.
    pub fn proxied(&self, headers: &mut HeaderMap) {
        let csp = headers
            .get(header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .map(|v| set_frame_ancestors(v, &self.frame_ancestors))
            .unwrap_or_else(|| self.frame_ancestors.clone());
        if let Ok(v) = HeaderValue::from_str(&csp) {
            headers.insert(header::CONTENT_SECURITY_POLICY, v);
        }
        if self.cross_site_cookies {
            rewrite_set_cookies(headers);
        }
        self.common(headers);
    }

    fn common(&self, headers: &mut HeaderMap) {
        // frame-ancestors says who may frame us; X-Frame-Options could only contradict it.
        headers.remove(header::X_FRAME_OPTIONS);
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Not `no-referrer`: Jupyter's XSRF check falls back to the Referer header.
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        if let Some(hsts) = &self.hsts {
            headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
    }
}

/// `csp` with its frame-ancestors directive replaced by (or, if absent, extended with) `directive`.
pub fn set_frame_ancestors(csp: &str, directive: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let mut placed = false;
    for part in csp.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let name = part.split_ascii_whitespace().next().unwrap_or("");
        if name.eq_ignore_ascii_case("frame-ancestors") {
            if !placed {
                out.push(directive);
                placed = true;
            }
        } else {
            out.push(part);
        }
    }
    if !placed {
        out.push(directive);
    }
    out.join("; ")
}

/// Jupyter's cookies (`_xsrf` and others) as `SameSite=None; Secure; Partitioned`,
/// the only form Chromium keeps in a cross-site frame; tornado cannot write `Partitioned`.
fn rewrite_set_cookies(headers: &mut HeaderMap) {
    if !headers.contains_key(header::SET_COOKIE) {
        return;
    }
    let rewritten: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(cross_site_cookie)
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in rewritten {
        headers.append(header::SET_COOKIE, v);
    }
}

fn cross_site_cookie(v: &HeaderValue) -> HeaderValue {
    let Some(mut c) = v
        .to_str()
        .ok()
        .and_then(|t| cookie::Cookie::parse(t.to_string()).ok())
    else {
        return v.clone();
    };
    apply_same_site(&mut c, true);
    HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| v.clone())
}

/// The `Set-Cookie` value for notebookd's session cookie.
pub fn session_cookie(
    value: &str,
    path: &str,
    secure: bool,
    cross_site: bool,
    max_age_secs: u64,
) -> HeaderValue {
    let mut c = cookie::Cookie::build((super::auth::session::COOKIE_NAME, value.to_string()))
        .path(path.to_string())
        .http_only(true)
        .secure(secure || cross_site)
        .max_age(cookie::time::Duration::seconds(
            i64::try_from(max_age_secs).unwrap_or(i64::MAX),
        ))
        .build();
    apply_same_site(&mut c, cross_site);
    HeaderValue::from_str(&c.to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("notebookd-session=; Max-Age=0"))
}

fn apply_same_site(c: &mut cookie::Cookie<'_>, cross_site: bool) {
    if cross_site {
        c.set_same_site(cookie::SameSite::None);
        c.set_secure(true);
        c.set_partitioned(true);
    } else {
        c.set_same_site(cookie::SameSite::Lax);
    }
}
