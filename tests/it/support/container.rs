//! A real Debian bookworm booted with systemd-nspawn, driven with nsenter.
//!
//! The tree is built once by `tests/setup/bookworm-tree.sh` (cached under
//! `$NOTEBOOKD_CACHE/trees`). Each [`Container`] boots it with
//! `--volatile=overlay` (writes go to a tmpfs and vanish at poweroff), as a
//! child process of the test, in a cgroup of its own so that several can run
//! at once without a host systemd. The container shares the host's network:
//! whatever it serves, the test reaches on 127.0.0.1 at a port it picked.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{missing_tool, repo_root};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);
/// The environment of every command run inside: nsenter would otherwise pass
/// the test's own (PATH with cargo's directories, HOME, CI, ...).
const ENV: &[&str] = &[
    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG=C.UTF-8",
    "HOME=/root",
    "DEBIAN_FRONTEND=noninteractive",
];

fn have(program: &str) -> bool {
    notebookd::jupyter::flavour::find_program(program, None).is_some()
}

/// The booted-tree prerequisites; `false` (after a loud skip outside CI) if missing.
pub fn available() -> bool {
    for (tool, package) in [
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("debootstrap", "debootstrap"),
    ] {
        if !have(tool) {
            missing_tool(
                tool,
                &format!("apt-get install {package}, or run ./dev test"),
            );
            return false;
        }
    }
    if !nix::unistd::geteuid().is_root() {
        missing_tool("root (systemd-nspawn)", "run the container tests as root");
        return false;
    }
    true
}

/// The cached bookworm tree (built on first use, which takes minutes).
pub fn tree() -> PathBuf {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let out = Command::new(repo_root().join("tests/setup/bookworm-tree.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("run tests/setup/bookworm-tree.sh");
        assert!(
            out.status.success(),
            "tests/setup/bookworm-tree.sh failed (it needs root, debootstrap and the Debian mirror)"
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

/// The shipped config with `server.listen` set to `listen`.
pub fn preseeded_config(listen: &str) -> String {
    let shipped = std::fs::read_to_string(repo_root().join("etc/notebook.toml")).unwrap();
    let default = "#listen = \"0.0.0.0:9999\"";
    assert!(
        shipped.contains(default),
        "etc/notebook.toml lost {default}"
    );
    shipped.replacen(default, &format!("listen = \"{listen}\""), 1)
}

/// The cgroup hierarchies systemd uses on this host: just the unified one, or
/// (hybrid layout) the named v1 `systemd` hierarchy plus the unified one.
fn cgroup_roots() -> Vec<PathBuf> {
    let base = Path::new("/sys/fs/cgroup");
    if base.join("cgroup.controllers").exists() {
        return vec![base.to_owned()];
    }
    ["systemd", "unified"]
        .iter()
        .map(|h| base.join(h))
        .filter(|p| p.is_dir())
        .collect()
}

/// A booted container. Powered off (bounded) when dropped.
pub struct Container {
    pub machine: String,
    nspawn: Option<Child>,
    /// Host PID of the container's PID 1 (systemd): the target for nsenter.
    pub init: u32,
    cgroups: Vec<PathBuf>,
    console: tempfile::NamedTempFile,
}

impl Container {
    /// Boots the cached tree and waits until its systemd reports `running`.
    pub fn boot() -> Container {
        Container::boot_with(&[])
    }

    /// Boots with extra systemd-nspawn arguments (e.g. `--bind-ro=...`).
    pub fn boot_with(extra: &[&str]) -> Container {
        let tree = tree();
        let machine = format!("nbt-{:08x}", rand_u32());
        let cgroups: Vec<PathBuf> = cgroup_roots().iter().map(|r| r.join(&machine)).collect();
        for cg in &cgroups {
            std::fs::create_dir_all(cg).expect("create the container's cgroup");
        }
        let console = tempfile::NamedTempFile::new().expect("console log");
        // Without a host systemd, nspawn (--keep-unit) puts the container under
        // its own cgroup: move the shell that becomes nspawn into a fresh one
        // first, or two containers would share the root cgroup's subtree.
        let mut script = String::new();
        for cg in &cgroups {
            script.push_str(&format!("echo $$ > '{}/cgroup.procs' && ", cg.display()));
        }
        script.push_str("exec systemd-nspawn \"$@\"");
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(script)
            .arg("sh")
            .args(["--quiet", "-D"])
            .arg(&tree)
            .arg(format!("--machine={machine}"))
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--console=read-only",
                "--volatile=overlay",
            ])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(console.reopen().expect("console"))
            .stderr(console.reopen().expect("console"));
        let nspawn = cmd.spawn().expect("start systemd-nspawn");
        let mut c = Container {
            machine,
            init: 0,
            nspawn: Some(nspawn),
            cgroups,
            console,
        };
        let started = Instant::now();
        c.init = c.find_init(started);
        c.wait_running(started);
        eprintln!(
            "container {} booted in {:.1}s (init pid {})",
            c.machine,
            started.elapsed().as_secs_f64(),
            c.init
        );
        c
    }

    fn console_text(&self) -> String {
        std::fs::read_to_string(self.console.path()).unwrap_or_default()
    }

    fn nspawn_pid(&self) -> u32 {
        self.nspawn.as_ref().map_or(0, Child::id)
    }

    fn nspawn_exited(&mut self) -> bool {
        self.nspawn
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The container's init is the child of nspawn that is PID 1 in its own
    /// PID namespace and has already exec'd systemd.
    fn find_init(&mut self, started: Instant) -> u32 {
        let nspawn = self.nspawn_pid();
        loop {
            self.assert_booting(started, "no container init");
            let children =
                std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children"))
                    .unwrap_or_default();
            for pid in children.split_whitespace() {
                let status =
                    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
                let pid1 = status.lines().any(|l| {
                    l.starts_with("NSpid:")
                        && l.split_whitespace().count() >= 3
                        && l.ends_with("\t1")
                });
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if pid1 && comm.trim() == "systemd" {
                    return pid.parse().expect("pid");
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fails the test, with the console, if nspawn has exited or the boot
    /// has taken longer than BOOT_TIMEOUT (`late` says what is missing).
    fn assert_booting(&mut self, started: Instant, late: &str) {
        assert!(
            !self.nspawn_exited(),
            "systemd-nspawn exited during boot; console:\n{}",
            self.console_text()
        );
        assert!(
            started.elapsed() < BOOT_TIMEOUT,
            "{late} within {BOOT_TIMEOUT:?}; console:\n{}",
            self.console_text()
        );
    }

    fn wait_running(&mut self, started: Instant) {
        let mut last = String::new();
        loop {
            self.assert_booting(
                started,
                &format!("the container did not finish booting (last state {last:?})"),
            );
            // Fails until systemd has created its private socket: retry.
            let out = self.command(&["timeout", "10", "systemctl", "is-system-running", "--wait"]);
            last = String::from_utf8_lossy(&out.stdout).trim().to_string();
            match last.as_str() {
                "running" => return,
                "degraded" => {
                    let failed = self.sh("systemctl --failed --no-legend --plain");
                    panic!(
                        "the container booted degraded; failed units:\n{}",
                        failed.stdout
                    );
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The container's root directory, as seen from the host (writes land in
    /// the container's overlay, never in the cached tree).
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.init))
    }

    /// The host path of `path` inside the container.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root().join(path.trim_start_matches('/'))
    }

    fn command(&self, argv: &[&str]) -> Output {
        Command::new("nsenter")
            .arg("-t")
            .arg(self.init.to_string())
            .args(["-a", "env", "-i"])
            .args(ENV)
            .args(argv)
            .stdin(Stdio::null())
            .output()
            .expect("run nsenter")
    }

    /// Runs `script` with sh inside the container.
    pub fn sh(&self, script: &str) -> Run {
        self.sh_with_stdin(script, None)
    }

    /// Runs `script` with sh inside the container, feeding `stdin`.
    pub fn sh_with_stdin(&self, script: &str, stdin: Option<&str>) -> Run {
        use std::io::Write;
        let mut child = Command::new("nsenter")
            .arg("-t")
            .arg(self.init.to_string())
            .args(["-a", "env", "-i"])
            .args(ENV)
            .args(["sh", "-c", script])
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nsenter");
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A script that fails before reading its input closes the pipe;
            // its status and output below then say why.
            match pipe.write_all(text.as_bytes()) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    panic!("writing the script's stdin: {e}")
                }
                _ => {}
            }
        }
        let out = child.wait_with_output().expect("wait for nsenter");
        Run {
            script: script.to_string(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `script`, asserting it succeeds; returns its stdout.
    pub fn ok(&self, script: &str) -> String {
        let run = self.sh(script);
        assert_eq!(run.code, Some(0), "{run}");
        run.stdout
    }

    /// Installs a .deb with apt (resolving its Depends from the tree's apt
    /// cache), keeping a config put in place before (`--force-confold`).
    /// Returns apt's output.
    /// Installs `deb` as an administrator with a config-management tool
    /// would: the config is in place first, listening on 127.0.0.1:`port`
    /// (the container shares the host's network, so each test picks its own
    /// port), and dpkg keeps it (--force-confold). The package starts the
    /// service at install, on that port. Returns apt's output.
    pub fn apt_install_preseeded(&self, deb: &Path, port: u16) -> String {
        self.write(
            "/etc/notebook/notebook.toml",
            &preseeded_config(&format!("127.0.0.1:{port}")),
        );
        self.apt_install(deb)
    }

    pub fn apt_install(&self, deb: &Path) -> String {
        let name = deb
            .file_name()
            .expect("a .deb file name")
            .to_string_lossy()
            .to_string();
        self.copy_in(deb, &format!("/tmp/{name}"));
        let started = Instant::now();
        let out = self.ok(&format!(
            "apt-get install -y -q -o Dpkg::Options::=--force-confold /tmp/{name} 2>&1"
        ));
        eprintln!(
            "apt-get install {name}: {:.1}s",
            started.elapsed().as_secs_f64()
        );
        out
    }

    /// Copies a host file into the container.
    pub fn copy_in(&self, from: &Path, to: &str) {
        let dest = self.path(to);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).expect("create the destination directory");
        }
        std::fs::copy(from, &dest)
            .unwrap_or_else(|e| panic!("copy {} into {to}: {e}", from.display()));
    }

    /// Writes a file inside the container.
    pub fn write(&self, path: &str, contents: &str) {
        let dest = self.path(path);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).expect("create the destination directory");
        }
        std::fs::write(&dest, contents).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }

    /// The journal of `unit` (message text only).
    pub fn journal(&self, unit: &str) -> String {
        self.sh(&format!("journalctl -u {unit} --no-pager -o cat"))
            .stdout
    }

    /// `systemctl show -p PROP --value UNIT`.
    pub fn unit_property(&self, unit: &str, prop: &str) -> String {
        self.ok(&format!("systemctl show -p {prop} --value {unit}"))
            .trim()
            .to_string()
    }

    /// Host PIDs of the container's processes whose command line contains `needle`.
    pub fn processes_matching(&self, needle: &str) -> Vec<(i32, String)> {
        let ns = std::fs::read_link(format!("/proc/{}/ns/pid", self.init)).ok();
        super::processes_matching(needle)
            .into_iter()
            .filter(|(pid, _)| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok() == ns)
            .collect()
    }

    /// Waits until `check` holds, polling; panics with `what` after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if check() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("{what}: not within {timeout:?}");
    }

    /// Shuts down in order (SIGTERM to nspawn makes systemd halt), SIGKILL
    /// after [`POWEROFF_TIMEOUT`], then removes the cgroups.
    pub fn poweroff(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(nspawn.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + POWEROFF_TIMEOUT;
        let mut clean = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = nspawn.try_wait() {
                clean = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !clean {
            eprintln!(
                "container {} did not power off within {POWEROFF_TIMEOUT:?}: killing it",
                self.machine
            );
            // SIGKILL to the init kills its whole PID namespace.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
        for cg in &self.cgroups {
            remove_cgroup_tree(cg);
        }
        let _ = std::fs::remove_dir_all(format!("/run/systemd/nspawn/propagate/{}", self.machine));
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // A failed test: the journal explains more than the assertion, and it
        // vanishes with the container.
        if std::thread::panicking() && self.nspawn.is_some() {
            let journal = self.sh("journalctl --no-pager -o short-monotonic | tail -n 150");
            eprintln!(
                "--- last journal lines of container {}:\n{}",
                self.machine, journal.stdout
            );
        }
        self.poweroff();
    }
}

/// Removes a cgroup directory tree, deepest first (rmdir of a populated
/// cgroup fails, so this never removes one in use).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::getrandom(&mut b).expect("random");
    u32::from_le_bytes(b)
}

/// What a command inside the container did.
pub struct Run {
    pub script: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited {:?}\n--- stdout\n{}\n--- stderr\n{}",
            self.script, self.code, self.stdout, self.stderr
        )
    }
}
