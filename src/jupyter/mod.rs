//! The Jupyter child: started on a private unix socket, watched, restarted
//! with backoff, stopped cleanly.
//!
//! One task ([`Supervisor::run`]) owns the child. It writes the Jupyter config
//! into the runtime directory, starts Jupyter in a process group of its own,
//! waits until `GET {base_url}api` answers (readiness), probes it while it
//! runs (liveness), and on exit logs Jupyter's last output lines and starts
//! it again after an exponential backoff. Everyone else sees its state
//! through a [`watch`] channel of [`JupyterStatus`].
//!
//! Stopping: SIGTERM to Jupyter (it shuts its kernels down), a wait, then
//! SIGKILL to its process group and to anything it left behind (see [`reap`]).

pub mod flavour;
pub mod gateway;
pub mod reap;

use std::collections::{BTreeMap, VecDeque};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::{Config, Flavour};
use flavour::{Installed, Resolved};
use gateway::{GatewayHealth, GatewayPlan};

/// How many of Jupyter's last output lines are kept for crash reports.
const LAST_LINES: usize = 30;
/// Environment variables of notebookd's own service manager that the child
/// must not inherit.
const SYSTEMD_VARIABLES: [&str; 8] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "MAINPID",
];
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a starting Jupyter is asked whether it answers: at 100 ms,
/// READY=1 came 50 ms (up to 100 ms) after Jupyter could answer.
const READINESS_POLL: Duration = Duration::from_millis(10);
const LIVENESS_EVERY: Duration = Duration::from_secs(10);
/// Consecutive failed liveness probes before Jupyter is considered hung: a
/// minute, since a Jupyter that runs nbconvert synchronously (classic 6.x)
/// is merely busy for half of one.
const LIVENESS_FAILURES: u32 = 6;
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Readiness this long resets the backoff.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// The config file notebookd runs with, named in the Jupyter config it
/// writes; set once at start ([`set_notebookd_config`]).
static NOTEBOOKD_CONFIG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Records the config file this process runs with (the first call wins).
pub fn set_notebookd_config(path: &Path) {
    let _ = NOTEBOOKD_CONFIG.set(path.to_owned());
}

fn notebookd_config() -> &'static Path {
    NOTEBOOKD_CONFIG
        .get()
        .map_or(Path::new("/etc/notebook/notebook.toml"), PathBuf::as_path)
}

/// Everything the child's launch depends on; a reload that changes it restarts Jupyter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchPlan {
    pub flavour: Flavour,
    pub command: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub root_dir: PathBuf,
    pub base_url: String,
    pub runtime_dir: PathBuf,
    /// Where the installed Jupyter packages are remembered between starts.
    pub state_dir: PathBuf,
    pub startup_timeout: Duration,
    pub stop_timeout: Duration,
    /// Kernels on a gateway (`jupyter.gateway_url`); `None`: on this machine.
    /// Boxed: a plan travels in channel messages, most of them without a gateway.
    pub gateway: Option<Box<GatewayPlan>>,
}

impl LaunchPlan {
    pub fn from_config(c: &Config) -> LaunchPlan {
        LaunchPlan {
            flavour: c.jupyter.flavour,
            command: c.jupyter.command.clone(),
            args: c.jupyter.args.clone(),
            env: c.jupyter.env.clone(),
            root_dir: c.jupyter.root_dir.path().to_owned(),
            base_url: c.server.base_url.as_str().to_owned(),
            runtime_dir: c.server.runtime_dir.path().to_owned(),
            state_dir: c.server.state_dir.path().to_owned(),
            startup_timeout: c.jupyter.startup_timeout.get(),
            stop_timeout: c.jupyter.stop_timeout.get(),
            gateway: GatewayPlan::from_config(c).map(Box::new),
        }
    }

    /// The private directory (0700) holding Jupyter's socket, config and runtime files.
    pub fn jupyter_dir(&self) -> PathBuf {
        self.runtime_dir.join("jupyter")
    }

    pub fn socket(&self) -> PathBuf {
        self.jupyter_dir().join("jupyter.sock")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JupyterState {
    /// Started, not answering yet.
    Starting,
    /// Answering `GET {base_url}api`.
    Ready,
    /// Exited or failed; waiting before the next start.
    Backoff,
    /// Stopped for good (shutdown).
    Stopped,
}

impl JupyterState {
    pub fn describe(self) -> &'static str {
        match self {
            JupyterState::Starting => "starting",
            JupyterState::Ready => "ready",
            JupyterState::Backoff => "restarting after a failure",
            JupyterState::Stopped => "stopped",
        }
    }
}

/// What the rest of notebookd knows about the child.
#[derive(Debug, Clone, Serialize)]
pub struct JupyterStatus {
    pub state: JupyterState,
    /// e.g. "notebook 7.2.2 (jupyter_server)".
    pub flavour: Option<String>,
    /// jupyter_server's own version, from `GET api`.
    pub server_version: Option<String>,
    pub pid: Option<u32>,
    /// Starts after the first one.
    pub restarts: u32,
    pub last_error: Option<String>,
    /// How the health checks of the running Jupyter went lately, when not
    /// all well (missed checks, a recovery): for `nbctl status`.
    pub health: Option<String>,
    #[serde(skip)]
    pub ready_since: Option<SystemTime>,
    /// The socket the proxy connects to.
    #[serde(skip)]
    pub socket: PathBuf,
    /// The kernel gateway's health; `None` when kernels run on this machine.
    pub gateway: Option<GatewayHealth>,
}

enum Request {
    Relaunch(Box<LaunchPlan>),
    Stop(oneshot::Sender<()>),
}

/// The handle the daemon keeps: status, relaunch and stop.
#[derive(Clone)]
pub struct Supervisor {
    requests: mpsc::Sender<Request>,
    status: watch::Receiver<JupyterStatus>,
    heartbeat: Arc<Mutex<Instant>>,
    /// A digest of the gateway token the running Jupyter got, so that a
    /// reload notices a new token in an unchanged config.
    launched_token: Arc<Mutex<Option<gateway::TokenDigest>>>,
}

impl Supervisor {
    /// Starts the supervising task (and with it, Jupyter). `status_line`
    /// hears a one-line description of each change of state (the daemon
    /// passes it on as systemd's STATUS=).
    pub fn spawn(plan: LaunchPlan, status_line: fn(&str)) -> Supervisor {
        let (req_tx, req_rx) = mpsc::channel(8);
        let (status_tx, status_rx) = watch::channel(JupyterStatus {
            state: JupyterState::Starting,
            flavour: None,
            server_version: None,
            pid: None,
            restarts: 0,
            last_error: None,
            health: None,
            ready_since: None,
            socket: plan.socket(),
            gateway: plan.gateway.as_ref().map(|_| GatewayHealth::unknown()),
        });
        let heartbeat = Arc::new(Mutex::new(Instant::now()));
        let launched_token = Arc::new(Mutex::new(None));
        let task = Task {
            launched_token: launched_token.clone(),
            plan,
            requests: req_rx,
            status: status_tx,
            heartbeat: heartbeat.clone(),
            status_line,
            detected: None,
            last_lines: Arc::new(Mutex::new(VecDeque::new())),
        };
        tokio::spawn(task.run());
        Supervisor {
            requests: req_tx,
            status: status_rx,
            heartbeat,
            launched_token,
        }
    }

    pub fn status(&self) -> watch::Receiver<JupyterStatus> {
        self.status.clone()
    }

    /// When the supervising task last went round its loop (for the watchdog).
    pub fn last_heartbeat(&self) -> Instant {
        self.heartbeat
            .lock()
            .map_or_else(|_| Instant::now(), |h| *h)
    }

    /// Whether the gateway token file now holds another token than the one
    /// the running Jupyter was given (`false` if it cannot be read: starting
    /// Jupyter would fail on it the same way).
    pub fn gateway_token_changed(&self, plan: &LaunchPlan) -> bool {
        let Some(file) = plan.gateway.as_ref().and_then(|g| g.token_file.as_ref()) else {
            return false;
        };
        let Ok(token) = gateway::read_token(file) else {
            return false;
        };
        let launched = self.launched_token.lock().map(|t| *t).unwrap_or(None);
        launched != Some(gateway::TokenDigest::of(&token))
    }

    /// Restarts Jupyter with a new plan.
    pub async fn relaunch(&self, plan: LaunchPlan) {
        let _ = self.requests.send(Request::Relaunch(Box::new(plan))).await;
    }

    /// Stops Jupyter and everything it started; returns when done.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.requests.send(Request::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

struct Task {
    launched_token: Arc<Mutex<Option<gateway::TokenDigest>>>,
    plan: LaunchPlan,
    requests: mpsc::Receiver<Request>,
    status: watch::Sender<JupyterStatus>,
    heartbeat: Arc<Mutex<Instant>>,
    status_line: fn(&str),
    /// `jupyter --version` for the current command and env.
    detected: Option<(String, BTreeMap<String, String>, Installed)>,
    last_lines: Arc<Mutex<VecDeque<String>>>,
}

/// Why a run of the child ended.
enum RunEnd {
    /// Exited or was killed for failing; try again after a backoff.
    Failed(String),
    Relaunch(LaunchPlan),
    Stop(oneshot::Sender<()>),
}

impl Task {
    async fn run(mut self) {
        let mut backoff = BACKOFF_FIRST;
        let mut first = true;
        loop {
            self.beat();
            if !first {
                self.status.send_modify(|s| s.restarts += 1);
            }
            first = false;
            let started = Instant::now();
            let end = self.run_once().await;
            let was_stable =
                started.elapsed() >= STABLE_AFTER && self.status.borrow().ready_since.is_some();
            match end {
                RunEnd::Stop(done) => {
                    self.status.send_modify(|s| {
                        s.state = JupyterState::Stopped;
                        s.pid = None;
                        s.ready_since = None;
                    });
                    let _ = done.send(());
                    return;
                }
                RunEnd::Relaunch(plan) => {
                    tracing::info!("restarting Jupyter with the new settings");
                    self.plan = plan;
                    self.status.send_modify(|s| s.socket = self.plan.socket());
                    backoff = BACKOFF_FIRST;
                    continue;
                }
                RunEnd::Failed(why) => {
                    if was_stable {
                        backoff = BACKOFF_FIRST;
                    }
                    tracing::error!(
                        "Jupyter failed: {why}; starting it again in {}s",
                        backoff.as_secs()
                    );
                    (self.status_line)(&format!(
                        "Jupyter failed ({why}); restarting in {}s",
                        backoff.as_secs()
                    ));
                    self.status.send_modify(|s| {
                        s.state = JupyterState::Backoff;
                        s.pid = None;
                        s.ready_since = None;
                        s.last_error = Some(why);
                    });
                    match self.wait_backoff(backoff).await {
                        Some(RunEnd::Stop(done)) => {
                            self.status.send_modify(|s| s.state = JupyterState::Stopped);
                            let _ = done.send(());
                            return;
                        }
                        Some(RunEnd::Relaunch(plan)) => {
                            self.plan = plan;
                            self.status.send_modify(|s| s.socket = self.plan.socket());
                            backoff = BACKOFF_FIRST;
                        }
                        _ => backoff = (backoff * 2).min(BACKOFF_MAX),
                    }
                }
            }
        }
    }

    fn beat(&self) {
        if let Ok(mut h) = self.heartbeat.lock() {
            *h = Instant::now();
        }
    }

    /// Waits out a backoff, still answering requests.
    async fn wait_backoff(&mut self, d: Duration) -> Option<RunEnd> {
        let sleep = tokio::time::sleep(d);
        tokio::pin!(sleep);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut sleep => return None,
                _ = tick.tick() => self.beat(),
                req = self.requests.recv() => return Some(match req {
                    Some(Request::Relaunch(plan)) => RunEnd::Relaunch(*plan),
                    Some(Request::Stop(done)) => RunEnd::Stop(done),
                    None => return None,
                }),
            }
        }
    }

    async fn resolve(&mut self) -> Result<Resolved, String> {
        let stale = match &self.detected {
            Some((cmd, env, _)) => *cmd != self.plan.command || *env != self.plan.env,
            None => true,
        };
        if stale {
            let installed =
                flavour::detect_cached(&self.plan.command, &self.plan.env, &self.plan.state_dir)
                    .await?;
            self.detected = Some((self.plan.command.clone(), self.plan.env.clone(), installed));
        }
        let installed = self
            .detected
            .as_ref()
            .map(|(_, _, i)| i.clone())
            .unwrap_or_default();
        flavour::resolve(self.plan.flavour, &installed)
    }

    /// Prepares the runtime files and spawns Jupyter.
    fn launch(&self, resolved: &Resolved) -> Result<Child, String> {
        let dir = self.plan.jupyter_dir();
        prepare_private_dir(&dir).map_err(|e| format!("cannot prepare {}: {e}", dir.display()))?;
        let socket = self.plan.socket();
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(format!(
                    "cannot remove the old socket {}: {e}",
                    socket.display()
                ));
            }
        }
        std::fs::create_dir_all(&self.plan.root_dir).map_err(|e| {
            format!(
                "cannot create jupyter.root_dir {}: {e}",
                self.plan.root_dir.display()
            )
        })?;
        let runtime = dir.join("runtime");
        prepare_private_dir(&runtime)
            .map_err(|e| format!("cannot prepare {}: {e}", runtime.display()))?;
        let allow_root = nix::unistd::geteuid().is_root();
        if allow_root {
            // Said, not warned: a normal `./dev run` runs as root.
            tracing::info!(
                "running Jupyter as root; the packaged service runs it as user notebook"
            );
        }
        let gateway_env = match &self.plan.gateway {
            Some(g) => g.env()?,
            None => BTreeMap::new(),
        };
        if let Ok(mut t) = self.launched_token.lock() {
            *t = gateway_env
                .get("JUPYTER_GATEWAY_AUTH_TOKEN")
                .map(|token| gateway::TokenDigest::of(token));
        }
        let mut files = flavour::frontend::files(
            resolved.dialect,
            flavour::frontend::wants_news(&self.plan.args),
        );
        if self.plan.gateway.is_some() {
            files.extend(gateway::files());
        }
        for (rel, text) in files {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            std::fs::write(&path, text)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        let config_text = flavour::render(&flavour::JupyterConfig {
            dialect: resolved.dialect,
            dir: &dir,
            socket: &socket,
            base_url: &self.plan.base_url,
            root_dir: &self.plan.root_dir,
            allow_root,
            gateway: self.plan.gateway.is_some(),
            notebookd_config: notebookd_config(),
        });
        let config_path = dir.join("jupyter_notebookd_config.py");
        std::fs::write(&config_path, config_text)
            .map_err(|e| format!("cannot write {}: {e}", config_path.display()))?;

        // `jupyter notebook` runs `jupyter-notebook`: run that directly when
        // it can be found as the launcher would find it (a quicker start).
        let direct =
            flavour::direct_subcommand(&self.plan.command, &self.plan.env, resolved.subcommand);
        let mut cmd = match &direct {
            Some(program) => Command::new(program),
            None => {
                let mut cmd = Command::new(&self.plan.command);
                cmd.arg(resolved.subcommand);
                cmd
            }
        };
        cmd.arg(format!("--config={}", config_path.display()))
            .args(&self.plan.args)
            .env("JUPYTER_RUNTIME_DIR", &runtime)
            .env("PYTHONUNBUFFERED", "1");
        // systemd's variables are notebookd's: a kernel that inherited
        // NOTIFY_SOCKET could tell systemd the service is ready or stopping.
        for var in SYSTEMD_VARIABLES {
            cmd.env_remove(var);
        }
        cmd.envs(&self.plan.env)
            .envs(venv_first_on_path(&self.plan).map(|p| ("PATH", p)))
            // After jupyter.env: the gateway keys are the ones that say where kernels run.
            .envs(&gateway_env)
            .current_dir(&self.plan.root_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group: a terminal's Ctrl-C reaches notebookd only,
            // and the whole group can be killed at once.
            .process_group(0);
        if std::env::var_os("JUPYTER_PLATFORM_DIRS").is_none() {
            cmd.env("JUPYTER_PLATFORM_DIRS", "1");
        }
        if resolved.dialect == flavour::Dialect::NotebookApp {
            // The classic Notebook finds custom.js only in JUPYTER_CONFIG_DIR; the
            // previous config dir stays on the config path, so its settings still apply.
            let env = |k: &str| {
                self.plan
                    .env
                    .get(k)
                    .cloned()
                    .or_else(|| std::env::var(k).ok())
                    .filter(|v| !v.is_empty())
            };
            let previous =
                env("JUPYTER_CONFIG_DIR").or_else(|| env("HOME").map(|h| format!("{h}/.jupyter")));
            let path: Vec<String> = previous
                .into_iter()
                .chain(env("JUPYTER_CONFIG_PATH"))
                .collect();
            cmd.env(
                "JUPYTER_CONFIG_DIR",
                dir.join(flavour::frontend::CLASSIC_CONFIG_DIR),
            );
            if !path.is_empty() {
                cmd.env("JUPYTER_CONFIG_PATH", path.join(":"));
            }
        }
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().map_err(|e| match &direct {
            Some(program) => format!(
                "cannot start {} (for `{} {}`): {e}",
                program.display(),
                self.plan.command,
                resolved.subcommand
            ),
            None => format!(
                "cannot start `{} {}`: {e}",
                self.plan.command, resolved.subcommand
            ),
        })?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_output(out, self.last_lines.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_output(err, self.last_lines.clone()));
        }
        Ok(child)
    }

    async fn run_once(&mut self) -> RunEnd {
        if let Ok(mut lines) = self.last_lines.lock() {
            lines.clear();
        }
        self.status.send_modify(|s| {
            s.state = JupyterState::Starting;
            s.pid = None;
            s.ready_since = None;
            s.health = None;
        });
        let resolved = match self.resolve().await {
            Ok(r) => r,
            Err(e) => return RunEnd::Failed(e),
        };
        let mut child = match self.launch(&resolved) {
            Ok(c) => c,
            Err(e) => return RunEnd::Failed(e),
        };
        let pid = child.id();
        tracing::info!(
            pid,
            "started Jupyter: {} on {} (a private socket only notebookd can open: Jupyter's own login is off, notebookd does the login)",
            resolved.describe(),
            self.plan.socket().display()
        );
        (self.status_line)(&format!("starting Jupyter ({})", resolved.describe()));
        self.status.send_modify(|s| {
            s.flavour = Some(resolved.describe());
            s.pid = pid;
        });

        let end = self.watch_child(&mut child).await;
        let why = match &end {
            RunEnd::Failed(why) => Some(why.clone()),
            _ => None,
        };
        // Even a hung Jupyter gets SIGTERM and jupyter.stop_timeout first:
        // it may only be busy, and a clean stop saves the kernels' state.
        self.stop_child(&mut child, true).await;
        if let Some(why) = why {
            let lines = self
                .last_lines
                .lock()
                .map(|l| l.iter().cloned().collect::<Vec<_>>())
                .unwrap_or_default();
            if !lines.is_empty() {
                tracing::error!("Jupyter's last output lines:\n  {}", lines.join("\n  "));
            }
            return RunEnd::Failed(why);
        }
        end
    }

    /// Waits for readiness, then watches the running child until it ends or is asked to.
    async fn watch_child(&mut self, child: &mut Child) -> RunEnd {
        let socket = self.plan.socket();
        let api = format!("{}api", self.plan.base_url);
        let deadline = tokio::time::Instant::now() + self.plan.startup_timeout;
        let mut sigchld =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child()).ok();

        // Readiness. Asked often: READY=1 (and the first proxied request)
        // waits for the first probe after Jupyter starts answering, and a
        // failed probe before its socket exists costs a failed connect only.
        let mut poll = tokio::time::interval(READINESS_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.beat();
            tokio::select! {
                status = child.wait() => return RunEnd::Failed(exit_reason(status, "before it was ready")),
                _ = tokio::time::sleep_until(deadline) => {
                    return RunEnd::Failed(format!(
                        "it did not answer GET {api} within {}s (jupyter.startup_timeout)",
                        self.plan.startup_timeout.as_secs()
                    ));
                }
                req = self.requests.recv() => return request_end(req),
                _ = recv_signal(&mut sigchld) => reap::reap_zombies(),
                _ = poll.tick() => {
                    if let Ok(version) = probe(&socket, &api).await {
                        self.status.send_modify(|s| {
                            s.state = JupyterState::Ready;
                            s.server_version = version;
                            s.ready_since = Some(SystemTime::now());
                        });
                        tracing::info!("Jupyter is ready");
                        (self.status_line)("ready");
                        self.check_gateway(&socket).await;
                        break;
                    }
                }
            }
        }

        // Liveness.
        let mut failures = 0;
        let mut every = tokio::time::interval(LIVENESS_EVERY);
        every.tick().await;
        loop {
            self.beat();
            tokio::select! {
                status = child.wait() => return RunEnd::Failed(exit_reason(status, "while running")),
                req = self.requests.recv() => return request_end(req),
                _ = recv_signal(&mut sigchld) => reap::reap_zombies(),
                _ = every.tick() => {
                    match probe_checked(&socket, &api).await {
                        Ok(_) => {
                            if failures > 0 {
                                let note = format!("answered again at {} after {failures} missed health check(s)", now_rfc3339());
                                tracing::info!("Jupyter {note}");
                                self.status.send_modify(|s| s.health = Some(note));
                            }
                            failures = 0;
                            self.check_gateway(&socket).await;
                        }
                        // notebookd's own shortage (descriptors, memory) says
                        // nothing about Jupyter: never kill it for that.
                        Err(ProbeError { local: true, message }) => {
                            tracing::warn!("cannot check Jupyter's health: {message} (not counted against Jupyter)");
                        }
                        Err(ProbeError { message: e, .. }) => {
                            failures += 1;
                            tracing::warn!("Jupyter did not answer a health check ({failures}/{LIVENESS_FAILURES}): {e}");
                            let note = format!("missed {failures} health check(s) in a row, the last at {}: {e}", now_rfc3339());
                            self.status.send_modify(|s| s.health = Some(note));
                            if failures >= LIVENESS_FAILURES {
                                return RunEnd::Failed(format!("it stopped answering ({e})"));
                            }
                        }
                    }
                }
            }
        }
    }

    /// Asks Jupyter for the kernel specs, which it fetches from the gateway,
    /// and records what that says about the gateway; logs changes.
    async fn check_gateway(&self, socket: &Path) {
        if self.plan.gateway.is_none() {
            return;
        }
        let path = format!("{}api/kernelspecs", self.plan.base_url);
        let health = match probe_status(socket, &path).await {
            Ok(status) => GatewayHealth::from_answer(status),
            Err(_) => GatewayHealth::unreachable(),
        };
        let before = self.status.borrow().gateway.clone();
        if before.as_ref() != Some(&health) {
            if health.is_ok() {
                tracing::info!("{}", health.message);
            } else {
                tracing::warn!("{}", health.message);
            }
        }
        self.status.send_modify(|s| s.gateway = Some(health));
    }

    /// Stops the child: politely first when `gentle`, then by force; then its leftovers.
    async fn stop_child(&self, child: &mut Child, gentle: bool) {
        let Some(pid) = child.id() else {
            // Already reaped; only its process group and leftovers remain.
            reap::stop_leftovers(Duration::from_secs(2)).await;
            return;
        };
        let pid = Pid::from_raw(pid as i32);
        if gentle {
            tracing::info!("stopping Jupyter (SIGTERM; it shuts its kernels down)");
            let _ = kill(pid, Signal::SIGTERM);
            match tokio::time::timeout(self.plan.stop_timeout, child.wait()).await {
                Ok(_) => tracing::info!("Jupyter stopped"),
                Err(_) => tracing::warn!(
                    "Jupyter did not stop within {}s (jupyter.stop_timeout); killing it",
                    self.plan.stop_timeout.as_secs()
                ),
            }
        }
        // The group id is the child's pid (process_group(0)); kill what is left of it.
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = child.wait().await;
        let n = reap::stop_leftovers(Duration::from_secs(3)).await;
        if n > 0 {
            tracing::info!("stopped {n} process(es) Jupyter left behind");
        }
    }
}

fn request_end(req: Option<Request>) -> RunEnd {
    match req {
        Some(Request::Relaunch(plan)) => RunEnd::Relaunch(*plan),
        Some(Request::Stop(done)) => RunEnd::Stop(done),
        // The daemon dropped its handle: stop.
        None => RunEnd::Stop(oneshot::channel().0),
    }
}

async fn recv_signal(sig: &mut Option<tokio::signal::unix::Signal>) {
    match sig {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}

fn exit_reason(status: std::io::Result<std::process::ExitStatus>, when: &str) -> String {
    match status {
        Ok(s) => format!("it exited {when} ({s})"),
        Err(e) => format!("waiting for it failed: {e}"),
    }
}

/// Creates `dir` (and parents) and makes it 0700.
fn prepare_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// Asks the kernel to SIGTERM the child if notebookd dies without stopping it.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls prctl(2),
    // which is async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
}

/// Longest line of the child's output that is logged; the rest of it is counted.
const MAX_LINE: usize = 4096;
/// Lines of the child's output logged per second at most; the rest are counted.
const LINES_PER_SECOND: u32 = 100;

/// Copies the child's output into the log, keeping the last lines.
///
/// Kernels inherit this output, so a cell decides what arrives: 200 MB
/// without a newline, or a progress bar redrawn with `\r` a million times.
/// Lines therefore end at `\n` or `\r`, are cut at [`MAX_LINE`] bytes, and
/// at most [`LINES_PER_SECOND`] are logged; memory stays bounded whatever
/// comes.
async fn forward_output(
    mut stream: impl tokio::io::AsyncRead + Unpin,
    last: Arc<Mutex<VecDeque<String>>>,
) {
    use tokio::io::AsyncReadExt;
    let mut out = OutputLog::new(last);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        out.feed(&buf[..n]);
    }
    out.end_line();
    out.report_suppressed();
}

/// The line being assembled from the child's output, and the log's budget.
struct OutputLog {
    line: Vec<u8>,
    /// Bytes of the current line beyond [`MAX_LINE`].
    cut: usize,
    last: Arc<Mutex<VecDeque<String>>>,
    second: Instant,
    logged: u32,
    suppressed: u64,
    filter: OutputFilter,
}

impl OutputLog {
    fn new(last: Arc<Mutex<VecDeque<String>>>) -> OutputLog {
        OutputLog {
            line: Vec::with_capacity(256),
            cut: 0,
            last,
            second: Instant::now(),
            logged: 0,
            suppressed: 0,
            filter: OutputFilter::default(),
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let end = bytes.iter().position(|&b| b == b'\n' || b == b'\r');
            let part = &bytes[..end.unwrap_or(bytes.len())];
            let room = MAX_LINE - self.line.len();
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            self.cut += part.len().saturating_sub(room);
            match end {
                Some(i) => {
                    self.end_line();
                    bytes = &bytes[i + 1..];
                }
                None => break,
            }
        }
    }

    fn end_line(&mut self) {
        if self.line.is_empty() && self.cut == 0 {
            return;
        }
        let mut line = String::from_utf8_lossy(&self.line).into_owned();
        if self.cut > 0 {
            line.push_str(&format!(" [... {} more bytes]", self.cut));
        }
        self.line.clear();
        self.cut = 0;
        if self.second.elapsed() >= Duration::from_secs(1) {
            self.report_suppressed();
            self.second = Instant::now();
            self.logged = 0;
        }
        if self.logged < LINES_PER_SECOND {
            self.logged += 1;
            match self.filter.loudness(&line) {
                Loudness::Error => tracing::error!(target: "jupyter", "{line}"),
                Loudness::Warn => tracing::warn!(target: "jupyter", "{line}"),
                Loudness::Debug => tracing::debug!(target: "jupyter", "{line}"),
                Loudness::Info => tracing::info!(target: "jupyter", "{line}"),
            }
        } else {
            self.suppressed += 1;
        }
        if let Ok(mut l) = self.last.lock() {
            if l.len() == LAST_LINES {
                l.pop_front();
            }
            l.push_back(line);
        }
    }

    fn report_suppressed(&mut self) {
        if self.suppressed > 0 {
            tracing::info!(
                target: "jupyter",
                "({} more lines of Jupyter's output were not logged: over {LINES_PER_SECOND} a second)",
                self.suppressed
            );
            self.suppressed = 0;
        }
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Why a health check failed, and whether the cause is on notebookd's side.
#[derive(Debug)]
pub struct ProbeError {
    /// notebookd could not even try (no file descriptor or memory left).
    pub local: bool,
    pub message: String,
}

/// Errors that are notebookd's own shortage, not Jupyter's fault.
pub fn is_local_shortage(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::ENOBUFS)
    )
}

/// `PATH` for the child when `jupyter.command` lives in a venv's `bin`:
/// that `bin` first, so that `python` and `pip` in a notebook's terminal
/// and `!pip install` in a cell are the kernel's, not the system's.
pub fn venv_first_on_path(plan: &LaunchPlan) -> Option<std::ffi::OsString> {
    let bin = Path::new(&plan.command).parent()?;
    let is_venv = bin.is_absolute()
        && bin.join("python").exists()
        && bin.parent().is_some_and(|v| v.join("pyvenv.cfg").exists());
    if !is_venv {
        return None;
    }
    let inherited = plan
        .env
        .get("PATH")
        .map(std::ffi::OsString::from)
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    if std::env::split_paths(&inherited).next().as_deref() == Some(bin) {
        return None;
    }
    std::env::join_paths(
        std::iter::once(bin.to_path_buf()).chain(std::env::split_paths(&inherited)),
    )
    .ok()
}

/// The level at which a line of Jupyter's output enters notebookd's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loudness {
    Debug,
    Info,
    Warn,
    Error,
}

/// Jupyter's own levels, except for lines that are false or mere noise
/// behind notebookd, so that a normal start and stop logs nothing at WARN
/// or above and a warning in the log is worth reading.
#[derive(Default)]
struct OutputFilter {
    /// Python prints a warning's source line after the warning itself.
    after_quiet_warning: bool,
}

impl OutputFilter {
    fn loudness(&mut self, line: &str) -> Loudness {
        if std::mem::take(&mut self.after_quiet_warning) && line.starts_with("  ") {
            return Loudness::Debug;
        }
        // True of the private socket (which only notebookd can open), false
        // of the service: notebookd says so itself when it starts Jupyter.
        if line.contains("All authentication is disabled") {
            return Loudness::Debug;
        }
        // The SIGTERM is notebookd's own, at every normal stop or restart.
        if line.contains("received signal 15, stopping") {
            return Loudness::Info;
        }
        // jupyter_server gives tornado its ping timeout in milliseconds and
        // tornado clamps it, at the first WebSocket of every start; setting
        // it lower would make jupyter_server close live WebSockets.
        if line.contains("websocket_ping_timeout (")
            || line.starts_with("Setting websocket_ping_timeout=")
        {
            return Loudness::Debug;
        }
        // A schema of jupyter_server that jupyter_events accepts and warns
        // about at every start; nothing an administrator can change.
        if line.contains("JupyterEventsVersionWarning") {
            self.after_quiet_warning = true;
            return Loudness::Debug;
        }
        // Jupyter's log lines start with "[I ", "[W ", "[E ", "[C " or "[D ".
        match line.as_bytes().get(..2) {
            Some(b"[E") | Some(b"[C") => Loudness::Error,
            Some(b"[W") => Loudness::Warn,
            Some(b"[D") => Loudness::Debug,
            _ => Loudness::Info,
        }
    }
}

/// `GET path` over the unix socket; `Ok(version)` on 200.
pub async fn probe(socket: &Path, path: &str) -> Result<Option<String>, String> {
    probe_checked(socket, path).await.map_err(|e| e.message)
}

/// [`probe`], telling notebookd's own shortages apart from Jupyter's failures.
pub async fn probe_checked(socket: &Path, path: &str) -> Result<Option<String>, ProbeError> {
    let connect = tokio::time::timeout(PROBE_TIMEOUT, tokio::net::UnixStream::connect(socket));
    let stream = match connect.await {
        Ok(Ok(s)) => s,
        Err(_) => {
            return Err(ProbeError {
                local: false,
                message: format!(
                    "connect {}: no answer within {}s",
                    socket.display(),
                    PROBE_TIMEOUT.as_secs()
                ),
            });
        }
        Ok(Err(e)) => {
            return Err(ProbeError {
                local: is_local_shortage(&e),
                message: format!("connect {}: {e}", socket.display()),
            });
        }
    };
    probe_on(stream, path).await.map_err(|message| ProbeError {
        local: false,
        message,
    })
}

async fn probe_on(stream: tokio::net::UnixStream, path: &str) -> Result<Option<String>, String> {
    let attempt = async {
        let (status, body) = get_over(stream, path).await?;
        if status != http::StatusCode::OK {
            return Err(format!("GET {path} answered {status}"));
        }
        let version = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("version")?.as_str().map(str::to_owned));
        Ok(version)
    };
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no answer within {}s", PROBE_TIMEOUT.as_secs()))?
}

/// `GET path` over the unix socket; the answer's status code, whatever it is.
pub async fn probe_status(socket: &Path, path: &str) -> Result<u16, String> {
    let attempt = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        get_over(stream, path)
            .await
            .map(|(status, _)| status.as_u16())
    };
    // jupyter_server waits up to gateway_request_timeout for the gateway;
    // a health check that long would hold up liveness probes.
    tokio::time::timeout(PROBE_TIMEOUT, attempt)
        .await
        .map_err(|_| format!("no answer within {}s", PROBE_TIMEOUT.as_secs()))?
}

/// One `GET path` on a fresh connection to Jupyter, its body read whole
/// (so that the connection ends cleanly on Jupyter's side).
async fn get_over(
    stream: tokio::net::UnixStream,
    path: &str,
) -> Result<(http::StatusCode, Bytes), String> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, "localhost")
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_start_and_stop_lines_are_not_warnings() {
        let mut f = OutputFilter::default();
        for (line, want) in [
            (
                "[W 2026-12-01 19:57:15.501 ServerApp] All authentication is disabled.  Anyone who can connect to this server will be able to run code.",
                Loudness::Debug,
            ),
            (
                "[C 2026-12-01 19:57:22.027 ServerApp] received signal 15, stopping",
                Loudness::Info,
            ),
            (
                "/venv/lib/python3.11/site-packages/jupyter_events/schema.py:68: JupyterEventsVersionWarning: The `version` property of an event schema must be a string.",
                Loudness::Debug,
            ),
            ("  validate_schema(_schema)", Loudness::Debug),
            ("  an indented line after another one", Loudness::Info),
            (
                "[W 2026-12-01 20:01:02.003 ServerApp] The websocket_ping_timeout (90000) cannot be longer than the websocket_ping_interval (30000).",
                Loudness::Debug,
            ),
            ("Setting websocket_ping_timeout=30000", Loudness::Debug),
            (
                "[W 2026-12-01 20:01:02.003 ServerApp] 404 GET /api/nothing",
                Loudness::Warn,
            ),
            (
                "[E 2026-12-01 20:01:02.003 ServerApp] Uncaught exception",
                Loudness::Error,
            ),
            (
                "[C 2026-12-01 20:01:02.003 ServerApp] received signal 6",
                Loudness::Error,
            ),
            (
                "[I 2026-12-01 20:01:02.003 ServerApp] Kernel started",
                Loudness::Info,
            ),
        ] {
            assert_eq!(f.loudness(line), want, "{line}");
        }
    }
}

#[cfg(test)]
mod output_tests {
    use super::*;

    #[test]
    fn output_lines_end_at_cr_too_and_are_cut() {
        let last = Arc::new(Mutex::new(VecDeque::new()));
        let mut out = OutputLog::new(last.clone());
        out.feed(b"10%\r20%\r");
        out.feed(&vec![b'x'; 3 * MAX_LINE]);
        out.feed(b"y\nlast");
        out.end_line();
        let lines: Vec<String> = last.lock().unwrap().iter().cloned().collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!(lines[0], "10%");
        assert_eq!(lines[1], "20%");
        assert!(lines[2].starts_with("xxxx"));
        assert!(lines[2].ends_with(&format!("[... {} more bytes]", 2 * MAX_LINE + 1)));
        assert!(lines[2].len() < MAX_LINE + 40);
        assert_eq!(lines[3], "last");
        assert!(out.line.capacity() <= 2 * MAX_LINE);
    }
}
