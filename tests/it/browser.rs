//! notebookd in real Chromium (Debian's, driven by playwright-core): the
//! scenarios are the scripts in tests/browser/; here the real notebookd and a
//! second HTTPS origin (the embedding site) are started, a scenario runs, and
//! what it saw is checked, together with notebookd's log.
//!
//! Names: notebookd is `https://notebook.test:P`, the embedding site
//! `https://site.test:Q` (allowed in `embed.frame_ancestors`) and
//! `https://evil.test:Q` (not allowed), all mapped to 127.0.0.1 by
//! Chromium's resolver rules, so they are three different sites.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::node::{self, Node};
use crate::support::{self, Notebookd, Options, PASSWORD, certs, missing_tool};

/// What a scenario needs; `None` (after a loud skip) when something is missing outside CI.
pub fn tools() -> Option<Node> {
    for (what, path) in [
        ("Debian's chromium (/usr/bin/chromium)", "/usr/bin/chromium"),
        ("certutil (libnss3-tools)", "/usr/bin/certutil"),
    ] {
        if !Path::new(path).exists() {
            missing_tool(what, node::HINT);
            return None;
        }
    }
    Node::with(&["playwright-core"])
}

/// Where screenshots go: `target/browser-artifacts/`.
pub fn artifacts() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/debug/deps/it-HASH → target
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| support::repo_root().join("target"));
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("create browser-artifacts");
    dir
}

/// Runs `tests/browser/SCRIPT` with `settings`; returns its RESULT or panics with its output.
pub fn run_scenario(tools: &Node, script: &str, settings: &Value) -> Value {
    // The scenario has its own watchdog; this one also catches a stuck browser.
    tools
        .run(script, settings, &[], Duration::from_secs(330))
        .unwrap_or_else(|e| panic!("browser scenario {e}"))
}

/// A second HTTPS origin of the test's own, stopped when dropped: one
/// server answering for site.test and evil.test alike.
struct Site {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Site {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `routes` (path, content type, body) on `port`; anything else is a 404.
async fn https_site(port: u16, routes: Vec<(&'static str, &'static str, Vec<u8>)>) -> Site {
    let c = certs();
    let config = notebookd::front::tls::server_config(&c.cert(), &c.key()).expect("tls config");
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the test's site");
    let routes = Arc::new(routes);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let routes = routes.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let found = routes
                    .iter()
                    .find(|(path, _, _)| head.starts_with(format!("GET {path} ").as_bytes()));
                let (status, content_type, body): (_, _, &[u8]) = match found {
                    Some((_, content_type, body)) => ("200 OK", *content_type, body),
                    None => ("404 Not Found", "text/plain", b"not found\n"),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {content_type}; charset=utf-8\r\nCache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    Site { task }
}

/// The embedding site: a page at `/embed` that frames notebookd.
async fn embedding_site(port: u16, notebook_origin: String) -> Site {
    let page = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>An embedding site</title>\
         <style>body{{font-family:sans-serif;margin:12px;background:#eef3f8}}iframe{{border:2px solid #47a;background:#fff}}</style></head>\
         <body><h1>A site that embeds the notebook</h1>\
         <iframe id=\"nb\" src=\"{notebook_origin}/\" width=\"1200\" height=\"760\"></iframe></body></html>\n"
    );
    https_site(port, vec![("/embed", "text/html", page.into_bytes())]).await
}

/// A thebe-like site: a page at `/cors` that loads `@jupyterlab/services`
/// (the bundle tests/setup/browser.sh makes) from the site itself.
async fn api_site(port: u16, bundle: &Path) -> Site {
    let module = std::fs::read(bundle).unwrap_or_else(|e| {
        panic!(
            "read {}: {e} ({})",
            bundle.display(),
            crate::support::node::HINT
        )
    });
    let page = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>A site using the notebook's API</title></head>\
         <body><h1>A site that runs code on the notebook server</h1><pre id=\"out\">loading</pre>\
         <script type=\"module\">import * as services from '/jupyterlab-services.mjs';\
         window.services = services; document.getElementById('out').textContent = 'ready';</script></body></html>\n";
    https_site(
        port,
        vec![
            ("/cors", "text/html", page.as_bytes().to_vec()),
            ("/jupyterlab-services.mjs", "text/javascript", module),
        ],
    )
    .await
}

fn base_settings(n: &Notebookd) -> Value {
    json!({
        "ca": certs().ca(),
        "nb": format!("https://notebook.test:{}", n.port),
        "password": PASSWORD,
        "artifacts": artifacts(),
    })
}

/// Neither the password nor any cookie value the browser held is in notebookd's log.
fn assert_no_secrets_in_log(n: &Notebookd, cookies: &Value) {
    let log = n.log_text();
    assert!(!log.contains(PASSWORD), "the password is in the log");
    for c in cookies.as_array().expect("cookies") {
        let value = c["value"].as_str().unwrap_or_default();
        if value.len() >= 8 {
            assert!(
                !log.contains(value),
                "cookie {} appears in notebookd's log",
                c["name"]
            );
        }
    }
}

fn with_settings(mut base: Value, extra: Value) -> Value {
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    base
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_runs_a_new_notebook() {
    let Some(tools) = tools() else { return };
    let n = Notebookd::start();
    let content = format!("notebookd file {}", support::free_port());
    std::fs::write(n.root_dir().join("hello.txt"), &content).unwrap();
    let settings = with_settings(
        base_settings(&n),
        json!({"file": "hello.txt", "fileContent": content}),
    );
    let r = tokio::task::spawn_blocking(move || run_scenario(&tools, "notebook.js", &settings))
        .await
        .unwrap();
    assert_eq!(r["printed"], "42");
    // Chromium offers the post-quantum hybrid first; rustls takes it (README, Security).
    assert_eq!(r["tls"]["protocol"], "TLS 1.3", "{}", r["tls"]);
    assert_eq!(
        r["tls"]["keyExchangeGroup"], "X25519MLKEM768",
        "{}",
        r["tls"]
    );
    assert_eq!(r["tls"]["cipher"], "AES_128_GCM", "{}", r["tls"]);
    assert_eq!(
        r["referer"],
        format!("https://notebook.test:{}/tree", n.port)
    );
    let shot = PathBuf::from(r["screenshot"].as_str().unwrap());
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{shot:?}"
    );
    // Not embedding: Lax cookies, Secure over TLS, not partitioned.
    for c in r["cookies"].as_array().unwrap() {
        assert_eq!(c["sameSite"], "Lax", "{c}");
        assert_eq!(c["secure"], true, "{c}");
        assert_eq!(c["partitionKey"], Value::Null, "{c}");
    }
    assert_no_secrets_in_log(&n, &r["cookies"]);
    eprintln!("screenshot: {}", shot.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_sandboxes_uploaded_html() {
    let Some(tools) = tools() else { return };
    let n = Notebookd::start();
    // What an uploaded page would try: read cookies, call the API as the user.
    std::fs::write(
        n.root_dir().join("evil.html"),
        r#"<!DOCTYPE html><meta charset="utf-8"><title>uploaded</title><pre id="out">running</pre>
<script>
(async () => {
  const r = { ran: true, origin: self.origin };
  try { r.cookie = document.cookie; } catch (e) { r.cookieError = e.name + ': ' + e.message; }
  try { const resp = await fetch('/api/contents', { credentials: 'include' }); r.apiStatus = resp.status; }
  catch (e) { r.apiError = String(e); }
  window.__result = r;
  document.getElementById('out').textContent = JSON.stringify(r);
})();
</script>
"#,
    )
    .unwrap();
    let settings = with_settings(base_settings(&n), json!({"file": "evil.html"}));
    let r = tokio::task::spawn_blocking(move || run_scenario(&tools, "sandbox.js", &settings))
        .await
        .unwrap();
    assert_eq!(r["page"]["origin"], "null", "{r}");
    assert!(r["csp"].as_str().unwrap().contains("sandbox allow-scripts"));
    assert!(!n.log_text().contains(PASSWORD));
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_embeds_only_in_allowed_sites() {
    let Some(tools) = tools() else { return };
    let site_port = support::free_port();
    let n = Notebookd::start_with(Options {
        extra: format!("[embed]\nframe_ancestors = [\"https://site.test:{site_port}\"]\n"),
        ..Options::default()
    });
    let _site = embedding_site(site_port, format!("https://notebook.test:{}", n.port)).await;
    let settings = with_settings(
        base_settings(&n),
        json!({
            "site": format!("https://site.test:{site_port}"),
            "evil": format!("https://evil.test:{site_port}"),
        }),
    );
    let r = tokio::task::spawn_blocking(move || run_scenario(&tools, "embed.js", &settings))
        .await
        .unwrap();
    assert_eq!(r["printed"], "42");
    let csp = r["cspError"].as_str().unwrap();
    assert!(
        csp.contains(&format!(
            "frame-ancestors 'self' https://site.test:{site_port}"
        )),
        "{csp}"
    );
    for shot in r["screenshots"].as_array().unwrap() {
        let png = std::fs::read(shot.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{shot}");
    }
    assert_no_secrets_in_log(&n, &r["cookies"]);
}

/// A client that replays a cookie header by hand (no jar, no redirects).
fn replaying_client() -> reqwest::Client {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&certs().ca_pem()).unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
/// Also: the icons a browser asks for before login, and no news popup in Lab.
async fn chromium_logs_out_from_notebook_and_lab_menus() {
    let Some(tools) = tools() else { return };
    let n = Notebookd::start();
    let name = notebookd::auth::session::COOKIE_NAME;
    let settings = with_settings(base_settings(&n), json!({"cookieName": name}));
    let r = tokio::task::spawn_blocking(move || run_scenario(&tools, "logout.js", &settings))
        .await
        .unwrap();
    // The cookies the browser held before each Log Out are dead on the
    // server, not only deleted in the browser.
    let c = replaying_client();
    for ui in ["tree", "lab"] {
        let value = r["cookies"][ui].as_str().expect("cookie value");
        let status = c
            .get(n.url("api/contents"))
            .header("Cookie", format!("{name}={value}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 401, "{ui}: the old session cookie still works");
    }
    assert_eq!(r["icon"]["/favicon.ico"], "image/svg+xml", "{r}");
    let log = n.log_text();
    assert_eq!(log.matches("logout").count(), 2, "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_keeps_an_edit_across_an_expired_session() {
    let Some(tools) = tools() else { return };
    let lifetime = 45;
    let n = Notebookd::start_with(Options {
        settings: vec![("auth", format!("session_lifetime = \"{lifetime}s\""))],
        ..Options::default()
    });
    let notebook = json!({
        "cells": [{"cell_type": "code", "execution_count": null, "id": "c0",
                   "metadata": {}, "outputs": [], "source": ""}],
        "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5
    });
    let path = n.root_dir().join("keep.ipynb");
    std::fs::write(&path, notebook.to_string()).unwrap();
    let marker = format!("kept-{}", support::free_port());
    let settings = with_settings(
        base_settings(&n),
        json!({"notebook": "keep.ipynb", "marker": marker, "lifetimeSecs": lifetime, "timeoutMs": 300000}),
    );
    let r = tokio::task::spawn_blocking(move || run_scenario(&tools, "expired.js", &settings))
        .await
        .unwrap();
    let failed = r["failed"].as_str().unwrap();
    assert!(failed.contains("Not logged in"), "{failed}");
    eprintln!(
        "the tab saw its session end {}s after logging in",
        r["endedAfterSecs"]
    );
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(
        on_disk.contains(&marker),
        "the edit is not on disk: {on_disk}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_lab_token_url_logs_in_and_drops_the_token() {
    let Some(tools) = tools() else { return };
    let n = Notebookd::start();
    std::fs::write(n.root_dir().join("here.txt"), "x").unwrap();
    let token = crate::remote_clients::create_token(&n, "desktop").await;
    let settings = with_settings(base_settings(&n), json!({"token": token}));
    let r = tokio::task::spawn_blocking(move || run_scenario(&tools, "lab-token.js", &settings))
        .await
        .unwrap();
    let landed = r["landed"].as_str().unwrap();
    assert_eq!(
        landed,
        format!("https://notebook.test:{}/lab", n.port),
        "{r}"
    );
    assert!(!landed.contains("token="), "{r}");
    assert!(
        r["firstRequest"].as_str().unwrap().contains("token="),
        "the scenario did not start from the token URL: {r}"
    );
    assert_eq!(r["laterRequestsWithToken"], json!([]), "{r}");
    assert_eq!(r["apiStatus"], 200, "{r}");
    assert!(
        r["names"].as_array().unwrap().contains(&json!("here.txt")),
        "{r}"
    );
    let cookies = r["cookies"].as_array().unwrap();
    assert!(
        cookies.iter().any(|c| c["name"] == "notebookd-session"),
        "{r}"
    );
    assert!(
        !n.log_text().contains(&token),
        "the token is in notebookd's log"
    );
    assert_no_secrets_in_log(&n, &r["cookies"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_cors_page_runs_code_with_a_token_only_from_an_allowed_origin() {
    let Some(tools) = tools() else { return };
    let site_port = support::free_port();
    let n = Notebookd::start_with(Options {
        settings: vec![(
            "server",
            format!("cors_origins = [\"https://site.test:{site_port}\"]"),
        )],
        ..Options::default()
    });
    std::fs::write(n.root_dir().join("shared.txt"), "x").unwrap();
    let token = crate::remote_clients::create_token(&n, "thebe").await;
    let _site = api_site(site_port, &tools.services_bundle).await;
    let settings = with_settings(
        base_settings(&n),
        json!({
            "token": token,
            "site": format!("https://site.test:{site_port}"),
            "evil": format!("https://evil.test:{site_port}"),
        }),
    );
    let r = tokio::task::spawn_blocking(move || run_scenario(&tools, "cors.js", &settings))
        .await
        .unwrap();
    eprintln!("cors scenario: {r}");
    let allowed = &r["allowed"];
    assert_eq!(allowed["origin"], format!("https://site.test:{site_port}"));
    assert_eq!(allowed["fetchStatus"], 200, "{r}");
    assert!(
        allowed["names"]
            .as_array()
            .unwrap()
            .contains(&json!("shared.txt")),
        "{r}"
    );
    assert_eq!(allowed["status"], "ok", "{r}");
    assert_eq!(allowed["stream"], "42\n", "{r}");

    let refused = &r["refused"];
    assert_eq!(refused["origin"], format!("https://evil.test:{site_port}"));
    assert_eq!(refused["fetchStatus"], Value::Null, "{r}");
    assert!(
        refused["fetchError"]
            .as_str()
            .unwrap()
            .contains("Failed to fetch"),
        "{r}"
    );
    assert!(refused["contentsError"].is_string(), "{r}");
    assert_eq!(refused["stream"], Value::Null, "{r}");
    assert!(
        refused["consoleErrors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("CORS policy")),
        "{r}"
    );
    // The kernel the allowed page started was shut down; the other page started none.
    let kernels: Value = n
        .client()
        .client
        .get(n.url("api/kernels"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(kernels, json!([]), "{r}");
    assert!(
        !n.log_text().contains(&token),
        "the token is in notebookd's log"
    );
}
