//! A minimal Jupyter kernel client over the WebSocket, speaking the
//! `v1.kernel.websocket.jupyter.org` binary framing through notebookd.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

pub use super::v1_frames::{SUBPROTOCOL, pack_v1, unpack_v1};

/// Outcome of running code: what appeared on stdout and the display data seen.
#[derive(Debug, Default)]
pub struct Execution {
    pub stdout: String,
    pub display_mimetypes: Vec<String>,
    pub status: String,
}

/// Connects to `ws_url` (.../api/kernels/ID/channels) with the given cookies
/// and runs `code`, collecting outputs until the kernel is idle again.
pub async fn execute(
    ws_url: &str,
    cookie_header: &str,
    origin: &str,
    code: &str,
) -> Result<Execution, String> {
    execute_trusting(ws_url, cookie_header, origin, code, super::rustls_client()).await
}

/// [`execute`] offering no subprotocol: the legacy JSON framing only, on a
/// single connection. For a server that speaks nothing else, such as a
/// jupyter_server whose kernels are on a gateway: there, [`execute`]'s first
/// upgrade (offering v1) is answered without a subprotocol, which this
/// client refuses, and its second connection races with the first one's
/// relay to the gateway.
pub async fn execute_legacy(
    ws_url: &str,
    cookie_header: &str,
    origin: &str,
    code: &str,
) -> Result<Execution, String> {
    let ws = connect(
        ws_url,
        cookie_header,
        origin,
        super::rustls_client(),
        Framing::Legacy,
    )
    .await?;
    run_code(ws, Framing::Legacy, code).await
}

/// How kernel messages travel over the WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `v1.kernel.websocket.jupyter.org`: binary frames (jupyter_server 2).
    V1,
    /// One JSON text frame per message, with a `channel` field: what the
    /// classic Notebook 6.x (Debian bookworm's) and jupyter_server 1 speak.
    Legacy,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(
    ws_url: &str,
    cookie_header: &str,
    origin: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    framing: Framing,
) -> Result<Socket, String> {
    let mut request = ws_url.into_client_request().map_err(|e| e.to_string())?;
    let h = request.headers_mut();
    h.insert(
        "Cookie",
        HeaderValue::from_str(cookie_header).map_err(|e| e.to_string())?,
    );
    h.insert(
        "Origin",
        HeaderValue::from_str(origin).map_err(|e| e.to_string())?,
    );
    if framing == Framing::V1 {
        h.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
    }
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let (ws, resp) =
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
            .await
            .map_err(|e| match e {
                WsError::Http(r) => format!("upgrade refused: HTTP {}", r.status()),
                e => e.to_string(),
            })?;
    let proto = resp
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if framing == Framing::V1 && proto != SUBPROTOCOL {
        return Err(format!("server chose subprotocol {proto:?}"));
    }
    Ok(ws)
}

/// [`execute`] over a TLS connection verified with `tls` (e.g. trusting a
/// server's own self-signed certificate). Speaks the v1 framing, or the
/// legacy JSON one when the server offers no subprotocol.
pub async fn execute_trusting(
    ws_url: &str,
    cookie_header: &str,
    origin: &str,
    code: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
) -> Result<Execution, String> {
    let (ws, framing) = match connect(ws_url, cookie_header, origin, tls.clone(), Framing::V1).await
    {
        Ok(ws) => (ws, Framing::V1),
        Err(e) if e.contains("no subprotocol") => (
            connect(ws_url, cookie_header, origin, tls, Framing::Legacy).await?,
            Framing::Legacy,
        ),
        Err(e) => return Err(e),
    };
    run_code(ws, framing, code).await
}

/// (channel, header, parent header, content) of a received message.
fn parse_message(msg: Message, framing: Framing) -> Option<(String, Value, Value, Value)> {
    match (framing, msg) {
        (Framing::V1, Message::Binary(data)) => {
            let (channel, parts) = unpack_v1(&data)?;
            let [header, parent, _meta, content, ..] = parts.as_slice() else {
                return None;
            };
            Some((channel, header.clone(), parent.clone(), content.clone()))
        }
        (Framing::Legacy, Message::Text(text)) => {
            let mut v: Value = serde_json::from_str(&text).ok()?;
            Some((
                v["channel"].as_str()?.to_string(),
                v["header"].take(),
                v["parent_header"].take(),
                v["content"].take(),
            ))
        }
        _ => None,
    }
}

/// A kernel WebSocket kept open across several executions (e.g. to see it
/// survive something happening to the server in between).
pub struct KernelSocket {
    ws: Socket,
    framing: Framing,
}

impl KernelSocket {
    /// Connects like [`execute_trusting`], without running anything yet.
    pub async fn open(
        ws_url: &str,
        cookie_header: &str,
        origin: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
    ) -> Result<KernelSocket, String> {
        match connect(ws_url, cookie_header, origin, tls.clone(), Framing::V1).await {
            Ok(ws) => Ok(KernelSocket {
                ws,
                framing: Framing::V1,
            }),
            Err(e) if e.contains("no subprotocol") => Ok(KernelSocket {
                ws: connect(ws_url, cookie_header, origin, tls, Framing::Legacy).await?,
                framing: Framing::Legacy,
            }),
            Err(e) => Err(e),
        }
    }

    /// Runs `code` on this socket, which stays open.
    pub async fn run(&mut self, code: &str) -> Result<Execution, String> {
        exchange(&mut self.ws, self.framing, code).await
    }
}

async fn run_code(mut ws: Socket, framing: Framing, code: &str) -> Result<Execution, String> {
    let out = exchange(&mut ws, framing, code).await?;
    let _ = ws.close(None).await;
    Ok(out)
}

async fn exchange(ws: &mut Socket, framing: Framing, code: &str) -> Result<Execution, String> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let msg_id = format!("test-{}-{n}", std::process::id());
    let header = json!({
        "msg_id": msg_id, "session": "notebookd-test", "username": "test",
        "msg_type": "execute_request", "version": "5.3", "date": "2024-01-01T00:00:00Z"
    });
    let content = json!({"code": code, "silent": false, "store_history": false,
        "user_expressions": {}, "allow_stdin": false, "stop_on_error": true});
    let request = match framing {
        Framing::V1 => {
            let parts = [header, json!({}), json!({}), content]
                .iter()
                .map(|v| serde_json::to_vec(v).expect("json"))
                .collect::<Vec<_>>();
            Message::Binary(pack_v1("shell", &parts))
        }
        Framing::Legacy => Message::Text(
            json!({"header": header, "parent_header": {}, "metadata": {},
                "content": content, "channel": "shell", "buffers": []})
            .to_string(),
        ),
    };
    ws.send(request).await.map_err(|e| e.to_string())?;

    let mut out = Execution::default();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut replied = false;
    let mut idle = false;
    while !(replied && idle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = tokio::time::timeout(left, ws.next())
            .await
            .map_err(|_| format!("no reply within 60s; so far {out:?}"))?
            .ok_or("the WebSocket closed")?
            .map_err(|e| e.to_string())?;
        let Some((channel, header, parent, content)) = parse_message(msg, framing) else {
            continue;
        };
        if parent.get("msg_id").and_then(Value::as_str) != Some(msg_id.as_str()) {
            continue;
        }
        match (channel.as_str(), header["msg_type"].as_str().unwrap_or("")) {
            ("iopub", "stream") if content["name"] == "stdout" => {
                out.stdout.push_str(content["text"].as_str().unwrap_or(""));
            }
            ("iopub", "display_data") | ("iopub", "execute_result") => {
                if let Some(data) = content["data"].as_object() {
                    out.display_mimetypes.extend(data.keys().cloned());
                }
            }
            ("iopub", "error") => {
                out.stdout.push_str(&format!(
                    "ERROR: {}: {}",
                    content["ename"], content["evalue"]
                ));
            }
            ("iopub", "status") if content["execution_state"] == "idle" => idle = true,
            ("shell", "execute_reply") => {
                out.status = content["status"].as_str().unwrap_or("").to_string();
                replied = true;
            }
            _ => {}
        }
    }
    Ok(out)
}
