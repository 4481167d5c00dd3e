//! nbctl's errors as an administrator meets them: each says what is wrong
//! and how to fix it, in the form the caller asked for.

use super::{nbctl, open_dir, scratch_config, shipped_config};

#[test]
fn status_json_when_down_is_json() {
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    let out = nbctl(&config, &["status", "--json"]);
    out.expect(3, &["not running"]);
    let v: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!("no JSON on stdout ({e}):\n{}", out.text());
    });
    assert_eq!(v["running"], false, "{v}");
    assert!(
        v["control_socket"]
            .as_str()
            .unwrap()
            .ends_with("run/control.sock"),
        "{v}"
    );

    // A `./dev run` config: the hint is `./dev run`, not systemctl.
    let dev = dir.path().join(".dev");
    std::fs::create_dir_all(&dev).unwrap();
    let dev_config = scratch_config(&dev, "");
    let out = nbctl(&dev_config, &["status"]);
    out.expect(3, &["not running", "./dev run"]);
    assert!(!out.text().contains("systemctl"), "{}", out.text());
    nbctl(&dev_config, &["reload"]).expect(1, &["./dev run"]);
}

#[test]
fn config_mistakes_name_their_fix() {
    let dir = open_dir();
    let config = scratch_config(dir.path(), "\n[auth]\nsession_lifetime = 1d\n");
    nbctl(&config, &["config", "check"]).expect(
        1,
        &[
            "notebook.toml:11:",
            "durations are strings: session_lifetime = \"1d\"",
        ],
    );
    let config = scratch_config(dir.path(), "\n[auth]\nsesion_lifetime = \"1d\"\n");
    nbctl(&config, &["config", "check"]).expect(1, &["did you mean `session_lifetime`?"]);
    // The same did-you-mean as `config set`.
    let (_dir, shipped) = shipped_config();
    nbctl(&shipped, &["config", "set", "auth.sesion_lifetime", "1d"])
        .expect(2, &["did you mean `auth.session_lifetime`?"]);
    // An idle timeout that can never apply.
    nbctl(
        &shipped,
        &["config", "set", "auth.session_idle_timeout", "30d"],
    )
    .expect(
        2,
        &[
            "auth.session_idle_timeout",
            "longer than auth.session_lifetime (7d)",
        ],
    );
}

#[test]
fn embed_origins_as_copied_from_the_address_bar() {
    let (_dir, config) = shipped_config();
    nbctl(&config, &["embed", "allow", "javascript:alert(1)"])
        .expect(2, &["has the scheme javascript:", "https://"]);
    nbctl(&config, &["embed", "allow", "https://my.example.com/"]).expect(0, &[]);
    nbctl(
        &config,
        &["embed", "allow", "https://other.example.com:443"],
    )
    .expect(0, &[]);
    nbctl(&config, &["embed", "allow", "https://my.example.com"]).expect(0, &["already allowed"]);
    let out = nbctl(&config, &["embed", "list"]);
    assert_eq!(
        out.stdout,
        "https://my.example.com\nhttps://other.example.com\n"
    );
}

/// A change that restarts Jupyter ends every running kernel: nbctl says so
/// before writing and goes ahead only with --restart-jupyter; a root_dir
/// that does not exist is refused unless --create.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_that_restart_jupyter_need_consent() {
    let n = crate::support::Notebookd::start();
    let config = n.config_path();
    let before = std::fs::read_to_string(&config).unwrap();
    let missing = n.dir.path().join("new-notebooks");
    let run = {
        let config = config.clone();
        move |args: Vec<String>| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            nbctl(&config, &args)
        }
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let r = run.clone();
    let a = args(&["config", "set", "jupyter.startup_timeout", "100s"]);
    let out = tokio::task::spawn_blocking(move || r(a)).await.unwrap();
    out.expect(
        2,
        &[
            "restarts the running Jupyter",
            "ends every running kernel",
            "--restart-jupyter",
            "nothing changed",
        ],
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    // On a terminal it asks instead; anything but yes changes nothing.
    let c = config.clone();
    let asked = tokio::task::spawn_blocking(move || {
        super::nbctl_asked(
            &c,
            &["config", "set", "jupyter.startup_timeout", "100s"],
            &[("Restart Jupyter now? [y/N]", "")],
        )
    })
    .await
    .unwrap();
    assert_eq!(asked.code, 1, "{}", asked.screen);
    assert!(
        asked.screen.contains("ends every running kernel")
            && asked
                .screen
                .contains("not restarting Jupyter; nothing changed"),
        "{}",
        asked.screen
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
    let c = config.clone();
    let yes = tokio::task::spawn_blocking(move || {
        super::nbctl_asked(
            &c,
            &["config", "set", "jupyter.startup_timeout", "100s"],
            &[("Restart Jupyter now? [y/N]", "y")],
        )
    })
    .await
    .unwrap();
    assert_eq!(yes.code, 0, "{}", yes.screen);
    assert!(
        std::fs::read_to_string(&config)
            .unwrap()
            .contains("startup_timeout = \"100s\""),
        "{}",
        yes.screen
    );
    let before = std::fs::read_to_string(&config).unwrap();

    let dir = missing.display().to_string();
    let r = run.clone();
    let a = args(&[
        "config",
        "set",
        "jupyter.root_dir",
        &dir,
        "--restart-jupyter",
    ]);
    let out = tokio::task::spawn_blocking(move || r(a)).await.unwrap();
    out.expect(2, &["does not exist", "--create", "nothing changed"]);
    assert!(!missing.exists());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    let r = run.clone();
    let a = args(&[
        "config",
        "set",
        "jupyter.root_dir",
        &dir,
        "--create",
        "--restart-jupyter",
    ]);
    let out = tokio::task::spawn_blocking(move || r(a)).await.unwrap();
    out.expect(0, &["created", "notebookd reloaded"]);
    assert!(missing.is_dir());
    n.wait_log("Jupyter is ready", std::time::Duration::from_secs(90));
}
