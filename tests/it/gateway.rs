//! Kernels on a real Jupyter Enterprise Gateway and Kernel Gateway
//! (`jupyter.gateway_url`): each pinned in its own venv (tests/setup/gateway.sh),
//! started on loopback with an auth token and local process kernels, behind
//! notebookd and the test venv's Jupyter.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use reqwest::Method;
use serde_json::{Value, json};

use crate::nbctl::nbctl;
use crate::support::{self, Browser, Notebookd, Options, kernel};

/// Which gateway a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Enterprise,
    Kernel,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Enterprise => "enterprise",
            Kind::Kernel => "kernel",
        }
    }
    fn program(self) -> &'static str {
        match self {
            Kind::Enterprise => "bin/jupyter-enterprisegateway",
            Kind::Kernel => "bin/jupyter-kernelgateway",
        }
    }
    /// The environment variable of its `auth_token` setting.
    fn token_env(self) -> &'static str {
        match self {
            Kind::Enterprise => "EG_AUTH_TOKEN",
            Kind::Kernel => "KG_AUTH_TOKEN",
        }
    }
}

/// The gateway's venv, installed by tests/setup/gateway.sh when missing;
/// `None` (after a loud skip) when it cannot be, outside CI.
fn gateway_venv(kind: Kind) -> Option<PathBuf> {
    let out = Command::new(support::repo_root().join("tests/setup/gateway.sh"))
        .arg(kind.name())
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/setup/gateway.sh");
    let venv = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && venv.join(kind.program()).exists() {
        return Some(venv);
    }
    support::missing_tool(
        &format!("Jupyter {} gateway", kind.name()),
        &format!(
            "run tests/setup/gateway.sh {} (pip from PyPI into .cache/{}-gateway)",
            kind.name(),
            kind.name()
        ),
    );
    None
}

/// A running gateway, stopped (with its kernels) when dropped.
struct Gateway {
    kind: Kind,
    venv: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    token: String,
    child: Option<Child>,
}

impl Gateway {
    fn start(kind: Kind, venv: &Path, token: &str) -> Gateway {
        let mut g = Gateway {
            kind,
            venv: venv.to_owned(),
            dir: tempfile::tempdir().expect("tempdir"),
            port: support::free_port(),
            token: token.to_owned(),
            child: None,
        };
        g.spawn();
        g
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("gateway running").id()
    }

    /// Starts the gateway (again, on the same port) and waits until it answers.
    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("gateway.log")).expect("log");
        let path = format!(
            "{}:{}",
            self.venv.join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        // The token goes in the environment (EG_AUTH_TOKEN is the same
        // setting as --EnterpriseGatewayApp.auth_token, KG_AUTH_TOKEN as
        // --KernelGatewayApp.auth_token), so that no command line on this
        // machine holds it and the check below can look at all of them.
        let child = Command::new(self.venv.join(self.kind.program()))
            .arg("--ip=127.0.0.1")
            .arg(format!("--port={}", self.port))
            .arg("--port_retries=0")
            .env(self.kind.token_env(), &self.token)
            .env("PATH", path)
            .env("JUPYTER_RUNTIME_DIR", self.dir.path().join("runtime"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", self.kind.program()));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(90);
        let api = format!("{}/api", self.url());
        loop {
            let answered = reqwest::blocking::Client::new()
                .get(&api)
                .timeout(Duration::from_secs(5))
                .send()
                .is_ok();
            if answered {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("the gateway exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway did not answer within 90s: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// Stops the gateway and its kernels (its process group).
    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(child.id() as i32);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = child.wait();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.stop();
    }
}

/// notebookd with its kernels on `gateway`, the token read from `token_file`.
fn notebookd_on(gateway: &Gateway, token_file: &Path) -> Notebookd {
    Notebookd::start_with(Options {
        settings: vec![
            ("jupyter", format!("gateway_url = \"{}\"", gateway.url())),
            (
                "jupyter",
                format!("gateway_token_file = \"{}\"", token_file.display()),
            ),
            // Enterprise Gateway refuses kernels for root, which the tests run as.
            ("jupyter", "gateway_kernel_username = \"nbtest\"".into()),
        ],
        ..Options::default()
    })
}

fn write_token(dir: &Path, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("gateway.token");
    std::fs::write(&path, format!("{token}\n")).expect("token file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    path
}

fn random_token() -> String {
    let mut bytes = [0u8; 18];
    getrandom::getrandom(&mut bytes).expect("random");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// POST api/kernels; the answer's status and JSON.
async fn start_kernel(b: &Browser) -> (u16, Value) {
    let resp = b
        .send_json(Method::POST, "api/kernels", &json!({"name": "python3"}))
        .await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

async fn run(n: &Notebookd, b: &Browser, kernel_id: &str, code: &str) -> kernel::Execution {
    let ws = n.ws_url(&format!("api/kernels/{kernel_id}/channels"));
    kernel::execute(&ws, &b.cookie_header(), &b.origin, code)
        .await
        .expect("run code in the gateway's kernel")
}

/// The parent pids of `pid`, nearest first, up to init.
fn ancestors(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut current = pid;
    for _ in 0..64 {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{current}/stat")) else {
            break;
        };
        // The fields after the command name, which is in parentheses.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r.to_string()) else {
            break;
        };
        let Some(ppid) = rest.split_whitespace().nth(1).and_then(|p| p.parse().ok()) else {
            break;
        };
        if ppid == 0 {
            break;
        }
        out.push(ppid);
        current = ppid;
    }
    out
}

fn status_json(n: &Notebookd) -> Value {
    let out = nbctl(&n.config_path(), &["status", "--json"]);
    assert_eq!(out.code, 0, "nbctl status: {}{}", out.stdout, out.stderr);
    serde_json::from_str(&out.stdout).expect("status JSON")
}

async fn wait_gateway_state(n: &Notebookd, want: &str) -> Value {
    let b = n.client();
    let mut last = Value::Null;
    let reached = support::eventually(Duration::from_secs(60), async || {
        last = b
            .get("_notebookd/health")
            .await
            .json()
            .await
            .unwrap_or_default();
        last["gateway"]["state"] == want
    })
    .await;
    assert!(reached, "health never said gateway {want}: {last}");
    last
}

#[tokio::test(flavor = "multi_thread")]
async fn enterprise_gateway_runs_the_kernels() {
    gateway_runs_the_kernels(Kind::Enterprise).await;
}

/// Kernel Gateway (one remote host) with the test venv's jupyter_server.
#[tokio::test(flavor = "multi_thread")]
async fn kernel_gateway_runs_the_kernels() {
    gateway_runs_the_kernels(Kind::Kernel).await;
}

/// Behind notebookd, a gateway of `kind`: kernels run under the gateway,
/// interrupt and restart work, the token is nowhere to be seen; the gateway
/// going away and coming back, and a wrong token file, each give a clear
/// answer and recover without restarting notebookd.
async fn gateway_runs_the_kernels(kind: Kind) {
    let Some(venv) = gateway_venv(kind) else {
        return;
    };
    let secrets = tempfile::tempdir().unwrap();
    let token = random_token();
    let token_file = write_token(secrets.path(), &token);
    let mut gateway = tokio::task::block_in_place(|| Gateway::start(kind, &venv, &token));
    let n = notebookd_on(&gateway, &token_file);
    let b = n.logged_in().await;

    // The kernel runs under the gateway, not under Jupyter.
    let (status, body) = start_kernel(&b).await;
    assert_eq!(
        status, 201,
        "start a kernel through {kind:?} Gateway: {body}"
    );
    let id = body["id"].as_str().expect("kernel id").to_string();
    let out = run(&n, &b, &id, "import os\nprint(6*7, os.getpid())").await;
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"42"), "{out:?}");
    let kernel_pid: u32 = words[1].parse().expect("kernel pid");
    let first_status = tokio::task::block_in_place(|| status_json(&n));
    let status = first_status.clone();
    let jupyter_pid = status["jupyter"]["pid"].as_u64().expect("Jupyter's pid") as u32;
    let parents = ancestors(kernel_pid);
    assert!(
        parents.contains(&gateway.pid()),
        "kernel {kernel_pid}'s ancestors {parents:?} do not include the gateway {}",
        gateway.pid()
    );
    assert!(
        !parents.contains(&jupyter_pid),
        "kernel {kernel_pid} is under Jupyter ({jupyter_pid}): {parents:?}"
    );

    // Health and status say the gateway answers, without its address.
    let health = wait_gateway_state(&n, "ok").await;
    assert_eq!(health["status"], "ok", "{health}");
    assert_eq!(status["jupyter"]["gateway"]["state"], "ok", "{status}");
    let port = gateway.port.to_string();
    assert!(!health.to_string().contains(&port), "{health}");
    let text = tokio::task::block_in_place(|| nbctl(&n.config_path(), &["status"]));
    assert!(
        text.stdout
            .contains("gateway      ok: the kernel gateway answers"),
        "{}",
        text.stdout
    );

    // Interrupt: a long sleep ends with KeyboardInterrupt.
    let ws = n.ws_url(&format!("api/kernels/{id}/channels"));
    let (cookie, origin) = (b.cookie_header(), b.origin.clone());
    let sleeper = tokio::spawn(async move {
        kernel::execute(&ws, &cookie, &origin, "import time\ntime.sleep(120)").await
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sleeper.is_finished() {
        assert!(Instant::now() < deadline, "the interrupt never took effect");
        let r = b
            .send_json(
                Method::POST,
                &format!("api/kernels/{id}/interrupt"),
                &json!({}),
            )
            .await;
        assert_eq!(r.status(), 204, "interrupt: {:?}", r.text().await);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let interrupted = sleeper.await.unwrap().expect("the interrupted execution");
    assert!(
        interrupted.stdout.contains("KeyboardInterrupt"),
        "{interrupted:?}"
    );

    // Restart: a new kernel process, same id, still under the gateway.
    let r = b
        .send_json(
            Method::POST,
            &format!("api/kernels/{id}/restart"),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 200, "restart: {:?}", r.text().await);
    let out = run(&n, &b, &id, "import os\nprint(6*7, os.getpid())").await;
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"42"), "{out:?}");
    let restarted: u32 = words[1].parse().expect("pid");
    assert_ne!(restarted, kernel_pid, "the restart kept the old process");
    assert!(ancestors(restarted).contains(&gateway.pid()));

    // The token is in no command line on this machine and in no log line.
    let holders = support::processes_matching(&token);
    assert!(
        holders.is_empty(),
        "the token is on command lines: {holders:?}"
    );
    assert!(
        !n.log_text().contains(&token),
        "the token is in notebookd's log"
    );
    let shown = tokio::task::block_in_place(|| nbctl(&n.config_path(), &["config", "show"]));
    assert!(
        shown.stdout.contains("gateway_token_file"),
        "{}",
        shown.stdout
    );
    assert!(
        !shown.stdout.contains(&token),
        "nbctl config show prints the token"
    );

    // The gateway goes away: a clear answer, and health says so.
    tokio::task::block_in_place(|| gateway.stop());
    let (status, body) = start_kernel(&b).await;
    assert_eq!(status, 503, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("The kernel gateway (jupyter.gateway_url) does not answer"),
        "{body}"
    );
    assert!(!message.contains(&port), "the URL leaked: {body}");
    let page = b.get_page("api/kernelspecs").await;
    assert_eq!(page.status(), 503);
    let html = page.text().await.unwrap();
    assert!(html.contains("Kernel gateway unavailable"), "{html}");
    let health = wait_gateway_state(&n, "unreachable").await;
    assert_eq!(health["status"], "degraded", "{health}");
    // Notebooks still open.
    assert_eq!(b.get_page("tree").await.status(), 200);

    // It comes back: kernels work again, notebookd and Jupyter untouched.
    tokio::task::block_in_place(|| gateway.spawn());
    let mut last = (0, Value::Null);
    let recovered = support::eventually(Duration::from_secs(60), async || {
        last = start_kernel(&b).await;
        last.0 == 201
    })
    .await;
    assert!(recovered, "no kernel after the gateway came back: {last:?}");
    let id = last.1["id"].as_str().expect("kernel id").to_string();
    assert_eq!(run(&n, &b, &id, "print(6*7)").await.stdout.trim(), "42");
    wait_gateway_state(&n, "ok").await;
    let after = tokio::task::block_in_place(|| status_json(&n));
    assert_eq!(
        after["jupyter"]["pid"], first_status["jupyter"]["pid"],
        "Jupyter restarted"
    );

    // A wrong token in the file, and a reload (which restarts Jupyter with
    // it): the gateway refuses it, and the page, the JSON and health say so.
    let wrong = random_token();
    write_token(secrets.path(), &wrong);
    reload_restarts_jupyter(&n);
    // While Jupyter restarts, notebookd answers 502 with a page of its own.
    let mut last = (0, Value::Null);
    let refused = support::eventually(Duration::from_secs(90), async || {
        last = start_kernel(&b).await;
        last.0 == 502
            && last.1["message"]
                .as_str()
                .is_some_and(|m| m.contains("refuses notebookd's token"))
    })
    .await;
    assert!(refused, "a wrong token did not give the refusal: {last:?}");
    let page = b.get_page("api/kernelspecs").await;
    assert_eq!(page.status(), 502);
    let html = page.text().await.unwrap();
    assert!(html.contains("Kernel gateway refused the token"), "{html}");
    assert!(html.contains("jupyter.gateway_token_file"), "{html}");
    let health = wait_gateway_state(&n, "refused").await;
    assert_eq!(health["status"], "degraded", "{health}");

    // The right token back in the same file and a reload: kernels start.
    write_token(secrets.path(), &token);
    reload_restarts_jupyter(&n);
    let mut last = (0, Value::Null);
    let started = support::eventually(Duration::from_secs(90), async || {
        last = start_kernel(&b).await;
        last.0 == 201
    })
    .await;
    assert!(started, "no kernel with the right token: {last:?}");
    wait_gateway_state(&n, "ok").await;
    let log = n.log_text();
    assert!(
        !log.contains(&token) && !log.contains(&wrong),
        "a token is in notebookd's log"
    );
}

/// `nbctl reload` after the token file changed: Jupyter restarts with it.
fn reload_restarts_jupyter(n: &Notebookd) {
    let out = tokio::task::block_in_place(|| nbctl(&n.config_path(), &["reload"]));
    assert_eq!(out.code, 0, "reload: {}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("Jupyter is restarting"),
        "{}",
        out.stdout
    );
}

#[test]
fn check_config_needs_a_readable_token_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notebook.toml");
    let missing = dir.path().join("missing.token");
    std::fs::write(
        &config,
        format!(
            "[tls]\nenabled = false\n[jupyter]\ncommand = \"{}\"\ngateway_url = \"http://127.0.0.1:1\"\ngateway_token_file = \"{}\"\n",
            support::jupyter_command(),
            missing.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_notebookd"))
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("cannot read jupyter.gateway_token_file") && err.contains("chmod 0640"),
        "{err}"
    );
    write_token(dir.path(), "t0ken");
    std::fs::rename(dir.path().join("gateway.token"), &missing).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_notebookd"))
        .arg("--config")
        .arg(&config)
        .arg("--check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
