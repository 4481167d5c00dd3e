//! Strict-Transport-Security goes to DNS names only: for `localhost` and IP
//! literals it protects nothing and would pin a developer's other local
//! servers to https.

use std::net::SocketAddr;
use std::time::Duration;

use crate::support::{Notebookd, certs};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hsts_is_sent_for_dns_names_only() {
    let n = Notebookd::start();
    let addr: SocketAddr = ([127, 0, 0, 1], n.port).into();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&certs().ca_pem()).unwrap())
        .resolve("notebook.test", addr)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let hsts = async |host: &str| {
        let r = client
            .get(format!("https://{host}:{}/login", n.port))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET via {host}: {e}"));
        assert_eq!(r.status(), 200, "{host}");
        r.headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(
        hsts("notebook.test").await.as_deref(),
        Some("max-age=31536000")
    );
    assert_eq!(hsts("localhost").await, None);
    assert_eq!(hsts("127.0.0.1").await, None);
}
