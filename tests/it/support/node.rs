//! Node scripts of the tests (tests/browser/), with the npm packages that
//! tests/browser/package-lock.json pins and tests/setup/browser.sh installs
//! into `$NOTEBOOKD_CACHE/browser-node` (default `.cache/browser-node`).

use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{missing_tool, repo_root};

pub const HINT: &str = "run ./dev test, whose tests/setup/browser.sh installs chromium, libnss3-tools, playwright-core and @jupyterlab/services";

/// node(1) and the installed packages.
pub struct Node {
    pub node: PathBuf,
    pub node_modules: PathBuf,
    /// `@jupyterlab/services` bundled as one ES module for pages.
    pub services_bundle: PathBuf,
}

impl Node {
    /// Node with `packages` installed; `None` after a loud skip (a failure under CI) if missing.
    pub fn with(packages: &[&str]) -> Option<Node> {
        let Some(node) = notebookd::jupyter::flavour::find_program("node", None) else {
            missing_tool("node", HINT);
            return None;
        };
        let cache = std::env::var("NOTEBOOKD_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|_| repo_root().join(".cache"));
        let dir = cache.join("browser-node");
        let node_modules = dir.join("node_modules");
        for p in packages {
            if !node_modules.join(p).join("package.json").exists() {
                missing_tool(&format!("{p} in {}", node_modules.display()), HINT);
                return None;
            }
        }
        Some(Node {
            node,
            node_modules,
            services_bundle: dir.join("jupyterlab-services.mjs"),
        })
    }

    /// Runs `tests/browser/SCRIPT SETTINGS_JSON` with `env`; returns the
    /// JSON of its `RESULT ` line, or its output as the error. `timeout` is a
    /// backstop: the scripts have their own watchdogs.
    pub fn run(
        &self,
        script: &str,
        settings: &Value,
        env: &[(&str, OsString)],
        timeout: Duration,
    ) -> Result<Value, String> {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(&self.node);
        cmd.arg(repo_root().join("tests/browser").join(script))
            .arg(settings.to_string())
            .env("NODE_PATH", &self.node_modules)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start node");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut stderr = child.stderr.take().expect("stderr");
        let out_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for node") {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(child.id() as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let out = out_reader.join().unwrap_or_default();
        let err = err_reader.join().unwrap_or_default();
        let result = out
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .map(|r| serde_json::from_str::<Value>(r).expect("RESULT is JSON"));
        match (status, result) {
            (Some(s), Some(r)) if s.success() => {
                // A passing scenario's notes (retries) go with the test's output.
                if !err.is_empty() {
                    eprintln!("node {script}:\n{err}");
                }
                Ok(r)
            }
            (status, _) => Err(format!(
                "node {script} failed ({}):\n--- stderr\n{err}\n--- stdout\n{out}",
                status.map_or("timed out".into(), |s| s.to_string())
            )),
        }
    }
}
