//! Processes Jupyter leaves behind.
//!
//! Jupyter starts kernels and terminals in sessions of their own, so killing
//! Jupyter's process group does not reach them, and a Jupyter killed with
//! SIGKILL cannot shut them down. notebookd makes itself a child subreaper:
//! whatever Jupyter leaves behind becomes notebookd's child, and is stopped
//! (and reaped) here. The processes tokio itself spawned and waits for (the
//! Jupyter server, `jupyter --version`) are never touched: they run in
//! notebookd's session and either in notebookd's process group or as leaders
//! of their own.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::{Pid, getpgrp, getpid, getsid};

/// Makes this process the reaper of its orphaned descendants.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

#[derive(Debug, Clone, Copy)]
struct Stat {
    pid: i32,
    state: char,
    ppid: i32,
    pgrp: i32,
    session: i32,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid pgrp session ..."; comm may hold spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut f = rest.split_ascii_whitespace();
    let state = f.next()?.chars().next()?;
    let ppid = f.next()?.parse().ok()?;
    let pgrp = f.next()?.parse().ok()?;
    let session = f.next()?.parse().ok()?;
    Some(Stat {
        pid,
        state,
        ppid,
        pgrp,
        session,
    })
}

/// Our children that were adopted, not spawned by us.
fn adopted() -> Vec<Stat> {
    let me = getpid().as_raw();
    let my_pgrp = getpgrp().as_raw();
    let my_sid = getsid(None).map(Pid::as_raw).unwrap_or(-1);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .filter(|s| s.ppid == me)
        .filter(|s| s.session != my_sid || (s.pgrp != s.pid && s.pgrp != my_pgrp))
        .collect()
}

/// Reaps adopted children that have exited.
pub fn reap_zombies() {
    for s in adopted() {
        if s.state == 'Z' {
            let _ = waitpid(Pid::from_raw(s.pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// Number of adopted children still running.
pub fn leftover_count() -> usize {
    adopted().iter().filter(|s| s.state != 'Z').count()
}

/// SIGTERM to every adopted child, SIGKILL to those still there after `grace`,
/// repeated for their own children in turn. Returns how many were stopped.
pub async fn stop_leftovers(grace: Duration) -> usize {
    let mut stopped = 0;
    // Each round may orphan the next generation; a handful of rounds is plenty.
    for _ in 0..5 {
        reap_zombies();
        let alive: Vec<Stat> = adopted().into_iter().filter(|s| s.state != 'Z').collect();
        if alive.is_empty() {
            break;
        }
        stopped += alive.len();
        for s in &alive {
            tracing::info!(pid = s.pid, "stopping a process Jupyter left behind");
            let _ = kill(Pid::from_raw(s.pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && leftover_count() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            reap_zombies();
        }
        for s in adopted() {
            if s.state != 'Z' {
                tracing::warn!(pid = s.pid, "killing a process that ignored SIGTERM");
                let _ = kill(Pid::from_raw(s.pid), Signal::SIGKILL);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reap_zombies();
    stopped
}
