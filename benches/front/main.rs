//! The front-door benchmark, run by `./dev bench`: one Jupyter reached
//! directly over its unix socket, through nginx (the usual Jupyter site) and
//! through notebookd, measured side by side in the same run, and written up
//! in BENCHMARKS.md. See the report's Method section for what is measured
//! and how. Every load is bounded in count and in time; everything started
//! here listens on loopback only and is stopped at the end (or on Ctrl-C).
//!
//! Usage: `cargo bench --bench front -- [--quick] [--out FILE]`
//! (`./dev bench` installs nginx and the pinned Jupyter first).

mod attack;
mod client;
mod gateway;
mod measure;
mod procfs;
mod report;
mod stack;
#[path = "../../tests/it/support/v1_frames.rs"]
mod v1_frames;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use client::{Target, Via};
use measure::{DownloadRun, HandshakeRun, LoadRun, MemoryRound, MemoryRounds, SocketSteps};
use stack::Stack;

/// How much of everything to do.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    /// Only these parts (`--only`); all when empty.
    pub only: Vec<String>,
    /// Each measurement runs this many times, the paths taking turns.
    pub reps: usize,
    pub api_requests: usize,
    pub api_connections: usize,
    pub api_limit: Duration,
    pub rtt_warmup: usize,
    pub rtt_samples: usize,
    pub rtt_limit: Duration,
    pub download_bytes: u64,
    pub download_limit: Duration,
    pub handshakes: usize,
    pub handshake_concurrency: usize,
    pub handshake_limit: Duration,
    /// Idle WebSockets: memory read with this many open, through every
    /// path (the first) and through notebookd (all of them); lowered at
    /// start if the open-file limit cannot carry the last.
    pub idle_steps: Vec<usize>,
    /// The last step as planned, before any lowering.
    pub idle_wanted: usize,
    /// ... from this many client addresses (127.0.4.1 on), opened this many at a time.
    pub idle_sources: u8,
    pub idle_concurrency: usize,
    pub idle_limit: Duration,
    /// Memory rounds: this many rounds of this many idle WebSockets, then
    /// `Connection: close` requests, then downloads at once.
    pub memory_socket_rounds: usize,
    pub memory_sockets: usize,
    pub close_requests: usize,
    pub close_concurrency: usize,
    pub parallel_downloads: usize,
    /// Each attack (and the unloaded baseline) lasts this long: kernel
    /// round trips for the first half, `GET /api/contents` for the second.
    pub attack_time: Duration,
    pub attack_rtt_samples: usize,
    pub attack_api_requests: usize,
    /// Guessing flood: clients per address (100 addresses), and the pause
    /// between one client's attempts.
    pub flood_per_address: usize,
    pub flood_interval: Duration,
    /// Slow body: connections per address (100 addresses), the pause between
    /// two body bytes, and the Content-Length announced.
    pub slow_per_address: usize,
    pub slow_interval: Duration,
    pub slow_content_length: usize,
}

/// The parts of a run, in order.
pub const PARTS: [&str; 8] = [
    "sockets",
    "memory",
    "api",
    "rtt",
    "download",
    "handshakes",
    "attack",
    "gateway",
];

impl Plan {
    pub fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }

    /// A run that is not the standard one (and so is not written to BENCHMARKS.md by default).
    pub fn partial(&self) -> bool {
        self.quick || !self.only.is_empty() || self.reps != Plan::full().reps
    }

    fn full() -> Plan {
        Plan {
            quick: false,
            only: Vec::new(),
            reps: 3,
            api_requests: 1000,
            api_connections: 4,
            api_limit: Duration::from_secs(60),
            rtt_warmup: 20,
            rtt_samples: 200,
            rtt_limit: Duration::from_secs(60),
            download_bytes: 1 << 30,
            download_limit: Duration::from_secs(120),
            handshakes: 2000,
            handshake_concurrency: 8,
            handshake_limit: Duration::from_secs(30),
            idle_steps: vec![1000, 10_000],
            idle_wanted: 10_000,
            idle_sources: 40,
            idle_concurrency: 16,
            idle_limit: Duration::from_secs(300),
            memory_socket_rounds: 3,
            memory_sockets: 1000,
            close_requests: 10_000,
            close_concurrency: 8,
            parallel_downloads: 4,
            attack_time: Duration::from_secs(15),
            attack_rtt_samples: 5000,
            attack_api_requests: 50_000,
            flood_per_address: 1,
            flood_interval: Duration::from_millis(100),
            slow_per_address: 5,
            slow_interval: Duration::from_secs(3),
            slow_content_length: 16000,
        }
    }

    fn quick() -> Plan {
        Plan {
            quick: true,
            reps: 1,
            api_requests: 200,
            rtt_warmup: 5,
            rtt_samples: 50,
            download_bytes: 128 << 20,
            handshakes: 200,
            idle_steps: vec![50, 200],
            idle_wanted: 200,
            memory_sockets: 100,
            close_requests: 500,
            attack_time: Duration::from_secs(4),
            slow_per_address: 2,
            ..Plan::full()
        }
    }
}

/// Everything measured, by path.
#[derive(Default)]
pub struct Results {
    pub date: String,
    pub machine: Vec<(&'static str, String)>,
    /// `/proc/loadavg` before each part of the run.
    pub load: Vec<(&'static str, String)>,
    pub idle_start: BTreeMap<Via, procfs::Memory>,
    pub idle_end: BTreeMap<Via, procfs::Memory>,
    pub sockets: BTreeMap<Via, SocketSteps>,
    /// The open-file limit of the benchmark and what it started, and
    /// notebookd's `limits.max_connections` for the run.
    pub open_files: u64,
    pub max_connections: u32,
    pub memory: BTreeMap<Via, MemoryRounds>,
    pub startup: stack::Startup,
    pub api: BTreeMap<Via, Vec<LoadRun>>,
    /// `GET /api/contents` on notebookd with `Authorization: token`.
    pub api_token: Vec<LoadRun>,
    pub rtt: BTreeMap<Via, Vec<Duration>>,
    /// The CPU of each run of kernel round trips, and how many it measured.
    pub rtt_cpu: BTreeMap<Via, Vec<(measure::Cpu, usize)>>,
    pub downloads: BTreeMap<Via, Vec<DownloadRun>>,
    /// By key type ("ECDSA P-256", "RSA 2048"), then path.
    pub handshakes: BTreeMap<&'static str, BTreeMap<Via, Vec<HandshakeRun>>>,
    /// Unloaded, then under each attack, by path (the fronts only).
    pub attacks: BTreeMap<Via, Vec<AttackRun>>,
    /// Kernel `1+1` round trips of the gateway part, by path.
    pub gateway: BTreeMap<gateway::GatewayPath, Vec<Duration>>,
}

/// What the logged-in client got while one attack (or none) ran.
#[derive(Debug, Clone)]
pub struct AttackRun {
    /// `None`: the unloaded baseline.
    pub attack: Option<attack::Shape>,
    /// Kernel `1+1` round trips, or why they failed.
    pub rtt: std::result::Result<Vec<Duration>, String>,
    /// `GET /api/contents` one at a time on one keep-alive connection.
    pub api: std::result::Result<LoadRun, String>,
    /// The front's memory before the attack, at its end, and once its
    /// connections closed and the RSS settled.
    pub before: procfs::Memory,
    pub during: procfs::Memory,
    pub after: procfs::Memory,
    /// Open files of the Jupyter behind the front before the attack and at
    /// its end: does the attack reach through the front?
    pub jupyter_files: (usize, usize),
    pub stats: attack::Stats,
}

struct Args {
    quick: bool,
    only: Vec<String>,
    reps: Option<usize>,
    out: Option<PathBuf>,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        quick: false,
        only: Vec::new(),
        reps: None,
        out: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            "--quick" => args.quick = true,
            "--out" => args.out = Some(it.next().context("--out needs a file name")?.into()),
            "--only" => {
                let list = it.next().context("--only needs a list of parts")?;
                for part in list.split(',') {
                    if !PARTS.contains(&part) {
                        bail!(
                            "--only: unknown part {part:?}; the parts are {}",
                            PARTS.join(",")
                        );
                    }
                    args.only.push(part.to_string());
                }
            }
            "--reps" => {
                let n = it.next().context("--reps needs a number")?;
                args.reps = Some(
                    n.parse()
                        .ok()
                        .filter(|&n| n > 0)
                        .with_context(|| format!("--reps: {n:?} is not a positive number"))?,
                );
            }
            "-h" | "--help" => {
                println!(
                    "usage: ./dev bench [--quick] [--only PART,...] [--reps N] [--out FILE]\n\n\
                     Measures Jupyter directly, through nginx and through notebookd, with\n\
                     local kernels and (part gateway) on Jupyter Enterprise Gateway, and\n\
                     writes BENCHMARKS.md (or FILE).\n\
                     \x20 --quick      a short smoke run\n\
                     \x20 --only       some of: {}\n\
                     \x20 --reps N     runs of each measurement (default 3)\n\
                     A run that is not the standard one is printed, and written only with --out.\n\
                     NOTEBOOKD_GATEWAY_VENV: Enterprise Gateway's venv (./dev bench installs it).\n\n\
                     BENCH_WRAP_NOTEBOOKD / BENCH_WRAP_NGINX: a command to run notebookd or\n\
                     nginx under, e.g. \"valgrind --tool=callgrind\" (then use callgrind_control\n\
                     to zero and dump around one part).\n\
                     BENCH_HOOK: a command run as `CMD start|stop api|attack|download|handshakes PATH PID...`\n\
                     right around each measured load (PID: the front's processes; attack:\n\
                     GET /api/contents under attack).",
                    PARTS.join(",")
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    let mut plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    plan.only = args.only;
    if let Some(n) = args.reps {
        plan.reps = n;
    }
    let venv = PathBuf::from(
        std::env::var("NOTEBOOKD_VENV")
            .context("NOTEBOOKD_VENV is not set: run the benchmark with ./dev bench")?,
    );
    if !venv.join("bin/jupyter").exists() {
        bail!("{}/bin/jupyter is missing: run ./dev venv", venv.display());
    }
    let gateway_venv = if plan.wants("gateway") {
        let dir = PathBuf::from(std::env::var("NOTEBOOKD_GATEWAY_VENV").context(
            "NOTEBOOKD_GATEWAY_VENV is not set: run the benchmark with ./dev bench, which \
             installs Enterprise Gateway (tests/setup/gateway.sh enterprise), or leave the \
             gateway part out with --only",
        )?);
        if !dir.join("bin/jupyter-enterprisegateway").exists() {
            bail!(
                "{}/bin/jupyter-enterprisegateway is missing: run tests/setup/gateway.sh enterprise",
                dir.display()
            );
        }
        Some(dir)
    } else {
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let results = runtime.block_on(async {
        tokio::spawn(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("interrupted: stopping everything");
            stack::stop_everything();
            std::process::exit(130);
        });
        let open_files = stack::raise_open_files()?;
        let max_connections = stack::max_connections(open_files);
        // The idle WebSockets through notebookd stop where its connections do,
        // leaving room for the benchmark's own (in steps of 500).
        let fit = (max_connections as usize).saturating_sub(200) / 500 * 500;
        for n in &mut plan.idle_steps {
            *n = (*n).min(fit.max(1));
        }
        let mut stack = Stack::start(&venv, plan.download_bytes, max_connections).await?;
        let mut results = measure_all(&plan, &mut stack, &venv, gateway_venv.as_deref()).await;
        if let Ok(r) = &mut results {
            r.open_files = open_files;
            r.max_connections = max_connections;
        }
        stack.stop();
        results
    })?;
    let text = report::render(&plan, &results);
    let out = match (args.out, plan.partial()) {
        (Some(out), _) => Some(out),
        (None, false) => Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md")),
        (None, true) => None,
    };
    match out {
        Some(path) => {
            std::fs::write(&path, &text)
                .with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("==> wrote {}", path.display());
        }
        None => println!("{text}"),
    }
    Ok(())
}

async fn measure_all(
    plan: &Plan,
    stack: &mut Stack,
    venv: &std::path::Path,
    gateway_venv: Option<&std::path::Path>,
) -> Result<Results> {
    let mut r = Results {
        date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        ..Results::default()
    };
    let mut versions = stack.versions(venv);
    versions.gateway = gateway_venv.map(gateway::versions);
    r.machine = report::machine(&versions);
    r.startup = stack.startup.clone();

    let (mut direct, mut nginx, mut nbd) = paths(stack)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in [&direct, &nginx, &nbd] {
        r.idle_start.insert(t.via, procfs::memory(&t.front_pids)?);
    }
    open_sessions(stack, [&mut direct, &mut nginx, &mut nbd]).await?;

    if plan.wants("sockets") {
        let targets = [&direct, &nginx, &nbd];
        r.load.push(("idle WebSockets", procfs::loadavg()));
        let sources: Vec<std::net::IpAddr> = (1..=plan.idle_sources)
            .map(|i| std::net::IpAddr::from([127, 0, 4, i]))
            .collect();
        for t in targets {
            // nginx and the direct Jupyter stop at the first step (see the report).
            let steps = match t.via {
                Via::Notebookd => &plan.idle_steps[..],
                _ => &plan.idle_steps[..1],
            };
            eprintln!(
                "==> {}: idle terminal WebSockets, memory at {steps:?} open",
                t.via.name(),
            );
            let s = measure::idle_websocket_steps(
                t,
                steps,
                &sources,
                plan.idle_concurrency,
                plan.idle_limit,
            )
            .await?;
            r.sockets.insert(t.via, s);
        }
    }

    if plan.wants("memory") {
        r.load.push(("memory rounds", procfs::loadavg()));
        for t in [&nginx, &nbd] {
            let rounds = memory_rounds(plan, stack, t, r.idle_start[&t.via]).await?;
            r.memory.insert(t.via, rounds);
        }
    }

    let later = ["api", "rtt", "download", "handshakes", "attack", "gateway"];
    if (plan.wants("sockets") || plan.wants("memory")) && later.iter().any(|p| plan.wants(p)) {
        stack.restart_notebookd_and_jupyter().await?;
        (direct, nginx, nbd) = paths(stack)?;
        open_sessions(stack, [&mut direct, &mut nginx, &mut nbd]).await?;
    }
    let targets = [&direct, &nginx, &nbd];
    let nbd_token = nbd.with_token(&stack.token);

    if plan.wants("api") {
        r.load.push(("GET /api/contents", procfs::loadavg()));
        for rep in 0..plan.reps {
            for t in in_turn(&targets, rep) {
                eprintln!(
                    "==> {}: GET /api/contents ×{} (run {})",
                    t.via.name(),
                    plan.api_requests,
                    rep + 1
                );
                let run = measure::api_load(
                    t,
                    "api",
                    plan.api_requests,
                    plan.api_connections,
                    plan.api_limit,
                )
                .await?;
                r.api.entry(t.via).or_default().push(run);
            }
            eprintln!(
                "==> notebookd, Authorization: token: GET /api/contents ×{} (run {})",
                plan.api_requests,
                rep + 1
            );
            let run = measure::api_load(
                &nbd_token,
                "api",
                plan.api_requests,
                plan.api_connections,
                plan.api_limit,
            )
            .await?;
            r.api_token.push(run);
        }
    }

    if plan.wants("rtt") {
        r.load.push(("kernel round trips", procfs::loadavg()));
        for rep in 0..plan.reps {
            for t in in_turn(&targets, rep) {
                eprintln!("==> {}: kernel round trips (run {})", t.via.name(), rep + 1);
                let warmup = if rep == 0 { plan.rtt_warmup } else { 5 };
                let trips =
                    measure::kernel_round_trips(t, rep, warmup, plan.rtt_samples, plan.rtt_limit)
                        .await?;
                r.rtt_cpu
                    .entry(t.via)
                    .or_default()
                    .push((trips.cpu, trips.samples.len()));
                r.rtt.entry(t.via).or_default().extend(trips.samples);
            }
        }
    }

    if plan.wants("download") {
        r.load.push(("downloads", procfs::loadavg()));
        for t in targets {
            measure::warm_file(t, stack::BIG_FILE).await?;
        }
        for rep in 0..plan.reps {
            for t in in_turn(&targets, rep) {
                eprintln!(
                    "==> {}: download {} MiB (run {})",
                    t.via.name(),
                    plan.download_bytes >> 20,
                    rep + 1
                );
                let run = measure::download(
                    t,
                    stack::BIG_FILE,
                    stack.big_file_bytes,
                    plan.download_limit,
                )
                .await?;
                r.downloads.entry(t.via).or_default().push(run);
            }
        }
    }

    if plan.wants("handshakes") {
        r.load.push(("TLS handshakes", procfs::loadavg()));
        for (kind, key, nginx_port, tls) in [
            ("ECDSA P-256", "ec", stack.nginx_port_ec, stack.tls.clone()),
            ("RSA 2048", "rsa", stack.nginx_port_rsa, stack.tls.clone()),
            (
                "ECDSA P-256, resumed",
                "ec",
                stack.nginx_port_ec,
                stack.tls_resuming.clone(),
            ),
            (
                "ECDSA P-256, groups offered as browsers do",
                "ec",
                stack.nginx_port_ec,
                stack.tls_browser_groups.clone(),
            ),
        ] {
            stack.notebookd_use_cert(key).await?;
            let servers = [
                (Via::Nginx, nginx_port, nginx.front_pids.clone()),
                (Via::Notebookd, stack.notebookd_port, nbd.front_pids.clone()),
            ];
            for rep in 0..plan.reps {
                for (via, port, pids) in in_turn(&servers, rep) {
                    eprintln!(
                        "==> {}: {} TLS handshakes, {kind} (run {})",
                        via.name(),
                        plan.handshakes,
                        rep + 1
                    );
                    measure::hook_pids("start", "handshakes", *via, pids)?;
                    let run = measure::handshakes(
                        &tls,
                        *port,
                        pids,
                        plan.handshakes,
                        plan.handshake_concurrency,
                        plan.handshake_limit,
                    )
                    .await?;
                    measure::hook_pids("stop", "handshakes", *via, pids)?;
                    r.handshakes
                        .entry(kind)
                        .or_default()
                        .entry(*via)
                        .or_default()
                        .push(run);
                }
            }
        }
    }

    if plan.wants("attack") {
        r.load.push(("attacks", procfs::loadavg()));
        // The handshake part leaves notebookd on its RSA certificate; nginx's
        // attacked site has the ECDSA one.
        stack.notebookd_use_cert("ec").await?;
        for (t, port) in [(&nginx, stack.nginx_port_ec), (&nbd, stack.notebookd_port)] {
            let aim = attack::Aim {
                tls: stack.tls.clone(),
                port,
                host: t.host.clone(),
                xsrf: t
                    .cookie("_xsrf")
                    .context("the logged-in client has no _xsrf cookie")?
                    .to_string(),
            };
            let mut runs = Vec::new();
            // Slow bodies before the flood: once a flood has tripped a login
            // limit that covers them (a network's, or the global failure
            // budget), notebookd refuses their forms before reading them,
            // which would spare the slow bodies their test.
            for (i, kind) in [
                None,
                Some(attack::Kind::SlowBody),
                Some(attack::Kind::GuessingFlood),
            ]
            .into_iter()
            .enumerate()
            {
                runs.push(under_attack(plan, t, &aim, kind, i).await?);
            }
            r.attacks.insert(t.via, runs);
        }
    }

    if let Some(gateway_venv) = gateway_venv {
        r.load.push(("gateway kernels", procfs::loadavg()));
        r.gateway = gateway_round_trips(plan, stack, venv, gateway_venv, &nbd).await?;
    }

    direct.close_session().await;
    nginx.close_session().await;
    nbd.close_session().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in [&direct, &nginx, &nbd] {
        r.idle_end.insert(t.via, procfs::memory(&t.front_pids)?);
    }
    r.load.push(("end", procfs::loadavg()));
    for p in [&mut stack.notebookd, &mut stack.nginx, &mut stack.jupyter] {
        p.check_alive()?;
    }
    Ok(r)
}

/// The gateway part: kernel round trips on Enterprise Gateway's kernels by
/// every way to them, and on the main notebookd's local kernel, in turns.
async fn gateway_round_trips(
    plan: &Plan,
    stack: &Stack,
    venv: &std::path::Path,
    gateway_venv: &std::path::Path,
    local: &Target,
) -> Result<BTreeMap<gateway::GatewayPath, Vec<Duration>>> {
    let mut gateways = gateway::GatewayStack::start(stack, venv, gateway_venv).await?;
    let measured = async {
        let mut targets = gateways.open_targets(stack, local).await?;
        let mut out: BTreeMap<gateway::GatewayPath, Vec<Duration>> = BTreeMap::new();
        for rep in 0..plan.reps {
            for (path, t) in in_turn(&targets, rep) {
                eprintln!("==> {}: kernel round trips (run {})", path.name(), rep + 1);
                // Session ids apart from the rtt part's, on the same local kernel.
                let warmup = if rep == 0 { plan.rtt_warmup } else { 5 };
                let samples = measure::kernel_round_trips(
                    t,
                    200 + rep,
                    warmup,
                    plan.rtt_samples,
                    plan.rtt_limit,
                )
                .await?
                .samples;
                out.entry(*path).or_default().extend(samples);
            }
        }
        for (path, t) in &mut targets {
            if *path != gateway::GatewayPath::Local {
                t.close_session().await;
            }
        }
        gateways.check_alive()?;
        Ok::<_, anyhow::Error>(out)
    }
    .await;
    gateways.stop();
    measured
}

/// The three ways to the Jupyters: directly, through nginx, through notebookd.
fn paths(stack: &Stack) -> Result<(Target, Target, Target)> {
    let direct = Target::unix(
        stack.jupyter_socket.clone(),
        stack.tls.clone(),
        stack.jupyter.pid(),
    );
    let mut nginx = Target::tls(
        Via::Nginx,
        stack.nginx_port_ec,
        stack.tls.clone(),
        stack.jupyter.pid(),
    );
    nginx.front_pids = stack.nginx_pids();
    let mut nbd = Target::tls(
        Via::Notebookd,
        stack.notebookd_port,
        stack.tls.clone(),
        stack.notebookd_jupyter_pid()?,
    );
    nbd.front_pids = vec![stack.notebookd.pid()];
    Ok((direct, nginx, nbd))
}

/// Logs in where there is a login, and starts a kernel and a terminal on each path.
async fn open_sessions(stack: &Stack, [direct, nginx, nbd]: [&mut Target; 3]) -> Result<()> {
    eprintln!("==> logging in, starting a kernel and a terminal on each path");
    direct.open_session(None).await?;
    nginx.open_session(None).await?;
    nbd.open_session(Some(&stack.password)).await
}

/// The front's memory after each load of the memory rounds, once the
/// load's connections closed.
async fn memory_rounds(
    plan: &Plan,
    stack: &Stack,
    t: &Target,
    fresh: procfs::Memory,
) -> Result<MemoryRounds> {
    let settle = Duration::from_secs(15);
    let mut out = MemoryRounds {
        fresh,
        rounds: Vec::new(),
    };
    for round in 0..plan.memory_socket_rounds {
        eprintln!(
            "==> {}: memory round {}: {} idle WebSockets opened and closed",
            t.via.name(),
            round + 1,
            plan.memory_sockets
        );
        let before = measure::settled_memory(&t.front_pids, settle).await?;
        let during = measure::idle_websockets(t, plan.memory_sockets, plan.idle_limit).await?;
        out.rounds.push(MemoryRound {
            load: format!(
                "{} idle WebSockets (round {})",
                plan.memory_sockets,
                round + 1
            ),
            sockets: Some((plan.memory_sockets, before)),
            during: Some(during),
            after: measure::settled_memory(&t.front_pids, settle).await?,
        });
    }
    eprintln!(
        "==> {}: {} Connection: close requests",
        t.via.name(),
        plan.close_requests
    );
    let done = measure::close_requests(
        t,
        plan.close_requests,
        plan.close_concurrency,
        plan.api_limit * 5,
    )
    .await?;
    out.rounds.push(MemoryRound {
        load: format!("{done} `Connection: close` requests"),
        sockets: None,
        during: None,
        after: measure::settled_memory(&t.front_pids, settle).await?,
    });
    measure::warm_file(t, stack::BIG_FILE).await?;
    eprintln!(
        "==> {}: {} downloads at once",
        t.via.name(),
        plan.parallel_downloads
    );
    measure::parallel_downloads(
        t,
        stack::BIG_FILE,
        stack.big_file_bytes,
        plan.parallel_downloads,
        plan.download_limit * plan.parallel_downloads as u32,
    )
    .await?;
    out.rounds.push(MemoryRound {
        load: format!(
            "{} downloads of {} MiB at once",
            plan.parallel_downloads,
            stack.big_file_bytes >> 20
        ),
        sockets: None,
        during: None,
        after: measure::settled_memory(&t.front_pids, settle).await?,
    });
    Ok(out)
}

/// The shape of each attack in this plan.
pub fn attack_shape(plan: &Plan, kind: attack::Kind) -> attack::Shape {
    match kind {
        attack::Kind::GuessingFlood => attack::Shape {
            kind,
            net: 1,
            addresses: 100,
            per_address: plan.flood_per_address,
            interval: plan.flood_interval,
            content_length: 0,
        },
        attack::Kind::SlowBody => attack::Shape {
            kind,
            net: 2,
            addresses: 100,
            per_address: plan.slow_per_address,
            interval: plan.slow_interval,
            content_length: plan.slow_content_length,
        },
    }
}

/// Kernel round trips, then `GET /api/contents`, of the logged-in client
/// while `kind` attacks the front (or nothing does); the front's memory
/// around it.
async fn under_attack(
    plan: &Plan,
    t: &Target,
    aim: &attack::Aim,
    kind: Option<attack::Kind>,
    index: usize,
) -> Result<AttackRun> {
    let name = kind.map_or("unloaded", attack::Kind::name);
    let before = measure::settled_memory(&t.front_pids, Duration::from_secs(10)).await?;
    let jupyter_before = procfs::open_files(t.jupyter_pid)?;
    let shape = kind.map(|k| attack_shape(plan, k));
    let running = match shape {
        Some(shape) => {
            eprintln!(
                "==> {}: {name} from {} addresses, {}s",
                t.via.name(),
                shape.addresses,
                plan.attack_time.as_secs()
            );
            let total = usize::from(shape.addresses) * shape.per_address;
            let running =
                attack::start(aim, shape, plan.attack_time * 4 + Duration::from_secs(60))?;
            // Measure once the attack is in place: every slow connection
            // open, or every guesser has sent its first form.
            attack::ramp(&running, Duration::from_secs(15), |a| match shape.kind {
                attack::Kind::SlowBody => a.open() >= total,
                attack::Kind::GuessingFlood => a.sent() >= total,
            })
            .await;
            Some(running)
        }
        None => {
            eprintln!(
                "==> {}: unloaded, {}s",
                t.via.name(),
                plan.attack_time.as_secs()
            );
            None
        }
    };
    let half = plan.attack_time / 2;
    let rtt = measure::kernel_round_trips(t, 100 + index, 2, plan.attack_rtt_samples, half)
        .await
        .map(|trips| trips.samples)
        .map_err(|e| format!("{e:#}"));
    let api = measure::api_load(t, "attack", plan.attack_api_requests, 1, half)
        .await
        .map_err(|e| format!("{e:#}"));
    let during = procfs::memory(&t.front_pids)?;
    let jupyter_during = procfs::open_files(t.jupyter_pid)?;
    let stats = running.map(attack::Running::stop).unwrap_or_default();
    let after = measure::settled_memory(&t.front_pids, Duration::from_secs(10)).await?;
    Ok(AttackRun {
        attack: shape,
        rtt,
        api,
        before,
        during,
        after,
        jupyter_files: (jupyter_before, jupyter_during),
        stats,
    })
}

/// `items` starting at `rep` (mod len): each path goes first in some runs,
/// so that a drift of the machine over a run does not favour one path.
fn in_turn<T>(items: &[T], rep: usize) -> impl Iterator<Item = &T> {
    let n = items.len();
    (0..n).map(move |i| &items[(rep + i) % n])
}

pub fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let out = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&out).trim().to_string()
        })
        .unwrap_or_else(|| "unknown".into())
}
