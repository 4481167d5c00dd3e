//! The one client used for every path: HTTP/1.1 and WebSockets over TLS
//! (nginx, notebookd) or over Jupyter's unix socket (direct), with the
//! cookies, XSRF token and Origin a browser would send.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A connected byte stream: TLS over TCP, or a unix socket.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
pub type Stream = Box<dyn Io>;

/// The client reads answers into buffers of up to this size.
const READ_BUFFER: usize = 1024 * 1024;

/// The connection half of [`Target::http_inline`]; `None` once it ended.
pub type Inline =
    Option<Pin<Box<hyper::client::conn::http1::Connection<TokioIo<Stream>, Full<Bytes>>>>>;

/// Runs `work` (requests on the connection) while polling the connection.
pub async fn alongside<T>(conn: &mut Inline, work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::pin!(work);
    let Some(c) = conn.as_mut() else {
        return work.await;
    };
    tokio::select! {
        r = &mut work => r,
        ended = c.as_mut() => {
            *conn = None;
            ended?;
            work.await
        }
    }
}

/// Bounds every single exchange of the setup steps.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Which key exchange groups a client offers first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Groups {
    /// X25519 first (rustls's default order without post-quantum preference,
    /// and what OpenSSL 3.0 clients offer).
    Classic,
    /// The hybrid X25519MLKEM768 first, with an X25519 share alongside, as
    /// Chrome (131 on) and Firefox (132 on) offer by default: a server that
    /// has ML-KEM (rustls) takes the hybrid, one without (nginx with Debian
    /// bookworm's OpenSSL 3.0) takes X25519.
    BrowserPostQuantum,
}

/// A TLS 1.3 client trusting only the benchmark CA that offers the cipher
/// suites in the order browsers do (Chrome, Firefox and Safari list
/// AES-128-GCM first), with session resumption off so that every
/// connection is a full handshake, or on (`resume`).
pub fn tls_connector(ca: &Path, resume: bool, groups: Groups) -> Result<TlsConnector> {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).context("cannot read the bench CA")? {
        roots.add(cert?)?;
    }
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    if groups == Groups::BrowserPostQuantum {
        use rustls::crypto::aws_lc_rs::kx_group;
        provider.kx_groups = vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
            kx_group::SECP384R1,
        ];
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

pub fn localhost() -> Result<ServerName<'static>> {
    Ok(ServerName::try_from("localhost")?.to_owned())
}

pub async fn tls_stream(
    tls: &TlsConnector,
    port: u16,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    tls_stream_from(tls, port, None).await
}

/// A TLS connection from `source` (a loopback address bound before
/// connecting), or from the default address.
pub async fn tls_stream_from(
    tls: &TlsConnector,
    port: u16,
    source: Option<std::net::IpAddr>,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connect = async {
        let server = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let tcp = match source {
            None => TcpStream::connect(server).await?,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket
                    .bind(std::net::SocketAddr::new(ip, 0))
                    .with_context(|| format!("cannot bind to {ip}"))?;
                socket.connect(server).await?
            }
        };
        tcp.set_nodelay(true)?;
        Ok::<_, anyhow::Error>(tls.connect(localhost()?, tcp).await?)
    };
    tokio::time::timeout(STEP_TIMEOUT, connect)
        .await
        .with_context(|| format!("no TLS connection to port {port} within {STEP_TIMEOUT:?}"))?
}

async fn http1(io: Stream) -> Result<SendRequest<Full<Bytes>>> {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

/// The status of `GET path` on a fresh connection `io`.
pub async fn status_of(io: Stream, host: &str, path: &str) -> Result<u16> {
    let mut sender = http1(io).await?;
    let req = Request::get(path)
        .header(header::HOST, host)
        .body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await??;
    Ok(resp.status().as_u16())
}

/// The status of `GET path` on a unix socket (readiness of Jupyter).
pub async fn unix_status(socket: &Path, path: &str) -> Result<u16> {
    let io = UnixStream::connect(socket).await?;
    status_of(Box::new(io), "localhost", path).await
}

/// The status of `GET /api` over TLS on `port` (readiness of nginx).
pub async fn tls_probe(tls: &TlsConnector, port: u16) -> Result<u16> {
    let io = tls_stream(tls, port).await?;
    status_of(Box::new(io), &format!("localhost:{port}"), "/api").await
}

/// The three ways to Jupyter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Via {
    Direct,
    Nginx,
    Notebookd,
}

impl Via {
    pub const ALL: [Via; 3] = [Via::Direct, Via::Nginx, Via::Notebookd];

    pub fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Nginx => "nginx",
            Via::Notebookd => "notebookd",
        }
    }
}

#[derive(Clone)]
enum Addr {
    Unix(PathBuf),
    Tls(u16),
    /// Plain HTTP on loopback, acknowledging at once: a kernel gateway itself.
    QuickAckTcp(u16),
}

/// A TCP stream that acknowledges what it reads at once (`TCP_QUICKACK`
/// after every read; Linux clears it as it goes), as notebookd's gateway
/// extension does for Jupyter's connections to a gateway. A gateway holds
/// each small message back until the previous one is acknowledged (it
/// leaves Nagle's algorithm on), so a client with delayed ACKs would
/// measure their 40 ms, not the gateway.
struct QuickAck(TcpStream);

impl QuickAck {
    fn ack(&self) {
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
    }
}

impl AsyncRead for QuickAck {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ack();
        }
        polled
    }
}

impl AsyncWrite for QuickAck {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// One way to Jupyter, with a browser's session on it: cookies (notebookd's
/// session, Jupyter's `_xsrf`), a kernel and a terminal.
#[derive(Clone)]
pub struct Target {
    pub via: Via,
    /// What the progress lines and kernel session ids call it.
    pub name: String,
    addr: Addr,
    tls: TlsConnector,
    /// The Host header (and the authority of Origin and Referer).
    pub host: String,
    pub origin: String,
    jar: BTreeMap<String, String>,
    cookie_header: String,
    /// `Authorization: token T` instead of cookies (an API client).
    authorization: Option<String>,
    /// The processes whose CPU and memory the front costs (none for direct).
    pub front_pids: Vec<u32>,
    /// The Jupyter server behind this way.
    pub jupyter_pid: u32,
    /// Its kernels run on a kernel gateway: jupyter_server then speaks only
    /// the legacy JSON framing on kernel WebSockets (it answers an offer of
    /// the v1 subprotocol without one, which the client refuses).
    pub kernels_on_gateway: bool,
    pub kernel: String,
    pub terminal: String,
}

impl Target {
    pub fn unix(socket: PathBuf, tls: TlsConnector, jupyter_pid: u32) -> Target {
        Target::new(
            Via::Direct,
            Addr::Unix(socket),
            tls,
            "localhost",
            "http",
            jupyter_pid,
        )
    }

    pub fn tls(via: Via, port: u16, tls: TlsConnector, jupyter_pid: u32) -> Target {
        let host = format!("localhost:{port}");
        Target::new(via, Addr::Tls(port), tls, &host, "https", jupyter_pid)
    }

    /// A kernel gateway itself, on `port` of 127.0.0.1, with its auth token.
    pub fn gateway(port: u16, token: &str, tls: TlsConnector, gateway_pid: u32) -> Target {
        let host = format!("127.0.0.1:{port}");
        let mut t = Target::new(
            Via::Direct,
            Addr::QuickAckTcp(port),
            tls,
            &host,
            "http",
            gateway_pid,
        );
        t.authorization = Some(format!("token {token}"));
        t.kernels_on_gateway = true;
        t
    }

    /// The same target under another name.
    pub fn named(mut self, name: &str) -> Target {
        self.name = name.to_string();
        self
    }

    fn new(
        via: Via,
        addr: Addr,
        tls: TlsConnector,
        host: &str,
        scheme: &str,
        jupyter_pid: u32,
    ) -> Target {
        Target {
            via,
            name: via.name().to_string(),
            addr,
            tls,
            host: host.to_string(),
            origin: format!("{scheme}://{host}"),
            jar: BTreeMap::new(),
            cookie_header: String::new(),
            authorization: None,
            front_pids: Vec::new(),
            jupyter_pid,
            kernels_on_gateway: false,
            kernel: String::new(),
            terminal: String::new(),
        }
    }

    pub async fn connect(&self) -> Result<Stream> {
        self.connect_from(None).await
    }

    /// A connection from `source` (TCP only; a unix socket has no address).
    pub async fn connect_from(&self, source: Option<std::net::IpAddr>) -> Result<Stream> {
        Ok(match &self.addr {
            Addr::Unix(path) => Box::new(
                tokio::time::timeout(STEP_TIMEOUT, UnixStream::connect(path))
                    .await
                    .context("connecting took longer than 60s")?
                    .with_context(|| format!("cannot connect to {}", path.display()))?,
            ),
            Addr::Tls(port) => Box::new(tls_stream_from(&self.tls, *port, source).await?),
            Addr::QuickAckTcp(port) => {
                let tcp =
                    tokio::time::timeout(STEP_TIMEOUT, TcpStream::connect(("127.0.0.1", *port)))
                        .await
                        .context("connecting took longer than 60s")?
                        .with_context(|| format!("cannot connect to 127.0.0.1:{port}"))?;
                tcp.set_nodelay(true)?;
                Box::new(QuickAck(tcp))
            }
        })
    }

    /// A fresh HTTP/1.1 connection.
    pub async fn http(&self) -> Result<SendRequest<Full<Bytes>>> {
        http1(self.connect().await?).await
    }

    /// A fresh HTTP/1.1 connection whose connection half the caller polls in
    /// its own task (with [`alongside`]), so that reading an answer never
    /// waits for another task, perhaps on another thread, to be woken: on
    /// this shared 2-core machine the client must not be the bottleneck.
    pub async fn http_inline(&self) -> Result<(SendRequest<Full<Bytes>>, Inline)> {
        let io = self.connect().await?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(READ_BUFFER)
            .handshake(TokioIo::new(io))
            .await?;
        Ok((sender, Some(Box::pin(conn))))
    }

    /// A request as the browser sends it: Host and the session's cookies.
    pub fn request(&self, method: Method, path: &str) -> http::request::Builder {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.host);
        if !self.cookie_header.is_empty() {
            b = b.header(header::COOKIE, &self.cookie_header);
        }
        if let Some(auth) = &self.authorization {
            b = b.header(header::AUTHORIZATION, auth);
        }
        b
    }

    /// The same way as a script with an API token sees it: no cookies,
    /// `Authorization: token T` on every request.
    pub fn with_token(&self, token: &str) -> Target {
        Target {
            jar: BTreeMap::new(),
            cookie_header: String::new(),
            authorization: Some(format!("token {token}")),
            ..self.clone()
        }
    }

    /// One exchange on a fresh connection; cookies the answer sets are kept.
    async fn call(
        &mut self,
        req: http::request::Builder,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let mut sender = self.http().await?;
        let resp = tokio::time::timeout(
            STEP_TIMEOUT,
            sender.send_request(req.body(Full::new(body))?),
        )
        .await
        .context("no answer within 60s")??;
        for v in resp.headers().get_all(header::SET_COOKIE) {
            let Some((name, value)) = v
                .to_str()
                .ok()
                .and_then(|c| c.split(';').next())
                .and_then(|nv| nv.split_once('='))
            else {
                continue;
            };
            self.jar
                .insert(name.trim().to_string(), value.trim().to_string());
        }
        self.cookie_header = self
            .jar
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let status = resp.status();
        let body = tokio::time::timeout(STEP_TIMEOUT, resp.into_body().collect())
            .await
            .context("body not complete within 60s")??
            .to_bytes();
        Ok((status, body))
    }

    /// The status of `GET path` (on a fresh connection).
    pub async fn get_status(&mut self, path: &str) -> Result<StatusCode> {
        let req = self.request(Method::GET, path);
        Ok(self.call(req, Bytes::new()).await?.0)
    }

    /// A state-changing JSON request as Jupyter's UI sends it.
    async fn api(&mut self, method: Method, path: &str, body: &str) -> Result<(StatusCode, Bytes)> {
        let xsrf = self.jar.get("_xsrf").cloned().unwrap_or_default();
        let req = self
            .request(method, path)
            .header("X-XSRFToken", xsrf)
            .header(header::ORIGIN, &self.origin)
            .header(header::CONTENT_TYPE, "application/json");
        self.call(req, Bytes::from(body.to_string())).await
    }

    /// Logs in (notebookd), fetches Jupyter's XSRF cookie, starts a kernel and a terminal.
    pub async fn open_session(&mut self, password: Option<&str>) -> Result<()> {
        let via = self.name.clone();
        if let Some(password) = password {
            let form = format!(
                "password={}&next=%2Ftree",
                form_urlencoded::byte_serialize(password.as_bytes()).collect::<String>()
            );
            let req = self
                .request(Method::POST, "/login")
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
            let (status, _) = self.call(req, Bytes::from(form)).await?;
            // 302 with the session cookie, as Jupyter answers its login form.
            if status != StatusCode::FOUND || self.jar.is_empty() {
                bail!("{via}: login answered {status} (expected 302 Found with a session cookie)");
            }
        }
        let req = self
            .request(Method::GET, "/tree")
            .header(header::ACCEPT, "text/html");
        let (status, _) = self.call(req, Bytes::new()).await?;
        if status != StatusCode::OK || !self.jar.contains_key("_xsrf") {
            bail!("{via}: GET /tree answered {status} without an _xsrf cookie");
        }
        let (status, body) = self
            .api(Method::POST, "/api/kernels", r#"{"name": "python3"}"#)
            .await?;
        if status != StatusCode::CREATED {
            bail!("{via}: starting a kernel answered {status}: {body:?}");
        }
        self.kernel = json_field(&body, "id")?;
        let (status, body) = self.api(Method::POST, "/api/terminals", "{}").await?;
        if status != StatusCode::OK {
            bail!("{via}: starting a terminal answered {status}: {body:?}");
        }
        self.terminal = json_field(&body, "name")?;
        Ok(())
    }

    /// Starts a kernel on a gateway itself, for `username` (`KERNEL_USERNAME`:
    /// Enterprise Gateway refuses kernels for root, and for no name it takes
    /// its own user's, root when the benchmark runs as root).
    pub async fn open_gateway_kernel(&mut self, username: &str) -> Result<()> {
        let body = serde_json::json!({"name": "python3", "env": {"KERNEL_USERNAME": username}});
        let (status, body) = self
            .api(Method::POST, "/api/kernels", &body.to_string())
            .await?;
        if status != StatusCode::CREATED {
            bail!(
                "{}: starting a kernel answered {status}: {body:?}",
                self.name
            );
        }
        self.kernel = json_field(&body, "id")?;
        Ok(())
    }

    /// Shuts the kernel and the terminal down.
    pub async fn close_session(&mut self) {
        let kernel = (!self.kernel.is_empty()).then(|| format!("/api/kernels/{}", self.kernel));
        let terminal =
            (!self.terminal.is_empty()).then(|| format!("/api/terminals/{}", self.terminal));
        for path in [kernel, terminal].into_iter().flatten() {
            if let Err(e) = self.api(Method::DELETE, &path, "").await {
                eprintln!("{}: DELETE {path}: {e:#}", self.name);
            }
        }
    }

    /// A WebSocket on `path`, with the session's cookies and Origin.
    pub async fn websocket(
        &self,
        path: &str,
        subprotocol: Option<&str>,
    ) -> Result<WebSocketStream<Stream>> {
        self.websocket_from(path, subprotocol, None).await
    }

    /// A WebSocket as [`Target::websocket`], from the address `source`.
    pub async fn websocket_from(
        &self,
        path: &str,
        subprotocol: Option<&str>,
        source: Option<std::net::IpAddr>,
    ) -> Result<WebSocketStream<Stream>> {
        let mut req = format!("ws://{}{path}", self.host).into_client_request()?;
        let h = req.headers_mut();
        if !self.cookie_header.is_empty() {
            h.insert("Cookie", HeaderValue::from_str(&self.cookie_header)?);
        }
        if let Some(auth) = &self.authorization {
            h.insert("Authorization", HeaderValue::from_str(auth)?);
        }
        h.insert("Origin", HeaderValue::from_str(&self.origin)?);
        if let Some(p) = subprotocol {
            h.insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p)?);
        }
        let io = self.connect_from(source).await?;
        let (ws, _) = tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::client_async(req, io))
            .await
            .context("WebSocket handshake not done within 60s")?
            .with_context(|| format!("{}: WebSocket {path}", self.name))?;
        Ok(ws)
    }

    /// A cookie of the session's jar.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.jar.get(name).map(String::as_str)
    }

    /// The Referer a page of this site would send (Jupyter checks it on /files/).
    pub fn referer(&self) -> String {
        format!("{}/tree", self.origin)
    }
}

fn json_field(body: &[u8], key: &str) -> Result<String> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    v.get(key)
        .and_then(|x| x.as_str())
        .map(str::to_owned)
        .with_context(|| format!("no {key:?} in {v}"))
}
