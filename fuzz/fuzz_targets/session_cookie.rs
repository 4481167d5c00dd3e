//! Session cookie decoding (`SessionKeys::decode`): never a panic, a
//! cookie that decodes is exactly the encoding of its session (nothing
//! else carries a valid MAC), and an encoded session decodes back when,
//! and only when, it is within its lifetime.
//!
//! The keys are fixed (a known secret and password hash), so a corpus
//! entry can hold a valid cookie for the fuzzer to mutate; `NOW` is the
//! time its seeds were made for.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use notebookd::auth::session::{Session, SessionKeys, SessionSecret};

const NOW: u64 = 1_800_000_000;
const LIFETIME: u64 = 7 * 24 * 3600;

fn keys() -> &'static SessionKeys {
    static KEYS: OnceLock<SessionKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("session.key"), [7u8; 32]).expect("session.key written");
        let secret = SessionSecret::load_or_create(dir.path()).expect("session.key loads");
        let hash =
            "sha256:fuzzsalt:3c9d1e3f1f0b4a2ef0a1d0e5b5a9c1f9d3b6a0c2e4f6a8b0c2d4e6f8a0b2c4d6"
                .parse()
                .expect("a valid salted hash");
        SessionKeys::new(
            &secret,
            &hash,
            Duration::from_secs(LIFETIME),
            Duration::from_secs(3600),
        )
    })
}

fn u64_at(data: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    for (i, v) in data.iter().skip(at).take(8).enumerate() {
        b[i] = *v;
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let keys = keys();
    if let Ok(value) = std::str::from_utf8(data)
        && let Some(session) = keys.decode(value, NOW)
    {
        assert_eq!(
            keys.encode(&session),
            value,
            "a second form of a valid cookie"
        );
        assert!(keys.max_age(&session, NOW) <= LIFETIME);
    }

    // A session from the bytes, at a time of day that a clock can show.
    if data.len() >= 36 {
        let mut id = [0u8; 12];
        id.copy_from_slice(&data[24..36]);
        let now = u64_at(data, 16) % (1 << 40);
        // Near `now` most of the time, so that both outcomes are seen.
        let near = |v: u64| {
            if v & 1 == 0 {
                now.wrapping_add(v >> 44).wrapping_sub(1 << 19)
            } else {
                v
            }
        };
        let session = Session {
            id,
            issued: near(u64_at(data, 0)),
            seen: near(u64_at(data, 8)),
        };
        let cookie = keys.encode(&session);
        let valid = session.issued <= now + 300
            && session.seen <= now + 300
            && session.seen >= session.issued
            && now.saturating_sub(session.issued) < LIFETIME;
        let decoded = keys.decode(&cookie, now);
        assert_eq!(decoded.is_some(), valid, "{session:?} at {now}");
        if let Some(d) = decoded {
            assert_eq!(d, session);
        }
        // One byte changed: no longer a valid cookie.
        let mut bytes = cookie.into_bytes();
        let at = usize::from(data[0]) % bytes.len();
        bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
        if let Ok(tampered) = String::from_utf8(bytes) {
            assert!(
                keys.decode(&tampered, now).is_none(),
                "tampered cookie accepted: {tampered}"
            );
        }
    }
});
