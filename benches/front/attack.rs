//! Unauthenticated attackers, run while a logged-in client measures what it
//! still gets: a password-guessing flood and a slow-body attack. Each
//! attacker connects from its own loopback address (bound before connect),
//! so that the logged-in client on 127.0.0.1 is a different client to the
//! front. The attackers run on their own thread with their own
//! current-thread runtime: the measuring client's tasks never queue behind
//! them (they still share the machine's cores). Every attacker stops when
//! told to, and in any case at a hard deadline.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http::{Method, header};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

use crate::client::localhost;

/// Which attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Wrong passwords posted to the login form from many addresses.
    GuessingFlood,
    /// Login requests whose announced body arrives a byte every few seconds.
    SlowBody,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::GuessingFlood => "guessing flood",
            Kind::SlowBody => "slow body",
        }
    }
}

/// The shape of an attack.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub kind: Kind,
    /// Source addresses: 127.0.`net`.1 to 127.0.`net`.`addresses`.
    pub net: u8,
    pub addresses: u8,
    /// Connections per address (slow body) or clients per address (flood).
    pub per_address: usize,
    /// Flood: the pause between one attacker's attempts. Slow body: between
    /// two bytes of a body.
    pub interval: Duration,
    /// Slow body: the Content-Length each request announces.
    pub content_length: usize,
}

/// What the attackers did and what the front answered them.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// TCP + TLS connections established.
    pub connections: usize,
    /// Connections that failed to connect or to complete the handshake.
    pub connect_errors: usize,
    /// Flood: login forms posted. Slow body: body bytes sent.
    pub sent: usize,
    /// Answers by HTTP status.
    pub statuses: BTreeMap<u16, usize>,
    /// Connections the front closed while the attack was still on.
    pub closed_by_front: usize,
    /// Most connections open at once (slow body).
    pub peak_open: usize,
}

impl Stats {
    pub fn statuses_text(&self) -> String {
        if self.statuses.is_empty() {
            return "none".into();
        }
        self.statuses
            .iter()
            .map(|(s, n)| format!("{s} ×{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where to attack and what a form needs to reach the login handler.
#[derive(Clone)]
pub struct Aim {
    pub tls: TlsConnector,
    pub port: u16,
    pub host: String,
    /// A valid `_xsrf` value, sent as cookie and form field (double submit):
    /// without it Tornado refuses the form before its login handler runs.
    pub xsrf: String,
}

/// A running attack; [`Running::stop`] ends it and returns its stats.
pub struct Running {
    stop: watch::Sender<bool>,
    stats: Arc<Mutex<Stats>>,
    open: Arc<Mutex<usize>>,
    thread: std::thread::JoinHandle<()>,
}

impl Running {
    /// Connections open right now (slow body).
    pub fn open(&self) -> usize {
        self.open.lock().map_or(0, |n| *n)
    }

    /// Attempts or bytes sent so far.
    pub fn sent(&self) -> usize {
        self.stats.lock().map_or(0, |s| s.sent)
    }

    pub fn stop(self) -> Stats {
        let _ = self.stop.send(true);
        let _ = self.thread.join();
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Starts the attack on its own thread; it runs until stopped or `hard_limit`.
pub fn start(aim: &Aim, shape: Shape, hard_limit: Duration) -> Result<Running> {
    let (stop, stopped) = watch::channel(false);
    let stats = Arc::new(Mutex::new(Stats::default()));
    let open = Arc::new(Mutex::new(0usize));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (aim, st, op) = (aim.clone(), stats.clone(), open.clone());
    let thread = std::thread::Builder::new()
        .name(format!("attack: {}", shape.kind.name()))
        .spawn(move || {
            runtime.block_on(async move {
                let deadline = tokio::time::Instant::now() + hard_limit;
                let mut tasks = Vec::new();
                for a in 1..=shape.addresses {
                    let source = Ipv4Addr::new(127, 0, shape.net, a);
                    for _ in 0..shape.per_address {
                        let (aim, st, op, mut stopped) =
                            (aim.clone(), st.clone(), op.clone(), stopped.clone());
                        tasks.push(tokio::spawn(async move {
                            let work = async {
                                match shape.kind {
                                    Kind::GuessingFlood => guesser(&aim, source, shape, &st).await,
                                    Kind::SlowBody => {
                                        slow_body(&aim, source, shape, &st, &op).await
                                    }
                                }
                            };
                            tokio::select! {
                                () = work => {}
                                _ = stopped.wait_for(|s| *s) => {}
                                () = tokio::time::sleep_until(deadline) => {}
                            }
                        }));
                    }
                }
                for t in tasks {
                    let _ = t.await;
                }
            });
        })?;
    Ok(Running {
        stop,
        stats,
        open,
        thread,
    })
}

fn note(stats: &Mutex<Stats>, f: impl FnOnce(&mut Stats)) {
    if let Ok(mut s) = stats.lock() {
        f(&mut s);
    }
}

/// TLS over TCP from `source`, bound before connecting.
async fn connect_from(
    aim: &Aim,
    source: Ipv4Addr,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let connect = async {
        let socket = TcpSocket::new_v4()?;
        socket
            .bind(SocketAddr::from((source, 0)))
            .with_context(|| format!("cannot bind to {source}"))?;
        let tcp = socket
            .connect(SocketAddr::from((Ipv4Addr::LOCALHOST, aim.port)))
            .await?;
        tcp.set_nodelay(true)?;
        Ok::<_, anyhow::Error>(aim.tls.connect(localhost()?, tcp).await?)
    };
    tokio::time::timeout(Duration::from_secs(30), connect)
        .await
        .context("no TLS connection within 30s")?
}

/// One guessing client: wrong passwords on a keep-alive connection, one
/// every `interval` at most; a new connection when the front closes it.
async fn guesser(aim: &Aim, source: Ipv4Addr, shape: Shape, stats: &Mutex<Stats>) {
    let mut n = 0u64;
    loop {
        let tls = match connect_from(aim, source).await {
            Ok(s) => s,
            Err(_) => {
                note(stats, |s| s.connect_errors += 1);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        note(stats, |s| s.connections += 1);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(tls)).await
        else {
            continue;
        };
        let conn = tokio::spawn(conn);
        loop {
            let next = tokio::time::Instant::now() + shape.interval;
            if sender.ready().await.is_err() {
                break;
            }
            n += 1;
            let form = format!("_xsrf={}&password=guess-{source}-{n}", aim.xsrf);
            let Ok(req) = http::Request::builder()
                .method(Method::POST)
                .uri("/login")
                .header(header::HOST, &aim.host)
                .header(header::COOKIE, format!("_xsrf={}", aim.xsrf))
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(Full::new(Bytes::from(form)))
            else {
                return;
            };
            note(stats, |s| s.sent += 1);
            let answer = async {
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                resp.into_body().collect().await?;
                Ok::<_, anyhow::Error>(status)
            };
            match tokio::time::timeout(Duration::from_secs(60), answer).await {
                Ok(Ok(status)) => note(stats, |s| *s.statuses.entry(status).or_default() += 1),
                _ => break,
            }
            tokio::time::sleep_until(next).await;
        }
        conn.abort();
        note(stats, |s| s.closed_by_front += 1);
    }
}

/// One slow-body connection: a login request head announcing
/// `content_length` bytes, then one byte every `interval`; when the front
/// answers or closes, a new connection a second later.
async fn slow_body(
    aim: &Aim,
    source: Ipv4Addr,
    shape: Shape,
    stats: &Mutex<Stats>,
    open: &Mutex<usize>,
) {
    let head = format!(
        "POST /login HTTP/1.1\r\nHost: {}\r\nCookie: _xsrf={}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n",
        aim.host, aim.xsrf, shape.content_length
    );
    loop {
        let mut tls = match connect_from(aim, source).await {
            Ok(s) => s,
            Err(_) => {
                note(stats, |s| s.connect_errors += 1);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        note(stats, |s| s.connections += 1);
        if let Ok(mut n) = open.lock() {
            *n += 1;
            let now = *n;
            note(stats, |s| s.peak_open = s.peak_open.max(now));
        }
        let held = async {
            tls.write_all(head.as_bytes()).await?;
            tls.flush().await?;
            let mut buf = [0u8; 4096];
            let mut sent = 0;
            loop {
                tokio::select! {
                    read = tls.read(&mut buf) => {
                        let n = read?;
                        if n > 0 {
                            return Ok(status_of(&buf[..n]));
                        }
                        return Ok(None);
                    }
                    () = tokio::time::sleep(shape.interval) => {
                        if sent + 1 < shape.content_length {
                            tls.write_all(b"a").await?;
                            tls.flush().await?;
                            sent += 1;
                            note(stats, |s| s.sent += 1);
                        }
                    }
                }
            }
        };
        let answer: Result<Option<u16>> = held.await;
        if let Ok(mut n) = open.lock() {
            *n = n.saturating_sub(1);
        }
        note(stats, |s| {
            s.closed_by_front += 1;
            if let Ok(Some(status)) = answer {
                *s.statuses.entry(status).or_default() += 1;
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The status code of an HTTP/1.1 answer's first bytes.
fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.")?.get(2..5)?.parse().ok()
}

/// Waits until `ready` says yes or `limit` passes (then goes on: the
/// report shows how far the attack got).
pub async fn ramp(running: &Running, limit: Duration, ready: impl Fn(&Running) -> bool) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline && !ready(running) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
