//! BENCHMARKS.md: the machine, the method, the numbers and the ratios.

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use crate::attack::Kind;
use crate::client::Via;
use crate::gateway::GatewayPath;
use crate::measure::Percentiles;
use crate::procfs;
use crate::stack::Versions;
use crate::{AttackRun, Plan, Results, command_output};

/// What the numbers were measured on.
pub fn machine(v: &Versions) -> Vec<(&'static str, String)> {
    let cpu = procfs::file_value(Path::new("/proc/cpuinfo"), "model name").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = procfs::file_value(Path::new("/proc/meminfo"), "MemTotal")
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or_else(
            || "unknown".into(),
            |kib| format!("{:.1} GiB", kib as f64 / 1048576.0),
        );
    let os = procfs::file_value(Path::new("/etc/os-release"), "PRETTY_NAME").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let commit = command_output(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ],
    );
    let mut rows = vec![
        ("CPU", format!("{cpu}, {cores} cores")),
        ("memory", mem),
        ("system", format!("{os}, Linux {}", kernel.trim())),
        (
            "notebookd",
            format!(
                "{} ({commit}), release build, rustls with aws-lc-rs",
                notebookd::VERSION
            ),
        ),
        ("nginx", v.nginx.clone()),
        ("OpenSSL (nginx)", command_output("openssl", &["version"])),
        ("Jupyter", v.jupyter.clone()),
        ("Rust", command_output("rustc", &["--version"])),
    ];
    if let Some(gateway) = &v.gateway {
        rows.push(("Enterprise Gateway (its own venv)", gateway.clone()));
    }
    rows
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn range(v: &[f64], decimals: usize) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    match median(v.to_vec()) {
        None => "—".into(),
        Some(m) if v.len() == 1 => num(m, decimals),
        Some(m) => format!(
            "{} ({}–{})",
            num(m, decimals),
            num(min, decimals),
            num(max, decimals)
        ),
    }
}

/// A number with thousands separators.
fn num(v: f64, decimals: usize) -> String {
    let text = format!("{v:.decimals$}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One line of the summary: a value per path, and the ratios.
struct Row {
    metric: String,
    better: &'static str,
    decimals: usize,
    values: [Option<f64>; 3],
    /// Ratios shown (not for a change of a figure, which may be about 0).
    ratios: bool,
}

impl Row {
    fn new(metric: impl Into<String>, better: &'static str, decimals: usize) -> Row {
        Row {
            metric: metric.into(),
            better,
            decimals,
            values: [None; 3],
            ratios: true,
        }
    }

    fn without_ratios(mut self) -> Row {
        self.ratios = false;
        self
    }

    fn set(mut self, via: Via, v: Option<f64>) -> Row {
        self.values[via as usize] = v;
        self
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "—".into(),
    }
}

fn summary_table(out: &mut String, rows: &[Row]) {
    out.push_str("| metric | better | direct | nginx | notebookd | notebookd ÷ nginx | notebookd ÷ direct |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let cell = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| num(v, r.decimals));
        let [d, n, b] = r.values;
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.metric,
            r.better,
            cell(d),
            cell(n),
            cell(b),
            if r.ratios { ratio(b, n) } else { "—".into() },
            if r.ratios { ratio(b, d) } else { "—".into() },
        );
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

pub fn render(plan: &Plan, r: &Results) -> String {
    let mut out = String::new();
    let o = &mut out;
    o.push_str("# Benchmarks: notebookd, nginx and Jupyter directly\n\n");
    let _ = writeln!(
        o,
        "Measured on {} by `./dev bench`, which regenerates this file{}. The\n\
         three ways to the same Jupyter were running side by side and were measured\n\
         in turns in the same run.\n",
        r.date,
        if plan.quick {
            " — **a `--quick` smoke run: too short to compare**"
        } else if plan.partial() {
            " — **a partial run (`--only` or `--reps`)**"
        } else {
            ""
        }
    );

    o.push_str("## Machine\n\n| | |\n|---|---|\n");
    for (k, v) in &r.machine {
        let _ = writeln!(o, "| {k} | {v} |");
    }
    o.push_str("\nLoad average (1, 5, 15 min) when each part started: ");
    let loads: Vec<String> = r.load.iter().map(|(k, v)| format!("{k} {v}")).collect();
    o.push_str(&loads.join("; "));
    o.push_str(
        ". Other work on the machine slows the wall-clock numbers (requests/s,\n\
         latencies, MB/s, handshakes/s); CPU time per request and memory are\n\
         barely affected by it.\n\n",
    );

    // Summary.
    let api = |via: Via, f: &dyn Fn(&crate::measure::LoadRun) -> f64| {
        r.api
            .get(&via)
            .and_then(|runs| median(runs.iter().map(f).collect()))
    };
    let per_req = |ns: u64, n: usize| ns as f64 / 1e3 / n.max(1) as f64;
    let rtt = |via: Via| -> Option<Percentiles> {
        r.rtt.get(&via).map(|s| Percentiles::of(&mut s.clone()))
    };
    let dl = |via: Via, f: &dyn Fn(&crate::measure::DownloadRun) -> f64| {
        r.downloads
            .get(&via)
            .and_then(|runs| median(runs.iter().map(f).collect()))
    };
    let mb_s = |d: &crate::measure::DownloadRun| d.bytes as f64 / 1e6 / d.secs;
    let gib = |d: &crate::measure::DownloadRun| d.bytes as f64 / (1u64 << 30) as f64;
    let hs = |kind: &str, via: Via, f: &dyn Fn(&crate::measure::HandshakeRun) -> f64| {
        r.handshakes
            .get(kind)
            .and_then(|m| m.get(&via))
            .and_then(|runs| median(runs.iter().map(f).collect()))
    };
    let hs_cpu =
        |h: &crate::measure::HandshakeRun| h.server_ns as f64 / 1e3 / h.count.max(1) as f64;
    let hs_rate = |h: &crate::measure::HandshakeRun| h.count as f64 / h.secs;
    let hs_client =
        |h: &crate::measure::HandshakeRun| h.client_ns as f64 / 1e3 / h.count.max(1) as f64;
    let front = |via: Via| via != Via::Direct;
    // The front's RSS per idle WebSocket with the `i`-th step open.
    let per_ws = |via: Via, i: usize| {
        let s = r.sockets.get(&via)?;
        s.steps.get(i).map(|step| s.front_per_socket(step))
    };

    let mut rows = Vec::new();
    let mut row = Row::new("`GET /api/contents`: requests/s", "higher", 0);
    for v in Via::ALL {
        row = row.set(v, api(v, &|x| x.requests as f64 / x.secs));
    }
    rows.push(row);
    for (name, pick) in [
        (
            "p50",
            (|p: &Percentiles| p.p50) as fn(&Percentiles) -> Duration,
        ),
        ("p99", |p: &Percentiles| p.p99),
    ] {
        let mut row = Row::new(
            format!("`GET /api/contents`: latency {name}, ms"),
            "lower",
            2,
        );
        for v in Via::ALL {
            row = row.set(v, api(v, &|x| ms(pick(&x.latency))));
        }
        rows.push(row);
    }
    // The same requests from an API client (`Authorization: token`, no cookies).
    let token =
        |f: &dyn Fn(&crate::measure::LoadRun) -> f64| median(r.api_token.iter().map(f).collect());
    rows.push(
        Row::new(
            "`GET /api/contents` with `Authorization: token`: requests/s",
            "higher",
            0,
        )
        .set(Via::Notebookd, token(&|x| x.requests as f64 / x.secs)),
    );
    rows.push(
        Row::new(
            "`GET /api/contents` with `Authorization: token`: latency p99, ms",
            "lower",
            2,
        )
        .set(Via::Notebookd, token(&|x| ms(x.latency.p99))),
    );
    let mut row = Row::new(
        "`GET /api/contents`: CPU of the front per request, µs",
        "lower",
        0,
    );
    for v in Via::ALL {
        row = row.set(
            v,
            api(v, &|x| per_req(x.cpu.front_ns, x.requests)).filter(|_| front(v)),
        );
    }
    rows.push(row);
    let mut row = Row::new(
        "`GET /api/contents`: context switches of the front per request",
        "lower",
        2,
    );
    for v in Via::ALL {
        row = row.set(
            v,
            api(v, &|x| {
                x.cpu.front_switches as f64 / x.requests.max(1) as f64
            })
            .filter(|_| front(v)),
        );
    }
    rows.push(row);
    let mut row = Row::new(
        "`GET /api/contents`: CPU of Jupyter per request, µs",
        "lower",
        0,
    );
    for v in Via::ALL {
        row = row.set(v, api(v, &|x| per_req(x.cpu.jupyter_ns, x.requests)));
    }
    rows.push(row);
    for (name, pick) in [
        (
            "p50",
            (|p: &Percentiles| p.p50) as fn(&Percentiles) -> Duration,
        ),
        ("p90", |p: &Percentiles| p.p90),
        ("p99", |p: &Percentiles| p.p99),
    ] {
        let mut row = Row::new(format!("kernel round trip `1+1` {name}, ms"), "lower", 2);
        for v in Via::ALL {
            row = row.set(v, rtt(v).map(|p| ms(pick(&p))));
        }
        rows.push(row);
    }
    // The median run's CPU per round trip (each run: 200 executions).
    let rtt_cpu = |via: Via, f: &dyn Fn(&crate::measure::Cpu) -> u64| {
        r.rtt_cpu.get(&via).and_then(|runs| {
            median(
                runs.iter()
                    .map(|(cpu, n)| f(cpu) as f64 / (*n).max(1) as f64)
                    .collect(),
            )
        })
    };
    let mut row = Row::new(
        "kernel round trip `1+1`: CPU of the front per round trip, µs",
        "lower",
        0,
    );
    for v in Via::ALL {
        row = row.set(
            v,
            rtt_cpu(v, &|c| c.front_ns)
                .map(|ns| ns / 1e3)
                .filter(|_| front(v)),
        );
    }
    rows.push(row);
    let mut row = Row::new(
        "kernel round trip `1+1`: context switches of the front per round trip",
        "lower",
        2,
    );
    for v in Via::ALL {
        row = row.set(v, rtt_cpu(v, &|c| c.front_switches).filter(|_| front(v)));
    }
    rows.push(row);
    gateway_rows(&mut rows, r);
    let mut row = Row::new("download from `/files/`, MB/s", "higher", 0);
    for v in Via::ALL {
        row = row.set(v, dl(v, &mb_s));
    }
    rows.push(row);
    let mut row = Row::new("download: CPU of the front per GiB, ms", "lower", 0);
    for v in Via::ALL {
        row = row.set(
            v,
            dl(v, &|d| d.cpu.front_ns as f64 / 1e6 / gib(d)).filter(|_| front(v)),
        );
    }
    rows.push(row);
    for kind in r.handshakes.keys() {
        let what = if kind.contains("resumed") {
            "TLS 1.3 handshake"
        } else {
            "full TLS 1.3 handshake"
        };
        let mut row = Row::new(format!("{what}, {kind}: server CPU, µs"), "lower", 0);
        for v in [Via::Nginx, Via::Notebookd] {
            row = row.set(v, hs(kind, v, &hs_cpu));
        }
        rows.push(row);
        let mut row = Row::new(
            format!("{what}s per second of the server's CPU, {kind}"),
            "higher",
            0,
        );
        for v in [Via::Nginx, Via::Notebookd] {
            row = row.set(v, hs(kind, v, &hs_cpu).map(|us| 1e6 / us));
        }
        rows.push(row);
        let mut row = Row::new(
            format!("{what}s/s, {kind} (client on the same cores)"),
            "higher",
            0,
        );
        for v in [Via::Nginx, Via::Notebookd] {
            row = row.set(v, hs(kind, v, &hs_rate));
        }
        rows.push(row);
    }
    let mut row = Row::new("idle RSS of the front at start, MiB", "lower", 1);
    for v in [Via::Nginx, Via::Notebookd] {
        row = row.set(v, r.idle_start.get(&v).map(|m| mib(m.rss_kib)));
    }
    rows.push(row);
    let mut row = Row::new("idle RSS of the front after the run, MiB", "lower", 1);
    for v in [Via::Nginx, Via::Notebookd] {
        row = row.set(v, r.idle_end.get(&v).map(|m| mib(m.rss_kib)));
    }
    rows.push(row);
    for (i, n) in plan.idle_steps.iter().enumerate() {
        let mut row = Row::new(
            format!(
                "RSS of the front per idle WebSocket, {} open, KiB",
                count(*n)
            ),
            "lower",
            1,
        );
        for v in [Via::Nginx, Via::Notebookd] {
            row = row.set(v, per_ws(v, i));
        }
        rows.push(row);
    }
    if let Some(n) = plan.idle_steps.last() {
        let mut row = Row::new(
            format!(
                "RSS of the front once {} idle WebSockets closed ÷ RSS at start",
                count(*n)
            ),
            "lower",
            2,
        );
        for v in [Via::Nginx, Via::Notebookd] {
            row = row.set(
                v,
                r.sockets
                    .get(&v)
                    .filter(|s| s.steps.last().is_some_and(|step| step.n == *n))
                    .zip(r.idle_start.get(&v))
                    .map(|(s, start)| s.front_after.rss_kib as f64 / start.rss_kib.max(1) as f64),
            );
        }
        rows.push(row);
    }
    // Memory rounds: the largest RSS once a load's connections closed.
    let worst_after = |via: Via| {
        r.memory
            .get(&via)
            .and_then(|m| m.rounds.iter().map(|x| x.after.rss_kib).max())
    };
    let mut row = Row::new(
        "largest RSS of the front after a load of the memory rounds, connections closed, MiB",
        "lower",
        1,
    );
    for v in [Via::Nginx, Via::Notebookd] {
        row = row.set(v, worst_after(v).map(mib));
    }
    rows.push(row);
    let mut row = Row::new(
        "largest RSS after a load ÷ RSS at start (memory rounds)",
        "lower",
        2,
    );
    for v in [Via::Nginx, Via::Notebookd] {
        row = row.set(
            v,
            r.memory
                .get(&v)
                .and_then(|m| worst_after(v).map(|w| w as f64 / m.fresh.rss_kib.max(1) as f64)),
        );
    }
    rows.push(row);

    attack_rows(&mut rows, r);

    let mut row = Row::new(
        "start: process start to READY, minus Jupyter's own start to answering, ms",
        "lower",
        0,
    );
    let started = !r.startup.first.notebookd.is_zero();
    row = row.set(
        Via::Notebookd,
        Some(r.startup.first.own_ms()).filter(|_| started),
    );
    rows.push(row);
    let restarts: Vec<f64> = r.startup.restarts.iter().map(|p| p.own_ms()).collect();
    let mut row = Row::new(
        "restart: process start to READY, minus Jupyter's own start to answering, median, ms",
        "lower",
        0,
    );
    row = row.set(Via::Notebookd, median(restarts));
    rows.push(row);

    o.push_str("## Summary\n\n");
    o.push_str(
        "Medians over the runs. A ratio below 1 is better for notebookd where\n\
         lower is better, above 1 where higher is better. \"The front\" is nginx\n\
         (master and workers) or the notebookd process (not its Jupyter child).\n\n",
    );
    summary_table(o, &rows);
    let failed = r
        .attacks
        .values()
        .flatten()
        .any(|a| a.rtt.is_err() || a.api.is_err());
    if failed {
        o.push_str(
            "\nUnder attack, — means that the logged-in client's measurement failed\n\
             during the attack: section 8 says how.\n",
        );
    }

    // Details.
    o.push_str("\n## Details\n\n### 1. `GET /api/contents`\n\n");
    let _ = writeln!(
        o,
        "{} runs per path of {} requests over {} keep-alive connections (at most {}s each).\n",
        plan.reps,
        plan.api_requests,
        plan.api_connections,
        plan.api_limit.as_secs()
    );
    o.push_str("| path | run | requests | requests/s | p50 ms | p90 ms | p99 ms | front CPU µs/request | front context switches/request | Jupyter CPU µs/request |\n");
    o.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let token_runs = [(Via::Notebookd, &r.api_token)];
    let cookie_runs = r.api.iter().map(|(v, runs)| (*v, runs));
    for (label, (via, runs)) in cookie_runs
        .map(|run| ("", run))
        .chain(token_runs.into_iter().map(|run| (", token", run)))
    {
        let via = &via;
        for (i, x) in runs.iter().enumerate() {
            let switches = x.cpu.front_switches as f64 / x.requests.max(1) as f64;
            let _ = writeln!(
                o,
                "| {}{label} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                via.name(),
                i + 1,
                x.requests,
                num(x.requests as f64 / x.secs, 0),
                num(ms(x.latency.p50), 2),
                num(ms(x.latency.p90), 2),
                num(ms(x.latency.p99), 2),
                if front(*via) {
                    num(per_req(x.cpu.front_ns, x.requests), 1)
                } else {
                    "—".into()
                },
                if front(*via) {
                    num(switches, 2)
                } else {
                    "—".into()
                },
                num(per_req(x.cpu.jupyter_ns, x.requests), 0),
            );
        }
    }

    o.push_str("\n### 2. Kernel round trip\n\n");
    let _ = writeln!(
        o,
        "`1+1` on a python3 kernel over the kernel WebSocket (subprotocol\n\
         `v1.kernel.websocket.jupyter.org`), one execution at a time: from sending\n\
         `execute_request` until its `execute_reply` and the kernel's `idle` status\n\
         have both arrived. {} runs per path of {} executions (after a warm-up).\n\
         CPU per round trip: the front's (every thread) and Jupyter's (its\n\
         server process, not the kernel's), from the first measured execution\n\
         to the last; the runs' range.\n",
        plan.reps, plan.rtt_samples
    );
    o.push_str("| path | samples | p50 ms | p90 ms | p99 ms | front CPU µs/round trip | front context switches/round trip | Jupyter CPU µs/round trip |\n|---|---:|---:|---:|---:|---|---|---|\n");
    for (via, samples) in &r.rtt {
        let p = Percentiles::of(&mut samples.clone());
        let runs = r.rtt_cpu.get(via).map(Vec::as_slice).unwrap_or_default();
        let per = |f: fn(&crate::measure::Cpu) -> f64| -> Vec<f64> {
            runs.iter()
                .map(|(c, n)| f(c) / (*n).max(1) as f64)
                .collect()
        };
        let (front_cpu, switches) = if *via == Via::Direct {
            ("—".to_string(), "—".to_string())
        } else {
            (
                range(&per(|c| c.front_ns as f64 / 1e3), 0),
                range(&per(|c| c.front_switches as f64), 2),
            )
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {front_cpu} | {switches} | {} |",
            via.name(),
            samples.len(),
            num(ms(p.p50), 2),
            num(ms(p.p90), 2),
            num(ms(p.p99), 2),
            range(&per(|c| c.jupyter_ns as f64 / 1e3), 0),
        );
    }

    o.push_str("\n### 3. Download from `/files/`\n\n");
    let _ = writeln!(
        o,
        "`GET /files/big.bin` ({} MiB), one connection, body read to the end and\n\
         counted. MB = 10⁶ bytes.\n",
        plan.download_bytes >> 20
    );
    o.push_str("| path | runs: MB/s | front CPU, ms per GiB | Jupyter CPU, ms per GiB |\n|---|---|---|---|\n");
    for (via, runs) in &r.downloads {
        let speeds: Vec<f64> = runs.iter().map(mb_s).collect();
        let front_cpu: Vec<f64> = runs
            .iter()
            .map(|d| d.cpu.front_ns as f64 / 1e6 / gib(d))
            .collect();
        let jupyter_cpu: Vec<f64> = runs
            .iter()
            .map(|d| d.cpu.jupyter_ns as f64 / 1e6 / gib(d))
            .collect();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            via.name(),
            range(&speeds, 0),
            if front(*via) {
                range(&front_cpu, 0)
            } else {
                "—".into()
            },
            range(&jupyter_cpu, 0)
        );
    }

    o.push_str("\n### 4. TLS handshakes\n\n");
    let _ = writeln!(
        o,
        "A new TCP connection per handshake, TLS 1.3 only; the client closes with\n\
         close_notify right after the handshake and reads to the end. {} handshakes\n\
         per run from {} concurrent clients, {} runs per server and key type; both\n\
         servers use the same certificate and key. The client is rustls (aws-lc-rs)\n\
         offering the TLS 1.3 cipher suites in browsers' order (AES-128-GCM,\n\
         AES-256-GCM, ChaCha20) and the key exchange groups X25519, P-256, P-384\n\
         and X25519MLKEM768, in that order; it verifies the certificate. \"Groups\n\
         offered as browsers do\": the hybrid X25519MLKEM768 first with an X25519\n\
         share alongside, as Chrome and Firefox have offered by default since late\n\
         2024; notebookd (rustls) takes the post-quantum hybrid, nginx (Debian\n\
         bookworm's OpenSSL 3.0, which has no ML-KEM) takes X25519, so this row\n\
         is what a browser's first visit costs each server, notebookd doing more\n\
         for a key exchange that stays secret against a future quantum computer.\n\
         Full handshakes: the client keeps no\n\
         session. Resumed: it keeps the session tickets the server sends and\n\
         offers one on the next connection (PSK with a new X25519 exchange, as\n\
         browsers resume); the resumed column counts the handshakes the server\n\
         took up. nginx's site has Debian's `ssl_prefer_server_ciphers on`, so\n\
         OpenSSL picks its own first TLS 1.3 suite (AES-256-GCM-SHA384) for every\n\
         client, browsers included; notebookd picks AES-128-GCM-SHA256 unless a\n\
         client lists ChaCha20 first. Server CPU is the server's CPU time divided\n\
         by the handshakes, client CPU this benchmark's. The rate is bounded by\n\
         the client, which runs on the same two cores: the server's CPU per\n\
         handshake (or handshakes per second of it) is the comparison to trust.\n",
        plan.handshakes, plan.handshake_concurrency, plan.reps
    );
    o.push_str("| handshakes | server | negotiated | resumed | handshakes/s | server CPU µs/handshake | client CPU µs/handshake |\n|---|---|---|---:|---|---|---|\n");
    for (kind, by_via) in &r.handshakes {
        for (via, runs) in by_via {
            let rates: Vec<f64> = runs.iter().map(hs_rate).collect();
            let cpu: Vec<f64> = runs.iter().map(hs_cpu).collect();
            let client: Vec<f64> = runs.iter().map(hs_client).collect();
            let negotiated = runs
                .first()
                .map(|h| h.negotiated.clone())
                .unwrap_or_default();
            let (resumed, count) = runs
                .iter()
                .fold((0, 0), |(r, c), h| (r + h.resumed, c + h.count));
            let _ = writeln!(
                o,
                "| {kind} | {} | {negotiated} | {resumed} of {count} | {} | {} | {} |",
                via.name(),
                range(&rates, 0),
                range(&cpu, 0),
                range(&client, 0)
            );
        }
    }

    o.push_str("\n### 5. Memory\n\n");
    o.push_str(
        "RSS and PSS (shared pages split between nginx's processes) from\n\
         `/proc`, at the start of the run and at its end.\n\n",
    );
    o.push_str("| path | idle RSS at start, MiB | idle PSS at start, MiB | idle RSS after the run, MiB |\n|---|---:|---:|---:|\n");
    for via in [Via::Nginx, Via::Notebookd] {
        let start = r.idle_start.get(&via).copied().unwrap_or_default();
        let end = r.idle_end.get(&via).copied().unwrap_or_default();
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} |",
            via.name(),
            num(mib(start.rss_kib), 1),
            num(mib(start.pss_kib), 1),
            num(mib(end.rss_kib), 1),
        );
    }
    if !r.sockets.is_empty() {
        idle_sockets(o, plan, r);
    }

    if !r.memory.is_empty() {
        memory_rounds(o, plan, r);
    }

    o.push_str("\n### 7. Start\n\n");
    let _ = writeln!(
        o,
        "From spawning the process until notebookd logged that it is ready (it\n\
         sends READY=1 then: its Jupyter child answered `GET /api`), and until\n\
         a Jupyter started the same way alone answered `GET /api`; both polled\n\
         every 5 ms. The difference is what notebookd adds (config, TLS files,\n\
         finding the Jupyter flavour, noticing readiness). Jupyter's modules\n\
         are imported once beforehand so that its files are in the page cache\n\
         for every start. The first start has\n\
         a fresh state directory; on a restart notebookd finds the installed\n\
         Jupyter packages it remembered there (unless one of the directories\n\
         Python looks them up in changed) instead of starting Python to ask.\n\
         Jupyter's own start varies by tens, on a busy machine hundreds, of ms\n\
         from one start to the next: read the median of the restarts, where\n\
         the Jupyter alone and notebookd take turns going first.\n\n\
         | start | notebookd to READY, ms | Jupyter alone to answering, ms | difference, ms |\n\
         |---|---:|---:|---:|"
    );
    let pairs = std::iter::once(("first", &r.startup.first))
        .chain(r.startup.restarts.iter().map(|p| ("restart", p)));
    for (what, p) in pairs {
        let _ = writeln!(
            o,
            "| {what} | {} | {} | {} |",
            num(ms(p.notebookd), 0),
            num(ms(p.jupyter), 0),
            num(p.own_ms(), 0),
        );
    }

    if !r.attacks.is_empty() {
        attacks(o, plan, r);
    }

    if !r.gateway.is_empty() {
        gateway_section(o, plan, r);
    }

    o.push_str(METHOD);
    out
}

fn gateway_percentiles(r: &Results, path: GatewayPath) -> Option<Percentiles> {
    r.gateway
        .get(&path)
        .map(|s| Percentiles::of(&mut s.clone()))
}

/// Summary rows of the gateway part: round trips on a gateway kernel by
/// each way to Jupyter, and what the gateway adds to a local kernel's.
fn gateway_rows(rows: &mut Vec<Row>, r: &Results) {
    if r.gateway.is_empty() {
        return;
    }
    let columns = [
        (Via::Direct, GatewayPath::Direct),
        (Via::Nginx, GatewayPath::Nginx),
        (Via::Notebookd, GatewayPath::Notebookd),
    ];
    for (name, pick) in [
        (
            "p50",
            (|p: &Percentiles| p.p50) as fn(&Percentiles) -> Duration,
        ),
        ("p90", |p: &Percentiles| p.p90),
        ("p99", |p: &Percentiles| p.p99),
    ] {
        let mut row = Row::new(
            format!("kernel round trip `1+1`, kernel on Enterprise Gateway, {name}, ms"),
            "lower",
            2,
        );
        for (via, path) in columns {
            row = row.set(via, gateway_percentiles(r, path).map(|p| ms(pick(&p))));
        }
        rows.push(row);
    }
    let local = gateway_percentiles(r, GatewayPath::Local).map(|p| ms(p.p50));
    let over_local = |path| {
        gateway_percentiles(r, path)
            .zip(local)
            .map(|(p, l)| ms(p.p50) - l)
    };
    let mut row = Row::new(
        "kernel round trip `1+1` p50, Enterprise Gateway kernel minus local kernel (same turns), ms (goal ≤ 2 through notebookd)",
        "lower",
        2,
    );
    for (via, path) in columns {
        row = row.set(via, over_local(path));
    }
    rows.push(row);
}

/// Section 9: kernels on a gateway.
fn gateway_section(o: &mut String, plan: &Plan, r: &Results) {
    o.push_str("\n### 9. Kernels on a gateway\n\n");
    let _ = writeln!(
        o,
        "Jupyter Enterprise Gateway (its own venv, local process kernels, an auth\n\
         token) on 127.0.0.1, and `1+1` round trips measured as in section 2 on a\n\
         gateway kernel by each way to it, and on a local kernel through the main\n\
         notebookd, {reps} runs per path of {samples} executions (after a warm-up),\n\
         the paths taking turns. notebookd runs with `jupyter.gateway_url` and\n\
         `jupyter.gateway_token_file` and loads its `notebookd_gateway` extension\n\
         into its Jupyter (TCP_NODELAY, and quick ACKs after every read, on the\n\
         kernel WebSockets to the gateway). The nginx path is the other choice: the\n\
         same Jupyter command line and config without that extension, started\n\
         with `--GatewayClient.url` and `JUPYTER_GATEWAY_AUTH_TOKEN` as a user\n\
         would, behind the nginx site of the Method section; the direct path is\n\
         that Jupyter over its own socket. Every kernel is checked to be the\n\
         gateway's. Through a gateway, jupyter_server speaks the legacy JSON\n\
         framing with the client (it does not relay the v1 subprotocol).\n\n\
         The gateway itself: the client talks to the gateway's kernel WebSocket\n\
         with the token, acknowledging every read at once as the extension does,\n\
         so this row is the gateway's own cost without Jupyter. The last row is a\n\
         second notebookd whose gateway sets TCP_NODELAY on its kernel WebSockets\n\
         (the operator's hook, `benches/front/gateway_nodelay.py`, on its\n\
         PYTHONPATH): Enterprise Gateway and Kernel Gateway leave Nagle's\n\
         algorithm on, so each of a kernel's several small messages per execution\n\
         waits there until Jupyter has acknowledged the previous one, which it\n\
         does when it reads it (Linux acknowledges at once only in its quick-ACK\n\
         mode, which an unprivileged program cannot keep on).\n",
        reps = plan.reps,
        samples = plan.rtt_samples,
    );
    o.push_str(
        "| path | samples | p50 ms | p90 ms | p99 ms | p50 minus local kernel's, ms |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let local = gateway_percentiles(r, GatewayPath::Local).map(|p| ms(p.p50));
    for path in GatewayPath::ALL {
        let Some(samples) = r.gateway.get(&path) else {
            continue;
        };
        let p = Percentiles::of(&mut samples.clone());
        let over = match (path, local) {
            (GatewayPath::Local, _) | (_, None) => "—".into(),
            (_, Some(l)) => num(ms(p.p50) - l, 2),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {over} |",
            path.describe(),
            samples.len(),
            num(ms(p.p50), 2),
            num(ms(p.p90), 2),
            num(ms(p.p99), 2),
        );
    }
}

/// The runs of one path: the unloaded one and those under attack.
fn attack_run(r: &Results, via: Via, kind: Option<Kind>) -> Option<&AttackRun> {
    r.attacks
        .get(&via)?
        .iter()
        .find(|a| a.attack.map(|s| s.kind) == kind)
}

fn rtt_of(a: &AttackRun) -> Option<Percentiles> {
    a.rtt.as_ref().ok().map(|s| Percentiles::of(&mut s.clone()))
}

fn api_p99(a: &AttackRun) -> Option<f64> {
    a.api.as_ref().ok().map(|x| ms(x.latency.p99))
}

/// Summary rows of the attack part: the unloaded figures, then each
/// attack's as a ratio to them.
fn attack_rows(rows: &mut Vec<Row>, r: &Results) {
    if r.attacks.is_empty() {
        return;
    }
    let fronts = [Via::Nginx, Via::Notebookd];
    type Pick = fn(&AttackRun) -> Option<f64>;
    let figures: [(&str, Pick); 3] = [
        ("kernel round trip `1+1` p50", |a| {
            rtt_of(a).map(|p| ms(p.p50))
        }),
        ("kernel round trip `1+1` p99", |a| {
            rtt_of(a).map(|p| ms(p.p99))
        }),
        ("`GET /api/contents` p99", api_p99),
    ];
    for (name, pick) in figures {
        let mut row = Row::new(
            format!("logged-in client, unloaded (attack part): {name}, ms"),
            "lower",
            2,
        );
        for v in fronts {
            row = row.set(v, attack_run(r, v, None).and_then(pick));
        }
        rows.push(row);
    }
    for kind in [Kind::SlowBody, Kind::GuessingFlood] {
        for (i, (name, pick)) in figures.iter().enumerate() {
            let goal = if i == 0 { "" } else { " (goal ≤ 2)" };
            let mut row = Row::new(
                format!("during the {}: {name} ÷ unloaded{goal}", kind.name()),
                "lower",
                2,
            );
            for v in fronts {
                let during = attack_run(r, v, Some(kind)).and_then(pick);
                let unloaded = attack_run(r, v, None).and_then(pick);
                row = row.set(
                    v,
                    during
                        .zip(unloaded)
                        .filter(|(_, u)| *u > 0.0)
                        .map(|(d, u)| d / u),
                );
            }
            rows.push(row);
        }
        let mut row = Row::new(
            format!(
                "{}: RSS of the front once it ended minus before, MiB",
                kind.name()
            ),
            "lower",
            1,
        )
        .without_ratios();
        for v in fronts {
            row = row.set(
                v,
                attack_run(r, v, Some(kind)).map(|a| mib(a.after.rss_kib) - mib(a.before.rss_kib)),
            );
        }
        rows.push(row);
    }
}

/// Section 8: the logged-in client while unauthenticated clients attack.
fn attacks(o: &mut String, plan: &Plan, r: &Results) {
    let flood = crate::attack_shape(plan, Kind::GuessingFlood);
    let slow = crate::attack_shape(plan, Kind::SlowBody);
    let secs = plan.attack_time.as_secs_f64();
    o.push_str("\n### 8. Under attack\n\n");
    let _ = writeln!(
        o,
        "A logged-in client (on 127.0.0.1) measures kernel `1+1` round trips for\n\
         {half} s, then `GET /api/contents` one at a time on one keep-alive\n\
         connection for {half} s (connecting again, inside the timing, when the\n\
         front closes it after an answer, as nginx does after its default\n\
         `keepalive_requests 1000`; the count is in brackets), first with\n\
         nothing else going on, then while\n\
         unauthenticated clients attack the front, each from its own loopback\n\
         address (bound before connecting, so the front sees other clients).\n\
         **Slow body**: {slow_n} TLS connections ({slow_per} from each of\n\
         127.0.{slow_net}.1–{slow_last}) send a complete `POST /login` head announcing\n\
         `Content-Length: {cl}`, then one byte of body every {slow_iv} s; a connection\n\
         the front answers or closes is opened again a second later. **Guessing\n\
         flood**: {flood_n} clients ({flood_per} from each of 127.0.{flood_net}.1–{flood_last},\n\
         one IPv4 /24) post the login form with a wrong password (and a matching\n\
         `_xsrf` cookie and field) on keep-alive connections, each at most one\n\
         attempt every {flood_iv} ms (up to {rate} attempts/s in all), reconnecting\n\
         when the front closes. The slow bodies come before the flood, the\n\
         baseline before both; measuring starts once every slow connection is\n\
         open or every guesser has sent a form (at most 15 s), and each attack\n\
         lasts as long as the measuring ({secs} s). The attackers run in the\n\
         benchmark process on a thread of their own with their own tokio runtime,\n\
         on the same cores as everything else: a ratio here includes their CPU.\n\
         The front's RSS is read when the attack starts, at its end (attack\n\
         connections still open), and once they closed and the RSS settled\n\
         (at most 10 s); the open files of the Jupyter behind the front (its\n\
         sockets included) when the attack starts and at its end show whether\n\
         the attack reaches through the front.\n",
        half = num(secs / 2.0, 1),
        slow_n = usize::from(slow.addresses) * slow.per_address,
        slow_per = slow.per_address,
        slow_net = slow.net,
        slow_last = slow.addresses,
        cl = slow.content_length,
        slow_iv = slow.interval.as_secs(),
        flood_n = usize::from(flood.addresses) * flood.per_address,
        flood_per = flood.per_address,
        flood_net = flood.net,
        flood_last = flood.addresses,
        flood_iv = flood.interval.as_millis(),
        rate = num(
            usize::from(flood.addresses) as f64 * flood.per_address as f64
                / flood.interval.as_secs_f64(),
            0
        ),
        secs = num(secs, 0),
    );
    o.push_str(
        "What each front does about it. **notebookd** runs with its shipped\n\
         defaults but two: the whole login form must arrive within\n\
         `limits.body_read_timeout` (30 s, then 408), at most\n\
         `limits.max_connections_per_client` connections per address (1,024\n\
         here, not the shipped 256, because the memory rounds open 1,000\n\
         WebSockets from one address; each attacker address holds 2 to 5),\n\
         `limits.max_connections` as section 5 says (not the shipped 1,024),\n\
         `auth.login_attempts` (10 per minute) per address, four times that\n\
         per IPv4 /24 and a global failure budget, a form that must wait refused\n\
         (429) before it is read, and password checks (argon2id) on a bounded\n\
         number of threads. **nginx** runs the benchmark's site as section\n\
         Method describes it, which sets no `limit_req` or `limit_conn` and none\n\
         of the client timeouts, so nginx's defaults apply: `client_header_timeout\n\
         60s`, `client_body_timeout 60s` (between two reads, not for the whole\n\
         body), `send_timeout 60s`, `keepalive_timeout 75s`, with\n\
         `worker_connections 4096` and `client_max_body_size 100m`; with\n\
         `proxy_request_buffering off` it passes a request to Jupyter as soon as\n\
         its head arrived, so every slow body also holds a connection to Jupyter.\n\
         The Jupyter behind nginx is configured like notebookd's child, with\n\
         its own token and password off (notebookd does the login), and Jupyter\n\
         then has no login page: each form posted through nginx gets Tornado's\n\
         404 page. So on the nginx path the flood measures 100 clients' requests\n\
         through nginx into Jupyter's event loop, not password checks; a\n\
         Jupyter with a password of its own would hash each guess in that event\n\
         loop, which is not measured here.\n\n",
    );
    o.push_str(
        "| path | load | kernel samples | kernel p50 ms | kernel p99 ms | API requests | API p99 ms | kernel p99 ÷ unloaded | API p99 ÷ unloaded | front RSS before / at end / after, MiB | Jupyter's open files before / at end | what the attackers did and got |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|\n",
    );
    for (via, runs) in &r.attacks {
        let unloaded = attack_run(r, *via, None);
        for a in runs {
            let load = a.attack.map_or("unloaded", |s| s.kind.name());
            let (samples, p50, p99) = match (&a.rtt, rtt_of(a)) {
                (Ok(s), Some(p)) => (num(s.len() as f64, 0), num(ms(p.p50), 2), num(ms(p.p99), 2)),
                (Err(e), _) => (format!("failed: {}", cell_text(e)), "—".into(), "—".into()),
                _ => ("—".into(), "—".into(), "—".into()),
            };
            let (requests, api) = match &a.api {
                Ok(x) => {
                    let mut requests = num(x.requests as f64, 0);
                    if x.reconnects > 0 {
                        let _ = write!(requests, " ({} reconnected)", num(x.reconnects as f64, 0));
                    }
                    (requests, num(ms(x.latency.p99), 2))
                }
                Err(e) => (format!("failed: {}", cell_text(e)), "—".into()),
            };
            let ratio_of = |pick: fn(&AttackRun) -> Option<f64>| match a.attack {
                None => "—".into(),
                Some(_) => ratio(pick(a), unloaded.and_then(pick)),
            };
            let stats = &a.stats;
            let did = match a.attack.map(|s| s.kind) {
                None => "—".into(),
                Some(Kind::SlowBody) => format!(
                    "{} connections ({} failed to connect), at most {} open at once, {} body bytes sent; {} ended by the front before the attack did; answers: {}",
                    stats.connections,
                    stats.connect_errors,
                    stats.peak_open,
                    stats.sent,
                    stats.closed_by_front,
                    stats.statuses_text()
                ),
                Some(Kind::GuessingFlood) => format!(
                    "{} forms posted on {} connections ({} failed to connect, {} ended by the front); answers: {}",
                    stats.sent,
                    stats.connections,
                    stats.connect_errors,
                    stats.closed_by_front,
                    stats.statuses_text()
                ),
            };
            let _ = writeln!(
                o,
                "| {} | {load} | {samples} | {p50} | {p99} | {requests} | {api} | {} | {} | {} / {} / {} | {} / {} | {did} |",
                via.name(),
                ratio_of(|a| rtt_of(a).map(|p| ms(p.p99))),
                ratio_of(api_p99),
                num(mib(a.before.rss_kib), 1),
                num(mib(a.during.rss_kib), 1),
                num(mib(a.after.rss_kib), 1),
                a.jupyter_files.0,
                a.jupyter_files.1,
            );
        }
    }
}

/// An error message fit for a table cell.
fn cell_text(e: &str) -> String {
    e.replace('|', "/").replace('\n', " ")
}

/// Section 5, continued: idle WebSockets, 1,000 on every path, on to
/// 10,000 through notebookd.
fn idle_sockets(o: &mut String, plan: &Plan, r: &Results) {
    let steps: Vec<String> = plan.idle_steps.iter().map(|n| count(*n)).collect();
    let _ = writeln!(
        o,
        "\nIdle WebSockets: terminal WebSockets (`/terminals/websocket/NAME`)\n\
         opened through each path, {concurrency} at a time, from {sources} client addresses\n\
         (127.0.4.1 to 127.0.4.{sources}, each bound before connecting, so notebookd\n\
         sees {sources} clients with at most {per} connections each, within its shipped\n\
         `limits.max_connections_per_client` of 256), each greeted by the terminal.\n\
         The front's memory is read once its RSS stayed put for {window} s (at most\n\
         15 s): before the first opens, with {steps} open, and once they all\n\
         closed. Per WebSocket: (RSS with N open − RSS before) ÷ N; Jupyter's\n\
         column likewise, for the Jupyter behind the path. This part runs first,\n\
         on the fresh fronts. Through notebookd\n\
         (`limits.max_connections` = {max} for the run) they go on to {last}{capped}; nginx\n\
         stops at {first}: with the usual site's `worker_connections 4096` its two\n\
         workers carry about 4,000 WebSockets (a client's and Jupyter's connection\n\
         each), and raising it would make nginx allocate the larger connection\n\
         table at start, changing its idle figures above. The benchmark raises the\n\
         open-file limit to {files} for itself and what it starts where it may (as\n\
         root with CAP_SYS_RESOURCE); in this run the limit was {limit}. A\n\
         WebSocket through notebookd costs the client one descriptor, notebookd\n\
         two (which it checks against `limits.max_connections` at start), Jupyter\n\
         one.\n",
        concurrency = plan.idle_concurrency,
        sources = plan.idle_sources,
        per = plan
            .idle_steps
            .iter()
            .max()
            .copied()
            .unwrap_or(0)
            .div_ceil(usize::from(plan.idle_sources.max(1))),
        window = crate::measure::SETTLE_WINDOW.as_secs(),
        steps = steps.join(" and "),
        max = count(r.max_connections as usize),
        limit = count(r.open_files as usize),
        capped = match plan.idle_steps.last() {
            Some(&last) if last < plan.idle_wanted => format!(
                " (not {}: the open-file limit could not be raised, and notebookd's \
                 {} connections are what it carries)",
                count(plan.idle_wanted),
                count(r.max_connections as usize)
            ),
            _ => String::new(),
        },
        last = steps.last().cloned().unwrap_or_default(),
        first = steps.first().cloned().unwrap_or_default(),
        files = count(crate::stack::OPEN_FILES as usize),
    );
    o.push_str("| path | WebSockets open | front RSS before, MiB | front RSS with them open, MiB | front RSS per WebSocket, KiB | Jupyter RSS per WebSocket, KiB | front RSS once closed, MiB | once closed ÷ at start | opening took, s |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (via, s) in &r.sockets {
        let start = r.idle_start.get(via).copied().unwrap_or_default();
        for (i, step) in s.steps.iter().enumerate() {
            let last = i + 1 == s.steps.len();
            let front = *via != Via::Direct;
            let cell = |v: String| if front { v } else { "—".into() };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                via.name(),
                count(step.n),
                cell(num(mib(s.front_before.rss_kib), 1)),
                cell(num(mib(step.front.rss_kib), 1)),
                cell(num(s.front_per_socket(step), 1)),
                num(s.jupyter_per_socket(step), 1),
                if last {
                    cell(num(mib(s.front_after.rss_kib), 1))
                } else {
                    "—".into()
                },
                if last && front {
                    format!(
                        "{:.2}×",
                        s.front_after.rss_kib as f64 / start.rss_kib.max(1) as f64
                    )
                } else {
                    "—".into()
                },
                if last {
                    num(s.open_secs, 0)
                } else {
                    "—".into()
                },
            );
        }
    }
}

/// A count with thousands separated: 10,000.
fn count(n: usize) -> String {
    num(n as f64, 0)
}

/// Section 6: does memory come back after loads?
fn memory_rounds(o: &mut String, plan: &Plan, r: &Results) {
    o.push_str("\n### 6. Memory after load\n\n");
    let _ = writeln!(
        o,
        "The front's RSS at start, then after each load once its connections\n\
         closed and the RSS stayed put for {} s (at most 15 s): {} rounds of {}\n\
         idle terminal WebSockets opened (greeted), then closed; {} requests\n\
         (`GET /api/status`), each on a new TLS connection with\n\
         `Connection: close`, {} at a time; {} downloads of the big file at once.\n\
         The loads run in this order, first through nginx, then through notebookd,\n\
         after the idle WebSockets of section 5 (so \"at start\" is the fresh\n\
         front, and \"RSS before\" what the loads before left).\n\
         Per WebSocket: (RSS with them open − RSS right before they opened, read\n\
         the same way) ÷ their number.\n",
        crate::measure::SETTLE_WINDOW.as_secs(),
        plan.memory_socket_rounds,
        plan.memory_sockets,
        plan.close_requests,
        plan.close_concurrency,
        plan.parallel_downloads,
    );
    o.push_str("| path | load | RSS before, MiB | RSS with the WebSockets open, MiB | RSS per WebSocket, KiB | RSS after, MiB | after ÷ at start |\n|---|---|---:|---:|---:|---:|---:|\n");
    for (via, m) in &r.memory {
        let _ = writeln!(
            o,
            "| {} | at start | — | — | — | {} | 1.00× |",
            via.name(),
            num(mib(m.fresh.rss_kib), 1)
        );
        for x in &m.rounds {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {:.2}× |",
                via.name(),
                x.load,
                x.sockets
                    .map_or("—".into(), |(_, before)| num(mib(before.rss_kib), 1)),
                x.during.map_or("—".into(), |d| num(mib(d.rss_kib), 1)),
                x.per_socket().map_or("—".into(), |v| num(v, 1)),
                num(mib(x.after.rss_kib), 1),
                x.after.rss_kib as f64 / m.fresh.rss_kib.max(1) as f64,
            );
        }
    }
}

const METHOD: &str = r#"
## Method

`./dev bench` installs Debian's nginx, the pinned Jupyter venv and the
pinned Enterprise Gateway venv if they are missing, builds notebookd and
this benchmark (`benches/front/`) in release mode, and runs it. In one
temporary directory it starts (and, for the gateway part, what section 9
describes):

- **notebookd** (release build) with TLS (a test CA's ECDSA P-256
  certificate), an argon2id password, and its own Jupyter child, as a user
  would run it.
- **A second Jupyter, started exactly like notebookd's child**: the same
  command line and the config file notebookd wrote for its child (token off,
  XSRF and Origin checks on, `trust_xheaders`), with only the unix socket
  changed. Both serve the same `root_dir`. The *direct* path talks HTTP to
  this socket. notebookd cannot front an outside Jupyter, so two identical
  Jupyters (rather than one shared) is what makes the comparison fair; the
  "Jupyter CPU per request" columns show that they cost the same.
- **nginx** (Debian's) in front of that socket as the usual Jupyter site:
  TLS 1.2/1.3 with the same certificate, `proxy_pass` to the unix socket with
  upstream keepalive, `Host $http_host`, `X-Forwarded-*`, WebSocket
  upgrade, `proxy_buffering off` and `proxy_request_buffering off`,
  `worker_processes auto`, no access log (notebookd writes none per request
  either). A second server block serves the same site with an RSA 2048
  certificate for the handshake comparison; notebookd is switched to that
  certificate with a reload (SIGHUP).

The idle WebSockets and the memory rounds come first, on fresh fronts.
They leave the two Jupyters unequal (notebookd's took the larger
steps of idle WebSockets too, and Python keeps much of that memory), so notebookd and the
direct Jupyter are then started afresh, with the same config, ports and
socket, before the other parts; nginx keeps running. The idle RSS after
the run is that of the notebookd started afresh.

The client (Rust: tokio, hyper, rustls with aws-lc-rs, tokio-tungstenite) is the
same code for every path; it logs in to notebookd with the password form,
gets Jupyter's `_xsrf` cookie from `/tree` on every path, and sends the
cookies, `X-XSRFToken`, `Origin` and (for `/files/`) `Referer` a browser
would send. TLS clients verify the certificate against the test CA and use
TLS 1.3 (resumption off but in the resumed handshakes of section 4).
Everything listens on 127.0.0.1.

CPU time is read from `/proc/PID/task/*/schedstat` (nanoseconds, every
thread) right before and after each load, for the front (nginx master and
workers, or the notebookd process) and for the Jupyter behind it; the
client's own CPU never counts. Context switches (voluntary and not, every
thread, from `/proc/PID/task/*/status`) count the front's sleeps and
wake-ups; unlike CPU time on a shared machine, they do not depend on what
else runs. The paths take turns within each
repetition, each going first in turn, so that background load and drift
spread over all of them. Every loop is
bounded in count and in time, and everything is stopped at the end (also on
Ctrl-C).

Reading the numbers: Jupyter's own `/files/` throughput varies a lot from
one download to the next (Tornado reads and writes 64 KiB chunks in
Python; the same file straight from its socket went at 0.3 to 2.3 GB/s in
five consecutive curl runs), so the direct download column is the least
steady. The handshake rate is bounded by the client, which verifies every
certificate on the same cores: compare server CPU per handshake. For
instruction counts rather than CPU time, run a part under callgrind:
`BENCH_WRAP_NOTEBOOKD="valgrind --tool=callgrind" BENCH_HOOK=... ./dev
bench --only api --reps 1` (see `--help`).
"#;
