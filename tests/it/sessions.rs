//! Server-side sessions end for real: logout, a new password and `nbctl
//! sessions revoke` close the session's open kernel and terminal
//! WebSockets, the old cookie cannot reopen them, and revocation survives a
//! restart of notebookd; a garbage sessions file is survived.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::nbctl::{nbctl, nbctl_stdin};
use crate::support::kernel::SUBPROTOCOL;
use crate::support::{Browser, Notebookd, rustls_client};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a WebSocket to `rel` with the browser's cookies.
async fn open_ws(n: &Notebookd, b: &Browser, rel: &str, v1: bool) -> Result<Socket, String> {
    let mut req = n
        .ws_url(rel)
        .into_client_request()
        .map_err(|e| e.to_string())?;
    let h = req.headers_mut();
    h.insert("Cookie", HeaderValue::from_str(&b.cookie_header()).unwrap());
    h.insert("Origin", HeaderValue::from_str(&b.origin).unwrap());
    if v1 {
        h.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    let connector = tokio_tungstenite::Connector::Rustls(rustls_client());
    tokio_tungstenite::connect_async_tls_with_config(req, None, false, Some(connector))
        .await
        .map(|(ws, _)| ws)
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(r) => format!("HTTP {}", r.status()),
            e => e.to_string(),
        })
}

/// Reads until the server closes `ws`; how long that took, or `None` if it
/// stayed open for `within`.
async fn closed_within(ws: &mut Socket, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let deadline = start + within;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return None,
            Ok(None | Some(Err(_))) => return Some(start.elapsed()),
            Ok(Some(Ok(m))) if m.is_close() => return Some(start.elapsed()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// A kernel WebSocket and a terminal WebSocket of `b`, both open.
async fn kernel_and_terminal(n: &Notebookd, b: &Browser) -> (String, String, Socket, Socket) {
    let kernel = b
        .send_json(Method::POST, "api/kernels", &json!({"name": "python3"}))
        .await;
    assert_eq!(kernel.status(), 201);
    let kid = kernel.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let term = b.send_json(Method::POST, "api/terminals", &json!({})).await;
    assert_eq!(term.status(), 200, "terminals need terminado in the venv");
    let tname = term.json::<serde_json::Value>().await.unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let kws = open_ws(n, b, &kernel_path(&kid), true).await.unwrap();
    let tws = open_ws(n, b, &terminal_path(&tname), false).await.unwrap();
    (kid, tname, kws, tws)
}

fn kernel_path(id: &str) -> String {
    format!("api/kernels/{id}/channels?session_id=sessions-test")
}

fn terminal_path(name: &str) -> String {
    format!("terminals/websocket/{name}")
}

async fn assert_both_close(kws: &mut Socket, tws: &mut Socket, what: &str) {
    // The issue asks for a second; the deadline is generous for a loaded machine.
    let k = closed_within(kws, Duration::from_secs(10)).await;
    let t = closed_within(tws, Duration::from_secs(10)).await;
    assert!(k.is_some(), "{what}: the kernel WebSocket stayed open");
    assert!(t.is_some(), "{what}: the terminal WebSocket stayed open");
    eprintln!("{what}: kernel WebSocket closed after {k:?}, terminal after {t:?}");
}

async fn assert_cannot_reopen(n: &Notebookd, b: &Browser, kid: &str, tname: &str) {
    let k = open_ws(n, b, &kernel_path(kid), true).await;
    assert_eq!(k.err().as_deref(), Some("HTTP 401 Unauthorized"));
    let t = open_ws(n, b, &terminal_path(tname), false).await;
    assert_eq!(t.err().as_deref(), Some("HTTP 401 Unauthorized"));
    let refused = b.get("api/contents").await;
    assert_eq!(refused.status(), 401);
    // What an open tab's error dialog shows: how to log in again without losing it.
    let body: serde_json::Value = refused.json().await.unwrap();
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("/login") && message.contains("another tab"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_closes_the_sessions_websockets() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let other = n.logged_in().await;
    let (kid, tname, mut kws, mut tws) = kernel_and_terminal(&n, &b).await;
    // Still open while the session is.
    assert_eq!(
        closed_within(&mut kws, Duration::from_millis(500)).await,
        None
    );

    // Logging out in another tab of the same browser (same cookie).
    let tab = Browser::new(&n);
    let cookie = b.cookie("notebookd-session").unwrap();
    let out = tab
        .client
        .get(n.url("logout"))
        .header("Cookie", format!("notebookd-session={cookie}"))
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 200);
    assert_both_close(&mut kws, &mut tws, "logout").await;
    assert_cannot_reopen(&n, &b, &kid, &tname).await;
    // Another session is untouched, and the kernel still runs for it.
    assert_eq!(other.get(&format!("api/kernels/{kid}")).await.status(), 200);
}

/// A download in progress stops when its session ends: the client gets an
/// error, not a short file it could take for a whole one.
#[tokio::test(flavor = "multi_thread")]
async fn logout_cuts_a_download_in_progress() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let size: usize = 256 << 20;
    let file = std::fs::File::create(n.root_dir().join("big.bin")).unwrap();
    file.set_len(size as u64).unwrap();
    // Jupyter serves /files/ to a GET with its own Referer.
    let mut download = b
        .client
        .get(n.url("files/big.bin"))
        .header("Referer", n.url("tree"))
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let mut got = 0;
    while got < (1 << 20) {
        got += download
            .chunk()
            .await
            .unwrap()
            .expect("more of the file")
            .len();
    }
    assert_eq!(b.get("logout").await.status(), 200);
    let mut ended = Ok(());
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match download.chunk().await {
            Ok(Some(c)) => got += c.len(),
            Ok(None) => break,
            Err(e) => {
                ended = Err(e);
                break;
            }
        }
    }
    assert!(
        ended.is_err() && got < size,
        "the download went on after logout: {got} of {size} bytes, {ended:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_password_closes_every_websocket() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let (kid, tname, mut kws, mut tws) = kernel_and_terminal(&n, &b).await;
    let config = n.config_path();
    let out = tokio::task::spawn_blocking(move || {
        nbctl_stdin(&config, &["passwd", "--stdin"], "another password\n")
    })
    .await
    .unwrap();
    out.expect(0, &["password changed: every session ended"]);
    assert_both_close(&mut kws, &mut tws, "nbctl passwd").await;
    assert_cannot_reopen(&n, &b, &kid, &tname).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nbctl_sessions_list_and_revoke() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let keep = n.logged_in().await;
    let (kid, tname, mut kws, mut tws) = kernel_and_terminal(&n, &b).await;

    let config = n.config_path();
    let list = tokio::task::spawn_blocking({
        let config = config.clone();
        move || nbctl(&config, &["sessions", "list", "--json"])
    })
    .await
    .unwrap();
    list.expect(0, &[]);
    let sessions: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let mine = sessions
        .iter()
        .find(|s| s["websockets"] == 2)
        .unwrap_or_else(|| panic!("no session with 2 WebSockets: {sessions:?}"));
    assert_eq!(mine["client"], "127.0.0.1");
    assert_eq!(mine["via"], "password");
    let id = mine["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 12, "an id prefix, not the whole id: {id}");

    let human = tokio::task::spawn_blocking({
        let config = config.clone();
        move || nbctl(&config, &["sessions", "list"])
    })
    .await
    .unwrap();
    human.expect(0, &[&id, "127.0.0.1", "password"]);

    let revoke = tokio::task::spawn_blocking({
        let config = config.clone();
        let id = id.clone();
        move || nbctl(&config, &["sessions", "revoke", &id])
    })
    .await
    .unwrap();
    revoke.expect(0, &["1 session ended"]);
    assert_both_close(&mut kws, &mut tws, "nbctl sessions revoke").await;
    assert_cannot_reopen(&n, &b, &kid, &tname).await;
    assert_eq!(keep.get("api/contents").await.status(), 200);

    let unknown = tokio::task::spawn_blocking({
        let config = config.clone();
        move || nbctl(&config, &["sessions", "revoke", "abcdef0123"])
    })
    .await
    .unwrap();
    unknown.expect(1, &["no session", "nbctl sessions list"]);

    let all = tokio::task::spawn_blocking(move || nbctl(&config, &["sessions", "revoke", "--all"]))
        .await
        .unwrap();
    all.expect(0, &["1 session ended"]);
    assert_eq!(keep.get("api/contents").await.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn revocation_survives_a_restart_and_garbage_is_survived() {
    let mut n = Notebookd::start();
    let gone = n.logged_in().await;
    let kept = n.logged_in().await;
    assert_eq!(gone.get("logout").await.status(), 200);
    // The table is written within about a second of a change.
    let file = n.state_dir().join("sessions.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if text.matches("\"created\"").count() == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sessions.json not written: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&file).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let stale = gone.cookie_header();
    n.stop();

    // Same state directory, same port, new process.
    n.start_again();
    let replay = Browser::new(&n);
    let r = replay
        .client
        .get(n.url("api/contents"))
        .header("Cookie", &stale)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "a logged-out cookie came back after a restart"
    );
    assert_eq!(
        kept.get("api/contents").await.status(),
        200,
        "a live session was lost"
    );
    n.stop();

    // A truncated, then a garbage file: a log line and a fresh table.
    let text = std::fs::read(&file).unwrap();
    std::fs::write(&file, &text[..text.len() / 2]).unwrap();
    n.start_again();
    n.wait_log("cannot use the session table", Duration::from_secs(5));
    assert_eq!(kept.get("api/contents").await.status(), 401);
    kept.login(crate::support::PASSWORD).await;
    assert_eq!(kept.get("api/contents").await.status(), 200);
    n.stop();
    std::fs::write(&file, b"\x00\xff not json").unwrap();
    n.start_again();
    n.wait_log("cannot use the session table", Duration::from_secs(5));
    assert_eq!(kept.get("api/contents").await.status(), 401);
}
