//! `nbctl`, end to end through the real binary: each verb's success paths
//! and its refusals (exit status and message), against temporary configs
//! and real notebookd daemons.

mod cert;
mod config;
mod docs;
mod doctor;
mod embed;
mod hints;
mod passwd;
mod status;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::repo_root;

pub const NBCTL: &str = env!("CARGO_BIN_EXE_nbctl");

/// What a run of nbctl did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn expect(&self, code: i32, needles: &[&str]) -> &Out {
        assert_eq!(self.code, code, "exit status; output:\n{}", self.text());
        for n in needles {
            assert!(
                self.text().contains(n),
                "output lacks {n:?}:\n{}",
                self.text()
            );
        }
        self
    }
}

fn finish(cmd: &mut Command, stdin: Option<&[u8]>) -> Out {
    cmd.env_remove("NOTEBOOK_CONFIG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = spawn_when_not_busy(cmd);
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        // nbctl may refuse before it reads its input (a config it cannot
        // read) and exit first: its status and output then tell the rest.
        match pipe.write_all(input) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                panic!("writing nbctl's stdin: {e}")
            }
            _ => {}
        }
    }
    let out = child.wait_with_output().unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Spawn `cmd`, waiting out "Text file busy": a binary copied for another
/// user (see `nbctl_others_can_run`) is briefly held open for writing by
/// any child another test forked while the copy was being written, until
/// that child calls exec.
fn spawn_when_not_busy(cmd: &mut Command) -> std::process::Child {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match cmd.spawn() {
            Err(e)
                if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.expect("run nbctl"),
        }
    }
}

/// `nbctl --config CONFIG ARGS...` with these environment variables set.
pub fn nbctl_env(config: &Path, args: &[&str], env: &[(&str, &Path)]) -> Out {
    let mut cmd = Command::new(NBCTL);
    cmd.arg("--config").arg(config).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    finish(&mut cmd, None)
}

/// `nbctl --config CONFIG ARGS...` with no standard input.
pub fn nbctl(config: &Path, args: &[&str]) -> Out {
    finish(
        Command::new(NBCTL).arg("--config").arg(config).args(args),
        None,
    )
}

/// The same with `input` on standard input.
pub fn nbctl_stdin(config: &Path, args: &[&str], input: &str) -> Out {
    finish(
        Command::new(NBCTL).arg("--config").arg(config).args(args),
        Some(input.as_bytes()),
    )
}

/// The same as user `nobody` (the test runs as root), or `None` when the
/// test cannot switch users.
pub fn nbctl_as_nobody(config: &Path, args: &[&str], stdin: Option<&str>) -> Option<Out> {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("!!! not root: cannot run nbctl as another user; skipping that part");
        return None;
    }
    let mut cmd = Command::new(nbctl_others_can_run());
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .uid(65534)
        .gid(65534)
        .current_dir("/");
    Some(finish(&mut cmd, stdin.map(str::as_bytes)))
}

/// A copy of nbctl that `nobody` can execute: the build's own binary may
/// lie below a directory only its owner can enter (a clone in a
/// `mktemp -d` folder, under /root, or in a home that is 0700).
pub fn nbctl_others_can_run() -> &'static Path {
    static COPY: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_dir, path) = COPY.get_or_init(|| {
        let dir = open_dir();
        let path = dir.path().join("nbctl");
        std::fs::copy(NBCTL, &path).expect("copy nbctl for other users");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, path)
    });
    path
}

/// A scratch directory that other users may enter (tempdirs are 0700).
pub fn open_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// A copy of the shipped, commented config in a new directory.
pub fn shipped_config() -> (tempfile::TempDir, PathBuf) {
    let dir = open_dir();
    let path = dir.path().join("notebook.toml");
    std::fs::copy(repo_root().join("etc/notebook.toml"), &path).unwrap();
    (dir, path)
}

/// A config whose runtime directory is in `dir` (so no daemon is found).
pub fn scratch_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("notebook.toml");
    std::fs::write(
        &path,
        format!(
            "# A test config.\n[server]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
            dir.join("state").display(),
            dir.join("run").display(),
            dir.join("tls/cert.pem").display(),
            dir.join("tls/key.pem").display(),
        ),
    )
    .unwrap();
    path
}

/// What nbctl showed on a terminal, and how it ended.
pub struct PtyRun {
    pub code: i32,
    pub screen: String,
    pub stderr: String,
}

/// Runs nbctl on a new pseudo-terminal (its controlling terminal), answers
/// each prompt once it appears and the terminal no longer echoes, and
/// collects what was shown (stderr apart).
pub fn nbctl_on_pty(config: &Path, args: &[&str], answers: &[(&str, &str)]) -> PtyRun {
    on_pty(config, args, answers, true)
}

/// Like [`nbctl_on_pty`] for a question, not a password: stderr is the
/// terminal too (in `screen`), and the answer goes in once the question
/// shows, echo on.
pub fn nbctl_asked(config: &Path, args: &[&str], answers: &[(&str, &str)]) -> PtyRun {
    on_pty(config, args, answers, false)
}

fn on_pty(config: &Path, args: &[&str], answers: &[(&str, &str)], secret: bool) -> PtyRun {
    use nix::sys::termios::{LocalFlags, tcgetattr};
    let pty = nix::pty::openpty(None, None).unwrap();
    let master = std::fs::File::from(pty.master);
    let slave = std::fs::File::from(pty.slave);
    let mut cmd = Command::new(NBCTL);
    cmd.arg("--config")
        .arg(config)
        .args(args)
        .env_remove("NOTEBOOK_CONFIG")
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()));
    if secret {
        cmd.stderr(Stdio::piped());
    } else {
        cmd.stderr(Stdio::from(slave.try_clone().unwrap()));
    }
    #[allow(unsafe_code)]
    // SAFETY: between fork and exec only async-signal-safe calls: setsid
    // and the ioctl that makes the pty the controlling terminal.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("run nbctl on a pty");
    drop(cmd);
    drop(slave);
    let screen = Arc::new(Mutex::new(String::new()));
    let reader = {
        let screen = screen.clone();
        let mut master = master.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1024];
            // EIO once the last holder of the terminal has gone.
            while let Ok(n) = master.read(&mut buf) {
                if n == 0 {
                    break;
                }
                screen
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let mut writer = master.try_clone().unwrap();
    for (prompt, answer) in answers {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let shown = screen.lock().unwrap().contains(prompt);
            let echo = tcgetattr(&master)
                .map(|t| t.local_flags.contains(LocalFlags::ECHO))
                .unwrap_or(true);
            if shown && !(secret && echo) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no prompt {prompt:?} with echo off; screen: {:?}",
                screen.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        writer.write_all(format!("{answer}\n").as_bytes()).unwrap();
    }
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        err.read_to_string(&mut stderr).unwrap();
    }
    let status = child.wait().unwrap();
    drop(writer);
    drop(master);
    reader.join().unwrap();
    let screen = screen.lock().unwrap().clone();
    PtyRun {
        code: status.code().unwrap_or(-1),
        screen,
        stderr,
    }
}
