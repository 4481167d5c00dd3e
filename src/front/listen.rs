//! Listening: binding the addresses, the accept loop, connection slots
//! under `limits.max_connections`, and serving one client connection (TLS
//! handshake, HTTP/1.1, upgrades) until it ends or the door closes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use super::limits::{
    ClientCounts, ConnState, ConnectionSlot, Held, ResponseBody, TimedIo, WarnThrottle,
};
use super::route::handle;
use super::workers::Workers;
use super::{App, ClientConn, respond};

/// Accepting connections: stops when told, and lets each connection finish.
#[derive(Clone)]
pub struct Door {
    shutdown: watch::Receiver<bool>,
    /// Held by every connection task; closed when all are done.
    alive: mpsc::Sender<()>,
    slots: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    clients: Arc<ClientCounts>,
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
            clients: Arc::default(),
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
/// The listeners are std's: each worker thread registers its own copy
/// ([`accept_loop`]).
pub async fn bind(addrs: &[SocketAddr]) -> Result<Vec<std::net::TcpListener>, String> {
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
        let listener = listener
            .into_std()
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        // Accepted connections inherit these (Linux copies them from the
        // listening socket): no setsockopt per connection.
        set_inherited_options(&listener);
        out.push(listener);
    }
    Ok(out)
}

/// Options every accepted connection gets from its listener: small kernel
/// messages must not wait for a delayed ACK (TCP_NODELAY), and dead peers
/// are noticed (keep-alive probes on an idle connection).
fn set_inherited_options(listener: &std::net::TcpListener) {
    use nix::sys::socket::{setsockopt, sockopt};
    let _ = setsockopt(listener, sockopt::TcpNoDelay, &true);
    let _ = setsockopt(listener, sockopt::KeepAlive, &true);
    let _ = setsockopt(listener, sockopt::TcpKeepIdle, &60);
    let _ = setsockopt(listener, sockopt::TcpKeepInterval, &15);
    let _ = setsockopt(listener, sockopt::TcpKeepCount, &4);
}

/// A bound on how long sent data may stay unacknowledged
/// (`limits.send_timeout`, reloadable), inherited like the options above.
fn set_send_timeout(listener: &TcpListener, send_timeout: Duration) {
    use nix::sys::socket::{setsockopt, sockopt};
    let ms = u32::try_from(send_timeout.as_millis()).unwrap_or(u32::MAX);
    let _ = setsockopt(listener, sockopt::TcpUserTimeout, &ms);
}

/// Accepts connections on every worker thread until the door closes: each
/// registers its own copy of each listener, takes the connections it wins,
/// and serves them where they arrived (no hand-over between threads, which
/// cost two epoll_ctl calls and a wake-up of the worker per connection).
pub fn accept_on_workers(
    app: &Arc<App>,
    listeners: &[std::net::TcpListener],
    door: &Door,
    workers: &Workers,
) -> std::io::Result<()> {
    for listener in listeners {
        for worker in 0..workers.len() {
            let copy = listener.try_clone()?;
            let (app, door) = (app.clone(), door.clone());
            workers.spawn_on(worker, async move {
                match TcpListener::from_std(copy) {
                    Ok(listener) => accept_loop(app, listener, door).await,
                    Err(e) => tracing::error!("a worker thread cannot listen: {e}"),
                }
            });
        }
    }
    Ok(())
}

/// Accepts connections on `listener` until the door closes.
///
/// Beyond `limits.max_connections`, a few more connections are accepted
/// only to be told `503 Service Unavailable` (with `Retry-After`); past
/// those, new connections wait in the kernel's backlog.
async fn accept_loop(app: Arc<App>, listener: TcpListener, mut door: Door) {
    let mut send_timeout = None;
    loop {
        // Wait for a place (to serve or to refuse) before accepting: past both
        // limits, connections stay in the kernel's backlog. The place is
        // taken only once a connection is there, as the other threads accept
        // on the same listener.
        let free = tokio::select! {
            biased;
            _ = door.shutdown.changed() => return,
            p = door.slots.acquire() => p.is_ok(),
            p = door.overflow.acquire() => p.is_ok(),
        };
        if !free {
            return;
        }
        let wanted = app.settings().config.limits.send_timeout.get();
        if send_timeout != Some(wanted) {
            set_send_timeout(&listener, wanted);
            send_timeout = Some(wanted);
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    static ACCEPT_FAILED: WarnThrottle = WarnThrottle::new();
                    if let Some(n) = ACCEPT_FAILED.hit(10) {
                        tracing::warn!("accept failed ({n} times in the last 10s): {e}");
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = door.shutdown.changed() => return,
        };
        let slot = match door.slots.clone().try_acquire_owned() {
            Ok(serve) => Slot::Serve(serve),
            Err(_) => match door.overflow.clone().try_acquire_owned() {
                Ok(p) => Slot::Refuse(p, Refusal::Full),
                // Another thread took the last place meanwhile: just close it.
                Err(_) => continue,
            },
        };
        let (slot, client) = match slot {
            Slot::Serve(permit) => match count_client(&app, &door, peer) {
                Ok(client) => (Slot::Serve(permit), client),
                Err(()) => {
                    drop(permit);
                    match door.overflow.clone().try_acquire_owned() {
                        Ok(p) => (Slot::Refuse(p, Refusal::PerClient), None),
                        // Too many refusals at once already: just close it.
                        Err(_) => continue,
                    }
                }
            },
            refuse => (refuse, None),
        };
        let app = app.clone();
        let door = door.clone();
        tokio::spawn(async move {
            match slot {
                Slot::Serve(permit) => {
                    let held = Arc::new(Held::new(permit, client));
                    let serve = serve_connection(&app, stream, peer, door, held);
                    app.counting_connection(serve).await;
                }
                Slot::Refuse(_permit, why) => refuse_connection(&app, stream, peer, why).await,
            }
        });
    }
}

enum Slot {
    Serve(OwnedSemaphorePermit),
    Refuse(OwnedSemaphorePermit, Refusal),
}

/// Why a connection is answered 503.
#[derive(Clone, Copy)]
enum Refusal {
    /// `limits.max_connections` reached.
    Full,
    /// `limits.max_connections_per_client` reached by this client.
    PerClient,
}

/// Counts the connection against its client address; `Err` if the client
/// has `limits.max_connections_per_client` open already. Trusted proxies
/// carry many clients and are not counted.
fn count_client(
    app: &App,
    door: &Door,
    peer: SocketAddr,
) -> Result<Option<super::limits::ClientHold>, ()> {
    let settings = app.settings();
    let ip = crate::config::canonical_ip(peer.ip());
    if settings
        .config
        .server
        .trusted_proxies
        .iter()
        .any(|p| p.contains(ip))
    {
        return Ok(None);
    }
    let max = settings.config.limits.max_connections_per_client;
    door.clients.enter(ip, max).map(Some).ok_or(())
}

/// Connections over the limit at once that get a 503 rather than a wait.
const OVERFLOW_ANSWERS: usize = 64;

async fn serve_connection(
    app: &Arc<App>,
    stream: TcpStream,
    peer: SocketAddr,
    mut door: Door,
    slot: Arc<Held>,
) {
    let _alive = door.alive.clone();
    // TCP_NODELAY, keep-alive probes and TCP_USER_TIMEOUT came from the listener.
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
    let send_timeout = limits.send_timeout.get();

    match &settings.tls {
        Some(acceptor) => {
            let arrived = std::time::Instant::now();
            match super::plain_http::first_byte(&stream, header_timeout).await {
                super::plain_http::FirstByte::Tls => {}
                super::plain_http::FirstByte::PlainHttp => {
                    super::plain_http::answer(app, stream, peer, header_timeout).await;
                    return;
                }
                super::plain_http::FirstByte::Nothing => return,
            }
            // The wait for the first byte counts against the handshake's time.
            let left = header_timeout.saturating_sub(arrived.elapsed());
            let handshake = tokio::time::timeout(left, acceptor.accept(stream));
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
            if tls_stream.get_ref().1.alpn_protocol() == Some(super::tls::ACME_TLS_ALPN) {
                // An ACME TLS-ALPN-01 validation: the handshake was the answer.
                return;
            }
            let io = TimedIo::new(tls_stream, state.clone(), header_timeout, keep_alive)
                .with_send_timeout(send_timeout);
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
            let io = TimedIo::new(stream, state.clone(), header_timeout, keep_alive)
                .with_send_timeout(send_timeout);
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
    slot: Arc<Held>,
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
            if super::proxy::is_upgrade(req.headers()) {
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
        tokio::pin!(conn);
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
async fn refuse_connection(app: &Arc<App>, stream: TcpStream, peer: SocketAddr, why: Refusal) {
    // One line per interval however many clients are refused: a flood of
    // connections must not become a flood of the journal.
    static FULL: WarnThrottle = WarnThrottle::new();
    static PER_CLIENT: WarnThrottle = WarnThrottle::new();
    match why {
        Refusal::Full => {
            if let Some(n) = FULL.hit(10) {
                tracing::warn!(last = %peer, "limits.max_connections reached: {n} connections answered 503 in the last 10s");
            }
        }
        Refusal::PerClient => {
            if let Some(n) = PER_CLIENT.hit(10) {
                tracing::warn!(last = %peer, "limits.max_connections_per_client reached: {n} connections answered 503 in the last 10s");
            }
        }
    }
    let settings = app.settings();
    let limits = &settings.config.limits;
    let timeout = limits.header_read_timeout.get().min(Duration::from_secs(5));
    let message = match why {
        Refusal::Full => format!(
            "Too many open connections (limits.max_connections = {}); try again in a few seconds.\n",
            limits.max_connections
        ),
        Refusal::PerClient => format!(
            "Too many open connections from your address (limits.max_connections_per_client = {}); close some tabs or try again in a few seconds.\n",
            limits.max_connections_per_client
        ),
    };
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeout)
        .keep_alive(false)
        .max_buf_size(limits.max_header_bytes as usize)
        .max_headers(limits.max_headers as usize);
    let tls = settings.tls.is_some();
    let service = service_fn(move |_req: Request<Incoming>| {
        let settings = settings.clone();
        let message = message.clone();
        async move {
            let mut resp = respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain; charset=utf-8",
                message,
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
