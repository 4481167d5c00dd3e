//! What the kernel knows about the processes under test: CPU time, memory,
//! children, and the machine's load.

use std::path::Path;

use anyhow::{Context, Result};

/// CPU time (user + system) of every thread of `pids`, in nanoseconds.
///
/// From `/proc/PID/task/*/schedstat` (nanosecond precision) rather than the
/// 10 ms ticks of `/proc/PID/stat`: a few hundred requests through nginx
/// cost only tens of milliseconds.
pub fn cpu_ns(pids: &[u32]) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let tasks = format!("/proc/{pid}/task");
        let entries = std::fs::read_dir(&tasks).with_context(|| format!("cannot list {tasks}"))?;
        for entry in entries.flatten() {
            // A thread may end between the listing and the read: it no longer counts.
            let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
                continue;
            };
            let ns: u64 = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("unexpected schedstat in {tasks}: {text:?}"))?;
            total += ns;
        }
    }
    Ok(total)
}

/// Context switches (voluntary and not) of every thread of `pids`: each is a
/// sleep and a wake-up, which cost more than most of the work in between.
pub fn context_switches(pids: &[u32]) -> Result<u64> {
    let mut total = 0;
    for pid in pids {
        let tasks = format!("/proc/{pid}/task");
        let entries = std::fs::read_dir(&tasks).with_context(|| format!("cannot list {tasks}"))?;
        for entry in entries.flatten() {
            let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
                continue;
            };
            for key in ["voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"] {
                total += field_kib(&status, key).unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// Resident memory of a set of processes, in KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    /// Sum of VmRSS (pages shared between processes count once per process).
    pub rss_kib: u64,
    /// Sum of Pss (shared pages split between the processes sharing them).
    pub pss_kib: u64,
}

fn field_kib(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub fn memory(pids: &[u32]) -> Result<Memory> {
    let mut m = Memory::default();
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status"))?;
        m.rss_kib += field_kib(&status, "VmRSS:").context("no VmRSS")?;
        let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .with_context(|| format!("cannot read /proc/{pid}/smaps_rollup"))?;
        m.pss_kib += field_kib(&rollup, "Pss:").context("no Pss")?;
    }
    Ok(m)
}

/// Open file descriptors of `pid` (sockets included).
pub fn open_files(pid: u32) -> Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {dir}"))?
        .count())
}

/// The parent pid and state of `pid`, from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(u32, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces or parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// Live (not zombie) children of `pid`.
pub fn children(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<u32> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| matches!(stat(p), Some((ppid, state)) if ppid == pid && state != 'Z'))
        .collect();
    out.sort_unstable();
    out
}

/// Whether `pid` is still running (a zombie is not).
pub fn running(pid: u32) -> bool {
    matches!(stat(pid), Some((_, state)) if state != 'Z')
}

/// The command line of `pid`, split at NULs.
pub fn cmdline(pid: u32) -> Result<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
        .with_context(|| format!("cannot read /proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// The first line of `path` that starts with `key`, after the key and separators.
pub fn file_value(path: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(key)
            .map(|v| {
                v.trim_start_matches([' ', '\t', ':', '='])
                    .trim()
                    .trim_matches('"')
            })
            .map(str::to_owned)
    })
}
