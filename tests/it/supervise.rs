//! Supervision of the real Jupyter child: restart after a crash, and
//! nothing left behind at shutdown.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::json;

use crate::support::{Notebookd, eventually, processes_matching};

pub(crate) fn jupyter_pid(n: &Notebookd) -> i32 {
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

pub(crate) fn kernels_of(n: &Notebookd) -> Vec<i32> {
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

/// A Jupyter that does not answer for 40 s (SIGSTOP, as a long synchronous
/// nbconvert would) is not killed: requests meanwhile get a 504 after
/// jupyter.response_timeout instead of hanging, and once it answers again
/// it serves with the same pid and the same kernel, as `nbctl status` says.
#[tokio::test(flavor = "multi_thread")]
async fn a_jupyter_frozen_for_40s_is_waited_for_not_killed() {
    let n = Notebookd::start_with(crate::support::Options {
        settings: vec![("jupyter", "response_timeout = \"5s\"".into())],
        ..crate::support::Options::default()
    });
    let b = n.logged_in().await;
    let kernel = b
        .send_json(Method::POST, "api/kernels", &json!({"name": "python3"}))
        .await;
    assert_eq!(kernel.status(), 201);
    assert!(eventually(Duration::from_secs(20), async || !kernels_of(&n).is_empty()).await);
    let kernels = kernels_of(&n);
    let server = jupyter_pid(&n);

    kill(Pid::from_raw(server), Signal::SIGSTOP).unwrap();
    let frozen = std::time::Instant::now();
    let r = b.get("api/contents").await;
    assert_eq!(r.status(), 504, "a request to a frozen Jupyter");
    assert!(frozen.elapsed() < Duration::from_secs(30));
    n.wait_log("did not answer a health check", Duration::from_secs(40));
    // The rest of the 40 s the scenario lasts.
    tokio::time::sleep(Duration::from_secs(40).saturating_sub(frozen.elapsed())).await;
    kill(Pid::from_raw(server), Signal::SIGCONT).unwrap();

    let back = eventually(Duration::from_secs(30), async || {
        b.get("api/contents").await.status() == 200
    })
    .await;
    assert!(back, "Jupyter did not serve again; log:\n{}", n.log_text());
    n.wait_log("answered again", Duration::from_secs(30));
    assert_eq!(jupyter_pid(&n), server, "Jupyter was restarted");
    assert_eq!(kernels_of(&n), kernels, "the kernel was lost");
    let log = n.log_text();
    assert!(!log.contains("Jupyter failed"), "{log}");
    assert!(!log.contains("killing it"), "{log}");
    let status = crate::nbctl::nbctl(&n.config_path(), &["status"]);
    assert!(
        status.stdout.contains("health") && status.stdout.contains("answered again"),
        "{}",
        status.stdout
    );
}
