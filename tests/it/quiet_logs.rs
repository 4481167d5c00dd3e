//! The log of a normal day: a start, a login, a kernel running code, a stop.
//! Nothing of it is logged at WARN or above, and notebookd, not Jupyter,
//! says who does the login.

use std::time::Duration;

use crate::support::{Notebookd, kernel, rustls_client};

/// The level field of a stderr log line ("2026-12-01T19:57:15.505516Z  WARN ...").
fn level(line: &str) -> Option<&str> {
    line.split_whitespace().nth(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_normal_start_and_stop_logs_no_warnings() {
    let mut n = Notebookd::start();
    let b = n.logged_in().await;
    let resp = b
        .send_json(
            reqwest::Method::POST,
            "api/kernels",
            &serde_json::json!({"name": "python3"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let kernel: serde_json::Value = resp.json().await.expect("kernel");
    // As JupyterLab connects: with a session id (Jupyter warns without one).
    let ws = n.ws_url(&format!(
        "api/kernels/{}/channels?session_id=quiet-logs-test",
        kernel["id"].as_str().expect("kernel id")
    ));
    let run = kernel::execute_trusting(
        &ws,
        &b.cookie_header(),
        &b.origin,
        "print(6 * 7)",
        rustls_client(),
    )
    .await
    .expect("run code in the kernel");
    assert_eq!(run.stdout.trim(), "42");
    n.stop();
    n.wait_log("INFO stopped", Duration::from_secs(30));
    let log = n.log();
    let loud: Vec<&String> = log
        .iter()
        .filter(|l| matches!(level(l), Some("WARN" | "ERROR")))
        .collect();
    assert!(
        loud.is_empty(),
        "a normal start and stop logged:\n{}",
        loud.iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let said = log
        .iter()
        .filter(|l| l.contains("notebookd does the login"))
        .count();
    assert_eq!(
        said,
        1,
        "notebookd says once who does the login:\n{}",
        n.log_text()
    );
    assert!(
        !log.iter()
            .any(|l| l.contains("INFO") && l.contains("All authentication is disabled")),
        "Jupyter's claim stays out of the normal log"
    );
}
