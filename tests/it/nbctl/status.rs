//! `nbctl status` and `nbctl reload` against a real notebookd, and without one.

use super::{nbctl, nbctl_as_nobody, open_dir, scratch_config};
use crate::support::Notebookd;
use std::os::unix::net::UnixListener;

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// `status --json` has what the issue lists; the text form says the same;
/// a refused reload is reported, the daemon keeps serving, and status shows it.
#[tokio::test(flavor = "multi_thread")]
async fn status_and_reload_against_a_running_daemon() {
    let n = Notebookd::start();
    let config = n.config_path();

    let c = config.clone();
    let out = blocking(move || nbctl(&c, &["status", "--json"])).await;
    out.expect(0, &[]);
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["version"], notebookd::VERSION);
    assert_eq!(s["pid"].as_u64(), Some(u64::from(n.pid())));
    assert!(s["uptime_secs"].as_u64().is_some());
    assert_eq!(s["listen"][0], format!("127.0.0.1:{}", n.port));
    assert_eq!(s["tls"]["enabled"], true);
    // The test CA's leaf is valid for two days.
    let days = s["tls"]["certificate"]["days_left"].as_i64().unwrap();
    assert!((1..=2).contains(&days), "{s}");
    assert!(
        s["tls"]["certificate"]["not_after"]
            .as_str()
            .unwrap()
            .ends_with('Z'),
        "{s}"
    );
    assert_eq!(s["tls"]["certificate"]["subject"], "CN=localhost");
    assert_eq!(s["jupyter"]["state"], "ready");
    assert!(s["jupyter"]["pid"].as_u64().is_some(), "{s}");
    assert!(s["jupyter"]["flavour"].as_str().is_some(), "{s}");
    assert!(s["jupyter"]["server_version"].as_str().is_some(), "{s}");
    assert_eq!(s["jupyter"]["restarts"], 0);
    assert_eq!(s["sessions"], 0);
    assert!(s["last_reload"].is_null());
    assert!(s["last_error"].is_null());

    let _browser = n.logged_in().await;
    let c = config.clone();
    let out = blocking(move || nbctl(&c, &["status", "--json"])).await;
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["sessions"], 1);

    let c = config.clone();
    let out = blocking(move || nbctl(&c, &["status"])).await;
    out.expect(
        0,
        &[
            &format!("notebookd {}: running (pid {}", notebookd::VERSION, n.pid()),
            &format!("https://127.0.0.1:{}/", n.port),
            "days left",
            "ready",
            "1 logged in",
            "password",
        ],
    );

    // A good reload.
    let c = config.clone();
    blocking(move || nbctl(&c, &["reload"]))
        .await
        .expect(0, &["notebookd reloaded: configuration reloaded"]);

    // A broken config: refused, with the reason; the daemon keeps serving.
    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("[auth]", "[auth]\nlogin_atempts = 3")).unwrap();
    let c = config.clone();
    blocking(move || nbctl(&c, &["reload"])).await.expect(
        1,
        &[
            "refused the new configuration",
            "keeps running with the old one",
            "auth.login_atempts",
            "unknown field",
        ],
    );
    assert_eq!(
        _browser.get("api/contents").await.status(),
        200,
        "the daemon stopped serving"
    );
    let c = config.clone();
    let out = blocking(move || nbctl(&c, &["status", "--json"])).await;
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["last_reload"]["ok"], false, "{s}");
    assert!(
        s["last_reload"]["message"]
            .as_str()
            .unwrap()
            .contains("login_atempts"),
        "{s}"
    );
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .starts_with("reload refused:"),
        "{s}"
    );
    let c = config.clone();
    blocking(move || nbctl(&c, &["status"]))
        .await
        .expect(0, &["last reload", "REFUSED", "login_atempts"]);

    // Not even TOML: nbctl still finds the daemon to ask.
    std::fs::write(&config, format!("{good}\n[[[")).unwrap();
    let c = config.clone();
    blocking(move || nbctl(&c, &["reload"]))
        .await
        .expect(1, &["refused", "notebook.toml:"]);
    let c = config.clone();
    blocking(move || nbctl(&c, &["status"]))
        .await
        .expect(0, &["running"]);

    std::fs::write(&config, &good).unwrap();
    let c = config.clone();
    blocking(move || nbctl(&c, &["reload"]))
        .await
        .expect(0, &["reloaded"]);
    let c = config.clone();
    let out = blocking(move || nbctl(&c, &["status", "--json"])).await;
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["last_reload"]["ok"], true, "{s}");
    assert!(s["last_error"].is_null(), "{s}");

    // Only root and group notebook may ask: others get a clear refusal, not "not running".
    let shared = open_dir();
    let copy = shared.path().join("notebook.toml");
    std::fs::write(&copy, &good).unwrap();
    let out = blocking(move || {
        let out = nbctl_as_nobody(&copy, &["status"], None);
        drop(shared);
        out
    })
    .await;
    if let Some(out) = out {
        out.expect(1, &["cannot connect", "ermission denied", "group notebook"]);
    }
}

#[test]
fn no_daemon_is_exit_3_for_status() {
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    let out = nbctl(&config, &["status"]);
    out.expect(
        3,
        &[
            "notebookd is not running",
            "control.sock",
            "systemctl start notebook",
        ],
    );
    assert_eq!(out.text().lines().count(), 1, "{}", out.text());
    nbctl(&config, &["status", "--json"]).expect(3, &["not running"]);
    nbctl(&config, &["reload"]).expect(1, &["notebookd is not running"]);

    // A socket left behind by a daemon that died: nobody answers.
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let stale = UnixListener::bind(run.join("control.sock")).unwrap();
    drop(stale);
    nbctl(&config, &["status"]).expect(3, &["not running"]);

    // A config that is not even valid still names the runtime directory.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "\nbogus = [\n",
    )
    .unwrap();
    nbctl(&config, &["status"]).expect(
        3,
        &[
            "not running",
            &run.join("control.sock").display().to_string(),
        ],
    );
    nbctl(&dir.path().join("absent.toml"), &["status"]).expect(1, &["cannot read"]);
}

/// A change that needs a restart waits for one; the rest of the same
/// reload, and every later reload, still applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_restart_only_change_does_not_block_reloads() {
    let n = Notebookd::start();
    let config = n.config_path();
    let b = n.logged_in().await;
    let good = std::fs::read_to_string(&config).unwrap();
    let other_port = crate::support::free_port();
    let moved = good.replace(
        &format!("127.0.0.1:{}", n.port),
        &format!("127.0.0.1:{other_port}"),
    );
    assert_ne!(moved, good);
    // The listen address moves and a limit changes in the same edit.
    std::fs::write(
        &config,
        moved.replace("[auth]", "[auth]\nlogin_attempts = 3"),
    )
    .unwrap();
    let c = config.clone();
    blocking(move || nbctl(&c, &["reload"])).await.expect(
        0,
        &["configuration reloaded", "server.listen", "after a restart"],
    );
    let c = config.clone();
    let out = blocking(move || nbctl(&c, &["status", "--json"])).await;
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    // Still serving where it was; the applied setting is in force.
    assert_eq!(s["listen"][0], format!("127.0.0.1:{}", n.port), "{s}");
    assert_eq!(b.get("api/contents").await.status(), 200);
    let config_now = notebookd::config::Config::load(&config).unwrap();
    assert_eq!(config_now.auth.login_attempts, 3);
    // And the next reload works too.
    let c = config.clone();
    blocking(move || nbctl(&c, &["reload"]))
        .await
        .expect(0, &["configuration reloaded"]);
}

/// A control socket planted by another user (a kernel runs as the service's
/// user, which owns the runtime directory) is not believed by root's nbctl,
/// and what it says never reaches the terminal.
#[test]
fn a_planted_control_socket_is_not_trusted() {
    use std::os::unix::process::CommandExt;
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("!!! not root: cannot plant a socket as another user; skipping");
        return;
    }
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(65534), Some(65534)).unwrap();
    let sock = run.join("control.sock");
    // A fake daemon as user nobody that answers with terminal escapes.
    let script = format!(
        "import socket,os\ns=socket.socket(socket.AF_UNIX)\ns.bind({sock:?})\ns.listen(4)\nprint('up',flush=True)\n\
         for _ in range(4):\n  c,_=s.accept()\n  c.recv(4096)\n  c.sendall(b'{{\"ok\":true,\"version\":\"\\\\u001b]0;pwned\\\\u0007x\",\"pid\":1,\"jupyter\":{{\"state\":\"ready\"}}}}\\n')\n  c.close()\n",
        sock = sock.display().to_string()
    );
    let mut fake = std::process::Command::new("python3")
        .args(["-c", &script])
        .uid(65534)
        .gid(65534)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut up = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(fake.stdout.take().unwrap()),
        &mut up,
    )
    .unwrap();
    assert_eq!(up.trim(), "up");
    let out = nbctl(&config, &["status"]);
    let _ = fake.kill();
    let _ = fake.wait();
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(out.stderr.contains("not trusted"), "{}", out.stderr);
    assert!(!out.stdout.contains('\u{1b}') && !out.stderr.contains('\u{1b}'));
}

#[test]
fn control_characters_in_an_answer_are_replaced() {
    let mut v = serde_json::json!({"a": ["\u{1b}[31mred", {"b": "ok\u{7}"}], "n": 1});
    notebookd::daemon::control::strip_controls(&mut v);
    assert_eq!(
        v,
        serde_json::json!({"a": ["?[31mred", {"b": "ok?"}], "n": 1})
    );
}
