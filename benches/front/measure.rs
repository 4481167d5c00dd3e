//! The measurements. Each is bounded in count and in time, and reads the CPU
//! time of the processes under test from `/proc` right before and after its
//! load, so that what the client costs never counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Target, Via, alongside, tls_stream};
use crate::procfs;
use crate::v1_frames::{SUBPROTOCOL, pack_v1, unpack_v1};

/// CPU time of the front and of Jupyter during one measurement, in ns.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub front_ns: u64,
    pub jupyter_ns: u64,
    /// Context switches of the front.
    pub front_switches: u64,
}

struct CpuProbe {
    front: Vec<u32>,
    jupyter: u32,
    start: (u64, u64, u64),
}

impl CpuProbe {
    fn start(target: &Target) -> Result<CpuProbe> {
        let front = target.front_pids.clone();
        let jupyter = target.jupyter_pid;
        let start = (
            procfs::cpu_ns(&front)?,
            procfs::cpu_ns(&[jupyter])?,
            procfs::context_switches(&front)?,
        );
        Ok(CpuProbe {
            front,
            jupyter,
            start,
        })
    }

    fn stop(self) -> Result<Cpu> {
        Ok(Cpu {
            front_ns: procfs::cpu_ns(&self.front)?.saturating_sub(self.start.0),
            jupyter_ns: procfs::cpu_ns(&[self.jupyter])?.saturating_sub(self.start.1),
            front_switches: procfs::context_switches(&self.front)?.saturating_sub(self.start.2),
        })
    }
}

/// Runs `$BENCH_HOOK start|stop PART PATH PID...` (the front's pids), if set,
/// right around a measured load: e.g. to zero and dump callgrind's counters
/// of exactly the measured requests.
fn hook(phase: &str, part: &str, target: &Target) -> Result<()> {
    hook_pids(phase, part, target.via, &target.front_pids)
}

/// [`hook`] for a server that is not a [`Target`] (the handshake part).
pub fn hook_pids(phase: &str, part: &str, via: Via, pids: &[u32]) -> Result<()> {
    let Ok(command) = std::env::var("BENCH_HOOK") else {
        return Ok(());
    };
    let status = std::process::Command::new(&command)
        .args([phase, part, via.name()])
        .args(pids.iter().map(u32::to_string))
        .status()
        .with_context(|| format!("cannot run BENCH_HOOK {command}"))?;
    if !status.success() {
        bail!("BENCH_HOOK {command} {phase} failed: {status}");
    }
    Ok(())
}

/// Latency percentiles of a set of samples.
#[derive(Debug, Clone, Copy, Default)]
pub struct Percentiles {
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
}

impl Percentiles {
    pub fn of(samples: &mut [Duration]) -> Percentiles {
        samples.sort_unstable();
        let at = |q: f64| {
            if samples.is_empty() {
                return Duration::ZERO;
            }
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i]
        };
        Percentiles {
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
        }
    }
}

/// `GET /api/contents` from several keep-alive connections at once.
#[derive(Debug, Clone, Default)]
pub struct LoadRun {
    pub requests: usize,
    /// Connections opened again because the front closed one after an
    /// answer (`Connection: close`; nginx does after `keepalive_requests`,
    /// 1,000 by default), as a browser does; inside that request's time.
    pub reconnects: usize,
    pub secs: f64,
    pub latency: Percentiles,
    pub cpu: Cpu,
}

/// `part` names the load to `BENCH_HOOK`.
pub async fn api_load(
    target: &Target,
    part: &str,
    total: usize,
    connections: usize,
    limit: Duration,
) -> Result<LoadRun> {
    // Connect and warm each connection up before the clock and the CPU probe start.
    let mut senders = Vec::new();
    for _ in 0..connections {
        let (mut s, mut conn) = target.http_inline().await?;
        alongside(&mut conn, get_contents(target, &mut s)).await?;
        senders.push((s, conn));
    }
    let next = Arc::new(AtomicUsize::new(0));
    hook("start", part, target)?;
    let probe = CpuProbe::start(target)?;
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    for (mut sender, mut conn) in senders {
        let next = next.clone();
        let target = target.clone();
        let req = target.request(Method::GET, "/api/contents");
        let (parts, ()) = req.body(())?.into_parts();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut reconnects = 0;
            let mut closed = false;
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let t = Instant::now();
                if closed {
                    (sender, conn) = target.http_inline().await?;
                    reconnects += 1;
                }
                let exchange = async {
                    sender.ready().await?;
                    let req = http::Request::from_parts(parts.clone(), Full::new(Bytes::new()));
                    let resp = sender.send_request(req).await?;
                    let status = resp.status();
                    let close = resp
                        .headers()
                        .get(header::CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    resp.into_body().collect().await?;
                    if status != StatusCode::OK {
                        bail!("GET /api/contents answered {status}");
                    }
                    Ok(close)
                };
                closed = alongside(&mut conn, exchange).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>((latencies, reconnects))
        }));
    }
    let mut all = Vec::with_capacity(total);
    let mut reconnects = 0;
    for t in tasks {
        let (latencies, r) = t.await??;
        all.extend(latencies);
        reconnects += r;
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = probe.stop()?;
    hook("stop", part, target)?;
    Ok(LoadRun {
        requests: all.len(),
        reconnects,
        secs,
        latency: Percentiles::of(&mut all),
        cpu,
    })
}

async fn get_contents(
    target: &Target,
    sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
) -> Result<()> {
    let req = target
        .request(Method::GET, "/api/contents")
        .body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    resp.into_body().collect().await?;
    if status != StatusCode::OK {
        bail!("{}: GET /api/contents answered {status}", target.via.name());
    }
    Ok(())
}

/// `HEAD /files/FILE`: Tornado hashes (SHA-512) a static file the first time
/// it serves it, and keeps the hash; that one-off cost is not the download's.
pub async fn warm_file(target: &Target, file: &str) -> Result<()> {
    let mut sender = target.http().await?;
    let req = target
        .request(Method::HEAD, &format!("/files/{file}"))
        .header(header::REFERER, target.referer())
        .body(Full::new(Bytes::new()))?;
    let resp = tokio::time::timeout(Duration::from_secs(120), sender.send_request(req))
        .await
        .context("HEAD /files/ took longer than 120s")??;
    if resp.status() != StatusCode::OK {
        bail!(
            "{}: HEAD /files/{file} answered {}",
            target.via.name(),
            resp.status()
        );
    }
    Ok(())
}

/// One download of the big file from `/files/`.
#[derive(Debug, Clone, Default)]
pub struct DownloadRun {
    pub bytes: u64,
    pub secs: f64,
    pub cpu: Cpu,
}

pub async fn download(
    target: &Target,
    file: &str,
    expect: u64,
    limit: Duration,
) -> Result<DownloadRun> {
    let (mut sender, mut conn) = target.http_inline().await?;
    let req = target
        .request(Method::GET, &format!("/files/{file}"))
        .header(header::REFERER, target.referer())
        .body(Full::new(Bytes::new()))?;
    hook("start", "download", target)?;
    let probe = CpuProbe::start(target)?;
    let started = Instant::now();
    let deadline = started + limit;
    let transfer = async {
        let resp = sender.send_request(req).await?;
        if resp.status() != StatusCode::OK {
            bail!(
                "{}: GET /files/{file} answered {}",
                target.via.name(),
                resp.status()
            );
        }
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        while let Some(frame) = tokio::time::timeout_at(deadline.into(), body.frame())
            .await
            .with_context(|| format!("the download took longer than {limit:?}"))?
        {
            if let Ok(data) = frame?.into_data() {
                bytes += data.len() as u64;
            }
        }
        Ok(bytes)
    };
    let bytes = alongside(&mut conn, transfer).await?;
    let secs = started.elapsed().as_secs_f64();
    let cpu = probe.stop()?;
    hook("stop", "download", target)?;
    if bytes != expect {
        bail!(
            "{}: downloaded {bytes} bytes of {expect}",
            target.via.name()
        );
    }
    Ok(DownloadRun { bytes, secs, cpu })
}

/// Round trips of `1+1` on one kernel WebSocket: from sending the
/// execute_request until both its execute_reply and the kernel's return to
/// idle have arrived. The first `warmup` are not kept. Binary frames of the
/// v1 subprotocol, or JSON text frames where the kernels are on a gateway
/// (see [`Target::kernels_on_gateway`]).
/// Kernel round trips: their latencies, and the CPU the front and Jupyter
/// spent on them (from the first measured one to the last).
#[derive(Debug, Clone, Default)]
pub struct RoundTrips {
    pub samples: Vec<Duration>,
    pub cpu: Cpu,
}

pub async fn kernel_round_trips(
    target: &Target,
    run: usize,
    warmup: usize,
    samples: usize,
    limit: Duration,
) -> Result<RoundTrips> {
    // A new session id per connection, as a browser's page has: Jupyter
    // treats a known one as a reconnection (replaying buffered messages).
    let path = format!(
        "/api/kernels/{}/channels?session_id=bench-{}-{run}",
        target.kernel, target.name
    );
    let v1 = !target.kernels_on_gateway;
    let mut ws = target.websocket(&path, v1.then_some(SUBPROTOCOL)).await?;
    let deadline = Instant::now() + limit;
    let mut out = Vec::with_capacity(samples);
    let mut probe = None;
    for i in 0..warmup + samples {
        if Instant::now() > deadline {
            break;
        }
        if i == warmup {
            probe = Some(CpuProbe::start(target)?);
        }
        let msg_id = format!("bench-{}-{run}-{i}", target.name);
        let header = json!({
            "msg_id": msg_id, "session": "bench", "username": "bench",
            "msg_type": "execute_request", "version": "5.3", "date": "2024-01-01T00:00:00Z"
        });
        let content = json!({"code": "1+1", "silent": false, "store_history": false,
            "user_expressions": {}, "allow_stdin": false, "stop_on_error": true});
        let frame = if v1 {
            let parts = [header, json!({}), json!({}), content]
                .iter()
                .map(serde_json::to_vec)
                .collect::<Result<Vec<_>, _>>()?;
            Message::Binary(pack_v1("shell", &parts))
        } else {
            let msg = json!({"header": header, "parent_header": {}, "metadata": {},
                "content": content, "channel": "shell", "buffers": []});
            Message::Text(msg.to_string())
        };
        let t = Instant::now();
        ws.send(frame).await?;
        let (mut replied, mut idle) = (false, false);
        // The first executions wait for the kernel to start. One deadline for
        // the whole execution: pings and other messages keep arriving.
        let wait = if i == 0 {
            Duration::from_secs(60)
        } else {
            Duration::from_secs(10)
        };
        let until = tokio::time::Instant::now() + wait;
        while !(replied && idle) {
            let msg = tokio::time::timeout_at(until, ws.next())
                .await
                .with_context(|| format!("{}: no kernel reply within {wait:?}", target.name))?
                .context("the kernel WebSocket closed")??;
            let Some(m) = KernelMessage::read(&msg) else {
                continue;
            };
            if m.parent.get("msg_id").and_then(Value::as_str) != Some(msg_id.as_str()) {
                continue;
            }
            match (
                m.channel.as_str(),
                m.header["msg_type"].as_str().unwrap_or(""),
            ) {
                ("shell", "execute_reply") => {
                    if m.content["status"] != "ok" {
                        bail!("1+1 failed: {}", m.content);
                    }
                    replied = true;
                }
                ("iopub", "status") if m.content["execution_state"] == "idle" => idle = true,
                _ => {}
            }
        }
        if i >= warmup {
            out.push(t.elapsed());
        }
    }
    let cpu = probe.map(CpuProbe::stop).transpose()?.unwrap_or_default();
    let _ = ws.close(None).await;
    if out.is_empty() {
        bail!("{}: no kernel round trip within {limit:?}", target.name);
    }
    Ok(RoundTrips { samples: out, cpu })
}

/// The parts of a kernel message the round trips look at.
struct KernelMessage {
    channel: String,
    header: Value,
    parent: Value,
    content: Value,
}

impl KernelMessage {
    /// A v1 binary frame or a legacy JSON text frame; `None` for anything else.
    fn read(msg: &Message) -> Option<KernelMessage> {
        match msg {
            Message::Binary(data) => {
                let (channel, parts) = unpack_v1(data)?;
                let mut parts = parts.into_iter();
                let (header, parent, _metadata, content) =
                    (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
                Some(KernelMessage {
                    channel,
                    header,
                    parent,
                    content,
                })
            }
            Message::Text(text) => {
                let mut v: Value = serde_json::from_str(text).ok()?;
                Some(KernelMessage {
                    channel: v.get("channel")?.as_str()?.to_string(),
                    header: v.get_mut("header")?.take(),
                    parent: v.get_mut("parent_header")?.take(),
                    content: v.get_mut("content")?.take(),
                })
            }
            _ => None,
        }
    }
}

/// The front's memory with `n` idle terminal WebSockets open (read one
/// second after the last was greeted), all from this machine's default
/// address; they are closed before this returns.
pub async fn idle_websockets(target: &Target, n: usize, limit: Duration) -> Result<procfs::Memory> {
    let path = format!("/terminals/websocket/{}", target.terminal);
    let deadline = Instant::now() + limit;
    let mut open = Vec::with_capacity(n);
    for _ in 0..n {
        if Instant::now() > deadline {
            bail!(
                "{}: opening {n} WebSockets took longer than {limit:?}",
                target.via.name()
            );
        }
        let mut ws = target.websocket(&path, None).await?;
        // terminado greets every client with ["setup", {}]: the socket is live.
        tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .context("no greeting on the terminal WebSocket within 10s")?
            .context("the terminal WebSocket closed")??;
        open.push(ws);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let front = procfs::memory(&target.front_pids)?;
    for mut ws in open {
        let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
    }
    Ok(front)
}

/// Memory of the front and of Jupyter while idle terminal WebSockets open
/// in steps (say 1,000, then on to 10,000), and once they all closed.
#[derive(Debug, Clone, Default)]
pub struct SocketSteps {
    /// Settled, right before the first opened.
    pub front_before: procfs::Memory,
    pub jupyter_before: procfs::Memory,
    pub steps: Vec<SocketStep>,
    /// Settled, once every WebSocket closed.
    pub front_after: procfs::Memory,
    /// Opening all of them took this long (the memory readings between
    /// the steps not counted).
    pub open_secs: f64,
}

/// The memory with `n` idle WebSockets open (the front's settled).
#[derive(Debug, Clone, Copy, Default)]
pub struct SocketStep {
    pub n: usize,
    pub front: procfs::Memory,
    pub jupyter: procfs::Memory,
}

impl SocketSteps {
    /// The front's RSS per WebSocket with `step.n` open, in KiB.
    pub fn front_per_socket(&self, step: &SocketStep) -> f64 {
        (step.front.rss_kib as f64 - self.front_before.rss_kib as f64) / step.n.max(1) as f64
    }

    pub fn jupyter_per_socket(&self, step: &SocketStep) -> f64 {
        (step.jupyter.rss_kib as f64 - self.jupyter_before.rss_kib as f64) / step.n.max(1) as f64
    }
}

/// Opens idle terminal WebSockets, `concurrency` at a time, the i-th from
/// `sources[i % len]` (each bound before connecting, so the front sees
/// that many clients), reading the memory at each count in `steps`; then
/// closes them all.
pub async fn idle_websocket_steps(
    target: &Target,
    steps: &[usize],
    sources: &[std::net::IpAddr],
    concurrency: usize,
    limit: Duration,
) -> Result<SocketSteps> {
    let settle = Duration::from_secs(15);
    let path = Arc::new(format!("/terminals/websocket/{}", target.terminal));
    let target = Arc::new(target.clone());
    let sources: Arc<Vec<std::net::IpAddr>> = Arc::new(sources.to_vec());
    let mut out = SocketSteps {
        front_before: settled_memory(&target.front_pids, settle).await?,
        jupyter_before: procfs::memory(&[target.jupyter_pid])?,
        ..SocketSteps::default()
    };
    let deadline = Instant::now() + limit;
    let open = Arc::new(std::sync::Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut opening = Duration::ZERO;
    for &n in steps {
        let step_started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..concurrency.max(1) {
            let (target, path, sources, open, next) = (
                target.clone(),
                path.clone(),
                sources.clone(),
                open.clone(),
                next.clone(),
            );
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        return Ok::<_, anyhow::Error>(());
                    }
                    if Instant::now() > deadline {
                        bail!(
                            "{}: opening {n} WebSockets took longer than {limit:?}",
                            target.via.name()
                        );
                    }
                    let source = (!sources.is_empty()).then(|| sources[i % sources.len()]);
                    let mut ws = target
                        .websocket_from(&path, None, source)
                        .await
                        .with_context(|| format!("WebSocket {} of {n}", i + 1))?;
                    // terminado greets every client with ["setup", {}]: the socket is live.
                    tokio::time::timeout(Duration::from_secs(30), ws.next())
                        .await
                        .context("no greeting on the terminal WebSocket within 30s")?
                        .context("the terminal WebSocket closed")??;
                    if let Ok(mut open) = open.lock() {
                        open.push(ws);
                    }
                }
            }));
        }
        let mut failed = None;
        for t in tasks {
            if let Err(e) = t.await.map_err(anyhow::Error::from).and_then(|r| r) {
                failed.get_or_insert(e);
            }
        }
        if let Some(e) = failed {
            close_all(&open).await;
            return Err(e);
        }
        opening += step_started.elapsed();
        next.store(n, Ordering::Relaxed);
        out.steps.push(SocketStep {
            n,
            front: settled_memory(&target.front_pids, settle).await?,
            jupyter: procfs::memory(&[target.jupyter_pid])?,
        });
    }
    out.open_secs = opening.as_secs_f64();
    close_all(&open).await;
    out.front_after = settled_memory(&target.front_pids, settle).await?;
    Ok(out)
}

/// Closes WebSockets many at a time, each given 2 s for the closing handshake.
async fn close_all<S>(open: &std::sync::Mutex<Vec<tokio_tungstenite::WebSocketStream<S>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let all = open
        .lock()
        .map(|mut v| std::mem::take(&mut *v))
        .unwrap_or_default();
    let mut tasks = Vec::new();
    let mut all = all.into_iter();
    loop {
        let chunk: Vec<_> = all.by_ref().take(256).collect();
        if chunk.is_empty() {
            break;
        }
        tasks.push(tokio::spawn(async move {
            let closing = chunk.into_iter().map(|mut ws| async move {
                let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
            });
            futures_util::future::join_all(closing).await;
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// TLS 1.3 handshakes: a new TCP connection each time (full, or resumed
/// when the client keeps tickets); the client closes with close_notify
/// right after the handshake.
#[derive(Debug, Clone, Default)]
pub struct HandshakeRun {
    pub count: usize,
    /// Of those, how many were resumed (a ticket of an earlier one).
    pub resumed: usize,
    pub secs: f64,
    pub server_ns: u64,
    /// This benchmark's own CPU time meanwhile: the client's.
    pub client_ns: u64,
    pub negotiated: String,
}

pub async fn handshakes(
    tls: &TlsConnector,
    port: u16,
    server_pids: &[u32],
    total: usize,
    concurrency: usize,
    limit: Duration,
) -> Result<HandshakeRun> {
    let negotiated = {
        let s = tls_stream(tls, port).await?;
        let (_, conn) = s.get_ref();
        format!(
            "{:?}, {:?}, {:?}",
            conn.protocol_version().context("no TLS version")?,
            conn.negotiated_cipher_suite()
                .context("no cipher suite")?
                .suite(),
            conn.negotiated_key_exchange_group()
                .context("no key exchange group")?
                .name(),
        )
    };
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let resumed = Arc::new(AtomicUsize::new(0));
    let me = [std::process::id()];
    let start_cpu = procfs::cpu_ns(server_pids)?;
    let start_client = procfs::cpu_ns(&me)?;
    let started = Instant::now();
    let deadline = started + limit;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, done, resumed, tls) = (next.clone(), done.clone(), resumed.clone(), tls.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let mut s = tls_stream(&tls, port).await?;
                if s.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed) {
                    resumed.fetch_add(1, Ordering::Relaxed);
                }
                s.shutdown().await?;
                // Read the server's tickets and its close, so each connection ends cleanly.
                let mut sink = [0u8; 4096];
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                })
                .await;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    // The server may still be tearing the last connections down.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let server_ns = procfs::cpu_ns(server_pids)?.saturating_sub(start_cpu);
    let client_ns = procfs::cpu_ns(&me)?.saturating_sub(start_client);
    Ok(HandshakeRun {
        count: done.load(Ordering::Relaxed),
        resumed: resumed.load(Ordering::Relaxed),
        secs,
        server_ns,
        client_ns,
        negotiated,
    })
}

/// Resident memory of the front after loads, once their connections closed:
/// does memory come back?
#[derive(Debug, Clone, Default)]
pub struct MemoryRounds {
    pub fresh: procfs::Memory,
    pub rounds: Vec<MemoryRound>,
}

/// One load of the memory rounds.
#[derive(Debug, Clone)]
pub struct MemoryRound {
    pub load: String,
    /// Idle WebSockets only: how many, and the front's memory (settled)
    /// right before they opened.
    pub sockets: Option<(usize, procfs::Memory)>,
    /// While the load's connections were open (idle WebSockets only).
    pub during: Option<procfs::Memory>,
    /// After they closed and the front settled.
    pub after: procfs::Memory,
}

/// How long the RSS must stay put to count as settled: longer than a
/// front may wait before handing freed memory back (notebookd: once closes
/// stop, at most about 2 s after they started). Freed memory does not
/// change the RSS until it is handed back, so a shorter window can read a
/// front that is about to shrink.
pub const SETTLE_WINDOW: Duration = Duration::from_secs(3);

impl MemoryRound {
    /// Idle WebSockets: the RSS they added, per WebSocket, in KiB.
    pub fn per_socket(&self) -> Option<f64> {
        let (n, before) = self.sockets?;
        let during = self.during?;
        Some((during.rss_kib as f64 - before.rss_kib as f64) / n.max(1) as f64)
    }
}

/// Reads the front's memory once it stops changing for [`SETTLE_WINDOW`]:
/// closed connections are torn down in the kernel and in the front a
/// little after the client closes them. At most `limit`.
pub async fn settled_memory(pids: &[u32], limit: Duration) -> Result<procfs::Memory> {
    const STEP: Duration = Duration::from_millis(250);
    let needed = (SETTLE_WINDOW.as_millis() / STEP.as_millis()) as usize;
    let deadline = Instant::now() + limit;
    let mut last = procfs::memory(pids)?;
    if pids.is_empty() {
        return Ok(last);
    }
    let mut steady = 0;
    while steady < needed && Instant::now() < deadline {
        tokio::time::sleep(STEP).await;
        let now = procfs::memory(pids)?;
        steady = if now.rss_kib.abs_diff(last.rss_kib) <= 64 {
            steady + 1
        } else {
            0
        };
        last = now;
    }
    Ok(last)
}

/// `total` requests, each on a new TLS connection that the client asks to
/// close (`Connection: close`), `concurrency` at a time.
pub async fn close_requests(
    target: &Target,
    total: usize,
    concurrency: usize,
    limit: Duration,
) -> Result<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + limit;
    let req = target
        .request(Method::GET, "/api/status")
        .header(header::CONNECTION, "close")
        .body(())?;
    let (parts, ()) = req.into_parts();
    let target = Arc::new(target.clone());
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (next, done, parts, target) =
            (next.clone(), done.clone(), parts.clone(), target.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total && Instant::now() < deadline {
                let (mut sender, mut conn) = target.http_inline().await?;
                let req = http::Request::from_parts(parts.clone(), Full::new(Bytes::new()));
                let exchange = async {
                    let resp = sender.send_request(req).await?;
                    let status = resp.status();
                    resp.into_body().collect().await?;
                    if status != StatusCode::OK {
                        bail!("GET /api/status answered {status}");
                    }
                    Ok(())
                };
                tokio::time::timeout(Duration::from_secs(30), alongside(&mut conn, exchange))
                    .await
                    .context("a Connection: close request took longer than 30s")??;
                // The server closes: read to its end.
                if let Some(c) = conn {
                    let _ = tokio::time::timeout(Duration::from_secs(5), c).await;
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(done.load(Ordering::Relaxed))
}

/// `n` downloads of `file` at once, each on its own connection.
pub async fn parallel_downloads(
    target: &Target,
    file: &str,
    expect: u64,
    n: usize,
    limit: Duration,
) -> Result<()> {
    let target = Arc::new(target.clone());
    let mut tasks = Vec::new();
    for _ in 0..n {
        let target = target.clone();
        let file = file.to_string();
        tasks.push(tokio::spawn(async move {
            download(&target, &file, expect, limit).await
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}
