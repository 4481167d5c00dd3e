//! Remote clients, replayed at the HTTP level exactly as their source does it.
//!
//! VS Code's "Existing Jupyter Server" password flow follows
//! microsoft/vscode-jupyter, file
//! src/standalone/userJupyterServer/jupyterPasswordConnect.ts at commit
//! 86ab20af0c25d4a4ff99daa911c8a17c4e136b59:
//! - `needPassword`: `GET {base}tree?` (redirect: manual); anything but 200
//!   means a password is needed;
//! - `getXSRFToken`: `GET {base}login?`; needs `response.ok` and an `_xsrf`
//!   Set-Cookie, whose value up to the first `;` is kept;
//! - `getSessionCookie`: `POST {base}login?` with `Cookie: _xsrf=X` and the
//!   form `_xsrf=X&password=P`; requires status 302 and takes the *first*
//!   Set-Cookie as the session cookie: its name, and everything after the
//!   first `=` (attributes included) as its value;
//! - then every request and WebSocket carries
//!   `Cookie: _xsrf=X; NAME=VALUE` and `X-XSRFToken: X`.
//!
//! With a `?token=` URL, VS Code (through @jupyterlab/services) sends
//! `Authorization: token T` on REST and `?token=T` on the kernel WebSocket.
//! jupyter_server's `GatewayClient` is the real one, from the test venv;
//! `@jupyterlab/services` is the real one, from npm
//! (tests/browser/package-lock.json), run in Node by
//! tests/browser/services-client.js.

use reqwest::redirect::Policy;
use serde_json::json;

use crate::support::kernel;
use crate::support::node::Node;
use crate::support::{Notebookd, PASSWORD, certs};

fn fetch_like_client() -> reqwest::Client {
    // node-fetch with `redirect: 'manual'` and no cookie jar.
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&certs().ca_pem()).unwrap())
        .redirect(Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// The Set-Cookie headers as node-fetch's `raw()` gives them, in order.
fn set_cookies(r: &reqwest::Response) -> Vec<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn vscode_password_flow_reaches_a_kernel() {
    let n = Notebookd::start();
    let url = n.url("");
    let c = fetch_like_client();

    // needPassword
    let tree = c
        .get(format!("{url}tree?"))
        .header("Connection", "keep-alive")
        .send()
        .await
        .unwrap();
    assert_ne!(tree.status(), 200, "a password must be asked for");

    // getXSRFToken
    let login_page = c
        .get(format!("{url}login?"))
        .header("Connection", "keep-alive")
        .send()
        .await
        .unwrap();
    assert!(login_page.status().is_success());
    let xsrf = set_cookies(&login_page)
        .iter()
        .find_map(|c| c.strip_prefix("_xsrf="))
        .map(|rest| rest.split(';').next().unwrap().to_string())
        .expect("GET login sets no _xsrf cookie");

    // A form whose _xsrf does not match the cookie is refused (double submit).
    let forged = c
        .post(format!("{url}login?"))
        .header("Cookie", "_xsrf=somethingelse")
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded;charset=UTF-8",
        )
        .body(format!("_xsrf={xsrf}&password={PASSWORD}"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);

    // getSessionCookie
    let post = c
        .post(format!("{url}login?"))
        .header("Cookie", format!("_xsrf={xsrf}"))
        .header("Connection", "keep-alive")
        .header(
            "Content-Type",
            "application/x-www-form-urlencoded;charset=UTF-8",
        )
        .body(format!("_xsrf={xsrf}&password={PASSWORD}"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 302, "VS Code requires 302");
    let first = set_cookies(&post)
        .into_iter()
        .next()
        .expect("no Set-Cookie");
    let eq = first.find('=').unwrap();
    let (name, value) = (&first[..eq], &first[eq + 1..]);
    assert_eq!(name, "notebookd-session");
    let cookie = format!("_xsrf={xsrf}; {name}={value}");

    // The pinned headers on REST: list, create (XSRF checked by Jupyter), start a kernel.
    let list = c
        .get(format!("{url}api/contents"))
        .header("Cookie", &cookie)
        .header("X-XSRFToken", &xsrf)
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), 200);
    let kernel = c
        .post(format!("{url}api/kernels"))
        .header("Cookie", &cookie)
        .header("X-XSRFToken", &xsrf)
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kernel.status(), 201, "{:?}", kernel.text().await);
    let id = kernel.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = kernel::execute(
        &n.ws_url(&format!("api/kernels/{id}/channels?session_id=vscode")),
        &cookie,
        &format!("https://localhost:{}", n.port),
        "print(6*7)",
    )
    .await
    .unwrap();
    assert_eq!(run.stdout, "42\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn vscode_token_url_reaches_a_kernel() {
    let n = Notebookd::start();
    let out = tokio::task::spawn_blocking({
        let config = n.config_path();
        move || crate::nbctl::nbctl(&config, &["token", "create", "vscode"])
    })
    .await
    .unwrap();
    out.expect(0, &[]);
    let token = out.stdout.trim().to_string();
    let c = fetch_like_client();
    let url = n.url("");
    // Read by the daemon within a second; polling with it would count as failed logins.
    n.wait_log(
        "API token added token=vscode",
        std::time::Duration::from_secs(10),
    );
    let kernel = c
        .post(format!("{url}api/kernels"))
        .header("Authorization", format!("token {token}"))
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kernel.status(), 201);
    let id = kernel.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let run = kernel::execute(
        &n.ws_url(&format!(
            "api/kernels/{id}/channels?session_id=vscode&token={token}"
        )),
        "",
        "",
        "print(6*7)",
    )
    .await
    .unwrap();
    assert_eq!(run.stdout, "42\n");
}

/// `nbctl token create NAME` on `n`'s config; the token, once the daemon has read it.
pub async fn create_token(n: &Notebookd, name: &str) -> String {
    let out = tokio::task::spawn_blocking({
        let config = n.config_path();
        let name = name.to_string();
        move || crate::nbctl::nbctl(&config, &["token", "create", &name])
    })
    .await
    .unwrap();
    out.expect(0, &[]);
    // Read by the daemon within a second; polling with it would count as failed logins.
    n.wait_log(
        &format!("API token added token={name}"),
        std::time::Duration::from_secs(10),
    );
    out.stdout.trim().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn jupyterlab_services_in_node_runs_a_cell_with_a_token() {
    let Some(node) = Node::with(&["@jupyterlab/services", "ws"]) else {
        return;
    };
    let n = Notebookd::start();
    std::fs::write(n.root_dir().join("shared.txt"), "from the server\n").unwrap();
    let token = create_token(&n, "services").await;
    let settings = json!({
        "baseUrl": n.url(""),
        "wsUrl": n.ws_url(""),
        "token": token,
    });
    let r = tokio::task::spawn_blocking(move || {
        node.run(
            "services-client.js",
            &settings,
            // Real TLS: Node trusts the test CA, nothing is ignored.
            &[("NODE_EXTRA_CA_CERTS", certs().ca().into_os_string())],
            std::time::Duration::from_secs(150),
        )
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{e}\nnotebookd's log:\n{}", n.log_text()));
    assert!(
        r["contents"]
            .as_array()
            .unwrap()
            .contains(&json!("shared.txt")),
        "{r}"
    );
    assert_eq!(r["language"], "python", "{r}");
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["stream"], "42\n", "{r}");
    let id = r["kernelId"].as_str().unwrap();
    assert!(
        !r["runningAfterShutdown"]
            .as_array()
            .unwrap()
            .contains(&json!(id)),
        "{r}"
    );
    // The client sent it as `Authorization: token` on REST and `?token=` on
    // the kernel WebSocket: neither reaches the log.
    let log = n.log_text();
    assert!(!log.contains(&token), "the token is in notebookd's log");
}

/// A `jupyter server` of the test venv that runs its kernels on notebookd
/// through `--GatewayClient.url` and `--GatewayClient.auth_token`, as a
/// JupyterLab on a laptop would; stopped when dropped.
struct GatewayUser {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for GatewayUser {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn jupyter_servers_gateway_client_runs_a_cell_here() {
    let n = Notebookd::start();
    let out = tokio::task::spawn_blocking({
        let config = n.config_path();
        move || crate::nbctl::nbctl(&config, &["token", "create", "gateway-client"])
    })
    .await
    .unwrap();
    out.expect(0, &[]);
    let token = out.stdout.trim().to_string();

    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let log_path = dir.path().join("gateway-user.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = std::process::Command::new(crate::support::venv().join("bin/jupyter"))
        .args([
            "server",
            "--no-browser",
            // The tests may run as root (in a container).
            "--allow-root",
            "--ServerApp.ip=127.0.0.1",
            &format!("--ServerApp.port={port}"),
            "--ServerApp.token=local-secret",
            &format!("--ServerApp.root_dir={}", dir.path().display()),
            &format!("--GatewayClient.url=https://127.0.0.1:{}", n.port),
            &format!("--GatewayClient.auth_token={token}"),
            &format!("--GatewayClient.ca_certs={}", certs().ca().display()),
            "--GatewayClient.validate_cert=True",
        ])
        // GatewayClient.ca_certs does not reach tornado's TLS context in
        // this jupyter_server (the handshake fails "unable to get local
        // issuer"); OpenSSL's own variable makes it verify against the test CA.
        .env("SSL_CERT_FILE", certs().ca())
        .env("JUPYTER_CONFIG_DIR", dir.path().join("config"))
        .env("JUPYTER_DATA_DIR", dir.path().join("data"))
        .env("JUPYTER_RUNTIME_DIR", dir.path().join("runtime"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start a second jupyter server");
    let user = GatewayUser {
        child,
        port,
        _dir: dir,
    };
    let local = format!("http://127.0.0.1:{}/", user.port);
    let c = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .unwrap();
    let auth = "token local-secret";
    let last = std::sync::Mutex::new(String::new());
    let up = crate::support::eventually(std::time::Duration::from_secs(90), async || {
        match c
            .get(format!("{local}api/kernelspecs"))
            .header("Authorization", auth)
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => true,
            Ok(r) => {
                *last.lock().unwrap() =
                    format!("{}: {}", r.status(), r.text().await.unwrap_or_default());
                false
            }
            Err(e) => {
                *last.lock().unwrap() = e.to_string();
                false
            }
        }
    })
    .await;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        up,
        "the gateway user's jupyter server did not list notebookd's kernelspecs ({}); its log:\n{}\nnotebookd's:\n{}",
        last.lock().unwrap(),
        log(),
        n.log_text()
    );

    let kernel = c
        .post(format!("{local}api/kernels"))
        .header("Authorization", auth)
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    let status = kernel.status();
    let body: serde_json::Value = kernel.json().await.unwrap_or_default();
    assert_eq!(status, 201, "{body}; its log:\n{}", log());
    let id = body["id"].as_str().unwrap().to_string();
    // The kernel runs behind notebookd: its Jupyter lists it.
    let direct = n.client().client;
    let here = direct
        .get(n.url(&format!("api/kernels/{id}")))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        here.status(),
        200,
        "the kernel is not on notebookd's Jupyter"
    );

    // A cell over the second server's kernel WebSocket, which its
    // GatewayClient relays to notebookd's. That server speaks only the
    // legacy framing to its clients (GatewayWebSocketConnection's
    // kernel_ws_protocol is ""): a browser offering v1 accepts the answer
    // without a subprotocol, so the client here offers none. A client that
    // refuses the first answer and connects again leaves jupyter_server's
    // relay of the first attempt open to notebookd with the same session_id
    // (tornado cannot cancel a pending websocket_connect); Jupyter then sees
    // two connections of one session, logs "Replacing stale connection",
    // and the shell messages of one of them are lost. That is
    // jupyter_server's, and the same against a gateway without notebookd.
    let run = kernel::execute_legacy(
        &format!(
            "ws://127.0.0.1:{}/api/kernels/{id}/channels?session_id=gateway-user&token=local-secret",
            user.port
        ),
        "",
        "",
        "print(6*7)",
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "print(6*7) through the gateway user's server: {e}; its log:\n{}\nnotebookd's:\n{}",
            log(),
            n.log_text()
        )
    });
    assert_eq!(run.stdout, "42\n");
    assert_eq!(run.status, "ok");
    assert!(
        !n.log_text().contains("Replacing stale connection"),
        "the relayed kernel WebSocket reached notebookd more than once:\n{}",
        n.log_text()
    );

    let del = c
        .delete(format!("{local}api/kernels/{id}"))
        .header("Authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 204);
    let gone = direct
        .get(n.url(&format!("api/kernels/{id}")))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}
