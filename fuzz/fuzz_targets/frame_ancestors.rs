//! The `frame-ancestors` edit of Jupyter's Content-Security-Policy
//! (`set_frame_ancestors`, and `HeaderPolicy::proxied`, which applies it to
//! a response with a shortcut for policies already right).
//!
//! Input: the first line lists candidate embedding origins (those that are
//! valid config values are used); every further line is one CSP header.
//! Properties: no policy is dropped; every other directive is kept, in
//! order; the first policy carries exactly our directive and the others
//! none; the shortcut agrees with the edit; editing again changes nothing.
#![no_main]

use http::header::{self, HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use notebookd::config::FrameAncestor;
use notebookd::front::headers::{HeaderPolicy, set_frame_ancestors};

fn directives(csp: &[u8]) -> impl Iterator<Item = &[u8]> {
    csp.split(|&b| b == b';')
        .map(<[u8]>::trim_ascii)
        .filter(|d| !d.is_empty())
}

fn is_frame_ancestors(d: &[u8]) -> bool {
    d.split(u8::is_ascii_whitespace)
        .next()
        .is_some_and(|n| n.eq_ignore_ascii_case(b"frame-ancestors"))
}

fn others(csp: &[u8]) -> Vec<&[u8]> {
    directives(csp).filter(|d| !is_frame_ancestors(d)).collect()
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let first = lines.next().unwrap_or_default();
    let ancestors: Vec<FrameAncestor> = String::from_utf8_lossy(first)
        .split_whitespace()
        .filter_map(|a| a.parse().ok())
        .collect();
    let policy = HeaderPolicy::new(&ancestors, 0);
    let mut ours = String::from("frame-ancestors 'self'");
    for a in &ancestors {
        ours.push(' ');
        ours.push_str(a.as_str());
    }
    let ours = ours.as_bytes();

    let sent: Vec<HeaderValue> = lines
        .filter_map(|l| HeaderValue::from_bytes(l).ok())
        .collect();
    let mut headers = HeaderMap::new();
    for v in &sent {
        headers.append(header::CONTENT_SECURITY_POLICY, v.clone());
    }
    policy.proxied(&mut headers, data.first().is_some_and(|b| b & 1 == 1));
    let got: Vec<&[u8]> = headers
        .get_all(header::CONTENT_SECURITY_POLICY)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();

    if sent.is_empty() {
        assert_eq!(got, vec![ours]);
        return;
    }
    assert_eq!(got.len(), sent.len(), "a policy was dropped");
    for (i, (before, after)) in sent.iter().zip(&got).enumerate() {
        let before = before.as_bytes();
        assert_eq!(others(before), others(after), "directives changed");
        let theirs: Vec<&[u8]> = directives(after)
            .filter(|d| is_frame_ancestors(d))
            .collect();
        if i == 0 {
            assert_eq!(theirs, vec![ours]);
            assert_eq!(*after, set_frame_ancestors(before, ours, true).as_slice());
            assert_eq!(
                set_frame_ancestors(after, ours, true),
                *after,
                "not idempotent"
            );
        } else {
            assert!(theirs.is_empty(), "a later policy kept its frame-ancestors");
        }
    }
    assert!(!headers.contains_key(header::X_FRAME_OPTIONS));
});
