//! The server-side session table: one record per login (created, last
//! seen, client address, user agent, how it logged in), keyed by the random
//! id that the signed cookie carries ([`super::session`]).
//!
//! The table is the truth: a cookie whose record is gone (logout, `nbctl
//! sessions revoke`, a new password, its lifetime) is refused, also after a
//! restart, because the table is persisted in `STATE_DIR/sessions.json`
//! (0600, written atomically, bounded, expired records dropped). Each record
//! owns an [`Ending`] signal: ending the session fires it, and every live
//! connection of the session (WebSockets, requests waiting for Jupyter)
//! watches it and closes.
//!
//! Requests only touch memory: the file is written by [`SessionTable::save`],
//! which the daemon calls from a background task at most once a second and
//! only when something worth keeping changed (a login, an end, or a
//! last-seen time that moved by a minute).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::session::unix_now;

/// The file in `server.state_dir`.
pub const SESSIONS_FILE: &str = "sessions.json";
/// At most this many sessions are kept; a new login beyond it ends the
/// session seen least recently (a login flood cannot grow the file).
pub const MAX_SESSIONS: usize = 4096;
/// A user agent is kept up to this many bytes.
const MAX_USER_AGENT: usize = 200;
/// A last-seen time that moved less than this is not worth a write.
const SEEN_GRANULARITY: u64 = 60;
/// The sessions file is refused beyond this size (it holds at most
/// `MAX_SESSIONS` records of a few hundred bytes).
const MAX_FILE_BYTES: u64 = 8 * 1024 * 1024;

/// How a session was started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    Password,
    /// Exchanged for the API token of this name (a `?token=` link).
    Token(String),
}

/// The live side of a session: the signal that ends its connections and
/// the count of its open WebSockets.
#[derive(Debug)]
pub struct Ending {
    ended: watch::Sender<bool>,
    websockets: AtomicUsize,
}

impl Ending {
    pub fn new_live() -> Arc<Ending> {
        Arc::new(Ending {
            ended: watch::Sender::new(false),
            websockets: AtomicUsize::new(0),
        })
    }

    /// Ends it: every connection watching [`Ending::ended`] closes.
    pub fn end_now(&self) {
        self.ended.send_replace(true);
    }

    pub fn is_ended(&self) -> bool {
        *self.ended.borrow()
    }

    /// Finishes when the session ends (at once if it has ended).
    pub async fn ended(&self) {
        let mut rx = self.ended.subscribe();
        // `wait_for` fails only when the sender is gone, which `self` holds.
        let _ = rx.wait_for(|ended| *ended).await;
    }

    /// Counts a WebSocket of the session while the guard lives.
    pub fn websocket(self: &Arc<Self>) -> WebSocketGuard {
        self.websockets.fetch_add(1, Ordering::Relaxed);
        WebSocketGuard(self.clone())
    }

    pub fn open_websockets(&self) -> usize {
        self.websockets.load(Ordering::Relaxed)
    }
}

/// Keeps a WebSocket counted in its session; see [`Ending::websocket`].
pub struct WebSocketGuard(Arc<Ending>);

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.0.websockets.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One session's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub created: u64,
    pub last_seen: u64,
    pub client: String,
    pub user_agent: String,
    pub via: Via,
    /// The last-seen time as last written to the file.
    #[serde(skip)]
    saved_seen: u64,
    #[serde(skip, default = "Ending::new_live")]
    live: Arc<Ending>,
}

/// A session as `nbctl sessions list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub created: u64,
    pub last_seen: u64,
    pub client: String,
    pub user_agent: String,
    pub via: Via,
    pub websockets: usize,
}

#[derive(Serialize, Deserialize)]
struct SessionsFile {
    version: u32,
    /// Hex id → record.
    sessions: HashMap<String, Record>,
}

/// Why a request's session is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No record: never started here, ended, or revoked.
    Unknown,
    Expired,
}

/// The server-side sessions; see the module documentation.
pub struct SessionTable {
    path: Option<PathBuf>,
    records: Mutex<HashMap<[u8; 12], Record>>,
    dirty: AtomicBool,
}

impl SessionTable {
    /// A table that is never written (for tests of other modules).
    pub fn in_memory() -> SessionTable {
        SessionTable {
            path: None,
            records: Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(false),
        }
    }

    /// Loads `STATE_DIR/sessions.json`, dropping expired records. A missing
    /// file is an empty table; an unreadable or corrupt one is logged and
    /// replaced by an empty table (everyone logs in again): never a reason
    /// not to start.
    pub fn load(state_dir: &Path, lifetime: u64, idle: u64) -> SessionTable {
        let path = state_dir.join(SESSIONS_FILE);
        let records = match read_file(&path) {
            Ok(Some(file)) => {
                let now = unix_now();
                file.sessions
                    .into_iter()
                    .filter_map(|(id, mut r)| {
                        let mut key = [0u8; 12];
                        hex::decode_to_slice(&id, &mut key).ok()?;
                        r.saved_seen = r.last_seen;
                        alive(&r, now, lifetime, idle).then_some((key, r))
                    })
                    .take(MAX_SESSIONS)
                    .collect()
            }
            Ok(None) => HashMap::new(),
            Err(why) => {
                tracing::error!(
                    "cannot use the session table {}: {why}; starting with no sessions (everyone logs in again)",
                    path.display()
                );
                HashMap::new()
            }
        };
        SessionTable {
            path: Some(path),
            dirty: AtomicBool::new(true),
            records: Mutex::new(records),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; 12], Record>> {
        // Nothing panics while holding it; a poisoned table is still consistent.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn changed(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    /// Records a new session. Beyond [`MAX_SESSIONS`], the session seen
    /// least recently ends.
    pub fn insert(&self, id: [u8; 12], now: u64, client: String, user_agent: &str, via: Via) {
        let mut user_agent = user_agent.to_string();
        if user_agent.len() > MAX_USER_AGENT {
            let mut cut = MAX_USER_AGENT;
            while !user_agent.is_char_boundary(cut) {
                cut -= 1;
            }
            user_agent.truncate(cut);
        }
        let mut records = self.lock();
        if records.len() >= MAX_SESSIONS {
            if let Some(oldest) = records
                .iter()
                .min_by_key(|(_, r)| r.last_seen)
                .map(|(id, _)| *id)
            {
                if let Some(r) = records.remove(&oldest) {
                    r.live.end_now();
                }
            }
        }
        records.insert(
            id,
            Record {
                created: now,
                last_seen: now,
                client,
                user_agent,
                via,
                saved_seen: now,
                live: Ending::new_live(),
            },
        );
        drop(records);
        self.changed();
    }

    /// The live side of session `id` if it is valid now, marking it seen.
    /// An expired session ends here (its record goes).
    pub fn enter(
        &self,
        id: &[u8; 12],
        now: u64,
        lifetime: u64,
        idle: u64,
    ) -> Result<Arc<Ending>, Refused> {
        let mut records = self.lock();
        let Some(r) = records.get_mut(id) else {
            return Err(Refused::Unknown);
        };
        if !alive(r, now, lifetime, idle) {
            if let Some(r) = records.remove(id) {
                r.live.end_now();
            }
            drop(records);
            self.changed();
            return Err(Refused::Expired);
        }
        r.last_seen = r.last_seen.max(now);
        let worth_saving = r.last_seen.saturating_sub(r.saved_seen) >= SEEN_GRANULARITY;
        let live = r.live.clone();
        drop(records);
        if worth_saving {
            self.changed();
        }
        Ok(live)
    }

    /// Ends session `id`; `true` if it existed.
    pub fn end(&self, id: &[u8; 12]) -> bool {
        let removed = self.lock().remove(id);
        match removed {
            Some(r) => {
                r.live.end_now();
                self.changed();
                true
            }
            None => false,
        }
    }

    /// Ends the sessions whose hex id starts with `prefix` (at least 6
    /// characters, so that a typo does not end many); returns how many.
    pub fn end_matching(&self, prefix: &str) -> usize {
        let prefix = prefix.to_ascii_lowercase();
        let mut records = self.lock();
        let ids: Vec<[u8; 12]> = records
            .keys()
            .filter(|id| hex::encode(id).starts_with(&prefix))
            .copied()
            .collect();
        for id in &ids {
            if let Some(r) = records.remove(id) {
                r.live.end_now();
            }
        }
        drop(records);
        if !ids.is_empty() {
            self.changed();
        }
        ids.len()
    }

    /// Ends the sessions started with the token `name`.
    pub fn end_via_token(&self, name: &str) -> usize {
        let mut records = self.lock();
        let before = records.len();
        records.retain(|_, r| {
            let keep = !matches!(&r.via, Via::Token(n) if n == name);
            if !keep {
                r.live.end_now();
            }
            keep
        });
        let ended = before - records.len();
        drop(records);
        if ended > 0 {
            self.changed();
        }
        ended
    }

    /// Ends every session (a new password or session key); returns how many.
    pub fn end_all(&self) -> usize {
        let ended: Vec<Record> = self.lock().drain().map(|(_, r)| r).collect();
        for r in &ended {
            r.live.end_now();
        }
        self.changed();
        ended.len()
    }

    /// Ends the sessions past their lifetime or idle timeout, so that their
    /// open connections close even when no request comes.
    pub fn sweep(&self, now: u64, lifetime: u64, idle: u64) -> usize {
        let mut records = self.lock();
        let before = records.len();
        records.retain(|_, r| {
            let keep = alive(r, now, lifetime, idle);
            if !keep {
                r.live.end_now();
            }
            keep
        });
        let ended = before - records.len();
        drop(records);
        if ended > 0 {
            self.changed();
        }
        ended
    }

    /// The sessions, most recently seen first.
    pub fn list(&self) -> Vec<SessionInfo> {
        let mut out: Vec<SessionInfo> = self
            .lock()
            .iter()
            .map(|(id, r)| SessionInfo {
                id: hex::encode(id),
                created: r.created,
                last_seen: r.last_seen,
                client: r.client.clone(),
                user_agent: r.user_agent.clone(),
                via: r.via.clone(),
                websockets: r.live.open_websockets(),
            })
            .collect();
        out.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.id.cmp(&b.id)));
        out
    }

    /// How many sessions are recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the table if it changed since the last write (blocking: call
    /// it on a blocking thread). On failure the table stays marked as
    /// changed and the next call tries again.
    pub fn save(&self) -> std::io::Result<bool> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let text = {
            let mut records = self.lock();
            for r in records.values_mut() {
                r.saved_seen = r.last_seen;
            }
            let file = SessionsFile {
                version: 1,
                sessions: records
                    .iter()
                    .map(|(id, r)| (hex::encode(id), r.clone()))
                    .collect(),
            };
            serde_json::to_vec(&file).map_err(std::io::Error::other)
        };
        let result = text.and_then(|text| crate::private_file::write(path, &text));
        if result.is_err() {
            self.changed();
        }
        result.map(|()| true)
    }
}

fn alive(r: &Record, now: u64, lifetime: u64, idle: u64) -> bool {
    now.saturating_sub(r.created) < lifetime && now.saturating_sub(r.last_seen) < idle
}

fn read_file(path: &Path) -> Result<Option<SessionsFile>, String> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "it is {} bytes long, more than it can be",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let file: SessionsFile =
        serde_json::from_slice(&bytes).map_err(|e| format!("it is not a session table ({e})"))?;
    if file.version != 1 {
        return Err(format!("unknown version {}", file.version));
    }
    Ok(Some(file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_a_restart_and_ends_do_too() {
        let dir = tempfile::tempdir().unwrap();
        let t = SessionTable::load(dir.path(), 3600, 600);
        let now = unix_now();
        t.insert([1; 12], now, "192.0.2.1".into(), "curl", Via::Password);
        t.insert(
            [2; 12],
            now,
            "192.0.2.2".into(),
            "x",
            Via::Token("ci".into()),
        );
        assert!(t.save().unwrap());
        assert!(!t.save().unwrap(), "nothing changed");
        let live = t.enter(&[1; 12], now, 3600, 600).unwrap();
        assert!(t.end(&[1; 12]));
        assert!(live.is_ended());
        t.save().unwrap();
        let mode = std::fs::metadata(dir.path().join(SESSIONS_FILE))
            .unwrap()
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );

        let again = SessionTable::load(dir.path(), 3600, 600);
        assert_eq!(
            again.enter(&[1; 12], now, 3600, 600).unwrap_err(),
            Refused::Unknown
        );
        assert!(again.enter(&[2; 12], now, 3600, 600).is_ok());
        assert_eq!(again.end_via_token("ci"), 1);
    }

    #[test]
    fn expiry_ends_the_session() {
        let t = SessionTable::in_memory();
        t.insert([3; 12], 1000, "c".into(), "", Via::Password);
        let live = t.enter(&[3; 12], 1500, 3600, 600).unwrap();
        // Seen at 1500: idle counts from there, not from the login.
        assert!(t.enter(&[3; 12], 2000, 3600, 600).is_ok());
        assert_eq!(t.sweep(2599, 3600, 600), 0);
        assert_eq!(t.sweep(2600, 3600, 600), 1);
        assert!(live.is_ended());
        t.insert([4; 12], 1000, "c".into(), "", Via::Password);
        assert_eq!(
            t.enter(&[4; 12], 4600, 3600, 6000).unwrap_err(),
            Refused::Expired
        );
    }

    #[test]
    fn garbage_and_truncated_files_give_an_empty_table() {
        let dir = tempfile::tempdir().unwrap();
        let t = SessionTable::load(dir.path(), 3600, 600);
        t.insert([5; 12], unix_now(), "c".into(), "", Via::Password);
        t.save().unwrap();
        let path = dir.path().join(SESSIONS_FILE);
        let text = std::fs::read(&path).unwrap();
        std::fs::write(&path, &text[..text.len() / 2]).unwrap();
        assert!(SessionTable::load(dir.path(), 3600, 600).is_empty());
        std::fs::write(&path, b"\x00\xffgarbage").unwrap();
        assert!(SessionTable::load(dir.path(), 3600, 600).is_empty());
    }

    #[test]
    fn the_table_is_bounded() {
        let t = SessionTable::in_memory();
        for i in 0..MAX_SESSIONS + 10 {
            let mut id = [0u8; 12];
            id[..8].copy_from_slice(&(i as u64).to_le_bytes());
            t.insert(
                id,
                1000 + i as u64,
                "c".into(),
                &"u".repeat(500),
                Via::Password,
            );
        }
        assert_eq!(t.len(), MAX_SESSIONS);
        assert!(
            t.list()
                .iter()
                .all(|s| s.user_agent.len() <= MAX_USER_AGENT)
        );
    }
}
