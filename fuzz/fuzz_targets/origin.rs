//! `Origin` matching (`origin_matches`), which decides whether a
//! state-changing request or a WebSocket from a browser is this site's.
//!
//! Input: a flag byte (bit 0: the client came over HTTPS), then lines:
//! the Origin, the Host, and candidate embedding origins (those that are
//! valid config values are used, as the config would).
//! Properties: this site's own origin matches, in any letter case and
//! with or without the default port; a match is a well-formed origin
//! (`scheme://host[:port]`, nothing after) that is this site or one of
//! the allowed ones, never a string that only contains one.
#![no_main]

use http::header::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use notebookd::config::FrameAncestor;
use notebookd::front::target::{check_host, origin_matches};

fn valid_host(host: &[u8]) -> bool {
    let Ok(v) = HeaderValue::from_bytes(host) else {
        return false;
    };
    let mut h = HeaderMap::new();
    h.insert(http::header::HOST, v);
    check_host(&h).is_ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let https = flags & 1 == 1;
    let mut lines = rest.split(|&b| b == b'\n');
    let (Some(origin), Some(host)) = (lines.next(), lines.next()) else {
        return;
    };
    let ancestors: Vec<FrameAncestor> = lines
        .filter_map(|l| std::str::from_utf8(l).ok())
        .filter_map(|l| l.parse().ok())
        .collect();
    let allowed: Vec<&str> = ancestors.iter().map(FrameAncestor::as_str).collect();
    let scheme = if https { "https://" } else { "http://" };

    if valid_host(host) {
        let own = [scheme.as_bytes(), host].concat();
        assert!(origin_matches(&own, host, https, &[]), "own origin refused");
        assert!(origin_matches(&own.to_ascii_uppercase(), host, https, &[]));
    }

    let matched = origin_matches(origin, host, https, &allowed);
    assert_eq!(
        matched,
        origin_matches(&origin.to_ascii_uppercase(), host, https, &allowed),
        "letter case changed the answer"
    );
    if matched && valid_host(host) {
        let o = String::from_utf8_lossy(origin).trim().to_ascii_lowercase();
        let authority = o
            .strip_prefix("https://")
            .or_else(|| o.strip_prefix("http://"))
            .unwrap_or_else(|| panic!("{o:?} matched without a scheme"));
        assert!(
            !authority.is_empty()
                && authority
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)),
            "{o:?} matched Host {:?} or {allowed:?}",
            String::from_utf8_lossy(host)
        );
    }
});
