//! sd_notify as systemd sees it: the test is the notify socket.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{Notebookd, Options};

/// Collects notify datagrams, each with whether Jupyter answered at that moment.
struct NotifySocket {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let m = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                m.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        NotifySocket {
            _dir: dir,
            path,
            messages,
        }
    }

    fn all(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.all().iter().any(|m| m.lines().any(|l| l == needle)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

/// GET /api straight on Jupyter's socket: does Jupyter answer?
fn jupyter_answers(socket: &std::path::Path) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    if s.write_all(b"GET /api HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

#[test]
fn ready_only_once_jupyter_answers_and_stopping_on_sigterm() {
    let notify = NotifySocket::new();
    let mut n = Notebookd::start_with(Options {
        env: vec![("NOTIFY_SOCKET".into(), notify.path.display().to_string())],
        wait_ready: false,
        ..Options::default()
    });
    let socket = n.jupyter_socket();
    // Sample Jupyter's socket until READY=1 arrives: it must answer by then.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut answered_before_ready = false;
    while Instant::now() < deadline {
        let ready = notify
            .all()
            .iter()
            .any(|m| m.lines().any(|l| l == "READY=1"));
        if ready {
            assert!(
                jupyter_answers(&socket),
                "READY=1 sent while Jupyter does not answer"
            );
            break;
        }
        answered_before_ready |= jupyter_answers(&socket);
        std::thread::sleep(Duration::from_millis(20));
    }
    let msgs = notify.all();
    let ready_at = msgs
        .iter()
        .position(|m| m.lines().any(|l| l == "READY=1"))
        .expect("READY=1 within 90s");
    let starting_at = msgs
        .iter()
        .position(|m| m.contains("STATUS=starting Jupyter"))
        .expect("a STATUS while starting");
    assert!(starting_at < ready_at, "{msgs:?}");
    let _ = answered_before_ready;

    assert_eq!(n.stop(), Some(0));
    assert!(
        notify.wait_for("STOPPING=1", Duration::from_secs(5)),
        "{:?}",
        notify.all()
    );
}

#[test]
fn no_ready_while_jupyter_cannot_start() {
    let notify = NotifySocket::new();
    let dir = tempfile::tempdir().unwrap();
    // A "jupyter" that is not one: detection fails, the daemon keeps retrying.
    let fake = dir.path().join("jupyter");
    std::fs::write(&fake, "#!/bin/sh\necho 'no jupyter here' >&2\nexit 3\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut n = Notebookd::start_with(Options {
        env: vec![("NOTIFY_SOCKET".into(), notify.path.display().to_string())],
        jupyter_command: Some(fake.display().to_string()),
        wait_ready: false,
        ..Options::default()
    });
    n.wait_log("Jupyter failed", Duration::from_secs(20));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !notify
            .all()
            .iter()
            .any(|m| m.lines().any(|l| l == "READY=1")),
        "{:?}",
        notify.all()
    );
    assert!(
        notify
            .all()
            .iter()
            .any(|m| m.contains("STATUS=Jupyter failed")),
        "{:?}",
        notify.all()
    );
    // Meanwhile a logged-in user gets a clear 503 rather than a hang.
    let b = n.blocking_client();
    let r = b.get(n.url("_notebookd/health")).send().unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(n.stop(), Some(0));
}
