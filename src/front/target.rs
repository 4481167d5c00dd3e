//! What a request may ask for, checked before anything else looks at it:
//! the path (no dot segments, empty segments or encoded separators) and
//! the Host header.

use http::header;

/// Refuses paths whose meaning a decoder further on could change: dot
/// segments, empty segments, backslashes, NULs and encoded slashes, also
/// when percent-encoded (once or twice).
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("The path must start with /.");
    }
    // Borrowed until an escape needs decoding: most paths have none, and
    // this runs for every request.
    let mut current = std::borrow::Cow::Borrowed(path);
    for _ in 0..3 {
        check_path_once(&current)?;
        if !current.contains('%') {
            break;
        }
        let decoded = percent_encoding::percent_decode_str(&current).decode_utf8_lossy();
        if *decoded == *current {
            break;
        }
        current = std::borrow::Cow::Owned(decoded.into_owned());
    }
    Ok(())
}

fn check_path_once(path: &str) -> Result<(), &'static str> {
    if path.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f) {
        return Err("The path holds a backslash or a control character.");
    }
    if path.contains("//") {
        return Err("The path holds an empty segment (//).");
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("The path holds a . or .. segment.");
    }
    let encoded_separator =
        |w: &[u8]| w.eq_ignore_ascii_case(b"%2f") || w.eq_ignore_ascii_case(b"%5c") || w == b"%00";
    if path.contains('%') && path.as_bytes().windows(3).any(encoded_separator) {
        return Err("The path holds an encoded slash, backslash or NUL.");
    }
    Ok(())
}

/// Exactly one Host header, holding a host name or address and an optional
/// port (RFC 9112 §3.2). Jupyter compares Origin with Host, so a Host with a
/// path, user info or spaces in it, or two of them, never gets that far.
pub fn check_host(headers: &http::HeaderMap) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err("A request needs exactly one Host header.");
    };
    let b = host.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 300
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-._:[]".contains(&c));
    if ok {
        Ok(())
    } else {
        Err("The Host header must be a host name or address with an optional port.")
    }
}

/// The exact size of a request head as it came on the wire (request line,
/// headers, their separators and the blank line): hyper's own limit on the
/// head is only its read buffer's size, which may overshoot.
pub fn head_size(method: &http::Method, target: &str, headers: &http::HeaderMap) -> usize {
    // "METHOD TARGET HTTP/1.1\r\n" ... "\r\n"
    let line = method.as_str().len() + 1 + target.len() + 1 + 8 + 2;
    let fields: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + 2 + value.len() + 2)
        .sum();
    line + fields + 2
}

/// Whether `origin` (an `Origin` header) is the site of `host` (the Host
/// header), over `https` or not, or one of the `allowed` origins (wildcard
/// forms like `https://*.example.com` included). Default ports are the same
/// as none.
pub fn origin_matches(origin: &[u8], host: &[u8], https: bool, allowed: &[&str]) -> bool {
    let Ok(origin) = std::str::from_utf8(origin) else {
        return false;
    };
    let Ok(host) = std::str::from_utf8(host) else {
        return false;
    };
    let origin = origin.trim().to_ascii_lowercase();
    let scheme = if https { "https://" } else { "http://" };
    let normal = |authority: &str, https: bool| -> String {
        let a = authority.to_ascii_lowercase();
        let default = if https { ":443" } else { ":80" };
        a.strip_suffix(default).map_or(a.clone(), str::to_owned)
    };
    if let Some(authority) = origin.strip_prefix(scheme) {
        if normal(authority, https) == normal(host.trim(), https) {
            return true;
        }
    }
    allowed.iter().any(|a| {
        let a = a.to_ascii_lowercase();
        match a.split_once("://*.") {
            Some((a_scheme, suffix)) => origin
                .strip_prefix(a_scheme)
                .and_then(|rest| rest.strip_prefix("://"))
                .and_then(|rest| rest.strip_suffix(suffix))
                .and_then(|labels| labels.strip_suffix('.'))
                .is_some_and(dns_labels),
            None => a == origin,
        }
    })
}

/// Whether `name` is dot-separated DNS labels (what a wildcard's `*` may
/// stand for): not a path, a user, a scheme or a port that happens to end
/// in the allowed suffix.
fn dns_labels(name: &str) -> bool {
    name.split('.').all(|label| {
        !label.is_empty()
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_match_their_host_only() {
        let m = |o: &str, h: &str, https| {
            origin_matches(
                o.as_bytes(),
                h.as_bytes(),
                https,
                &["https://*.example.org", "https://embed.example.net"],
            )
        };
        assert!(m("https://nb.example.com", "nb.example.com", true));
        assert!(m("https://NB.example.com:443", "nb.example.com", true));
        assert!(m(
            "https://nb.example.com:8443",
            "nb.example.com:8443",
            true
        ));
        assert!(m("http://localhost:9999", "localhost:9999", false));
        assert!(
            !m("http://nb.example.com", "nb.example.com", true),
            "scheme"
        );
        assert!(!m("https://evil.example", "nb.example.com", true));
        assert!(!m("https://nb.example.com.evil", "nb.example.com", true));
        assert!(
            !m("https://nb.example.com:8443", "nb.example.com", true),
            "port"
        );
        assert!(!m("null", "nb.example.com", true));
        assert!(m("https://site.example.org", "nb.example.com", true));
        assert!(!m("https://example.org", "nb.example.com", true));
        assert!(!m("https://evilexample.org", "nb.example.com", true));
        assert!(m("https://embed.example.net", "nb.example.com", true));
        assert!(m("https://a.b-c.example.org", "nb.example.com", true));
    }

    /// Found by the `origin` fuzz target: anything that ended in
    /// `.example.org` matched `https://*.example.org`, a path, a second
    /// scheme or user info in front included.
    #[test]
    fn a_wildcard_stands_for_host_labels_only() {
        let allowed = ["https://*.example.org"];
        for origin in [
            "https://app.exampltps://*.example.org",
            "https://evil.test/.example.org",
            "https://evil.test/x.example.org",
            "https://user@x.example.org",
            "https://evil.test?.example.org",
            "https://a..example.org",
            "https://.example.org",
            "https://evil.test:1.example.org",
        ] {
            assert!(
                !origin_matches(origin.as_bytes(), b"nb.example.com", true, &allowed),
                "{origin} matched"
            );
        }
    }

    #[test]
    fn head_size_is_exact() {
        let mut h = http::HeaderMap::new();
        h.insert("host", http::HeaderValue::from_static("localhost"));
        let wire = "GET /x HTTP/1.1\r\nhost: localhost\r\n\r\n";
        assert_eq!(head_size(&http::Method::GET, "/x", &h), wire.len());
    }

    #[test]
    fn path_tricks_are_refused() {
        for bad in [
            "/login/../api/contents",
            "/%2e%2e/api",
            "/a/%2E%2E/b",
            "//api",
            "/api%2fcontents",
            "/%252e%252e/api",
            "/api\\x",
            "/a/./b",
            "/%2F%2Fevil",
            "/a%5Cb",
            "/a%00b",
            "/a%2500b",
            "/a\u{7f}b",
            "/a\tb",
            "/a/..",
            "api",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in [
            "/",
            "/tree",
            "/api/contents/My%20Notebook.ipynb",
            "/files/a.b/c..d",
            "/api/contents/%C3%A4.txt",
            "/api/contents/100%25.txt",
            "/files/%zz",
            "/a/.b/..c",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }
}
