//! Response headers: security headers on everything, the `frame-ancestors`
//! directive of Jupyter's Content-Security-Policy, and cookie attributes for
//! embedding.
//!
//! notebookd edits only `frame-ancestors` in Jupyter's CSP and keeps every
//! other directive: Jupyter's `sandbox allow-scripts` on `/files/` and
//! nbconvert output is what stops uploaded HTML from running as the user.

use http::header::{self, HeaderMap, HeaderValue};

use crate::config::FrameAncestor;

/// What the response headers should say, computed once per config.
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    /// `frame-ancestors 'self' ORIGIN...`
    frame_ancestors: HeaderValue,
    /// The full CSP of notebookd's own pages.
    own_csp: HeaderValue,
    /// `Strict-Transport-Security`, sent to browsers that came over HTTPS.
    hsts: Option<HeaderValue>,
    /// Origins may frame us: over HTTPS, cookies become `SameSite=None; Secure; Partitioned`.
    embedding: bool,
}

impl HeaderPolicy {
    pub fn new(ancestors: &[FrameAncestor], hsts_max_age_secs: u64) -> HeaderPolicy {
        let mut frame_ancestors = String::from("frame-ancestors 'self'");
        for a in ancestors {
            frame_ancestors.push(' ');
            frame_ancestors.push_str(a.as_str());
        }
        // No script at all; the one stylesheet and the form post go to this origin only.
        let own = format!(
            "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; {frame_ancestors}"
        );
        // Validated origins are visible ASCII, so these cannot fail; the fallbacks are stricter.
        HeaderPolicy {
            own_csp: HeaderValue::from_str(&own).unwrap_or_else(|_| {
                HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'")
            }),
            frame_ancestors: HeaderValue::from_str(&frame_ancestors)
                .unwrap_or_else(|_| HeaderValue::from_static("frame-ancestors 'self'")),
            hsts: (hsts_max_age_secs > 0).then(|| {
                HeaderValue::from_str(&format!("max-age={hsts_max_age_secs}"))
                    .unwrap_or_else(|_| HeaderValue::from_static("max-age=31536000"))
            }),
            embedding: !ancestors.is_empty(),
        }
    }

    /// Whether cookies for a client that came over HTTPS (`https`) must work in a cross-site frame.
    pub fn cross_site_cookies(&self, https: bool) -> bool {
        self.embedding && https
    }

    /// Headers for a page notebookd made itself (login, errors).
    pub fn own_page(&self, headers: &mut HeaderMap, https: bool) {
        headers.insert(header::CONTENT_SECURITY_POLICY, self.own_csp.clone());
        self.common(headers, https);
    }

    /// Headers for a response that came from Jupyter.
    pub fn proxied(&self, headers: &mut HeaderMap, https: bool) {
        set_frame_ancestors_header(headers, &self.frame_ancestors);
        if headers.contains_key(header::SET_COOKIE) {
            rewrite_set_cookies(headers, https, self.cross_site_cookies(https));
        }
        // Which tornado version answers is nobody's business.
        headers.remove(header::SERVER);
        self.common(headers, https);
    }

    fn common(&self, headers: &mut HeaderMap, https: bool) {
        // frame-ancestors says who may frame us; X-Frame-Options could only contradict it.
        headers.remove(header::X_FRAME_OPTIONS);
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        // Not `no-referrer`: Jupyter's XSRF check falls back to the Referer header
        // (e.g. for a GET of /files/), and `same-origin` still sends it to Jupyter.
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        );
        if https {
            if let Some(hsts) = &self.hsts {
                headers.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
            }
        }
    }
}

/// Whether `Strict-Transport-Security` does good for a request to `host`
/// (the Host header): only for DNS names. For `localhost` and IP literals
/// it protects nothing and would pin a developer's other servers on that
/// name or address to https for the max-age.
pub fn hsts_applies(host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    if host.starts_with('[') {
        return false;
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    let name = name.trim_end_matches('.');
    let localhost = |n: &str| n.eq_ignore_ascii_case("localhost");
    !(name.is_empty()
        || localhost(name)
        || name
            .rsplit_once('.')
            .is_some_and(|(_, last)| localhost(last))
        || name.parse::<std::net::Ipv4Addr>().is_ok())
}

/// Puts `directive` as the only `frame-ancestors` of the response's CSP,
/// keeping every other directive of every policy Jupyter sent.
///
/// Works on bytes: a policy that is not valid UTF-8 is still edited, never
/// dropped (dropping it would lose `sandbox`). A response without a CSP gets
/// one made of `directive` alone.
fn set_frame_ancestors_header(headers: &mut HeaderMap, directive: &HeaderValue) {
    // Jupyter sends the same one policy on nearly every response, usually
    // already right: then nothing is rebuilt.
    let mut all = headers.get_all(header::CONTENT_SECURITY_POLICY).iter();
    if let (Some(only), None) = (all.next(), all.next()) {
        if edit_changes_nothing(only.as_bytes(), directive.as_bytes()) {
            return;
        }
    }
    let mut values = match headers.entry(header::CONTENT_SECURITY_POLICY) {
        header::Entry::Vacant(v) => {
            v.insert(directive.clone());
            return;
        }
        header::Entry::Occupied(o) => o.remove_entry_mult().1.collect::<Vec<_>>().into_iter(),
    };
    // The first policy gets our directive; later ones lose theirs (each policy is
    // enforced on its own, so a stricter frame-ancestors elsewhere would still block).
    if let Some(first) = values.next() {
        let edited = set_frame_ancestors(first.as_bytes(), directive.as_bytes(), true);
        headers.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_bytes(&edited).unwrap_or_else(|_| directive.clone()),
        );
    }
    for v in values {
        let edited = set_frame_ancestors(v.as_bytes(), directive.as_bytes(), false);
        if let Ok(v) = HeaderValue::from_bytes(&edited) {
            headers.append(header::CONTENT_SECURITY_POLICY, v);
        }
    }
}

/// Whether `set_frame_ancestors(csp, directive, true)` would return `csp`
/// itself: its directives already trimmed and joined by `; `, and its one
/// frame-ancestors directive equal to `directive`. Allocates nothing.
fn edit_changes_nothing(csp: &[u8], directive: &[u8]) -> bool {
    let mut rest = csp;
    let mut placed = false;
    for part in csp.split(|&b| b == b';') {
        let part = part.trim_ascii();
        if part.is_empty() {
            continue;
        }
        let out = if is_frame_ancestors(part) {
            if placed {
                return false;
            }
            placed = true;
            directive
        } else {
            part
        };
        if rest.len() < csp.len() {
            match rest.strip_prefix(b"; ") {
                Some(r) => rest = r,
                None => return false,
            }
        }
        match rest.strip_prefix(out) {
            Some(r) => rest = r,
            None => return false,
        }
    }
    placed && rest.is_empty()
}

/// Whether a trimmed CSP directive is a frame-ancestors one.
fn is_frame_ancestors(directive: &[u8]) -> bool {
    let name = directive
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    name.eq_ignore_ascii_case(b"frame-ancestors")
}

/// `csp` without its frame-ancestors directives and, if `add`, with
/// `directive` in place of the first one (or at the end).
pub fn set_frame_ancestors(csp: &[u8], directive: &[u8], add: bool) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(csp.len() + directive.len() + 2);
    let mut placed = !add;
    let push = |out: &mut Vec<u8>, part: &[u8]| {
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(part);
    };
    for part in csp.split(|&b| b == b';') {
        let part = part.trim_ascii();
        if part.is_empty() {
            continue;
        }
        if is_frame_ancestors(part) {
            if !placed {
                push(&mut out, directive);
                placed = true;
            }
        } else {
            push(&mut out, part);
        }
    }
    if !placed {
        push(&mut out, directive);
    }
    out
}

/// Jupyter's cookies (`_xsrf` and any other) get the same attributes as
/// notebookd's own: `SameSite=None; Secure; Partitioned` when embedding over
/// HTTPS (the only form Chromium keeps in a cross-site frame; tornado cannot
/// write `Partitioned`), else `SameSite=Lax`, and `Secure` over HTTPS.
fn rewrite_set_cookies(headers: &mut HeaderMap, https: bool, cross_site: bool) {
    let rewritten: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| rewrite_cookie(v, https, cross_site))
        .collect();
    headers.remove(header::SET_COOKIE);
    for v in rewritten {
        headers.append(header::SET_COOKIE, v);
    }
}

fn rewrite_cookie(v: &HeaderValue, https: bool, cross_site: bool) -> HeaderValue {
    let Some(mut c) = v
        .to_str()
        .ok()
        .and_then(|t| cookie::Cookie::parse(t.to_string()).ok())
    else {
        // Not a cookie this crate understands: passed on as Jupyter wrote it.
        return v.clone();
    };
    if https {
        c.set_secure(true);
    }
    apply_same_site(&mut c, cross_site);
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
    let mut c = cookie::Cookie::build((crate::auth::session::COOKIE_NAME, value.to_string()))
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

/// The `_xsrf` cookie of the login form (double submit: a form that
/// carries `_xsrf` must carry this value). It has Jupyter's name and
/// format (a raw hex token, which tornado accepts as its version 1), so
/// Jupyter keeps using it after the login and scripts that replay
/// Jupyter's login (VS Code) find what they look for. Readable by scripts,
/// as Jupyter's own is.
pub fn xsrf_cookie(value: &str, path: &str, secure: bool, cross_site: bool) -> HeaderValue {
    let mut c = cookie::Cookie::build(("_xsrf", value.to_string()))
        .path(path.to_string())
        .secure(secure || cross_site)
        .build();
    apply_same_site(&mut c, cross_site);
    HeaderValue::from_str(&c.to_string()).unwrap_or_else(|_| HeaderValue::from_static("_xsrf="))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(origins: &[&str]) -> HeaderPolicy {
        let a: Vec<FrameAncestor> = origins.iter().map(|o| o.parse().unwrap()).collect();
        HeaderPolicy::new(&a, 3600)
    }

    fn csp_values(h: &HeaderMap) -> Vec<String> {
        h.get_all(header::CONTENT_SECURITY_POLICY)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    #[test]
    fn the_fast_path_agrees_with_the_edit() {
        let d = b"frame-ancestors 'self' https://a.example";
        for csp in [
            "frame-ancestors 'self' https://a.example; report-uri /api/security/csp-report",
            "frame-ancestors 'self' https://a.example",
            "report-uri /r; frame-ancestors 'self' https://a.example; sandbox allow-scripts",
            "frame-ancestors 'self'; report-uri /r",
            "frame-ancestors 'self' https://a.example;report-uri /r",
            " frame-ancestors 'self' https://a.example",
            "frame-ancestors 'self' https://a.example; ",
            "frame-ancestors 'self' https://a.example; frame-ancestors 'none'",
            "FRAME-ANCESTORS 'self' https://a.example",
            "default-src 'none'",
            "",
            ";",
        ] {
            let edited = set_frame_ancestors(csp.as_bytes(), d, true);
            assert_eq!(
                edit_changes_nothing(csp.as_bytes(), d),
                edited == csp.as_bytes(),
                "{csp:?}"
            );
        }
    }

    #[test]
    fn frame_ancestors_is_replaced_and_sandbox_kept() {
        let p = policy(&["https://site.example", "https://*.example.org:8443"]);
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "frame-ancestors 'self'; report-uri /api/security/csp-report; sandbox allow-scripts",
            ),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::SERVER, HeaderValue::from_static("TornadoServer/6"));
        p.proxied(&mut h, true);
        assert_eq!(
            csp_values(&h),
            [
                "frame-ancestors 'self' https://site.example https://*.example.org:8443; report-uri /api/security/csp-report; sandbox allow-scripts"
            ]
        );
        assert!(h.get(header::X_FRAME_OPTIONS).is_none());
        assert!(h.get(header::SERVER).is_none());
        assert_eq!(h[header::STRICT_TRANSPORT_SECURITY], "max-age=3600");
        assert_eq!(h[header::REFERRER_POLICY], "same-origin");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    }

    #[test]
    fn every_policy_is_kept_and_only_one_frame_ancestors_remains() {
        let p = policy(&[]);
        let mut h = HeaderMap::new();
        h.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self'"),
        );
        h.append(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("FRAME-ANCESTORS 'none' ; sandbox allow-scripts;"),
        );
        p.proxied(&mut h, false);
        assert_eq!(
            csp_values(&h),
            [
                "default-src 'self'; frame-ancestors 'self'",
                "sandbox allow-scripts"
            ]
        );
        assert!(
            h.get(header::STRICT_TRANSPORT_SECURITY).is_none(),
            "no HSTS over plain HTTP"
        );
        // Not UTF-8: edited as bytes, never dropped.
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_bytes(b"sandbox allow-scripts; img-src \xe9").unwrap(),
        );
        p.proxied(&mut h, true);
        assert_eq!(
            h[header::CONTENT_SECURITY_POLICY].as_bytes(),
            b"sandbox allow-scripts; img-src \xe9; frame-ancestors 'self'"
        );
        // No CSP at all: ours alone.
        let mut h = HeaderMap::new();
        p.proxied(&mut h, true);
        assert_eq!(csp_values(&h), ["frame-ancestors 'self'"]);
    }

    #[test]
    fn jupyter_cookies_follow_the_embedding_mode() {
        let xsrf =
            "_xsrf=2|d6e4a1b0|5f1c0e|1700000000; expires=Thu, 21 Nov 2024 10:00:00 GMT; Path=/nb/";
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, HeaderValue::from_static(xsrf));
        policy(&["https://site.example"]).proxied(&mut h, true);
        let c = h[header::SET_COOKIE].to_str().unwrap();
        for attr in [
            "_xsrf=2|d6e4a1b0|5f1c0e|1700000000",
            "SameSite=None",
            "Secure",
            "Partitioned",
            "Path=/nb/",
            "Expires=Thu, 21 Nov 2024 10:00:00 GMT",
        ] {
            assert!(c.contains(attr), "{attr} missing in {c}");
        }
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, HeaderValue::from_static(xsrf));
        policy(&[]).proxied(&mut h, true);
        let c = h[header::SET_COOKIE].to_str().unwrap();
        assert!(c.contains("SameSite=Lax") && c.contains("Secure"), "{c}");
        assert!(!c.contains("Partitioned"), "{c}");
        // Embedding configured, but the browser came over plain HTTP: Lax, not Secure.
        let mut h = HeaderMap::new();
        h.append(header::SET_COOKIE, HeaderValue::from_static(xsrf));
        policy(&["https://site.example"]).proxied(&mut h, false);
        let c = h[header::SET_COOKIE].to_str().unwrap();
        assert!(c.contains("SameSite=Lax") && !c.contains("Secure"), "{c}");
    }

    #[test]
    fn own_pages_get_a_strict_policy() {
        let mut h = HeaderMap::new();
        policy(&["https://site.example"]).own_page(&mut h, true);
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(
            csp.ends_with("frame-ancestors 'self' https://site.example"),
            "{csp}"
        );
        assert!(!csp.contains("script-src"), "{csp}");
    }

    #[test]
    fn session_cookie_attributes() {
        let c = session_cookie("v", "/nb/", true, true, 60);
        let c = c.to_str().unwrap();
        for attr in [
            "notebookd-session=v",
            "Path=/nb/",
            "HttpOnly",
            "Secure",
            "SameSite=None",
            "Partitioned",
            "Max-Age=60",
        ] {
            assert!(c.contains(attr), "{attr} missing in {c}");
        }
        let c = session_cookie("v", "/", false, false, 60);
        let c = c.to_str().unwrap();
        assert!(c.contains("SameSite=Lax") && !c.contains("Secure"), "{c}");
    }

    #[test]
    fn hsts_only_for_dns_names() {
        let h = |s: &str| hsts_applies(Some(&HeaderValue::from_str(s).unwrap()));
        for yes in [
            "notebook.example.com",
            "notebook.example.com:9999",
            "nb.test.",
        ] {
            assert!(h(yes), "{yes}");
        }
        for no in [
            "localhost",
            "localhost:9999",
            "LOCALHOST.",
            "app.localhost:80",
            "127.0.0.1:9999",
            "10.0.0.1",
            "[::1]:9999",
            "[2001:db8::1]",
        ] {
            assert!(!h(no), "{no}");
        }
        assert!(!hsts_applies(None));
    }
}
