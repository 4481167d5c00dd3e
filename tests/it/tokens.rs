//! API tokens end to end: `nbctl token create` on a running daemon, the
//! token in each place Jupyter's clients put it, XSRF satisfied for token
//! requests only, the browser exchange of `?token=`, revocation closing a
//! token's kernel WebSocket, wrong tokens counted like wrong passwords, and
//! CORS for token clients on the sites of `server.cors_origins`.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::nbctl::nbctl;
use crate::support::kernel::{self, SUBPROTOCOL};
use crate::support::{Browser, Notebookd, Options, eventually, rustls_client};

async fn nbctl_async(n: &Notebookd, args: &[&str]) -> crate::nbctl::Out {
    let config = n.config_path();
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        nbctl(&config, &args)
    })
    .await
    .unwrap()
}

/// `nbctl token create NAME`: the token is stdout's only line.
async fn create_token(n: &Notebookd, name: &str) -> String {
    let out = nbctl_async(n, &["token", "create", name]).await;
    out.expect(0, &[]);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "stdout must be the token alone: {:?}",
        out.stdout
    );
    let token = lines[0].to_string();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    // Stored hashed only.
    let file = std::fs::read_to_string(n.state_dir().join("tokens.json")).unwrap();
    assert!(!file.contains(&token), "the token itself is in tokens.json");
    token
}

/// Waits until the daemon has read the new token `name` (it re-reads
/// tokens.json within a second), then checks that it is accepted. Polling
/// with the token instead would count the early refusals against the
/// address's login attempts.
async fn wait_accepted(n: &Notebookd, client: &reqwest::Client, name: &str, token: &str) {
    n.wait_log(
        &format!("API token added token={name}"),
        Duration::from_secs(10),
    );
    let r = client
        .get(n.url("api/contents"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "the running daemon did not accept the new token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_works_where_jupyters_clients_send_it() {
    let n = Notebookd::start();
    let token = create_token(&n, "scripts").await;
    let name = "scripts";
    let c = n.client().client;
    wait_accepted(&n, &c, name, &token).await;

    let bearer = c
        .get(n.url("api/contents"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let query = c
        .get(n.url(&format!("api/contents?token={token}")))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 200);
    // State changes without any XSRF header: notebookd satisfies Jupyter's check.
    let created = c
        .post(n.url("api/contents"))
        .header("Authorization", format!("token {token}"))
        .json(&json!({"type": "notebook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    // ...also from another site (a thebe page): the cross-site refusal is for cookies.
    let kernel = c
        .post(n.url("api/kernels"))
        .header("Authorization", format!("token {token}"))
        .header("Origin", "https://elsewhere.example")
        .header("Sec-Fetch-Site", "cross-site")
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kernel.status(), 201);
    let kid = kernel.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The kernel WebSocket with ?token=, as @jupyterlab/services opens it.
    let run = kernel::execute(
        &n.ws_url(&format!(
            "api/kernels/{kid}/channels?session_id=t&token={token}"
        )),
        "",
        "https://elsewhere.example",
        "print(6*7)",
    )
    .await
    .unwrap();
    assert_eq!(run.stdout, "42\n");

    // Cookie requests keep Jupyter's XSRF check.
    let b = n.logged_in().await;
    let no_xsrf = b
        .client
        .post(n.url("api/contents"))
        .json(&json!({"type": "notebook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_xsrf.status(), 403);
    // A POST cannot carry the token in its URL (a form on another site could).
    let post_query = c
        .post(n.url(&format!("api/contents?token={token}")))
        .json(&json!({"type": "notebook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(post_query.status(), 401);

    let wrong = c
        .get(n.url("api/contents"))
        .header("Authorization", "token 00112233")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    // Last used is listed; the token never reached Jupyter's log or notebookd's.
    let list = nbctl_async(&n, &["token", "list", "--json"]).await;
    list.expect(0, &[]);
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows[0]["name"], "scripts");
    assert!(rows[0]["last_used"].is_string(), "{rows}");
    assert!(
        !n.log_text().contains(&token),
        "the token appears in the log:\n{}",
        n.log_text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_link_becomes_a_session_without_the_token_in_the_url() {
    let n = Notebookd::start();
    let token = create_token(&n, "desktop").await;
    let name = "desktop";
    let probe = n.client().client;
    wait_accepted(&n, &probe, name, &token).await;
    let b = Browser::new(&n);
    let r = b
        .client
        .get(n.url(&format!("tree?token={token}&x=1")))
        .header("Accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], "/tree?x=1");
    assert!(b.cookie("notebookd-session").is_some());
    assert_eq!(b.get_page("tree?x=1").await.status(), 200);

    let list = nbctl_async(&n, &["sessions", "list", "--json"]).await;
    let sessions: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(sessions[0]["via"], "token");
    assert_eq!(sessions[0]["token"], "desktop");

    // Revoking the token ends the session its link started.
    nbctl_async(&n, &["token", "revoke", "desktop"])
        .await
        .expect(0, &["revoked"]);
    let ended = eventually(Duration::from_secs(10), async || {
        b.get("api/contents").await.status() == 401
    })
    .await;
    assert!(ended, "the token's browser session survived the revocation");
}

#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_token_closes_its_websocket() {
    let n = Notebookd::start();
    let token = create_token(&n, "gateway").await;
    let name = "gateway";
    let c = n.client().client;
    wait_accepted(&n, &c, name, &token).await;
    let kernel = c
        .post(n.url("api/kernels"))
        .header("Authorization", format!("token {token}"))
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    let kid = kernel.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // As GatewayClient opens it: the token in the Authorization header.
    let mut req = n
        .ws_url(&format!("api/kernels/{kid}/channels"))
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("token {token}")).unwrap(),
    );
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let connector = tokio_tungstenite::Connector::Rustls(rustls_client());
    let (mut ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector))
            .await
            .unwrap();

    nbctl_async(&n, &["token", "revoke", "gateway"])
        .await
        .expect(0, &["revoked"]);
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(m)) if m.is_close() => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the revoked token's WebSocket stayed open");
    let after = c
        .get(n.url("api/contents"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
    nbctl_async(&n, &["token", "revoke", "gateway"])
        .await
        .expect(1, &["no token named gateway"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_tokens_count_against_the_login_limit() {
    let n = Notebookd::start_with(Options {
        settings: vec![("auth", "login_attempts = 3".into())],
        ..Options::default()
    });
    let token = create_token(&n, "ci").await;
    let name = "ci";
    let c = n.client().client;
    wait_accepted(&n, &c, name, &token).await;
    for _ in 0..3 {
        let r = c
            .get(n.url("api/contents"))
            .header("Authorization", "Bearer guess")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let limited = c
        .get(n.url("api/contents"))
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    // The password login is limited too: one budget per address.
    let login = c
        .post(n.url("login"))
        .form(&[("password", crate::support::PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 429);
}

#[tokio::test(flavor = "multi_thread")]
async fn cors_for_token_clients_on_allowed_sites_only() {
    let n = Notebookd::start_with(Options {
        settings: vec![(
            "server",
            "cors_origins = [\"https://docs.example.com\", \"https://*.thebe.example\"]".into(),
        )],
        ..Options::default()
    });
    let token = create_token(&n, "thebe").await;
    let name = "thebe";
    let c = n.client().client;
    wait_accepted(&n, &c, name, &token).await;
    let preflight = |origin: &'static str| {
        c.request(reqwest::Method::OPTIONS, n.url("api/kernels"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization, content-type",
            )
            .send()
    };
    for origin in ["https://docs.example.com", "https://a.thebe.example"] {
        let ok = preflight(origin).await.unwrap();
        assert_eq!(ok.status(), 204, "{origin}");
        assert_eq!(ok.headers()["access-control-allow-origin"], origin);
        let allowed = ok.headers()["access-control-allow-headers"]
            .to_str()
            .unwrap();
        assert!(allowed.contains("Authorization"), "{allowed}");
        assert!(
            !ok.headers()
                .contains_key("access-control-allow-credentials")
        );
    }
    let evil = preflight("https://evil.example").await.unwrap();
    assert_eq!(evil.status(), 403);
    assert!(!evil.headers().contains_key("access-control-allow-origin"));

    // The request itself, as a browser sends it from the allowed page.
    let kernel = c
        .post(n.url("api/kernels"))
        .header("Origin", "https://docs.example.com")
        .header("Sec-Fetch-Site", "cross-site")
        .header("Authorization", format!("token {token}"))
        .json(&json!({"name": "python3"}))
        .send()
        .await
        .unwrap();
    assert_eq!(kernel.status(), 201);
    assert_eq!(
        kernel.headers()["access-control-allow-origin"],
        "https://docs.example.com"
    );
    assert!(
        !kernel
            .headers()
            .contains_key("access-control-allow-credentials")
    );
    let other = c
        .get(n.url("api/contents"))
        .header("Origin", "https://evil.example")
        .header("Authorization", format!("token {token}"))
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
    // A cookie session from another site stays refused, CORS or not.
    let b = n.logged_in().await;
    let xsrf = b.xsrf().await;
    let cookie_write = b
        .client
        .post(n.url("api/contents"))
        .header("Origin", "https://docs.example.com")
        .header("Sec-Fetch-Site", "cross-site")
        .header("X-XSRFToken", xsrf)
        .json(&json!({"type": "notebook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie_write.status(), 403);
    assert!(
        !cookie_write
            .headers()
            .contains_key("access-control-allow-origin")
    );
}
