//! Supervision of the real Jupyter child: restart after a crash, and
//! nothing left behind at shutdown.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::json;

use crate::support::{Notebookd, eventually, processes_matching};

fn jupyter_pid(n: &Notebookd) -> i32 {
    let dir = n.dir.path().display().to_string();
    let found: Vec<i32> = processes_matching(&dir)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("jupyter") && cmd.contains("--config="))
        .map(|(pid, _)| pid)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one Jupyter server for this instance: {found:?}"
    );
    found[0]
}

fn kernels_of(n: &Notebookd) -> Vec<i32> {
    let dir = n.dir.path().display().to_string();
    processes_matching(&dir)
        .into_iter()
        .filter(|(_, cmd)| cmd.contains("ipykernel_launcher"))
        .map(|(pid, _)| pid)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_jupyter_is_restarted_and_its_kernels_stopped() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let kernel = b
        .send_json(Method::POST, "api/kernels", &json!({"name": "python3"}))
        .await;
    assert_eq!(kernel.status(), 201);
    assert!(eventually(Duration::from_secs(20), async || !kernels_of(&n).is_empty()).await);

    let old = jupyter_pid(&n);
    kill(Pid::from_raw(old), Signal::SIGKILL).unwrap();

    let back = eventually(Duration::from_secs(60), async || {
        b.get("api/contents").await.status() == 200
            && processes_matching(&n.dir.path().display().to_string())
                .iter()
                .any(|(p, c)| *p != old && c.contains("--config="))
    })
    .await;
    assert!(back, "the API did not come back; log:\n{}", n.log_text());
    assert_ne!(jupyter_pid(&n), old);
    assert!(
        eventually(Duration::from_secs(10), async || kernels_of(&n).is_empty()).await,
        "the crashed Jupyter's kernel is still running: {:?}",
        kernels_of(&n)
    );
    let log = n.log_text();
    assert!(
        log.contains("Jupyter failed: it exited while running (signal: 9 (SIGKILL))"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_jupyter_and_its_kernels() {
    let mut n = Notebookd::start();
    let b = n.logged_in().await;
    for _ in 0..2 {
        let k = b
            .send_json(Method::POST, "api/kernels", &json!({"name": "python3"}))
            .await;
        assert_eq!(k.status(), 201);
    }
    assert!(eventually(Duration::from_secs(30), async || kernels_of(&n).len() == 2).await);
    let dir = n.dir.path().display().to_string();
    assert!(!processes_matching(&dir).is_empty());

    let code = n.stop();
    assert_eq!(code, Some(0), "exit code; log:\n{}", n.log_text());
    let left: Vec<_> = processes_matching(&dir);
    assert!(left.is_empty(), "processes left behind: {left:?}");
    let log = n.log_text();
    assert!(
        log.contains("SIGTERM: shutting down") && log.contains("Jupyter stopped"),
        "{log}"
    );
    assert!(!n.runtime_dir().join("control.sock").exists());
}
