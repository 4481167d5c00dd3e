//! The gateway part: kernels on Jupyter Enterprise Gateway (pinned, from its
//! own venv, local process kernels) on loopback, reached
//!
//! - through notebookd configured with `gateway_url` and a token file, which
//!   loads its gateway extension (TCP_NODELAY and quick ACKs on Jupyter's
//!   WebSockets to the gateway) into its Jupyter;
//! - through nginx in front of a Jupyter started with the gateway's URL as a
//!   user would without notebookd: notebookd's child's command line and
//!   config without the extension, `--GatewayClient.url` and the token in
//!   `JUPYTER_GATEWAY_AUTH_TOKEN`;
//! - through that Jupyter's unix socket directly;
//! - at the gateway itself, with a client that acknowledges at once;
//! - through a second notebookd, to a second gateway that sets TCP_NODELAY on
//!   its kernel WebSockets (`gateway_nodelay.py`, what an operator can add);
//!
//! beside a local kernel through the main notebookd, in turns in one run.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::sys::signal::Signal;

use crate::client::{Target, Via};
use crate::stack::{self, NotebookdConfig, Proc, Stack};

/// The user the gateway's kernels are started for (`KERNEL_USERNAME`):
/// Enterprise Gateway refuses kernels for root, which the benchmark runs as.
const KERNEL_USER: &str = "bench";

/// The operator's hook that turns Nagle's algorithm off on a gateway's
/// kernel WebSockets (README, "Kernels on a cluster").
const NODELAY_HOOK: &str = include_str!("gateway_nodelay.py");

/// One way to a kernel in this part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GatewayPath {
    /// A local kernel through the main notebookd: the baseline.
    Local,
    Notebookd,
    Nginx,
    Direct,
    Itself,
    NodelayGateway,
}

impl GatewayPath {
    pub const ALL: [GatewayPath; 6] = [
        GatewayPath::Local,
        GatewayPath::Notebookd,
        GatewayPath::Nginx,
        GatewayPath::Direct,
        GatewayPath::Itself,
        GatewayPath::NodelayGateway,
    ];

    /// Its name in progress lines and kernel session ids.
    pub fn name(self) -> &'static str {
        match self {
            GatewayPath::Local => "local-notebookd",
            GatewayPath::Notebookd => "gateway-notebookd",
            GatewayPath::Nginx => "gateway-nginx",
            GatewayPath::Direct => "gateway-direct",
            GatewayPath::Itself => "gateway-itself",
            GatewayPath::NodelayGateway => "gateway-nodelay-notebookd",
        }
    }

    /// Its row in the report.
    pub fn describe(self) -> &'static str {
        match self {
            GatewayPath::Local => "local kernel, through notebookd",
            GatewayPath::Notebookd => {
                "gateway kernel, through notebookd (its Jupyter with notebookd's extension)"
            }
            GatewayPath::Nginx => "gateway kernel, through nginx → Jupyter (no extension)",
            GatewayPath::Direct => {
                "gateway kernel, Jupyter directly over its socket (the same Jupyter, no extension)"
            }
            GatewayPath::Itself => {
                "gateway kernel, at the gateway itself (no Jupyter; the client acknowledges at once)"
            }
            GatewayPath::NodelayGateway => {
                "gateway kernel, through notebookd, the gateway with TCP_NODELAY on its kernel WebSockets (operator's hook)"
            }
        }
    }
}

/// Everything this part started.
pub struct GatewayStack {
    gateway: Proc,
    gateway_port: u16,
    nodelay_gateway: Proc,
    nodelay_gateway_port: u16,
    token: String,
    notebookd: Proc,
    notebookd_port: u16,
    nodelay_notebookd: Proc,
    nodelay_notebookd_port: u16,
    jupyter: Proc,
    jupyter_socket: PathBuf,
    nginx: Proc,
    nginx_port: u16,
}

impl GatewayStack {
    pub async fn start(stack: &Stack, venv: &Path, gateway_venv: &Path) -> Result<GatewayStack> {
        let d = stack.dir.join("gateway");
        stack::private_dir(&d)?;
        let token = random_token()?;
        let token_file = d.join("gateway.token");
        std::fs::write(&token_file, format!("{token}\n"))?;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o640))?;
        let hook_dir = d.join("nodelay-hook");
        std::fs::create_dir_all(&hook_dir)?;
        std::fs::write(hook_dir.join("sitecustomize.py"), NODELAY_HOOK)?;

        eprintln!("==> starting two Enterprise Gateways, one with TCP_NODELAY on its WebSockets");
        let gateway_port = stack::free_port()?;
        let nodelay_port = stack::free_port()?;
        let mut gateway = start_gateway(
            "Enterprise Gateway",
            gateway_venv,
            &d.join("eg"),
            gateway_port,
            &token,
            None,
        )?;
        let mut nodelay_gateway = start_gateway(
            "Enterprise Gateway (TCP_NODELAY)",
            gateway_venv,
            &d.join("eg-nodelay"),
            nodelay_port,
            &token,
            Some(&hook_dir),
        )?;
        wait_for_gateway(&mut gateway, gateway_port).await?;
        wait_for_gateway(&mut nodelay_gateway, nodelay_port).await?;
        if !std::fs::read_to_string(&nodelay_gateway.log)?.contains("gateway-nodelay: TCP_NODELAY")
        {
            bail!(
                "the TCP_NODELAY hook is not active in {}; its log:\n{}",
                nodelay_gateway.name,
                stack::tail(&nodelay_gateway.log, 30)
            );
        }

        eprintln!("==> starting two notebookds with their kernels on the gateways");
        let leaf = stack.certs.leaf("ec");
        let gateway_keys = |port: u16| {
            format!(
                "gateway_url = \"http://127.0.0.1:{port}\"\n\
                 gateway_token_file = \"{}\"\n\
                 gateway_kernel_username = \"{KERNEL_USER}\"\n",
                token_file.display()
            )
        };
        let nb = NotebookdConfig::write(
            &d.join("nb"),
            venv,
            &stack.root,
            leaf.clone(),
            &stack.password_hash,
            "",
            &gateway_keys(gateway_port),
        )?;
        let (notebookd, _) = nb
            .spawn("notebookd (gateway)", &d.join("notebookd.log"))
            .await?;
        let nb_nodelay = NotebookdConfig::write(
            &d.join("nb-nodelay"),
            venv,
            &stack.root,
            leaf.clone(),
            &stack.password_hash,
            "",
            &gateway_keys(nodelay_port),
        )?;
        let (nodelay_notebookd, _) = nb_nodelay
            .spawn(
                "notebookd (gateway with TCP_NODELAY)",
                &d.join("notebookd-nodelay.log"),
            )
            .await?;
        for n in [&notebookd, &nodelay_notebookd] {
            if !std::fs::read_to_string(&n.log)?.contains("notebookd_gateway: TCP_NODELAY") {
                bail!(
                    "{}'s Jupyter did not load notebookd's gateway extension; its log:\n{}",
                    n.name,
                    stack::tail(&n.log, 30)
                );
            }
        }

        // As a user would run it without notebookd: the same Jupyter and
        // config, minus notebookd's extension, with the gateway's URL on the
        // command line and its token in the environment.
        eprintln!("==> starting a Jupyter on the gateway without notebookd, and nginx in front");
        let (mut command, jupyter_socket) = stack::jupyter_like_child(
            &notebookd,
            &nb,
            &d.join("direct"),
            &stack.root,
            without_extension,
        )?;
        command
            .arg(format!(
                "--GatewayClient.url=http://127.0.0.1:{gateway_port}"
            ))
            .env("JUPYTER_GATEWAY_AUTH_TOKEN", &token)
            .env("KERNEL_USERNAME", KERNEL_USER);
        let mut jupyter = Proc::spawn_group(
            "Jupyter on the gateway (direct)",
            &mut command,
            Signal::SIGTERM,
            d.join("jupyter-direct.log"),
        )?;
        stack::wait_for_jupyter(&mut jupyter, &jupyter_socket).await?;
        let nginx_port = stack::free_port()?;
        let nginx = stack::start_nginx(
            &d.join("nginx"),
            &jupyter_socket,
            &[(nginx_port, leaf)],
            &stack.tls,
        )
        .await?;

        Ok(GatewayStack {
            gateway,
            gateway_port,
            nodelay_gateway,
            nodelay_gateway_port: nodelay_port,
            token,
            notebookd,
            notebookd_port: nb.port,
            nodelay_notebookd,
            nodelay_notebookd_port: nb_nodelay.port,
            jupyter,
            jupyter_socket,
            nginx,
            nginx_port,
        })
    }

    /// The ways to a gateway kernel, each with a kernel of its own, checked
    /// to be the gateway's. `local` is the main notebookd's (logged-in) target.
    pub async fn open_targets(
        &self,
        stack: &Stack,
        local: &Target,
    ) -> Result<Vec<(GatewayPath, Target)>> {
        let tls = stack.tls.clone();
        let child = |p: &Proc| {
            crate::procfs::children(p.pid())
                .into_iter()
                .next()
                .with_context(|| format!("{} has no Jupyter child", p.name))
        };
        let on_gateway = |mut t: Target, path: GatewayPath| {
            t.kernels_on_gateway = true;
            t.named(path.name())
        };
        let mut nbd = on_gateway(
            Target::tls(
                Via::Notebookd,
                self.notebookd_port,
                tls.clone(),
                child(&self.notebookd)?,
            ),
            GatewayPath::Notebookd,
        );
        nbd.front_pids = vec![self.notebookd.pid()];
        let mut nodelay = on_gateway(
            Target::tls(
                Via::Notebookd,
                self.nodelay_notebookd_port,
                tls.clone(),
                child(&self.nodelay_notebookd)?,
            ),
            GatewayPath::NodelayGateway,
        );
        nodelay.front_pids = vec![self.nodelay_notebookd.pid()];
        let mut nginx = on_gateway(
            Target::tls(Via::Nginx, self.nginx_port, tls.clone(), self.jupyter.pid()),
            GatewayPath::Nginx,
        );
        nginx.front_pids = vec![self.nginx.pid()];
        nginx
            .front_pids
            .extend(crate::procfs::children(self.nginx.pid()));
        let mut direct = on_gateway(
            Target::unix(self.jupyter_socket.clone(), tls.clone(), self.jupyter.pid()),
            GatewayPath::Direct,
        );
        let mut itself = Target::gateway(
            self.gateway_port,
            &self.token,
            tls.clone(),
            self.gateway.pid(),
        )
        .named(GatewayPath::Itself.name());

        eprintln!("==> logging in and starting a kernel on the gateways on each path");
        nbd.open_session(Some(&stack.password)).await?;
        nodelay.open_session(Some(&stack.password)).await?;
        nginx.open_session(None).await?;
        direct.open_session(None).await?;
        itself.open_gateway_kernel(KERNEL_USER).await?;

        // Each kernel is the gateway's: a Jupyter that had quietly started
        // a local one would measure the wrong thing.
        let mut gateway = Target::gateway(
            self.gateway_port,
            &self.token,
            tls.clone(),
            self.gateway.pid(),
        );
        for t in [&nbd, &nginx, &direct, &itself] {
            let status = gateway
                .get_status(&format!("/api/kernels/{}", t.kernel))
                .await?;
            if status != http::StatusCode::OK {
                bail!(
                    "{}: its kernel {} is not on the gateway (GET answered {status})",
                    t.name,
                    t.kernel
                );
            }
        }
        let mut nodelay_gateway = Target::gateway(
            self.nodelay_gateway_port,
            &self.token,
            tls,
            self.nodelay_gateway.pid(),
        );
        let status = nodelay_gateway
            .get_status(&format!("/api/kernels/{}", nodelay.kernel))
            .await?;
        if status != http::StatusCode::OK {
            bail!(
                "{}: its kernel is not on the TCP_NODELAY gateway (GET answered {status})",
                nodelay.name
            );
        }
        let local = local.clone().named(GatewayPath::Local.name());
        Ok(vec![
            (GatewayPath::Local, local),
            (GatewayPath::Notebookd, nbd),
            (GatewayPath::Nginx, nginx),
            (GatewayPath::Direct, direct),
            (GatewayPath::Itself, itself),
            (GatewayPath::NodelayGateway, nodelay),
        ])
    }

    /// Fails if anything of this part has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for p in [
            &mut self.gateway,
            &mut self.nodelay_gateway,
            &mut self.notebookd,
            &mut self.nodelay_notebookd,
            &mut self.jupyter,
            &mut self.nginx,
        ] {
            p.check_alive()?;
        }
        Ok(())
    }

    /// Stops the fronts and Jupyters first (they end their kernels on the
    /// gateways), then the gateways with whatever is left.
    pub fn stop(mut self) {
        eprintln!("==> stopping the gateway part");
        for p in [
            &mut self.nginx,
            &mut self.notebookd,
            &mut self.nodelay_notebookd,
            &mut self.jupyter,
            &mut self.gateway,
            &mut self.nodelay_gateway,
        ] {
            p.stop();
        }
    }
}

/// Enterprise Gateway from `venv` on 127.0.0.1:`port`, with local process
/// kernels and `token` (in its environment, as `EG_AUTH_TOKEN`); with
/// `hook` on its PYTHONPATH when given. In a process group of its own, so
/// that its kernels stop with it.
fn start_gateway(
    name: &'static str,
    venv: &Path,
    dir: &Path,
    port: u16,
    token: &str,
    hook: Option<&Path>,
) -> Result<Proc> {
    stack::private_dir(&dir.join("runtime"))?;
    let path = format!(
        "{}:{}",
        venv.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new(venv.join("bin/jupyter-enterprisegateway"));
    command
        .arg("--ip=127.0.0.1")
        .arg(format!("--port={port}"))
        .arg("--port_retries=0")
        .env("EG_AUTH_TOKEN", token)
        .env("PATH", path)
        .env("JUPYTER_RUNTIME_DIR", dir.join("runtime"))
        .env("PYTHONUNBUFFERED", "1")
        .env_remove("PYTHONPATH")
        .current_dir(dir);
    if let Some(hook) = hook {
        command.env("PYTHONPATH", hook);
    }
    Proc::spawn_group(name, &mut command, Signal::SIGTERM, dir.join("gateway.log"))
}

/// Waits until the gateway answers `GET /api`.
async fn wait_for_gateway(gateway: &mut Proc, port: u16) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        gateway.check_alive()?;
        let answered = async {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            crate::client::status_of(Box::new(tcp), &format!("127.0.0.1:{port}"), "/api").await
        };
        // Any answer will do: it asks for the token on every path.
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), answered).await {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "{} did not answer within 120s; its log:\n{}",
                gateway.name,
                stack::tail(&gateway.log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// notebookd's Jupyter config without the lines that load its gateway
/// extension (`import sys` up to the `notebookd_gateway` line).
fn without_extension(config: String) -> Result<String> {
    let mut out = String::with_capacity(config.len());
    let mut skipping = false;
    for line in config.lines() {
        if line == "import sys" {
            skipping = true;
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
        if skipping && line.contains("\"notebookd_gateway\"") {
            skipping = false;
        }
    }
    if out.contains("notebookd_gateway") || skipping {
        bail!("cannot remove notebookd's gateway extension from its Jupyter config:\n{config}");
    }
    Ok(out)
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 18];
    getrandom::getrandom(&mut bytes).context("no random bytes for the gateway token")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// What runs the gateway: its version and its web stack.
pub fn versions(gateway_venv: &Path) -> String {
    let script = "import importlib.metadata as m\nprint(', '.join(f'{p} {m.version(p)}' for p in ('jupyter_enterprise_gateway', 'jupyter_server', 'jupyter_client', 'tornado', 'ipykernel')))";
    Command::new(gateway_venv.join("bin/python"))
        .arg("-c")
        .arg(script)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}
