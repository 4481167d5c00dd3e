//! `./dev run` as a newcomer meets it, in a scratch copy of the clone: the
//! config and password are made once and kept (nbctl's edits survive a
//! restart), `--reset` starts over, the config is private, and a second
//! instance on the same `.dev/` is refused without touching anything.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::support::{Browser, free_port, repo_root, venv};

/// What `./dev run` needs of a clone: the script and the setup files it sources.
fn scratch_clone() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(repo_root().join("dev"), dir.path().join("dev")).expect("copy dev");
    let setup = dir.path().join("tests/setup");
    std::fs::create_dir_all(&setup).expect("mkdir tests/setup");
    for entry in std::fs::read_dir(repo_root().join("tests/setup")).expect("tests/setup") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), setup.join(entry.file_name())).expect("copy setup file");
    }
    dir
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_notebookd"))
        .parent()
        .expect("binary directory")
        .to_path_buf()
}

/// One `./dev run`, its stderr collected; stopped (SIGTERM) when dropped.
struct DevRun {
    child: Child,
    err: Arc<Mutex<Vec<String>>>,
}

impl DevRun {
    fn start(clone: &Path, port: u16, args: &[&str]) -> DevRun {
        let mut child = Command::new("bash")
            .arg(clone.join("dev"))
            .arg("run")
            .args(args)
            .env("PORT", port.to_string())
            .env("NOTEBOOKD_VENV", venv())
            .env("NOTEBOOKD_BIN_DIR", bin_dir())
            .env("NOTEBOOKD_CACHE", clone.join(".cache"))
            .env_remove("NOTEBOOK_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ./dev run");
        let err = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = err.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().expect("stderr lines").push(line);
            }
        });
        DevRun { child, err }
    }

    fn text(&self) -> String {
        self.err.lock().expect("stderr lines").join("\n")
    }

    fn wait_for(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.text().contains(needle) {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "./dev run exited ({status}) before printing {needle:?}:\n{}",
                    self.text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "./dev run printed no {needle:?} within {timeout:?}:\n{}",
            self.text()
        );
    }

    /// Waits for the exit of a run that is expected to end by itself.
    fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the reader thread take the last lines.
                std::thread::sleep(Duration::from_millis(200));
                return status;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "./dev run did not exit within {timeout:?}:\n{}",
            self.text()
        );
    }

    fn one_time_password(&self) -> Option<String> {
        self.text()
            .lines()
            .find_map(|l| l.trim().strip_prefix("one-time password:"))
            .map(|p| p.trim().to_string())
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        // After its exec, the script's PID is notebookd's.
        let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        panic!("./dev run did not stop within 60 s of SIGTERM");
    }
}

impl Drop for DevRun {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_run_keeps_its_config_and_refuses_a_second_instance() {
    let clone = scratch_clone();
    let dev = clone.path().join(".dev");
    let config = dev.join("notebook.toml");
    let port = free_port();
    let base = format!("https://localhost:{port}/");
    let ready = Duration::from_secs(120);

    // First start: a config, a certificate and a password, printed once.
    let mut first = DevRun::start(clone.path(), port, &[]);
    first.wait_for("notebookd is ready", ready);
    let password = first.one_time_password().expect("a one-time password");
    let mode = std::fs::metadata(&config)
        .expect("config")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the config holds the hash: 0600");
    assert!(
        first
            .text()
            .contains(&format!("export NOTEBOOK_CONFIG={}", config.display())),
        "how to point nbctl at it:\n{}",
        first.text()
    );
    let cert = std::fs::read(dev.join("tls/cert.pem")).expect("certificate");
    Browser::wait_logged_in(&base, &cert, &password, ready).await;

    // A second start on the same .dev/ is refused, names the holder, and
    // neither rewrites the config nor prints a password.
    let before = std::fs::read(&config).expect("config");
    let mut second = DevRun::start(clone.path(), port, &[]);
    let status = second.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "a second ./dev run must fail");
    assert!(
        second.text().contains(&format!("PID {}", first.child.id())),
        "the refusal names the running PID {}:\n{}",
        first.child.id(),
        second.text()
    );
    assert!(!second.text().contains("password:"), "{}", second.text());
    assert_eq!(std::fs::read(&config).expect("config"), before);
    first.stop();

    // nbctl's change while stopped survives the next start.
    let new_password = "a dev password of my own";
    let mut passwd = Command::new(env!("CARGO_BIN_EXE_nbctl"))
        .args(["passwd", "--stdin"])
        .env("NOTEBOOK_CONFIG", &config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nbctl passwd");
    {
        use std::io::Write;
        let mut stdin = passwd.stdin.take().expect("stdin");
        writeln!(stdin, "{new_password}").expect("write password");
    }
    let out = passwd.wait_with_output().expect("nbctl passwd");
    assert!(
        out.status.success(),
        "nbctl passwd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let edited = std::fs::read(&config).expect("config");
    let mut third = DevRun::start(clone.path(), port, &[]);
    third.wait_for("notebookd is ready", ready);
    assert_eq!(third.one_time_password(), None, "{}", third.text());
    assert_eq!(std::fs::read(&config).expect("config"), edited);
    Browser::wait_logged_in(&base, &cert, new_password, ready).await;
    third.stop();

    // --reset: a new config with a new password.
    let mut fourth = DevRun::start(clone.path(), port, &["--reset"]);
    fourth.wait_for("notebookd is ready", ready);
    let reset_password = fourth.one_time_password().expect("a new password");
    assert_ne!(reset_password, password);
    let mode = std::fs::metadata(&config)
        .expect("config")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    Browser::wait_logged_in(&base, &cert, &reset_password, ready).await;
    let b = Browser::trusting(&base, &cert, None);
    let old = b
        .client
        .post(b.url("login"))
        .form(&[("password", new_password), ("next", "/")])
        .send()
        .await
        .expect("POST login");
    assert_ne!(old.status(), 302, "the old password must be gone");
    fourth.stop();
}

/// On a fresh cloud VM, unattended-upgrades holds dpkg's lock for minutes:
/// `./dev`'s installer says it is waiting, waits `APT_LOCK_TIMEOUT`, and
/// only then fails, with the hint. (Its `ensure_apt`, run on its own, for a
/// package that does not exist, while this test holds apt's and dpkg's locks.)
#[test]
fn apt_waits_for_the_dpkg_lock_then_says_what_to_do() {
    if !nix::unistd::geteuid().is_root() {
        crate::support::missing_tool(
            "root (to hold dpkg's lock)",
            "run the tests as root, as ./dev test does",
        );
        return;
    }
    let script = std::fs::read_to_string(repo_root().join("dev")).expect("read dev");
    let start = script.find("\nensure_apt() {").expect("ensure_apt in dev");
    let end = start + script[start..].find("\n}\n").expect("end of ensure_apt") + 3;
    let cache = tempfile::tempdir().expect("tempdir");
    // The same fcntl locks apt and dpkg take.
    let mut holder = Command::new("python3")
        .args([
            "-c",
            "import fcntl, sys\n\
             fs = [open(p, 'a') for p in ('/var/lib/dpkg/lock-frontend', '/var/lib/dpkg/lock', '/var/lib/apt/lists/lock')]\n\
             [fcntl.lockf(f, fcntl.LOCK_EX) for f in fs]\n\
             print('held', flush=True)\n\
             sys.stdin.read()\n",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "held");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -euo pipefail\nsay() {{ printf '==> %s\\n' \"$*\" >&2; }}\n\
             die() {{ printf 'error: %s\\n' \"$*\" >&2; exit 1; }}\n\
             CACHE={}\n{}\nensure_apt notebookd-test-no-such-package",
            cache.path().display(),
            &script[start..end]
        ))
        .env("APT_LOCK_TIMEOUT", "3")
        .stdin(Stdio::null())
        .output()
        .expect("bash");
    let waited = started.elapsed();
    drop(holder.stdin.take());
    let _ = holder.wait();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("holds the lock: waiting up to 3s"), "{err}");
    assert!(
        err.contains("APT_LOCK_TIMEOUT") && err.contains("unattended-upgrades"),
        "{err}"
    );
    assert!(
        waited >= Duration::from_secs(3),
        "gave up after {waited:?}: {err}"
    );
}
