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

#[cfg(test)]
mod tests {
    use super::*;

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
