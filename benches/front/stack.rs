//! The three ways to Jupyter, started side by side in one temporary
//! directory: notebookd (release build, TLS) with its own Jupyter child; a
//! second Jupyter started exactly as notebookd starts its child (same
//! command line, same generated config, only the socket differs), reached
//! directly over its unix socket; and Debian's nginx in front of that second
//! Jupyter's socket, configured as the usual Jupyter site.

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio_rustls::TlsConnector;

use crate::procfs;

/// Open files the benchmark and the processes it starts should have:
/// each WebSocket through notebookd costs the client one descriptor,
/// notebookd two and Jupyter one, and notebookd refuses to start unless its
/// limit covers twice `limits.max_connections` and 256 more.
pub const OPEN_FILES: u64 = 65_536;

/// Raises this process's open-file limit (soft and hard; the benchmark runs
/// as root) to [`OPEN_FILES`] before anything is started, so that
/// notebookd, nginx and both Jupyters inherit it. Without the privilege
/// (CAP_SYS_RESOURCE) only the soft limit goes up, to the hard one.
/// Returns the limit in force.
pub fn raise_open_files() -> Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("cannot read RLIMIT_NOFILE")?;
    if soft >= OPEN_FILES {
        return Ok(soft);
    }
    let want = OPEN_FILES.max(hard);
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return Ok(want);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("cannot raise RLIMIT_NOFILE")?;
    eprintln!(
        "==> the open-file limit stays at {hard} (raising the hard limit needs CAP_SYS_RESOURCE): \
         fewer idle WebSockets fit through notebookd"
    );
    Ok(hard)
}

/// notebookd's `limits.max_connections` in the benchmark: room for 10,000
/// idle WebSockets and the benchmark's own connections, or as many as the
/// open-file limit lets notebookd have (it checks the same at start; 64
/// descriptors are left to a BENCH_WRAP_NOTEBOOKD wrapper: valgrind keeps
/// some).
pub fn max_connections(open_files: u64) -> u32 {
    let fit = open_files.saturating_sub(256 + 64) / 2;
    u32::try_from(fit.min(12_000)).unwrap_or(12_000)
}

/// The size of the file downloaded from `/files/`.
pub const BIG_FILE: &str = "big.bin";

/// Everything this run started, so a signal can stop it all: pid, whether
/// it leads a process group of its own (then the whole group is signalled),
/// and its stop signal.
static STARTED: Mutex<Vec<(u32, bool, Signal)>> = Mutex::new(Vec::new());

/// The pid to signal: the process, or its whole group.
fn target(pid: u32, group: bool) -> Pid {
    let pid = pid as i32;
    Pid::from_raw(if group { -pid } else { pid })
}

/// Stops every process still registered (on SIGINT/SIGTERM of the bench).
pub fn stop_everything() {
    let started = STARTED.lock().map(|v| v.clone()).unwrap_or_default();
    for (pid, group, sig) in &started {
        let _ = kill(target(*pid, *group), *sig);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && started.iter().any(|(p, _, _)| procfs::running(*p)) {
        std::thread::sleep(Duration::from_millis(100));
    }
    for (pid, group, _) in &started {
        if procfs::running(*pid) || *group {
            let _ = kill(target(*pid, *group), Signal::SIGKILL);
        }
    }
}

/// A child process, stopped with its own polite signal when dropped.
pub struct Proc {
    pub name: &'static str,
    child: Option<Child>,
    stop: Signal,
    /// It leads a process group of its own, which is stopped with it (a
    /// kernel gateway and its kernels).
    group: bool,
    pub log: PathBuf,
}

impl Proc {
    fn spawn(name: &'static str, cmd: &mut Command, stop: Signal, log: PathBuf) -> Result<Proc> {
        Proc::start(name, cmd, stop, false, log)
    }

    /// Starts `cmd` in a process group of its own: stopping it stops
    /// whatever it started too.
    pub fn spawn_group(
        name: &'static str,
        cmd: &mut Command,
        stop: Signal,
        log: PathBuf,
    ) -> Result<Proc> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        Proc::start(name, cmd, stop, true, log)
    }

    fn start(
        name: &'static str,
        cmd: &mut Command,
        stop: Signal,
        group: bool,
        log: PathBuf,
    ) -> Result<Proc> {
        let out = File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let err = out.try_clone()?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        if let Ok(mut s) = STARTED.lock() {
            s.push((child.id(), group, stop));
        }
        Ok(Proc {
            name,
            child: Some(child),
            stop,
            group,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Fails if the process has exited, naming its log.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{} exited ({status}); its log:\n{}",
                    self.name,
                    tail(&self.log, 30)
                );
            }
        }
        Ok(())
    }

    /// Sends the stop signal and waits up to 30 s, then kills.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let _ = kill(target(pid, self.group), self.stop);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => {
                    eprintln!("{} did not stop within 30s; killing it", self.name);
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        if self.group {
            // What it started and left behind.
            let _ = kill(target(pid, true), Signal::SIGKILL);
        }
        if let Ok(mut s) = STARTED.lock() {
            s.retain(|(p, _, _)| *p != pid);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `n` lines of a log file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A free TCP port on loopback (bound and released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

pub fn private_dir(path: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// A test CA and two leaf certificates for localhost: ECDSA P-256 and RSA 2048.
pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    fn make(dir: &Path) -> Result<Certs> {
        private_dir(dir)?;
        std::fs::write(
            dir.join("leaf.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )?;
        let ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1";
        let mut steps = vec![format!(
            "req -x509 {ec} -nodes -days 2 -subj /CN=bench-CA -keyout ca.key -out ca.pem"
        )];
        // One leaf per key type, each signed by the CA.
        for (kind, newkey) in [("ec", ec), ("rsa", "-newkey rsa:2048")] {
            steps.push(format!(
                "req {newkey} -nodes -subj /CN=localhost -keyout {kind}.key -out {kind}.csr"
            ));
            steps.push(format!(
                "x509 -req -in {kind}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
                 -extfile leaf.ext -out {kind}.pem"
            ));
        }
        for step in steps {
            let args: Vec<&str> = step.split_whitespace().collect();
            let out = Command::new("openssl")
                .args(&args)
                .current_dir(dir)
                .output()
                .context("cannot run openssl (apt-get install openssl)")?;
            if !out.status.success() {
                bail!(
                    "openssl {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(Certs {
            dir: dir.to_owned(),
        })
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `(certificate, key)` of the leaf with key type `kind` ("ec" or "rsa").
    pub fn leaf(&self, kind: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{kind}.pem")),
            self.dir.join(format!("{kind}.key")),
        )
    }
}

/// The running stack.
pub struct Stack {
    pub startup: Startup,
    pub big_file_bytes: u64,
    pub certs: Certs,
    pub tls: TlsConnector,
    /// The same client with session resumption on (the resumed handshakes).
    pub tls_resuming: TlsConnector,
    /// The client offering key exchange groups as browsers do (post-quantum
    /// hybrid first).
    pub tls_browser_groups: TlsConnector,
    pub notebookd: Proc,
    pub notebookd_port: u16,
    pub notebookd_tls: (PathBuf, PathBuf),
    pub password: String,
    /// Its hash, for more notebookds with the same password.
    pub password_hash: String,
    /// The notebooks every Jupyter serves.
    pub root: PathBuf,
    /// An API token (`nbctl token create`) for the token client's rows.
    pub token: String,
    pub jupyter: Proc,
    pub jupyter_socket: PathBuf,
    /// notebookd's config, and where the direct Jupyter keeps its files: to
    /// start them afresh.
    nb: NotebookdConfig,
    direct_dir: PathBuf,
    pub nginx: Proc,
    /// nginx's site with the P-256 certificate, and the same site with the RSA one.
    pub nginx_port_ec: u16,
    pub nginx_port_rsa: u16,
    /// Where everything of this run is (removed at the end).
    pub dir: PathBuf,
    /// Last: removed only after the processes above have stopped.
    _dir: tempfile::TempDir,
}

/// How long each took from its process start to serving: the first start
/// (a fresh state directory), then restarts.
#[derive(Debug, Clone, Default)]
pub struct Startup {
    pub first: StartPair,
    pub restarts: Vec<StartPair>,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct StartPair {
    /// notebookd: until it logged that it is ready (after its Jupyter answered).
    pub notebookd: Duration,
    /// A Jupyter started like notebookd's child: until it answered.
    pub jupyter: Duration,
}

impl StartPair {
    /// What notebookd adds to its Jupyter's own start, ms.
    pub fn own_ms(&self) -> f64 {
        (self.notebookd.as_secs_f64() - self.jupyter.as_secs_f64()) * 1e3
    }
}

/// Restarts of notebookd measured after the first start (each paired with
/// a Jupyter started alone). Jupyter's own start varies by hundreds of ms on
/// a busy machine: the median of several pairs says more than one.
const RESTARTS: usize = 7;

pub struct Versions {
    pub nginx: String,
    pub jupyter: String,
    /// Enterprise Gateway's, when the gateway part runs.
    pub gateway: Option<String>,
}

impl Stack {
    pub async fn start(venv: &Path, big_file_bytes: u64, max_connections: u32) -> Result<Stack> {
        let dir = tempfile::Builder::new()
            .prefix("notebookd-bench-")
            .tempdir()?;
        let d = dir.path().to_owned();
        let certs = Certs::make(&d.join("certs"))?;
        use crate::client::{Groups, tls_connector};
        let tls = tls_connector(&certs.ca(), false, Groups::Classic)?;
        let tls_resuming = tls_connector(&certs.ca(), true, Groups::Classic)?;
        let tls_browser_groups = tls_connector(&certs.ca(), false, Groups::BrowserPostQuantum)?;

        let root = d.join("root");
        std::fs::create_dir_all(&root)?;
        // Sparse: no disk space and no disk reads, the bytes still cross every layer.
        File::create(root.join(BIG_FILE))?.set_len(big_file_bytes)?;
        std::fs::write(
            root.join("README.txt"),
            "the benchmark's notebook directory\n",
        )?;
        std::fs::write(
            root.join("notes.ipynb"),
            r#"{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}"#,
        )?;

        // The first start is measured too: Jupyter's files in the page cache
        // for it as for the Jupyter started alone after it.
        let warmed = Command::new(venv.join("bin/python3"))
            .args([
                "-c",
                "import jupyter_server.serverapp, notebook.app, jupyterlab.labapp",
            ])
            .status()?;
        anyhow::ensure!(warmed.success(), "the venv's Python cannot import Jupyter");
        eprintln!("==> starting notebookd (release build) and its Jupyter");
        let password = "bench-password".to_string();
        let hash = notebookd::auth::password::PasswordHash::generate(&password)
            .map_err(anyhow::Error::msg)?;
        let nb = NotebookdConfig::write(
            &d.join("nb"),
            venv,
            &root,
            certs.leaf("ec"),
            hash.as_str(),
            &format!(
                "[limits]\n# The memory rounds open 1,000 WebSockets from one address.\n\
                 max_connections_per_client = 1024\n\
                 # The idle-WebSocket part opens up to 10,000 (from 40 addresses).\n\
                 max_connections = {max_connections}\n"
            ),
            "",
        )?;
        let made = Command::new(env!("CARGO_BIN_EXE_nbctl"))
            .arg("--config")
            .arg(&nb.path)
            .args(["token", "create", "bench"])
            .output()?;
        anyhow::ensure!(
            made.status.success(),
            "nbctl token create failed: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let token = String::from_utf8(made.stdout)?.trim().to_string();
        let (mut notebookd, notebookd_start) =
            nb.spawn("notebookd", &d.join("notebookd.log")).await?;

        // The second Jupyter: notebookd's child's own command line and config file,
        // pointed at another socket.
        eprintln!("==> starting the same Jupyter for the direct and nginx paths");
        let direct_dir = d.join("direct");
        let (mut command, jupyter_socket) =
            jupyter_like_child(&notebookd, &nb, &direct_dir, &root, Ok)?;
        let jupyter_spawned = Instant::now();
        let mut jupyter = Proc::spawn(
            "Jupyter (direct)",
            &mut command,
            Signal::SIGTERM,
            d.join("jupyter-direct.log"),
        )?;
        wait_for_jupyter(&mut jupyter, &jupyter_socket).await?;
        let mut startup = Startup {
            first: StartPair {
                notebookd: notebookd_start,
                jupyter: jupyter_spawned.elapsed(),
            },
            restarts: Vec::new(),
        };
        // Restarts (`systemctl restart`, a reboot): the state directory is
        // kept, as the service's is. Each beside a Jupyter started alone,
        // in turns, which of the two goes first alternating (a change in the
        // machine's load then weighs on both alike).
        for k in 0..RESTARTS {
            eprintln!(
                "==> restarting notebookd, and a Jupyter alone ({}/{RESTARTS})",
                k + 1
            );
            let (alone_dir, alone_log) = (
                d.join(format!("alone-{k}")),
                d.join(format!("jupyter-alone-{k}.log")),
            );
            let first = if k % 2 == 0 {
                Some(
                    time_jupyter_alone(&notebookd, &nb, &alone_dir, &root, alone_log.clone())
                        .await?,
                )
            } else {
                None
            };
            notebookd.stop();
            let (restarted, took) = nb
                .spawn("notebookd", &d.join(format!("notebookd-{}.log", k + 1)))
                .await?;
            notebookd = restarted;
            let jupyter_took = match first {
                Some(t) => t,
                None => time_jupyter_alone(&notebookd, &nb, &alone_dir, &root, alone_log).await?,
            };
            startup.restarts.push(StartPair {
                notebookd: took,
                jupyter: jupyter_took,
            });
        }

        eprintln!("==> starting nginx");
        let nginx_port_ec = free_port()?;
        let nginx_port_rsa = free_port()?;
        let nginx = start_nginx(
            &d.join("nginx"),
            &jupyter_socket,
            &[
                (nginx_port_ec, certs.leaf("ec")),
                (nginx_port_rsa, certs.leaf("rsa")),
            ],
            &tls,
        )
        .await?;

        Ok(Stack {
            startup,
            big_file_bytes,
            certs,
            tls,
            tls_resuming,
            tls_browser_groups,
            notebookd,
            notebookd_port: nb.port,
            notebookd_tls: nb.tls.clone(),
            password,
            password_hash: hash.as_str().to_string(),
            root,
            token,
            jupyter,
            jupyter_socket,
            nginx,
            nginx_port_ec,
            nginx_port_rsa,
            nb,
            direct_dir,
            dir: d,
            _dir: dir,
        })
    }

    /// Starts notebookd (with its Jupyter) and the direct Jupyter afresh,
    /// with the same config, ports and socket: the parts after the idle
    /// WebSockets then do not measure what thousands of WebSockets left in
    /// the Jupyters (notebookd's took far more of them than the one behind
    /// nginx, and Python does not give all of that memory back).
    pub async fn restart_notebookd_and_jupyter(&mut self) -> Result<()> {
        eprintln!("==> starting notebookd and the direct Jupyter afresh");
        self.jupyter.stop();
        self.notebookd.stop();
        let (notebookd, _) = self
            .nb
            .spawn("notebookd", &self.dir.join("notebookd-afresh.log"))
            .await?;
        self.notebookd = notebookd;
        let (mut command, socket) =
            jupyter_like_child(&self.notebookd, &self.nb, &self.direct_dir, &self.root, Ok)?;
        anyhow::ensure!(
            socket == self.jupyter_socket,
            "the direct Jupyter's socket moved"
        );
        let mut jupyter = Proc::spawn(
            "Jupyter (direct)",
            &mut command,
            Signal::SIGTERM,
            self.dir.join("jupyter-direct-afresh.log"),
        )?;
        wait_for_jupyter(&mut jupyter, &socket).await?;
        self.jupyter = jupyter;
        Ok(())
    }

    /// nginx's master and workers.
    pub fn nginx_pids(&self) -> Vec<u32> {
        let master = self.nginx.pid();
        let mut pids = vec![master];
        pids.extend(procfs::children(master));
        pids
    }

    /// notebookd's Jupyter child.
    pub fn notebookd_jupyter_pid(&self) -> Result<u32> {
        procfs::children(self.notebookd.pid())
            .into_iter()
            .next()
            .context("notebookd has no Jupyter child")
    }

    /// Installs the leaf of key type `kind` as notebookd's certificate and reloads it.
    pub async fn notebookd_use_cert(&mut self, kind: &str) -> Result<()> {
        let (cert, key) = self.certs.leaf(kind);
        std::fs::copy(cert, &self.notebookd_tls.0)?;
        std::fs::copy(key, &self.notebookd_tls.1)?;
        let before = reloads(&self.notebookd.log);
        kill(Pid::from_raw(self.notebookd.pid() as i32), Signal::SIGHUP)?;
        let log = self.notebookd.log.clone();
        wait_for("notebookd to reload", Duration::from_secs(30), || {
            Ok(reloads(&log) > before)
        })
        .await
    }

    pub fn versions(&self, venv: &Path) -> Versions {
        let nginx = nginx_binary()
            .ok()
            .and_then(|b| Command::new(b).arg("-v").output().ok())
            .map(|o| {
                String::from_utf8_lossy(&o.stderr)
                    .trim()
                    .replace("nginx version: ", "")
            })
            .unwrap_or_else(|| "unknown".into());
        let script = "import importlib.metadata as m\nprint(', '.join(f'{p} {m.version(p)}' for p in ('notebook', 'jupyter_server', 'tornado', 'ipykernel')))";
        let jupyter = Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(script)
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        Versions {
            nginx,
            jupyter,
            gateway: None,
        }
    }

    pub fn stop(mut self) {
        eprintln!("==> stopping nginx, notebookd and Jupyter");
        self.nginx.stop();
        self.notebookd.stop();
        self.jupyter.stop();
    }
}

/// A config file for a notebookd of the benchmark, in its own directory.
pub struct NotebookdConfig {
    pub path: PathBuf,
    pub port: u16,
    /// Its certificate and key files (copies, so that they can be swapped).
    pub tls: (PathBuf, PathBuf),
    /// Its runtime directory, where it writes its Jupyter's config.
    pub run: PathBuf,
}

impl NotebookdConfig {
    /// Writes the config of a notebookd on a free port of 127.0.0.1 with TLS
    /// (`leaf`), a password, and Jupyter from `venv` serving `root`; `limits`
    /// and `jupyter` are more lines of those sections.
    pub fn write(
        dir: &Path,
        venv: &Path,
        root: &Path,
        leaf: (PathBuf, PathBuf),
        hash: &str,
        limits: &str,
        jupyter: &str,
    ) -> Result<NotebookdConfig> {
        let port = free_port()?;
        private_dir(&dir.join("tls"))?;
        let tls = (dir.join("tls/cert.pem"), dir.join("tls/key.pem"));
        std::fs::copy(&leaf.0, &tls.0)?;
        std::fs::copy(&leaf.1, &tls.1)?;
        let run = dir.join("run");
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nstate_dir = \"{state}\"\nruntime_dir = \"{run}\"\n\n\
             [tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
             [auth]\npassword_hash = \"{hash}\"\n\n\
             {limits}\n\
             [jupyter]\ncommand = \"{jupyter_bin}\"\nroot_dir = \"{root}\"\n{jupyter}",
            state = dir.join("state").display(),
            run = run.display(),
            cert = tls.0.display(),
            key = tls.1.display(),
            jupyter_bin = venv.join("bin/jupyter").display(),
            root = root.display(),
        );
        let path = dir.join("notebook.toml");
        std::fs::write(&path, config)?;
        // nbctl writes tokens.json into the state directory, which the
        // daemon would otherwise make on its first start.
        private_dir(&dir.join("state"))?;
        Ok(NotebookdConfig {
            path,
            port,
            tls,
            run,
        })
    }

    /// Starts notebookd (the release build) with this config and waits until
    /// it says it is ready (its Jupyter answered); how long that took.
    pub async fn spawn(&self, name: &'static str, log: &Path) -> Result<(Proc, Duration)> {
        let spawned = Instant::now();
        let mut notebookd = Proc::spawn(
            name,
            wrapped(
                "BENCH_WRAP_NOTEBOOKD",
                Path::new(env!("CARGO_BIN_EXE_notebookd")),
            )
            .arg("--config")
            .arg(&self.path)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .env_remove("RUST_LOG"),
            Signal::SIGTERM,
            log.to_owned(),
        )?;
        wait_for(
            &format!("{name} to be ready"),
            Duration::from_secs(180),
            || {
                notebookd.check_alive()?;
                Ok(std::fs::read_to_string(&notebookd.log)?.contains("notebookd is ready"))
            },
        )
        .await?;
        Ok((notebookd, spawned.elapsed()))
    }
}

/// A Jupyter started exactly as `notebookd` (with config `nb`) starts its
/// child: the same command line and the config file it wrote, passed
/// through `edit`, with only the unix socket changed (to one in `dir`). The
/// command to spawn, and its socket.
pub fn jupyter_like_child(
    notebookd: &Proc,
    nb: &NotebookdConfig,
    dir: &Path,
    root: &Path,
    edit: impl FnOnce(String) -> Result<String>,
) -> Result<(Command, PathBuf)> {
    let child = procfs::children(notebookd.pid())
        .into_iter()
        .next()
        .with_context(|| format!("{} has no Jupyter child", notebookd.name))?;
    let argv = procfs::cmdline(child)?;
    let nb_jupyter_dir = nb.run.join("jupyter");
    let nb_config = nb_jupyter_dir.join("jupyter_notebookd_config.py");
    let nb_socket = nb_jupyter_dir.join("jupyter.sock");
    private_dir(&dir.join("runtime"))?;
    let socket = dir.join("jupyter.sock");
    let config_text = std::fs::read_to_string(&nb_config)
        .with_context(|| format!("cannot read {}", nb_config.display()))?;
    let nb_socket_text = nb_socket.display().to_string();
    if !config_text.contains(&nb_socket_text) {
        bail!("notebookd's Jupyter config does not name its socket {nb_socket_text}");
    }
    let config = dir.join("jupyter_config.py");
    std::fs::write(
        &config,
        edit(config_text.replace(&nb_socket_text, &socket.display().to_string()))?,
    )?;
    let config_arg = format!("--config={}", nb_config.display());
    let Some((program, args)) = argv.split_first() else {
        bail!("empty command line of notebookd's Jupyter");
    };
    if !args.contains(&config_arg) {
        bail!("notebookd's Jupyter runs without {config_arg}: {argv:?}");
    }
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if *a == config_arg {
                format!("--config={}", config.display())
            } else {
                a.clone()
            }
        })
        .collect();
    let mut command = Command::new(program);
    command
        .args(&args)
        .env("JUPYTER_RUNTIME_DIR", dir.join("runtime"))
        .env("JUPYTER_PLATFORM_DIRS", "1")
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(root);
    Ok((command, socket))
}

/// Starts a Jupyter alone as notebookd's child was started (see
/// [`jupyter_like_child`]), and how long it took to answer `GET /api`;
/// stops it again.
async fn time_jupyter_alone(
    notebookd: &Proc,
    nb: &NotebookdConfig,
    dir: &Path,
    root: &Path,
    log: PathBuf,
) -> Result<Duration> {
    let (mut command, socket) = jupyter_like_child(notebookd, nb, dir, root, Ok)?;
    let spawned = Instant::now();
    let mut j = Proc::spawn("Jupyter (alone)", &mut command, Signal::SIGTERM, log)?;
    wait_for_jupyter(&mut j, &socket).await?;
    let took = spawned.elapsed();
    j.stop();
    Ok(took)
}

/// Waits until the Jupyter on `socket` answers `GET /api` (as notebookd
/// waits for its child; `/api/status` would list the kernels, which a
/// gateway may refuse).
pub async fn wait_for_jupyter(jupyter: &mut Proc, socket: &Path) -> Result<()> {
    let what = format!("{} to answer", jupyter.name);
    wait_for_async(&what, Duration::from_secs(180), jupyter, || {
        let s = socket.to_owned();
        async move { crate::client::unix_status(&s, "/api").await }
    })
    .await
}

/// Starts nginx (in `dir`) in front of the Jupyter on `socket`, one TLS site
/// per `(port, (certificate, key))`, and waits until each answers.
pub async fn start_nginx(
    dir: &Path,
    socket: &Path,
    sites: &[(u16, (PathBuf, PathBuf))],
    tls: &TlsConnector,
) -> Result<Proc> {
    std::fs::create_dir_all(dir.join("tmp"))?;
    std::fs::write(dir.join("nginx.conf"), nginx_conf(dir, socket, sites))?;
    let mut nginx = Proc::spawn(
        "nginx",
        wrapped("BENCH_WRAP_NGINX", &nginx_binary()?)
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .arg("-e")
            .arg(dir.join("error.log")),
        Signal::SIGQUIT,
        dir.join("nginx.log"),
    )?;
    for (port, _) in sites {
        let port = *port;
        wait_for_async(
            "nginx to answer",
            Duration::from_secs(30),
            &mut nginx,
            || {
                let tls = tls.clone();
                async move { crate::client::tls_probe(&tls, port).await }
            },
        )
        .await?;
    }
    Ok(nginx)
}

/// `program`, or `$VAR program` when the environment variable is set: e.g.
/// `BENCH_WRAP_NOTEBOOKD="valgrind --tool=callgrind"` to count instructions.
fn wrapped(var: &str, program: &Path) -> Command {
    let prefix = std::env::var(var).unwrap_or_default();
    let mut words = prefix.split_whitespace();
    match words.next() {
        Some(first) => {
            let mut cmd = Command::new(first);
            cmd.args(words).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

fn reloads(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("configuration reloaded")
        .count()
}

fn nginx_binary() -> Result<PathBuf> {
    for dir in std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .chain(["/usr/sbin", "/sbin"])
    {
        let p = Path::new(dir).join("nginx");
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("nginx is not installed (apt-get install nginx; ./dev bench installs it)")
}

/// The usual nginx site in front of Jupyter's unix socket: TLS, Host passed
/// with its port (Jupyter compares it with Origin), WebSocket upgrades,
/// `proxy_buffering off`, and upstream keepalive (like
/// packaging/examples/nginx-notebook.conf). No access log: notebookd writes
/// none per request either.
fn nginx_conf(dir: &Path, socket: &Path, sites: &[(u16, (PathBuf, PathBuf))]) -> String {
    let d = dir.display();
    let mut servers = String::new();
    for (port, (cert, key)) in sites {
        servers.push_str(&format!(
            r#"
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name localhost;
        ssl_certificate     {cert};
        ssl_certificate_key {key};

        client_max_body_size 100m;

        location / {{
            proxy_pass http://jupyter;
            proxy_http_version 1.1;
            proxy_set_header Host              $http_host;
            proxy_set_header X-Real-IP         $remote_addr;
            proxy_set_header X-Forwarded-For   $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Upgrade           $http_upgrade;
            proxy_set_header Connection        $connection_upgrade;
            proxy_buffering         off;
            proxy_request_buffering off;
            proxy_read_timeout      1h;
            proxy_send_timeout      1h;
        }}
    }}
"#,
            cert = cert.display(),
            key = key.display(),
        ));
    }
    format!(
        r#"# Written by the notebookd benchmark.
daemon off;
master_process on;
worker_processes auto;
# Jupyter's socket is 0600 and owned by the user running the benchmark.
user root;
pid {d}/nginx.pid;
error_log {d}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;

    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;

    map $http_upgrade $connection_upgrade {{
        default upgrade;
        ''      '';
    }}

    upstream jupyter {{
        server unix:{socket};
        keepalive 16;
    }}
{servers}}}
"#,
        socket = socket.display(),
    )
}

/// How often start-up is polled: often enough to time it to a few ms.
const POLL: Duration = Duration::from_millis(5);

/// Polls `ready` every few ms until it says yes, fails, or `limit` passes.
async fn wait_for(
    what: &str,
    limit: Duration,
    mut ready: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if ready()? {
            return Ok(());
        }
        tokio::time::sleep(POLL).await;
    }
    bail!("timed out after {limit:?} waiting for {what}")
}

/// Polls an async probe that answers 200 once the service is up.
async fn wait_for_async<F, Fut>(
    what: &str,
    limit: Duration,
    proc: &mut Proc,
    probe: F,
) -> Result<()>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<u16>>,
{
    let deadline = Instant::now() + limit;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        proc.check_alive()?;
        match probe().await {
            Ok(200) => return Ok(()),
            Ok(status) => last = format!("HTTP {status}"),
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(POLL).await;
    }
    bail!(
        "timed out after {limit:?} waiting for {what} ({last}); its log:\n{}",
        tail(&proc.log, 30)
    )
}
