//! The shipped supervisord example (packaging/examples/supervisord-notebook.conf)
//! under Debian's real supervisor, in a booted Debian with the .deb installed,
//! set up exactly as the example's comments say: notebookd runs in the
//! foreground as user notebook, and `supervisorctl restart notebook` leaves
//! nothing of the old instance behind.

use std::time::Duration;

use crate::support::container::{self, Container};
use crate::support::packages::packages;
use crate::support::{Browser, free_port, rustls_client_trusting};

const PASSWORD: &str = "supervised notebook";

/// Host PIDs of the container's notebookd, Jupyter and kernel processes.
fn instance(c: &Container) -> (Vec<i32>, Vec<i32>, Vec<i32>) {
    let pids = |needle: &str| -> Vec<i32> {
        c.processes_matching(needle)
            .into_iter()
            .map(|(p, _)| p)
            .collect()
    };
    (
        pids("/usr/sbin/notebookd"),
        pids("jupyter_notebookd_config.py"),
        pids("ipykernel_launcher"),
    )
}

fn uid_of(pid: i32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_supervisord_example_restarts_without_orphans() {
    if !container::available() {
        return;
    }
    let pkgs = packages();
    let c = Container::boot();
    let port = free_port();
    let base = format!("https://localhost:{port}/");
    c.apt_install_preseeded(&pkgs.deb, port);
    c.sh_with_stdin("nbctl passwd --stdin", Some(&format!("{PASSWORD}\n")))
        .code
        .filter(|&code| code == 0)
        .expect("nbctl passwd --stdin");

    // The steps the example's header gives.
    let example = std::fs::read_to_string(
        c.path("/usr/share/doc/notebookd/examples/supervisord-notebook.conf"),
    )
    .unwrap();
    for step in [
        "sudo systemctl disable --now notebook",
        "sudo systemd-tmpfiles --create notebook.conf",
        "sudo supervisorctl update",
    ] {
        assert!(
            example.contains(step),
            "the example no longer says {step:?}"
        );
    }
    c.ok("systemctl disable --now notebook 2>&1");
    c.ok("systemd-tmpfiles --create notebook.conf");
    c.ok("cp /usr/share/doc/notebookd/examples/supervisord-notebook.conf /etc/supervisor/conf.d/notebook.conf");
    c.ok("supervisorctl update");

    let ca = std::fs::read(c.path("/etc/notebook/tls/cert.pem")).unwrap();
    let b = Browser::wait_logged_in(&base, &ca, PASSWORD, Duration::from_secs(90)).await;
    let run = b
        .run_in_new_kernel("print(sum(range(10)))", rustls_client_trusting(&ca))
        .await;
    assert_eq!((run.status.as_str(), run.stdout.trim()), ("ok", "45"));

    let (daemons, jupyters, kernels) = instance(&c);
    assert_eq!(daemons.len(), 1, "one notebookd: {daemons:?}");
    assert_eq!(jupyters.len(), 1, "one Jupyter: {jupyters:?}");
    assert_eq!(kernels.len(), 1, "one kernel: {kernels:?}");
    let notebook_uid = c.ok("id -u notebook").trim().to_string();
    for pid in daemons.iter().chain(&jupyters).chain(&kernels) {
        assert_eq!(
            uid_of(*pid),
            notebook_uid,
            "pid {pid} runs as user notebook"
        );
    }
    // RUNNING once it has stayed up for startsecs.
    c.wait_for(
        "supervisorctl status: RUNNING",
        Duration::from_secs(30),
        || {
            c.sh("supervisorctl status notebook")
                .stdout
                .contains("RUNNING")
        },
    );

    c.ok("supervisorctl restart notebook");
    Browser::wait_logged_in(&base, &ca, PASSWORD, Duration::from_secs(90)).await;
    let old: Vec<i32> = daemons
        .iter()
        .chain(&jupyters)
        .chain(&kernels)
        .copied()
        .collect();
    let (daemons2, jupyters2, kernels2) = instance(&c);
    let survivors: Vec<i32> = old
        .iter()
        .copied()
        .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
        .collect();
    assert!(
        survivors.is_empty(),
        "processes of the old instance still run: {survivors:?}"
    );
    assert_eq!(daemons2.len(), 1, "{daemons2:?}");
    assert_eq!(jupyters2.len(), 1, "{jupyters2:?}");
    assert!(kernels2.is_empty(), "orphaned kernels: {kernels2:?}");

    // The log supervisord keeps is notebookd's plain stderr.
    let log = std::fs::read_to_string(c.path("/var/log/supervisor/notebook.log")).unwrap();
    assert!(log.contains("notebookd is ready"), "{log}");
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(!log.contains('\u{1b}'), "colour codes in the log file");

    c.ok("supervisorctl stop notebook");
    let (d, j, k) = instance(&c);
    assert!(
        d.is_empty() && j.is_empty() && k.is_empty(),
        "left after stop: {d:?} {j:?} {k:?}"
    );
}
