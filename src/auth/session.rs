//! Session cookies: signed, expiring, revocable.
//!
//! The cookie holds `ISSUED.SEEN.ID.MAC`: when the user logged in, a second
//! time kept for compatibility with older cookies (unix seconds, hex), a
//! random session id, and an HMAC-SHA256 over those. The cookie only names
//! the session: whether it is still open, and when it was last seen, is the
//! server's record ([`super::sessions`]), so a client that pins its Cookie
//! header stays logged in while it is busy. The MAC key is derived from the secret in
//! `STATE_DIR/session.key` *and* the configured password hash, so a new
//! password or a new secret ends every existing session. Nothing secret is
//! in the cookie itself and the key never leaves the server.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::password::PasswordHash;

type HmacSha256 = Hmac<Sha256>;

/// Name of notebookd's session cookie.
pub const COOKIE_NAME: &str = "notebookd-session";
const SECRET_FILE: &str = "session.key";
const SECRET_LEN: usize = 32;

/// The server-side secret, loaded from (or created in) the state directory.
#[derive(Clone)]
pub struct SessionSecret([u8; SECRET_LEN]);

impl SessionSecret {
    /// Reads `DIR/session.key`, creating it (mode 0600) with fresh random bytes if missing.
    pub fn load_or_create(state_dir: &Path) -> std::io::Result<SessionSecret> {
        let path = state_dir.join(SECRET_FILE);
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == SECRET_LEN => {
                let mode = std::fs::metadata(&path)?.permissions().mode();
                if mode & 0o077 != 0 {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
                }
                let mut key = [0u8; SECRET_LEN];
                key.copy_from_slice(&bytes);
                Ok(SessionSecret(key))
            }
            Ok(_) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "{} is not {SECRET_LEN} bytes long; delete it to make a new one (this logs everyone out)",
                    path.display()
                ),
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Self::create(&path),
            Err(e) => Err(e),
        }
    }

    fn create(path: &Path) -> std::io::Result<SessionSecret> {
        let mut key = [0u8; SECRET_LEN];
        getrandom::getrandom(&mut key).map_err(std::io::Error::other)?;
        crate::private_file::write(path, &key)?;
        Ok(SessionSecret(key))
    }

    /// A fingerprint that changes when the secret changes (for reload logs; not secret).
    pub fn differs_from(&self, other: &SessionSecret) -> bool {
        !bool::from(self.0.ct_eq(&other.0))
    }
}

/// Signs and checks session cookies for one (secret, password hash) pair.
pub struct SessionKeys {
    /// HMAC-SHA256 with the key already absorbed: cloning it per cookie saves
    /// the two key blocks' compressions on every request.
    keyed: HmacSha256,
    lifetime: Duration,
    idle: Duration,
}

/// A valid session, as found in a cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Session {
    pub id: [u8; 12],
    pub issued: u64,
    pub seen: u64,
}

impl SessionKeys {
    pub fn new(
        secret: &SessionSecret,
        password: &PasswordHash,
        lifetime: Duration,
        idle: Duration,
    ) -> SessionKeys {
        let mut mac = hmac_with(&secret.0);
        mac.update(b"notebookd session v1\0");
        mac.update(password.as_str().as_bytes());
        let mac_key: [u8; 32] = mac.finalize().into_bytes().into();
        SessionKeys {
            keyed: hmac_with(&mac_key),
            lifetime,
            idle,
        }
    }

    fn mac(&self, payload: &str) -> [u8; 32] {
        let mut mac = self.keyed.clone();
        mac.update(payload.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A new session starting now.
    pub fn start(&self) -> Result<Session, getrandom::Error> {
        let mut id = [0u8; 12];
        getrandom::getrandom(&mut id)?;
        let now = unix_now();
        Ok(Session {
            id,
            issued: now,
            seen: now,
        })
    }

    /// The cookie value for `session`.
    pub fn encode(&self, session: &Session) -> String {
        let payload = format!(
            "{:x}.{:x}.{}",
            session.issued,
            session.seen,
            hex::encode(session.id)
        );
        let mac = URL_SAFE_NO_PAD.encode(self.mac(&payload));
        format!("{payload}.{mac}")
    }

    /// The session in a cookie value, if it is authentic and not expired.
    pub fn decode(&self, value: &str, now: u64) -> Option<Session> {
        let (payload, mac_b64) = value.rsplit_once('.')?;
        // Decoded on the stack: this runs for every proxied request.
        let mut mac = [0u8; 48];
        let len = URL_SAFE_NO_PAD.decode_slice(mac_b64, &mut mac).ok()?;
        if !bool::from(self.mac(payload).as_slice().ct_eq(&mac[..len])) {
            return None;
        }
        let mut parts = payload.split('.');
        let issued = u64::from_str_radix(parts.next()?, 16).ok()?;
        let seen = u64::from_str_radix(parts.next()?, 16).ok()?;
        let mut id = [0u8; 12];
        hex::decode_to_slice(parts.next()?, &mut id).ok()?;
        if parts.next().is_some() {
            return None;
        }
        // A clock that went backwards a little is tolerated; one from the future is not.
        if issued > now + 300 || seen > now + 300 || seen < issued {
            return None;
        }
        // The idle timeout is the session record's to check: it knows when
        // the session was last seen.
        if now.saturating_sub(issued) >= self.lifetime.as_secs() {
            return None;
        }
        Some(Session { id, issued, seen })
    }

    /// The absolute lifetime and the idle timeout, in seconds.
    pub fn limits(&self) -> (u64, u64) {
        (self.lifetime.as_secs(), self.idle.as_secs())
    }

    /// Seconds until the session ends at the latest (for the cookie's Max-Age).
    pub fn max_age(&self, session: &Session, now: u64) -> u64 {
        (session.issued + self.lifetime.as_secs()).saturating_sub(now)
    }
}

/// HMAC-SHA256 keyed with a 32-byte key. HMAC zero-pads short keys to the
/// block size, so padding here gives the same MAC without a fallible constructor.
fn hmac_with(key: &[u8; 32]) -> HmacSha256 {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    <HmacSha256 as hmac::digest::KeyInit>::new(&block.into())
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(hash: &str) -> SessionKeys {
        let secret = SessionSecret([7u8; 32]);
        SessionKeys::new(
            &secret,
            &hash.parse().unwrap(),
            Duration::from_secs(3600),
            Duration::from_secs(600),
        )
    }

    const H1: &str = "sha1:0e112c3ddfce:a68df677475c2b47b6e86d0467eec97ac5f4b85a";
    const H2: &str = "sha1:b55e52fb1d4a:a9958bcd1448241def76274ddde5784197ffa5de";

    #[test]
    fn round_trip_and_tamper() {
        let k = keys(H1);
        let s = k.start().unwrap();
        let v = k.encode(&s);
        assert_eq!(k.decode(&v, s.issued), Some(s));
        let mut tampered = v.clone().into_bytes();
        tampered[0] = if tampered[0] == b'1' { b'2' } else { b'1' };
        assert_eq!(
            k.decode(std::str::from_utf8(&tampered).unwrap(), s.issued),
            None
        );
        assert_eq!(k.decode("garbage", s.issued), None);
        assert_eq!(k.decode("", s.issued), None);
    }

    #[test]
    fn cookie_mac_is_hmac_sha256_with_the_derived_key() {
        // Computed independently of SessionKeys: cookies issued by any
        // version with the same secret and password keep verifying.
        let mut derive = HmacSha256::new_from_slice(&[7u8; 32]).unwrap();
        derive.update(b"notebookd session v1\0");
        derive.update(H1.as_bytes());
        let key = derive.finalize().into_bytes();
        let s = Session {
            id: [0xab; 12],
            issued: 0x6500_0000,
            seen: 0x6500_0010,
        };
        let payload = "65000000.65000010.abababababababababababab";
        let mut mac = HmacSha256::new_from_slice(&key).unwrap();
        mac.update(payload.as_bytes());
        let expected = format!(
            "{payload}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        let k = keys(H1);
        assert_eq!(k.encode(&s), expected);
        assert_eq!(k.decode(&expected, s.seen), Some(s));
        // A MAC of the wrong length, or one that is too long to decode, is refused.
        let short = &expected[..expected.len() - 4];
        assert_eq!(k.decode(short, s.seen), None);
        let long = format!("{expected}{}", "A".repeat(80));
        assert_eq!(k.decode(&long, s.seen), None);
    }

    #[test]
    fn new_password_ends_sessions() {
        let s = keys(H1).start().unwrap();
        let v = keys(H1).encode(&s);
        assert_eq!(keys(H2).decode(&v, s.issued), None);
    }

    #[test]
    fn expiry_absolute() {
        let k = keys(H1);
        let s = k.start().unwrap();
        let v = k.encode(&s);
        // Idle is the session record's business (see sessions.rs).
        assert!(k.decode(&v, s.issued + 600).is_some());
        let late = Session {
            seen: s.issued + 3500,
            ..s
        };
        assert!(k.decode(&k.encode(&late), s.issued + 3599).is_some());
        assert!(
            k.decode(&k.encode(&late), s.issued + 3600).is_none(),
            "absolute"
        );
    }
}
