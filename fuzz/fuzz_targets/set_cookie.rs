//! `Set-Cookie` rewriting of Jupyter's responses (`HeaderPolicy::proxied`).
//!
//! Input: a flag byte (bit 0: the client came over HTTPS; bit 1: an
//! embedding origin is configured), then one `Set-Cookie` value a line.
//! Properties: every cookie is passed on, in order; one the cookie crate
//! parses keeps its name and value and gets the embedding mode's
//! attributes (`SameSite=None; Secure; Partitioned` in a cross-site
//! frame over HTTPS, else `SameSite=Lax`, and `Secure` over HTTPS); one it
//! cannot parse is passed on unchanged; rewriting twice changes nothing.
#![no_main]

use cookie::{Cookie, SameSite};
use http::header::{self, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use notebookd::config::FrameAncestor;
use notebookd::front::headers::HeaderPolicy;

fn parsed(v: &HeaderValue) -> Option<Cookie<'static>> {
    v.to_str()
        .ok()
        .and_then(|t| Cookie::parse(t.to_string()).ok())
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let https = flags & 1 == 1;
    let ancestors: Vec<FrameAncestor> = if flags & 2 == 2 {
        vec!["https://site.example".parse().expect("a valid origin")]
    } else {
        Vec::new()
    };
    let policy = HeaderPolicy::new(&ancestors, 0);
    let cross_site = policy.cross_site_cookies(https);

    let sent: Vec<HeaderValue> = rest
        .split(|&b| b == b'\n')
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
        .collect();
    let mut headers = HeaderMap::new();
    for v in &sent {
        headers.append(header::SET_COOKIE, v.clone());
    }
    policy.proxied(&mut headers, https);
    let got: Vec<HeaderValue> = headers
        .get_all(header::SET_COOKIE)
        .iter()
        .cloned()
        .collect();
    assert_eq!(got.len(), sent.len(), "a cookie was dropped or added");

    for (before, after) in sent.iter().zip(&got) {
        let Some(b) = parsed(before) else {
            assert_eq!(before, after, "a cookie the parser refuses was changed");
            continue;
        };
        let a = parsed(after).expect("a rewritten cookie parses");
        assert_eq!(a.name(), b.name());
        assert_eq!(a.value(), b.value());
        if cross_site {
            assert_eq!(a.same_site(), Some(SameSite::None));
            assert_eq!(a.secure(), Some(true));
            assert_eq!(a.partitioned(), Some(true));
        } else {
            assert_eq!(a.same_site(), Some(SameSite::Lax));
        }
        if https {
            assert_eq!(a.secure(), Some(true));
        }
    }

    let mut again = headers.clone();
    policy.proxied(&mut again, https);
    let twice: Vec<HeaderValue> = again.get_all(header::SET_COOKIE).iter().cloned().collect();
    assert_eq!(twice, got, "rewriting twice changed a cookie");
});
