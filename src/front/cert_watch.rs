//! Hot reload of certificate files: watches the directories of `tls.cert`
//! and `tls.key` with inotify and swaps a new pair into the served
//! [`LiveCert`](super::tls::LiveCert) once both files parse and belong
//! together. New connections get the new certificate; open connections
//! and WebSockets keep the one they negotiated.
//!
//! Directories, not files, are watched: `nbctl cert install` and most tools
//! replace a file by renaming a new one over it, and certbot renews by
//! re-pointing the symlinks in `/etc/letsencrypt/live/NAME/` at new files in
//! `archive/`; a watch on the old file would see neither. The directories of
//! the symlinks' targets are watched too, so a target rewritten in place is
//! seen. A half-written or mismatched pair is refused with a log line and the
//! served certificate stays; the event that completes the pair swaps it in.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use inotify::{EventStream, Inotify, WatchMask};

use super::App;
use super::tls::{self, ServedCert, TlsError};

/// Writers (cp, an editor, certbot) touch a file several times in a row;
/// wait for this much quiet before reading the pair.
const SETTLE: Duration = Duration::from_millis(300);
/// However busy the directory, read the pair at least this often while events come.
const SETTLE_AT_MOST: Duration = Duration::from_secs(3);
/// How often the watched directories are compared with the config (a reload
/// may point `tls.cert` elsewhere) and a failed watch set-up is retried.
const RECHECK: Duration = Duration::from_secs(30);

/// What a look at the files found.
pub enum FilesOutcome {
    /// TLS is off, or the files hold the certificate already served.
    Unchanged,
    /// A new pair is served to new connections.
    Swapped(Arc<ServedCert>),
}

/// Loads the configured pair and serves it if it is new. On error the served
/// certificate stays.
pub fn swap_in_files(app: &App) -> Result<FilesOutcome, TlsError> {
    let settings = app.settings();
    let Some(live) = &settings.live_cert else {
        return Ok(FilesOutcome::Unchanged);
    };
    if settings.config.tls.acme.enabled {
        // ACME's certificate, not the files, is served.
        return Ok(FilesOutcome::Unchanged);
    }
    let (cert_path, key_path) = (&settings.config.tls.cert, &settings.config.tls.key);
    let key = tls::load_certified_key(cert_path, key_path)?;
    if live.serves(&key) {
        return Ok(FilesOutcome::Unchanged);
    }
    live.replace(ServedCert::from_files(key, cert_path, key_path));
    Ok(FilesOutcome::Swapped(live.current()))
}

/// The directories to watch for the current config (empty with TLS off).
fn watched_dirs(app: &App) -> BTreeSet<PathBuf> {
    let settings = app.settings();
    let mut dirs = BTreeSet::new();
    if settings.live_cert.is_none() || settings.config.tls.acme.enabled {
        return dirs;
    }
    for file in [&settings.config.tls.cert, &settings.config.tls.key] {
        let file: &Path = file;
        let targets = [Some(file.to_path_buf()), std::fs::canonicalize(file).ok()];
        for path in targets.into_iter().flatten() {
            if let Some(dir) = path.parent() {
                let dir = if dir.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    dir
                };
                dirs.insert(dir.to_path_buf());
            }
        }
    }
    dirs
}

fn log_outcome(outcome: Result<FilesOutcome, TlsError>) {
    match outcome {
        Ok(FilesOutcome::Unchanged) => {}
        Ok(FilesOutcome::Swapped(served)) => {
            let (subject, serial, until) = match &served.leaf {
                Some(leaf) => (
                    leaf.subject.as_str(),
                    leaf.serial.as_str(),
                    time::OffsetDateTime::from_unix_timestamp(leaf.not_after)
                        .ok()
                        .and_then(|t| {
                            t.format(&time::format_description::well_known::Rfc3339)
                                .ok()
                        })
                        .unwrap_or_default(),
                ),
                None => ("?", "?", String::new()),
            };
            tracing::info!(
                "new certificate from {}: {subject}, serial {serial}, valid until {until}; new connections get it, open ones keep theirs",
                served.source
            );
        }
        Err(e) => tracing::warn!(
            "the certificate files changed but were not swapped in, the served certificate stays: {e}"
        ),
    }
}

/// Sets up an inotify instance watching `dirs`; `None` if no directory could be watched.
fn watch(dirs: &BTreeSet<PathBuf>) -> Option<EventStream<Vec<u8>>> {
    let inotify = match Inotify::init() {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(
                "cannot watch the certificate files (inotify: {e}); new files need `systemctl reload notebook`"
            );
            return None;
        }
    };
    let mask = WatchMask::CLOSE_WRITE
        | WatchMask::MOVED_TO
        | WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::ATTRIB;
    let mut watching = 0;
    for dir in dirs {
        match inotify.watches().add(dir, mask) {
            Ok(_) => watching += 1,
            Err(e) => tracing::warn!(
                "cannot watch {} for new certificate files ({e}); new files there need `systemctl reload notebook`",
                dir.display()
            ),
        }
    }
    if watching == 0 {
        return None;
    }
    match inotify.into_event_stream(vec![0u8; 4096]) {
        Ok(stream) => Some(stream),
        Err(e) => {
            tracing::warn!("cannot poll the certificate file watch ({e})");
            None
        }
    }
}

/// Waits for the next event; false if the watch broke.
async fn next_event(events: &mut EventStream<Vec<u8>>) -> bool {
    let next = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *events).poll_next(cx));
    matches!(next.await, Some(Ok(_)))
}

/// Watches the certificate files for as long as the daemon runs.
pub async fn run(app: Arc<App>) {
    loop {
        let dirs = watched_dirs(&app);
        let Some(mut fd) = (if dirs.is_empty() { None } else { watch(&dirs) }) else {
            tokio::time::sleep(RECHECK).await;
            continue;
        };
        loop {
            match tokio::time::timeout(RECHECK, next_event(&mut fd)).await {
                Ok(true) => {}
                Ok(false) => {
                    tokio::time::sleep(RECHECK).await;
                    break;
                }
                Err(_quiet) => {
                    if watched_dirs(&app) != dirs {
                        break;
                    }
                    continue;
                }
            }
            let settle_until = tokio::time::Instant::now() + SETTLE_AT_MOST;
            while tokio::time::Instant::now() < settle_until {
                let quiet = tokio::time::timeout(SETTLE, next_event(&mut fd));
                match quiet.await {
                    Ok(true) => continue,
                    Ok(false) | Err(_) => break,
                }
            }
            log_outcome(swap_in_files(&app));
            if watched_dirs(&app) != dirs {
                break;
            }
        }
    }
}
