//! API tokens, as Jupyter's clients send them (`Authorization: token T`,
//! `Bearer T`, `?token=T`): the file `STATE_DIR/tokens.json` that `nbctl
//! token` edits, and the daemon's table of it.
//!
//! A token is 32 random bytes shown once as 64 hex digits; the file keeps
//! only its SHA-256 (a 256-bit random value needs no slow hash), so reading
//! the file does not give a token away. Checking a presented token is one
//! SHA-256 and a constant-time comparison with each stored hash: no argon2
//! and no file I/O per request. The daemon notices a changed file within a
//! second ([`TokenTable::reload_if_changed`]); a token that disappears
//! (revoked) or expires ends its open connections.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::session::unix_now;
use super::sessions::Ending;

/// The file in `server.state_dir`.
pub const TOKENS_FILE: &str = "tokens.json";
/// More tokens than this is a mistake, not a use.
pub const MAX_TOKENS: usize = 256;
const MAX_FILE_BYTES: u64 = 1024 * 1024;
const TOKEN_BYTES: usize = 32;

/// One token as the file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TokenEntry {
    pub name: String,
    /// Hex SHA-256 of the token text.
    pub sha256: String,
    pub created: u64,
    pub expires: Option<u64>,
}

/// The tokens file.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct TokensFile {
    pub version: u32,
    pub tokens: Vec<TokenEntry>,
}

/// Why the tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a tokens file ({why}); move it away and create the tokens again with `nbctl token create`"
    )]
    Corrupt { path: PathBuf, why: String },
}

impl TokensFile {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(TOKENS_FILE)
    }

    /// Reads the file; a missing file has no tokens.
    pub fn read(path: &Path) -> Result<TokensFile, TokenFileError> {
        let read = |source| TokenFileError::Read {
            path: path.to_owned(),
            source,
        };
        let corrupt = |why: String| TokenFileError::Corrupt {
            path: path.to_owned(),
            why,
        };
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(TokensFile {
                    version: 1,
                    tokens: Vec::new(),
                });
            }
            Err(e) => return Err(read(e)),
        };
        if meta.len() > MAX_FILE_BYTES {
            return Err(corrupt(format!("{} bytes is too long", meta.len())));
        }
        let bytes = std::fs::read(path).map_err(read)?;
        let file: TokensFile =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
        if file.version != 1 {
            return Err(corrupt(format!("unknown version {}", file.version)));
        }
        Ok(file)
    }

    /// The file's text.
    pub fn to_text(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }
}

/// A new random token (64 hex digits) and its entry.
pub fn new_token(
    name: &str,
    expires: Option<u64>,
) -> Result<(String, TokenEntry), getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::getrandom(&mut bytes)?;
    let token = hex::encode(bytes);
    let entry = TokenEntry {
        name: name.to_string(),
        sha256: hex::encode(Sha256::digest(token.as_bytes())),
        created: unix_now(),
        expires,
    };
    Ok((token, entry))
}

/// A name `nbctl token create` accepts: it appears in logs and listings.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

struct Known {
    name: String,
    digest: [u8; 32],
    expires: Option<u64>,
    last_used: u64,
    live: Arc<Ending>,
}

/// A token that was accepted: its name, and the signal that ends its connections.
#[derive(Clone)]
pub struct TokenUse {
    pub name: String,
    pub ending: Arc<Ending>,
}

/// The daemon's tokens, reloaded when the file changes.
pub struct TokenTable {
    path: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    known: Vec<Known>,
    /// (mtime ns, size, inode) of the file last read.
    stamp: Option<(i128, u64, u64)>,
}

/// What a reload changed, for the log and for ending sessions.
#[derive(Debug, Default)]
pub struct TokenChanges {
    pub added: Vec<String>,
    pub removed: Vec<String>,
}

impl TokenTable {
    pub fn load(state_dir: &Path) -> TokenTable {
        let t = TokenTable {
            path: TokensFile::path(state_dir),
            inner: Mutex::new(Inner::default()),
        };
        if let Err(e) = t.reload_if_changed() {
            tracing::error!("{e}; no API token is accepted until it is fixed");
        }
        t
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stamp(&self) -> Option<(i128, u64, u64)> {
        let m = std::fs::metadata(&self.path).ok()?;
        Some((
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            m.size(),
            m.ino(),
        ))
    }

    /// Re-reads the file if it changed (a `stat` otherwise). Tokens that
    /// are gone end their connections. On a broken file every token is
    /// refused (a revocation must never be undone by a bad edit).
    pub fn reload_if_changed(&self) -> Result<TokenChanges, TokenFileError> {
        let stamp = self.stamp();
        if stamp == self.lock().stamp && stamp.is_some() {
            return Ok(TokenChanges::default());
        }
        let read = TokensFile::read(&self.path);
        let mut inner = self.lock();
        inner.stamp = stamp;
        let entries = match read {
            Ok(f) => f.tokens,
            Err(e) => {
                for k in inner.known.drain(..) {
                    k.live.end_now();
                }
                return Err(e);
            }
        };
        let mut changes = TokenChanges::default();
        let mut old: HashMap<[u8; 32], Known> =
            inner.known.drain(..).map(|k| (k.digest, k)).collect();
        for e in entries.into_iter().take(MAX_TOKENS) {
            let mut digest = [0u8; 32];
            if hex::decode_to_slice(&e.sha256, &mut digest).is_err() {
                tracing::warn!(
                    "token {:?} in {} has a malformed hash; it is ignored",
                    e.name,
                    self.path.display()
                );
                continue;
            }
            let known = match old.remove(&digest) {
                Some(mut k) => {
                    k.name = e.name;
                    k.expires = e.expires;
                    k
                }
                None => {
                    changes.added.push(e.name.clone());
                    Known {
                        name: e.name,
                        digest,
                        expires: e.expires,
                        last_used: 0,
                        live: Ending::new_live(),
                    }
                }
            };
            inner.known.push(known);
        }
        for (_, k) in old {
            k.live.end_now();
            changes.removed.push(k.name);
        }
        // Sorted, so the log line does not depend on hash order.
        changes.removed.sort();
        Ok(changes)
    }

    /// The token `presented`, if it is one of ours and has not expired.
    pub fn check(&self, presented: &str, now: u64) -> Option<TokenUse> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut inner = self.lock();
        // Every stored hash is compared, in constant time.
        let mut found = None;
        for (i, k) in inner.known.iter().enumerate() {
            if bool::from(k.digest.ct_eq(&digest)) {
                found = Some(i);
            }
        }
        let k = inner.known.get_mut(found?)?;
        if k.expires.is_some_and(|e| now >= e) {
            return None;
        }
        k.last_used = now;
        Some(TokenUse {
            name: k.name.clone(),
            ending: k.live.clone(),
        })
    }

    /// Ends the connections of tokens that expired; their names.
    pub fn sweep(&self, now: u64) -> Vec<String> {
        let mut ended = Vec::new();
        for k in &self.lock().known {
            if k.expires.is_some_and(|e| now >= e) && !k.live.is_ended() {
                k.live.end_now();
                ended.push(k.name.clone());
            }
        }
        ended
    }

    /// name → (last used, open WebSockets), for `nbctl token list`.
    pub fn usage(&self) -> Vec<(String, u64, usize)> {
        self.lock()
            .known
            .iter()
            .map(|k| (k.name.clone(), k.last_used, k.live.open_websockets()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, entries: &[TokenEntry]) {
        let f = TokensFile {
            version: 1,
            tokens: entries.to_vec(),
        };
        std::fs::write(TokensFile::path(dir), f.to_text()).unwrap();
    }

    #[test]
    fn tokens_are_checked_by_hash_expire_and_are_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let (t1, e1) = new_token("ci", None).unwrap();
        let (t2, e2) = new_token("old", Some(1000)).unwrap();
        assert_eq!(t1.len(), 64);
        assert!(!e1.sha256.contains(&t1));
        write(dir.path(), &[e1.clone(), e2]);
        let table = TokenTable::load(dir.path());
        let now = unix_now();
        let used = table.check(&t1, now).unwrap();
        assert_eq!(used.name, "ci");
        assert!(table.check(&t2, now).is_none(), "expired");
        assert!(table.check("nope", now).is_none());
        assert!(table.check(&t1[..63], now).is_none());

        // Revoked: the file loses it, and its connections end.
        write(dir.path(), &[]);
        // A rewrite within the same mtime tick still differs in size.
        let changes = table.reload_if_changed().unwrap();
        assert_eq!(changes.removed, ["ci", "old"]);
        assert!(used.ending.is_ended());
        assert!(table.check(&t1, now).is_none());

        std::fs::write(TokensFile::path(dir.path()), "{garbage").unwrap();
        assert!(table.reload_if_changed().is_err());
        write(dir.path(), &[e1]);
        assert!(table.reload_if_changed().is_ok());
        assert!(table.check(&t1, now).is_some());
    }

    #[test]
    fn names() {
        assert!(valid_name("vscode-laptop_2"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name(&"x".repeat(65)));
    }
}
