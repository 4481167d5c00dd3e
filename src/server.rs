//! The front door: listeners, TLS, HTTP connections, and the routing of
//! each request to notebookd's own pages or to Jupyter.
//!
//! Reloadable settings live in one [`Settings`] snapshot behind an
//! `ArcSwap`: a request loads it once and sees one consistent config.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use crate::auth::LoginGuard;
use crate::auth::session::{SessionKeys, SessionSecret, SessionTable};
use crate::config::{Config, canonical_ip};
use crate::headers::HeaderPolicy;
use crate::limits::{ConnState, ResponseBody, TimedIo};
use crate::pages;
use crate::proxy::{ProxyError, Upstream, UpstreamConn};
use crate::supervise::{JupyterState, JupyterStatus, Supervisor};
use crate::workers::Workers;

/// The body of every response: streamed from Jupyter, or made here.
pub type Body = Either<Incoming, Full<Bytes>>;

/// Everything that a reload may change, as one snapshot.
pub struct Settings {
    pub config: Config,
    /// `None` while no password is configured: then nothing but the setup page is served.
    pub keys: Option<SessionKeys>,
    pub headers: HeaderPolicy,
    pub tls: Option<TlsAcceptor>,
    /// The served certificate, for `nbctl status`.
    pub cert: Option<crate::tls::CertSummary>,
}

impl Settings {
    /// Builds the snapshot, loading the TLS files; fails without side effects.
    pub fn build(config: Config, secret: &SessionSecret) -> Result<Settings, String> {
        let (tls, cert) = if config.tls.enabled {
            let loaded =
                crate::tls::load(&config.tls.cert, &config.tls.key).map_err(|e| e.to_string())?;
            (Some(TlsAcceptor::from(loaded.config)), loaded.leaf)
        } else {
            (None, None)
        };
        let keys = config.auth.password_hash.as_ref().map(|hash| {
            SessionKeys::new(
                secret,
                hash,
                config.auth.session_lifetime.get(),
                config.auth.session_idle_timeout.get(),
            )
        });
        let headers = HeaderPolicy::new(
            &config.embed.frame_ancestors,
            config.tls.hsts_max_age.get().as_secs(),
        );
        Ok(Settings {
            config,
            keys,
            headers,
            tls,
            cert,
        })
    }

    pub fn base_url(&self) -> &str {
        self.config.server.base_url.as_str()
    }
}

/// The state shared by every connection.
pub struct App {
    settings: ArcSwap<Settings>,
    pub sessions: SessionTable,
    pub login: LoginGuard,
    pub upstream: Upstream,
    pub supervisor: Supervisor,
    jupyter: watch::Receiver<JupyterStatus>,
    pub started: Instant,
    connections: AtomicUsize,
    /// The outcome of the last reload, for `nbctl status`.
    pub last_reload: std::sync::Mutex<Option<crate::control::ReloadRecord>>,
}

impl App {
    pub fn new(settings: Settings, supervisor: Supervisor) -> App {
        let jupyter = supervisor.status();
        let socket = jupyter.borrow().socket.clone();
        App {
            settings: ArcSwap::from_pointee(settings),
            sessions: SessionTable::default(),
            login: LoginGuard::default(),
            upstream: Upstream::new(socket),
            supervisor,
            jupyter,
            started: Instant::now(),
            connections: AtomicUsize::new(0),
            last_reload: std::sync::Mutex::new(None),
        }
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    pub fn replace_settings(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
    }

    pub fn jupyter(&self) -> JupyterStatus {
        self.jupyter.borrow().clone()
    }

    pub fn jupyter_state(&self) -> JupyterState {
        self.jupyter.borrow().state
    }

    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }
}

/// One client connection: its TCP peer (the address formatted once for the
/// `X-Forwarded-For` and `X-Real-IP` of every request on it), whether it
/// came over TLS, and its own connection to Jupyter.
pub struct ClientConn {
    pub peer: SocketAddr,
    ip: IpAddr,
    ip_header: HeaderValue,
    pub tls: bool,
    pub upstream: UpstreamConn,
}

impl ClientConn {
    pub fn new(peer: SocketAddr, tls: bool) -> ClientConn {
        let ip = canonical_ip(peer.ip());
        ClientConn {
            peer,
            ip,
            ip_header: ip_header(ip),
            tls,
            upstream: UpstreamConn::default(),
        }
    }
}

fn ip_header(ip: IpAddr) -> HeaderValue {
    // An address is visible ASCII: always a valid value, used without a copy.
    HeaderValue::from_maybe_shared(Bytes::from(ip.to_string()))
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Who is asking, as far as notebookd may believe it.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client's address: the peer, or, behind a trusted proxy, what it says.
    pub ip: IpAddr,
    /// `ip` as a header value.
    pub ip_header: HeaderValue,
    /// Whether the browser reached us over HTTPS (here or at a trusted proxy).
    pub https: bool,
    pub via_trusted_proxy: bool,
    /// The X-Forwarded-For chain a trusted proxy sent.
    pub forwarded_for: Option<String>,
}

impl ClientInfo {
    fn new(conn: &ClientConn, req: &Request<Incoming>, config: &Config) -> ClientInfo {
        let (peer, peer_ip, tls) = (conn.peer, conn.ip, conn.tls);
        let trusted = |ip: IpAddr| config.server.trusted_proxies.iter().any(|p| p.contains(ip));
        if !trusted(peer_ip) {
            return ClientInfo {
                peer,
                ip: peer_ip,
                ip_header: conn.ip_header.clone(),
                https: tls,
                via_trusted_proxy: false,
                forwarded_for: None,
            };
        }
        let chain: Vec<String> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        // The rightmost address not added by a trusted proxy is the client.
        let mut ip = peer_ip;
        for entry in chain.iter().rev() {
            match entry.parse::<IpAddr>() {
                Ok(addr) => {
                    ip = canonical_ip(addr);
                    if !trusted(ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let proto = req
            .headers()
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().eq_ignore_ascii_case("https"));
        ClientInfo {
            peer,
            ip,
            ip_header: if ip == peer_ip {
                conn.ip_header.clone()
            } else {
                ip_header(ip)
            },
            https: tls || proto.unwrap_or(false),
            via_trusted_proxy: true,
            forwarded_for: (!chain.is_empty()).then(|| chain.join(", ")),
        }
    }
}

/// A response made by notebookd.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn html(status: StatusCode, page: String) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", page)
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = respond(status, "text/plain; charset=utf-8", Bytes::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn error_page(settings: &Settings, status: StatusCode, detail: &str) -> Response<Body> {
    let title = status.canonical_reason().unwrap_or("Error");
    html(
        status,
        pages::error(settings.base_url(), status.as_u16(), title, detail),
    )
}

/// Answers one request.
pub async fn handle(app: Arc<App>, conn: &ClientConn, req: Request<Incoming>) -> Response<Body> {
    let settings = app.settings();
    let client = ClientInfo::new(conn, &req, &settings.config);
    let (mut resp, own) = route(&app, &settings, &client, &conn.upstream, req).await;
    if own {
        settings.headers.own_page(resp.headers_mut(), client.https);
    } else {
        settings.headers.proxied(resp.headers_mut(), client.https);
    }
    resp
}

/// Returns the response and whether notebookd made it (rather than Jupyter).
async fn route(
    app: &App,
    settings: &Settings,
    client: &ClientInfo,
    upstream: &UpstreamConn,
    req: Request<Incoming>,
) -> (Response<Body>, bool) {
    let base = settings.base_url();
    if req.uri().scheme().is_some()
        || req.uri().authority().is_some()
        || req.method() == Method::CONNECT
    {
        return (
            error_page(
                settings,
                StatusCode::BAD_REQUEST,
                "Only origin-form request targets (a path) are served.",
            ),
            true,
        );
    }
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > settings.config.limits.max_uri_bytes as usize {
        return (
            error_page(
                settings,
                StatusCode::URI_TOO_LONG,
                "The request target is too long.",
            ),
            true,
        );
    }
    let path = req.uri().path();
    if let Err(why) = check_path(path) {
        return (error_page(settings, StatusCode::BAD_REQUEST, why), true);
    }
    if let Err(why) = check_host(req.headers()) {
        return (error_page(settings, StatusCode::BAD_REQUEST, why), true);
    }
    if cross_site_write(&req) {
        return (
            error_page(
                settings,
                StatusCode::FORBIDDEN,
                "This request came from another site; it is refused.",
            ),
            true,
        );
    }
    let Some(rel) = path.strip_prefix(base) else {
        if path.len() + 1 == base.len() && base.starts_with(path) {
            return (redirect(StatusCode::FOUND, base), true);
        }
        return (
            error_page(settings, StatusCode::NOT_FOUND, "Nothing is served here."),
            true,
        );
    };
    match rel {
        "login" => {
            return (
                crate::auth::login::login(app, settings, client, req).await,
                true,
            );
        }
        "logout" => {
            return (
                crate::auth::login::logout(app, settings, client, &req),
                true,
            );
        }
        "_notebookd/health" => return (health(app), true),
        "_notebookd/static/notebookd.css" => {
            let mut resp = respond(StatusCode::OK, "text/css; charset=utf-8", pages::STYLESHEET);
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            return (resp, true);
        }
        _ => {}
    }
    let Some(keys) = &settings.keys else {
        return (
            html(StatusCode::SERVICE_UNAVAILABLE, pages::no_password(base)),
            true,
        );
    };
    let Some(session) = crate::auth::login::current_session(app, keys, req.headers()) else {
        return (crate::auth::login::login_required(settings, &req), true);
    };
    let refresh = crate::auth::login::refreshed_cookie(app, settings, keys, client, &session);

    let state = app.jupyter_state();
    if state != JupyterState::Ready {
        return (unavailable(settings, &req, state.describe()), true);
    }
    let wants_html = accepts_html(&req);
    match app
        .upstream
        .forward(req, client, crate::auth::session::COOKIE_NAME, upstream)
        .await
    {
        Ok(resp) => {
            let mut resp = resp.map(Either::Left);
            if let Some(cookie) = refresh {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
            }
            (resp, false)
        }
        Err(ProxyError::Connect(e)) => {
            tracing::warn!("{e}");
            (unavailable_for(settings, wants_html, "restarting"), true)
        }
        Err(ProxyError::Upstream(e)) => {
            tracing::warn!("proxying to Jupyter failed: {e}");
            (
                error_page(
                    settings,
                    StatusCode::BAD_GATEWAY,
                    "Jupyter did not answer properly; try again.",
                ),
                true,
            )
        }
    }
}

/// Refuses paths whose meaning a decoder further on could change: dot
/// segments, empty segments, backslashes, NULs and encoded slashes, also
/// when percent-encoded (once or twice).
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("The path must start with /.");
    }
    // Borrowed until an escape needs decoding: most paths have none, and
    // this runs for every request.
    let mut current = std::borrow::Cow::Borrowed(path);
    for _ in 0..3 {
        check_path_once(&current)?;
        if !current.contains('%') {
            break;
        }
        let decoded = percent_encoding::percent_decode_str(&current).decode_utf8_lossy();
        if *decoded == *current {
            break;
        }
        current = std::borrow::Cow::Owned(decoded.into_owned());
    }
    Ok(())
}

fn check_path_once(path: &str) -> Result<(), &'static str> {
    if path.bytes().any(|b| b == b'\\' || b < 0x20 || b == 0x7f) {
        return Err("The path holds a backslash or a control character.");
    }
    if path.contains("//") {
        return Err("The path holds an empty segment (//).");
    }
    if path.split('/').any(|seg| seg == "." || seg == "..") {
        return Err("The path holds a . or .. segment.");
    }
    let encoded_separator =
        |w: &[u8]| w.eq_ignore_ascii_case(b"%2f") || w.eq_ignore_ascii_case(b"%5c") || w == b"%00";
    if path.contains('%') && path.as_bytes().windows(3).any(encoded_separator) {
        return Err("The path holds an encoded slash, backslash or NUL.");
    }
    Ok(())
}

/// Exactly one Host header, holding a host name or address and an optional
/// port (RFC 9112 §3.2). Jupyter compares Origin with Host, so a Host with a
/// path, user info or spaces in it, or two of them, never gets that far.
pub fn check_host(headers: &http::HeaderMap) -> Result<(), &'static str> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return Err("A request needs exactly one Host header.");
    };
    let b = host.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 300
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || b"-._:[]".contains(&c));
    if ok {
        Ok(())
    } else {
        Err("The Host header must be a host name or address with an optional port.")
    }
}

/// A state-changing request (or a WebSocket) that the browser says comes
/// from another site (`Sec-Fetch-Site`), or from an opaque origin such as a
/// sandboxed page (`Origin: null`). Jupyter's XSRF and Origin checks refuse
/// these too; notebookd refuses them before they reach Jupyter or the login.
/// Requests inside an embedded notebook are same-origin, so embedding is
/// not affected.
fn cross_site_write(req: &Request<Incoming>) -> bool {
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || crate::proxy::is_upgrade(req.headers());
    if !writes {
        return false;
    }
    let h = req.headers();
    let site = h.get("sec-fetch-site").map(HeaderValue::as_bytes);
    matches!(site, Some(b"cross-site" | b"same-site"))
        || h.get(header::ORIGIN)
            .is_some_and(|o| o.as_bytes() == b"null")
}

fn accepts_html(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

fn unavailable(settings: &Settings, req: &Request<Incoming>, state: &str) -> Response<Body> {
    unavailable_for(settings, accepts_html(req), state)
}

fn unavailable_for(settings: &Settings, wants_html: bool, state: &str) -> Response<Body> {
    let mut resp = if wants_html {
        html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(settings.base_url(), state),
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"message": format!("Jupyter is {state}; try again shortly")}),
        )
    };
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    resp
}

fn health(app: &App) -> Response<Body> {
    let state = app.jupyter_state();
    let ok = state == JupyterState::Ready;
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &serde_json::json!({"status": if ok { "ok" } else { "unavailable" }, "jupyter": state}),
    )
}

/// Accepting connections: stops when told, and lets each connection finish.
#[derive(Clone)]
pub struct Door {
    shutdown: watch::Receiver<bool>,
    /// Held by every connection task; closed when all are done.
    alive: mpsc::Sender<()>,
    slots: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
}

/// The other side of [`Door`]: starts and awaits the drain.
pub struct DoorKeeper {
    shutdown: watch::Sender<bool>,
    alive_rx: mpsc::Receiver<()>,
    alive_tx: Option<mpsc::Sender<()>>,
}

impl DoorKeeper {
    pub fn new(max_connections: usize) -> (DoorKeeper, Door) {
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (alive_tx, alive_rx) = mpsc::channel(1);
        let door = Door {
            shutdown: shutdown_rx,
            alive: alive_tx.clone(),
            slots: Arc::new(Semaphore::new(max_connections)),
            overflow: Arc::new(Semaphore::new(OVERFLOW_ANSWERS)),
        };
        (
            DoorKeeper {
                shutdown: shutdown_tx,
                alive_rx,
                alive_tx: Some(alive_tx),
            },
            door,
        )
    }

    /// Stops accepting, asks open connections to finish, waits up to `deadline`.
    /// Returns whether every connection finished in time.
    pub async fn drain(mut self, deadline: std::time::Duration) -> bool {
        let _ = self.shutdown.send(true);
        self.alive_tx = None;
        tokio::time::timeout(deadline, self.alive_rx.recv())
            .await
            .is_ok()
    }
}

/// Binds every address or fails naming the one that could not be bound.
pub async fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, String> {
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let _ = socket.set_reuseaddr(true);
        let listener = socket
            .bind(*addr)
            .and_then(|()| socket.listen(1024))
            .map_err(|e| {
                let hint = match e.kind() {
                    std::io::ErrorKind::AddrInUse => {
                        " (another program uses this port: change server.listen or stop it)"
                    }
                    std::io::ErrorKind::PermissionDenied => {
                        " (ports below 1024 need CAP_NET_BIND_SERVICE; for notebook.service, add the drop-in its header describes)"
                    }
                    std::io::ErrorKind::AddrNotAvailable => " (no interface has this address)",
                    _ => "",
                };
                format!("cannot listen on {addr}: {e}{hint}")
            })?;
        out.push(listener);
    }
    Ok(out)
}

/// Accepts connections on `listener` until the door closes.
///
/// Beyond `limits.max_connections`, a few more connections are accepted
/// only to be told `503 Service Unavailable` (with `Retry-After`); past
/// those, new connections wait in the kernel's backlog.
pub async fn accept_loop(
    app: Arc<App>,
    listener: TcpListener,
    mut door: Door,
    workers: Arc<Workers>,
) {
    loop {
        let slot = tokio::select! {
            biased;
            _ = door.shutdown.changed() => return,
            p = door.slots.clone().acquire_owned() => match p { Ok(p) => Slot::Serve(p), Err(_) => return },
            p = door.overflow.clone().acquire_owned() => match p { Ok(p) => Slot::Refuse(p), Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = door.shutdown.changed() => return,
        };
        // A slot may have freed up while we waited for the connection.
        let slot = match slot {
            Slot::Refuse(p) => match door.slots.clone().try_acquire_owned() {
                Ok(serve) => {
                    drop(p);
                    Slot::Serve(serve)
                }
                Err(_) => Slot::Refuse(p),
            },
            serve => serve,
        };
        // Registered with the worker's own I/O driver rather than this one's:
        // its readiness is then never relayed from thread to thread.
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(%peer, "cannot hand the connection to a worker: {e}");
                continue;
            }
        };
        let app = app.clone();
        let door = door.clone();
        workers.spawn(async move {
            let stream = match TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(%peer, "cannot take over the connection: {e}");
                    return;
                }
            };
            match slot {
                Slot::Serve(permit) => {
                    app.connections.fetch_add(1, Ordering::Relaxed);
                    serve_connection(&app, stream, peer, door, Arc::new(permit)).await;
                    app.connections.fetch_sub(1, Ordering::Relaxed);
                }
                Slot::Refuse(_permit) => refuse_connection(&app, stream, peer).await,
            }
        });
    }
}

enum Slot {
    Serve(OwnedSemaphorePermit),
    Refuse(OwnedSemaphorePermit),
}

/// A connection's place under `limits.max_connections`. A WebSocket keeps
/// it after the upgrade, until the socket closes.
#[derive(Clone)]
pub struct ConnectionSlot(pub Arc<OwnedSemaphorePermit>);

/// Connections over the limit at once that get a 503 rather than a wait.
const OVERFLOW_ANSWERS: usize = 64;

async fn serve_connection(
    app: &Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    mut door: Door,
    slot: Arc<OwnedSemaphorePermit>,
) {
    let _alive = door.alive.clone();
    // Small kernel messages must not wait for a delayed ACK.
    let _ = stream.set_nodelay(true);
    let settings = app.settings();
    let limits = &settings.config.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    // The header read timeout and the keep-alive timeout are TimedIo's (it answers 408).
    http.timer(TokioTimer::new())
        .header_read_timeout(None)
        .keep_alive(true)
        .max_buf_size(limits.max_header_bytes as usize)
        .max_headers(limits.max_headers as usize);
    let state = Arc::new(ConnState::default());
    let header_timeout = limits.header_read_timeout.get();
    let keep_alive = limits.keep_alive_timeout.get();

    match &settings.tls {
        Some(acceptor) => {
            let handshake = tokio::time::timeout(header_timeout, acceptor.accept(stream));
            let tls_stream = match handshake.await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let io = TimedIo::new(tls_stream, state.clone(), header_timeout, keep_alive);
            drive(
                app,
                http,
                TokioIo::new(io),
                peer,
                true,
                &mut door,
                state,
                slot,
            )
            .await;
        }
        None => {
            let io = TimedIo::new(stream, state.clone(), header_timeout, keep_alive);
            drive(
                app,
                http,
                TokioIo::new(io),
                peer,
                false,
                &mut door,
                state,
                slot,
            )
            .await
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn drive<I>(
    app: &Arc<App>,
    http: hyper::server::conn::http1::Builder,
    io: I,
    peer: SocketAddr,
    tls: bool,
    door: &mut Door,
    state: Arc<ConnState>,
    slot: Arc<OwnedSemaphorePermit>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let client_conn = Arc::new(ClientConn::new(peer, tls));
    let service = {
        let app = app.clone();
        let client_conn = client_conn.clone();
        service_fn(move |mut req: Request<Incoming>| {
            let app = app.clone();
            let state = state.clone();
            let client_conn = client_conn.clone();
            if crate::proxy::is_upgrade(req.headers()) {
                req.extensions_mut().insert(ConnectionSlot(slot.clone()));
            }
            async move {
                state.request_started();
                let resp = handle(app, &client_conn, req).await;
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    state.upgraded();
                }
                Ok::<_, Infallible>(resp.map(|body| ResponseBody::new(body, state)))
            }
        })
    };
    {
        let conn = http.serve_connection(io, service).with_upgrades();
        // This task also drives the connection to Jupyter (see UpstreamConn).
        let upstream = client_conn.upstream.drive();
        tokio::pin!(conn, upstream);
        let mut draining = false;
        loop {
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!(%peer, "connection ended: {e}");
                    }
                    break;
                }
                _ = door.shutdown.changed(), if !draining => {
                    conn.as_mut().graceful_shutdown();
                    draining = true;
                }
                () = upstream.as_mut() => {}
            }
        }
    }
    // The service (and its handle on the client connection) went with the server connection.
    if let Ok(client_conn) = Arc::try_unwrap(client_conn) {
        app.upstream.release(client_conn.upstream);
    }
}

/// Answers one request on a connection over `limits.max_connections` with a
/// 503 and closes it.
async fn refuse_connection(app: &Arc<App>, stream: TcpStream, peer: SocketAddr) {
    static LAST_WARNING: AtomicU64 = AtomicU64::new(0);
    let now = crate::auth::session::unix_now();
    if LAST_WARNING.swap(now, Ordering::Relaxed) + 10 <= now {
        tracing::warn!(%peer, "limits.max_connections reached: answering 503 to new connections");
    }
    let settings = app.settings();
    let limits = &settings.config.limits;
    let timeout = limits.header_read_timeout.get().min(Duration::from_secs(5));
    let max = limits.max_connections;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false)
        .max_buf_size(limits.max_header_bytes as usize)
        .max_headers(limits.max_headers as usize);
    let tls = settings.tls.is_some();
    let service = service_fn(move |_req: Request<Incoming>| {
        let settings = settings.clone();
        async move {
            let mut resp = respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                format!(
                    "Too many open connections (limits.max_connections = {max}); try again in a few seconds.\n"
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            settings.headers.own_page(resp.headers_mut(), tls);
            Ok::<_, Infallible>(resp)
        }
    });
    let served = async {
        match &app.settings().tls {
            Some(acceptor) => {
                if let Ok(Ok(s)) = tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    let _ = http.serve_connection(TokioIo::new(s), service).await;
                }
            }
            None => {
                let _ = http.serve_connection(TokioIo::new(stream), service).await;
            }
        }
    };
    let _ = tokio::time::timeout(timeout * 2, served).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_tricks_are_refused() {
        for bad in [
            "/login/../api/contents",
            "/%2e%2e/api",
            "/a/%2E%2E/b",
            "//api",
            "/api%2fcontents",
            "/%252e%252e/api",
            "/api\\x",
            "/a/./b",
            "/%2F%2Fevil",
            "/a%5Cb",
            "/a%00b",
            "/a%2500b",
            "/a\u{7f}b",
            "/a\tb",
            "/a/..",
            "api",
        ] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
        for good in [
            "/",
            "/tree",
            "/api/contents/My%20Notebook.ipynb",
            "/files/a.b/c..d",
            "/api/contents/%C3%A4.txt",
            "/api/contents/100%25.txt",
            "/files/%zz",
            "/a/.b/..c",
        ] {
            assert!(check_path(good).is_ok(), "{good}");
        }
    }
}
