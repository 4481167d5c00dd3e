//! notebook.service for real: `systemd-analyze` on the unit file, and the
//! .deb's whole life in a booted Debian bookworm with systemd: install (which
//! pulls Debian's Jupyter), first start without a password, login over TLS
//! with the generated certificate, numpy and matplotlib in a kernel under the
//! hardened unit, restart, reload, crashes, the watchdog, the classic UI's
//! Logout in Chromium, upgrade, remove and purge.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::container::{self, Container};
use crate::support::packages::{self, packages};
use crate::support::{Browser, free_port, missing_tool, repo_root, rustls_client_trusting};

/// The highest `systemd-analyze security` exposure the unit may have.
const MAX_EXPOSURE: f64 = 2.5;
const PASSWORD: &str = "correct horse battery staple";

/// The `→ Overall exposure level for notebook.service: 1.1 OK` number.
fn exposure(output: &str) -> f64 {
    let line = output
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{output}"));
    line.split_once("notebook.service:")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"))
}

#[test]
fn unit_file_verifies_and_is_hardened() {
    if notebookd::jupyter::flavour::find_program("systemd-analyze", None).is_none() {
        missing_tool("systemd-analyze", "apt-get install systemd");
        return;
    }
    let unit = repo_root().join("systemd/notebook.service");

    // `verify` checks that the Exec= programs and the units it depends on
    // exist: give it a root where they do (the built notebookd, kill and the
    // targets from the host).
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in ["usr/sbin", "bin", "usr/lib/systemd/system"] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    for entry in std::fs::read_dir("/usr/lib/systemd/system")
        .unwrap()
        .flatten()
    {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "target") {
            std::fs::copy(
                &path,
                r.join("usr/lib/systemd/system").join(entry.file_name()),
            )
            .unwrap();
        }
    }
    std::fs::copy(
        env!("CARGO_BIN_EXE_notebookd"),
        r.join("usr/sbin/notebookd"),
    )
    .unwrap();
    let kill =
        notebookd::jupyter::flavour::find_program("kill", Some("/bin:/usr/bin")).expect("kill(1)");
    std::fs::copy(kill, r.join("bin/kill")).unwrap();
    let installed = r.join("usr/lib/systemd/system/notebook.service");
    std::fs::copy(&unit, &installed).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(format!("--root={}", r.display()))
        .arg(&installed)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "systemd-analyze security: {text}");
    let score = exposure(&text);
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}:\n{text}"
    );
    // The score the README and the unit's header state is the measured one.
    let stated = format!("rates this unit {score:.1}");
    for file in ["README.md", "systemd/notebook.service"] {
        let doc = std::fs::read_to_string(repo_root().join(file)).unwrap();
        assert!(
            doc.contains(&stated),
            "{file} should say \"{stated}\" (systemd-analyze security --offline=yes)"
        );
    }
}

/// The main PID of notebook.service (in the container's PID namespace).
fn main_pid(c: &Container) -> String {
    c.unit_property("notebook", "MainPID")
}

fn n_restarts(c: &Container) -> u32 {
    c.unit_property("notebook", "NRestarts").parse().unwrap()
}

/// Host PIDs of the Jupyter servers notebookd started in the container.
fn jupyter_pids(c: &Container) -> Vec<i32> {
    c.processes_matching("jupyter_notebookd_config.py")
        .into_iter()
        .map(|(pid, _)| pid)
        .collect()
}

/// Waits until notebookd serves again and still has hello.ipynb.
async fn wait_serving(base: &str, ca: &[u8], what: &str) -> Browser {
    eprintln!("waiting for notebookd to serve {what}");
    let b = Browser::wait_logged_in(base, ca, PASSWORD, Duration::from_secs(90)).await;
    let nb = b.get("api/contents/hello.ipynb").await.status();
    assert_eq!(nb, 200, "{what}: hello.ipynb is gone");
    b
}

/// The classic Notebook's Logout button (notebookd's custom.js) in Chromium.
/// The browser trusts the tests' CA, so its certificate is installed with
/// `nbctl cert install` for the scenario (swapped in without a restart) and
/// the generated one put back afterwards.
async fn classic_logout_in_chromium(c: &Container, port: u16, generated: &[u8]) {
    let Some(tools) = crate::browser::tools() else {
        return;
    };
    let certs = crate::support::certs();
    let installed = |cert: &str, key: &str| {
        c.ok(&format!("nbctl cert install {cert} {key} 2>&1"));
    };
    c.ok("cp /etc/notebook/tls/cert.pem /etc/notebook/tls/key.pem /root/");
    c.write(
        "/root/test-cert.pem",
        &std::fs::read_to_string(certs.cert()).unwrap(),
    );
    c.write(
        "/root/test-key.pem",
        &std::fs::read_to_string(certs.key()).unwrap(),
    );
    installed("/root/test-cert.pem", "/root/test-key.pem");
    let test_ca = certs.ca_pem();
    Browser::wait_logged_in(
        &format!("https://localhost:{port}/"),
        &test_ca,
        PASSWORD,
        Duration::from_secs(60),
    )
    .await;
    let name = notebookd::auth::session::COOKIE_NAME;
    let settings = serde_json::json!({
        "ca": certs.ca(),
        "nb": format!("https://notebook.test:{port}"),
        "password": PASSWORD,
        "artifacts": crate::browser::artifacts(),
        "cookieName": name,
    });
    let r = tokio::task::spawn_blocking(move || {
        crate::browser::run_scenario(&tools, "classic-logout.js", &settings)
    })
    .await
    .unwrap();
    // The cookie the browser held is dead on the server too.
    let value = r["cookie"].as_str().expect("cookie value");
    let b = Browser::trusting(&format!("https://localhost:{port}/"), &test_ca, None);
    let replayed = b
        .client
        .get(format!("https://localhost:{port}/api/contents"))
        .header("Cookie", format!("{name}={value}"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        replayed, 401,
        "the classic UI's Logout left the session alive"
    );
    installed("/root/cert.pem", "/root/key.pem");
    assert_eq!(
        std::fs::read(c.path("/etc/notebook/tls/cert.pem")).unwrap(),
        generated
    );
    wait_serving(
        &format!("https://localhost:{port}/"),
        generated,
        "with its own certificate again",
    )
    .await;
}

/// `nbctl doctor --json` in the booted system, while the watchdog drop-in
/// is in place and after systemd restarted notebookd: its unit lines say
/// what systemd says (enabled, active, the restarts, the drop-in); a
/// disabled unit is a warning with the command that enables it.
fn doctor_sees_the_unit(c: &Container) {
    let checks = |c: &Container| -> Vec<serde_json::Value> {
        let out = c.sh("nbctl doctor --json");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("doctor --json ({e}): {out}"))
    };
    let find = |checks: &[serde_json::Value], name: &str| -> serde_json::Value {
        checks
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name:?} check in {checks:#?}"))
    };
    let all = checks(c);
    let unit = find(&all, "systemd unit");
    assert_eq!(unit["verdict"], "ok", "{all:#?}");
    assert_eq!(unit["message"], "notebook.service is enabled", "{all:#?}");
    let service = find(&all, "systemd service");
    assert_eq!(service["verdict"], "ok", "{all:#?}");
    let message = service["message"].as_str().unwrap();
    let restarts = n_restarts(c);
    assert!(restarts > 0, "the watchdog restarted notebookd");
    for part in [
        "notebook.service is active (running)".to_string(),
        format!("restarted {restarts} time"),
        "drop-ins: /etc/systemd/system/notebook.service.d/watchdog-test.conf".to_string(),
    ] {
        assert!(message.contains(&part), "want {part:?} in {all:#?}");
    }
    assert_eq!(find(&all, "daemon")["verdict"], "ok", "{all:#?}");

    c.ok("systemctl disable notebook 2>&1");
    let all = checks(c);
    let unit = find(&all, "systemd unit");
    assert_eq!(unit["verdict"], "warn", "{all:#?}");
    assert!(
        unit["message"]
            .as_str()
            .unwrap()
            .contains("is disabled: it will not start at boot")
            && unit["fix"]
                .as_str()
                .unwrap()
                .contains("systemctl enable --now notebook"),
        "{all:#?}"
    );
    c.ok("systemctl enable notebook 2>&1");
}

/// The drop-in that notebook.service's header gives under `title`.
fn documented_drop_in(title: &str) -> String {
    let unit = std::fs::read_to_string(repo_root().join("systemd/notebook.service")).unwrap();
    let mut lines = unit.lines().skip_while(|l| !l.contains(title)).skip(1);
    let text: String = lines
        .by_ref()
        .map_while(|l| l.strip_prefix("#       "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        text.starts_with("[Service]\n") && text.lines().count() > 1,
        "no drop-in under {title:?} in notebook.service: {text:?}"
    );
    text
}

const PLOT: &str = r#"import numpy as np
import matplotlib
import matplotlib.pyplot as plt
x = np.linspace(0, 2 * np.pi, 200)
fig, ax = plt.subplots()
ax.plot(x, np.sin(x))
plt.show()
print("numpy", np.__version__, "matplotlib", matplotlib.__version__, "sum", round(float(np.sin(x).sum() + 1.5), 3))
"#;

#[tokio::test(flavor = "multi_thread")]
async fn deb_lifecycle_in_booted_debian() {
    if !container::available() {
        return;
    }
    let pkgs = packages();
    let c = Container::boot();
    let port = free_port();
    let base = format!("https://localhost:{port}/");

    // Install: apt resolves the Depends and installs Debian's Jupyter.
    let out = c.apt_install_preseeded(&pkgs.deb, port);
    for pulled in ["python3-notebook", "jupyter-notebook", "python3-ipykernel"] {
        assert!(out.contains(pulled), "apt did not install {pulled}:\n{out}");
    }
    assert_eq!(c.ok("systemctl is-active notebook").trim(), "active");
    assert_eq!(c.ok("systemctl is-enabled notebook").trim(), "enabled");
    let passwd = c.ok("getent passwd notebook");
    assert!(
        passwd
            .trim_end()
            .ends_with(":/var/lib/notebook:/usr/sbin/nologin"),
        "{passwd}"
    );
    let modes = c.ok(
        "stat -c '%n %U:%G %a' /etc/notebook/notebook.toml /etc/notebook/tls/key.pem /var/lib/notebook /run/notebook /run/notebook/control.sock",
    );
    for expected in [
        "/etc/notebook/notebook.toml root:notebook 640",
        "/etc/notebook/tls/key.pem root:notebook 640",
        "/var/lib/notebook notebook:notebook 700",
        "/run/notebook notebook:notebook 750",
        "/run/notebook/control.sock notebook:notebook 660",
    ] {
        assert!(modes.contains(expected), "want {expected}:\n{modes}");
    }
    c.ok("systemd-analyze verify --man=no /usr/lib/systemd/system/notebook.service");
    let security = c.ok("systemd-analyze security --no-pager notebook.service");
    let score = exposure(&security);
    assert!(score <= MAX_EXPOSURE, "{security}");
    eprintln!("systemd-analyze security (booted): {score}");

    // The certificate nbctl made at install; the client trusts only it.
    let ca = std::fs::read(c.path("/etc/notebook/tls/cert.pem")).unwrap();
    let tls = rustls_client_trusting(&ca);

    // First start, no password yet: the "run sudo nbctl passwd" page.
    let b = Browser::trusting(&base, &ca, None);
    let page = b.get("").await;
    assert_eq!(page.status(), 503);
    assert!(page.text().await.unwrap().contains("sudo nbctl passwd"));

    c.sh_with_stdin("nbctl passwd --stdin", Some(&format!("{PASSWORD}\n")))
        .code
        .filter(|&code| code == 0)
        .expect("nbctl passwd --stdin");
    // nbctl asked the daemon to reload: the login page replaces the notice.
    let deadline = Instant::now() + Duration::from_secs(20);
    while b.get("login").await.status() != 200 {
        assert!(
            Instant::now() < deadline,
            "no login page after nbctl passwd"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    b.login(PASSWORD).await;

    // numpy and matplotlib in a kernel, under the hardened unit.
    let run = b.run_in_new_kernel(PLOT, tls.clone()).await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert!(
        run.stdout.contains("numpy 1.") && run.stdout.contains("sum 1.5"),
        "{run:?}"
    );
    assert!(
        run.display_mimetypes.iter().any(|m| m == "image/png"),
        "no plot: {run:?}"
    );
    let nb = serde_json::json!({
        "type": "notebook",
        "content": {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    });
    let put = b
        .send_json(reqwest::Method::PUT, "api/contents/hello.ipynb", &nb)
        .await;
    assert_eq!(put.status(), 201);
    let saved = c.path("/var/lib/notebook/notebooks/hello.ipynb");
    assert!(saved.exists());

    // Restart: a new process, the notebook is still there. A normal stop
    // (with a kernel running) and start of Debian's classic Notebook log
    // nothing at WARN or above.
    let warnings = || {
        c.sh("journalctl -u notebook -p warning --no-pager -o cat")
            .stdout
    };
    let earlier = warnings();
    let pid = main_pid(&c);
    c.ok("systemctl restart notebook");
    assert_ne!(main_pid(&c), pid);
    let b = wait_serving(&base, &ca, "after systemctl restart").await;
    let now = warnings();
    let new_lines = now.strip_prefix(earlier.as_str()).unwrap_or(&now);
    assert!(
        new_lines.trim().is_empty(),
        "a normal stop and start logged at WARN or above:\n{new_lines}"
    );

    // A broken config: the reload fails, the journal says why, and the
    // running daemon keeps serving with the old config.
    let config = c.path("/etc/notebook/notebook.toml");
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{good}\n[bogus_section]\nkey = 1\n")).unwrap();
    let pid = main_pid(&c);
    let reload = c.sh("systemctl reload notebook");
    assert_ne!(reload.code, Some(0), "{reload}");
    assert_eq!(c.ok("systemctl is-active notebook").trim(), "active");
    assert_eq!(main_pid(&c), pid);
    assert!(c.journal("notebook").contains("bogus_section"));
    // SIGHUP straight to the daemon (skipping ExecReload's check) too.
    c.ok("systemctl kill --kill-who=main --signal=HUP notebook");
    c.wait_for(
        "the daemon refusing the reload",
        Duration::from_secs(10),
        || c.journal("notebook").contains("reload refused"),
    );
    assert_eq!(b.get("api/contents/hello.ipynb").await.status(), 200);
    std::fs::write(&config, &good).unwrap();
    c.ok("systemctl reload notebook");

    // Jupyter killed: notebookd starts it again, without restarting itself.
    let old = jupyter_pids(&c);
    assert_eq!(old.len(), 1, "one Jupyter server: {old:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let b = wait_serving(&base, &ca, "after kill -9 of Jupyter").await;
    let new = jupyter_pids(&c);
    assert!(new.len() == 1 && new != old, "{old:?} -> {new:?}");
    assert_eq!(main_pid(&c), pid);
    drop(b);

    // notebookd killed: systemd restarts it; the old Jupyter is gone.
    let restarts = n_restarts(&c);
    c.ok("kill -KILL $(systemctl show -p MainPID --value notebook)");
    c.wait_for(
        "systemd restarting notebookd",
        Duration::from_secs(30),
        || n_restarts(&c) > restarts,
    );
    wait_serving(&base, &ca, "after kill -9 of notebookd").await;
    let after = jupyter_pids(&c);
    assert!(after.len() == 1 && after != new, "{new:?} -> {after:?}");

    // A hung daemon (SIGSTOP): the watchdog kills and restarts it. A drop-in
    // shortens WatchdogSec so the test does not wait the shipped 30s.
    c.write(
        "/etc/systemd/system/notebook.service.d/watchdog-test.conf",
        "[Service]\nWatchdogSec=4s\n",
    );
    c.ok("systemctl daemon-reload && systemctl restart notebook");
    wait_serving(&base, &ca, "with WatchdogSec=4s").await;
    let restarts = n_restarts(&c);
    c.ok("kill -STOP $(systemctl show -p MainPID --value notebook)");
    c.wait_for(
        "the watchdog restarting notebookd",
        Duration::from_secs(40),
        || n_restarts(&c) > restarts,
    );
    assert!(c.journal("notebook").contains("Watchdog timeout"));
    wait_serving(&base, &ca, "after the watchdog restart").await;
    doctor_sees_the_unit(&c);
    std::fs::remove_file(c.path("/etc/systemd/system/notebook.service.d/watchdog-test.conf"))
        .unwrap();
    c.ok("systemctl daemon-reload && systemctl restart notebook");

    // A port below 1024: refused without a capability, served with the
    // drop-in the unit's header documents (taken from there verbatim).
    let low = (900..1024)
        .rev()
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024");
    c.ok(&format!(
        "nbctl config set server.listen 127.0.0.1:{low} --no-reload"
    ));
    let refused = c.sh("systemctl restart notebook");
    assert_ne!(refused.code, Some(0), "{refused}");
    c.wait_for(
        "the bind error in the journal",
        Duration::from_secs(10),
        || {
            c.journal("notebook").contains(&format!(
                "cannot listen on 127.0.0.1:{low}: Permission denied"
            ))
        },
    );
    c.write(
        "/etc/systemd/system/notebook.service.d/low-port.conf",
        &documented_drop_in("A port below 1024"),
    );
    c.ok(
        "systemctl daemon-reload && systemctl reset-failed notebook && systemctl restart notebook",
    );
    wait_serving(
        &format!("https://localhost:{low}/"),
        &ca,
        "on a port below 1024",
    )
    .await;
    std::fs::remove_file(c.path("/etc/systemd/system/notebook.service.d/low-port.conf")).unwrap();
    c.ok(&format!(
        "nbctl config set server.listen 127.0.0.1:{port} --no-reload"
    ));
    c.ok("systemctl daemon-reload && systemctl restart notebook");
    wait_serving(&base, &ca, "back on the test's port").await;

    classic_logout_in_chromium(&c, port, &ca).await;

    // Upgrade: restarted with the new package; config (password), certificate
    // and notebooks kept.
    let pid = main_pid(&c);
    let config_before = std::fs::read_to_string(&config).unwrap();
    c.apt_install(&pkgs.deb_next);
    assert_eq!(
        c.ok("dpkg-query -W -f='${Version}' notebookd"),
        packages::version(2)
    );
    assert_eq!(c.ok("systemctl is-active notebook").trim(), "active");
    assert_ne!(main_pid(&c), pid, "not restarted on upgrade");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), config_before);
    assert_eq!(
        std::fs::read(c.path("/etc/notebook/tls/cert.pem")).unwrap(),
        ca
    );
    wait_serving(&base, &ca, "after the upgrade").await;

    // Remove: stopped, nothing left running; config and notebooks stay.
    c.ok("apt-get remove -y -q notebookd 2>&1");
    assert_ne!(c.sh("systemctl is-active notebook").code, Some(0));
    assert!(!c.path("/usr/sbin/notebookd").exists());
    for kept in [
        "/etc/notebook/notebook.toml",
        "/etc/notebook/tls/cert.pem",
        "/etc/notebook/tls/key.pem",
        "/var/lib/notebook/notebooks/hello.ipynb",
    ] {
        assert!(c.path(kept).exists(), "remove deleted {kept}");
    }
    assert!(jupyter_pids(&c).is_empty(), "Jupyter left running");
    assert!(
        c.processes_matching("ipykernel").is_empty(),
        "kernels left running"
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());

    // Purge: config and state gone.
    c.ok("apt-get purge -y -q notebookd 2>&1");
    assert!(!c.path("/etc/notebook").exists());
    assert!(!c.path("/var/lib/notebook").exists());
    assert_ne!(c.sh("dpkg -s notebookd").code, Some(0));
    let journal = c.journal("notebook");
    assert!(!journal.contains("panicked"), "{journal}");
}
