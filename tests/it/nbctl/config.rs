//! `nbctl config check|show|get|set|unset` on the shipped, commented config.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

use notebookd::config::Config;

use super::{nbctl, nbctl_as_nobody, open_dir, scratch_config, shipped_config};
use crate::support::{certs, jupyter_command};

fn comment_lines(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect()
}

/// Set keys of every kind; every comment of the shipped file survives, in
/// order; unset brings back the very same bytes.
#[test]
fn set_keeps_comments_and_unset_restores_the_file() {
    let (_dir, config) = shipped_config();
    let shipped = std::fs::read_to_string(&config).unwrap();
    let changes: &[(&str, &[&str], &str)] = &[
        (
            "server.base_url",
            &["/notebook/"],
            "base_url = \"/notebook/\"",
        ),
        (
            "server.listen",
            &["127.0.0.1:9999", "[::1]:9999"],
            "listen = [\"127.0.0.1:9999\", \"[::1]:9999\"]",
        ),
        ("tls.enabled", &["false"], "enabled = false"),
        ("limits.max_headers", &["200"], "max_headers = 200"),
        (
            "auth.session_lifetime",
            &["1d"],
            "session_lifetime = \"1d\"",
        ),
        (
            "jupyter.env.MPLBACKEND",
            &["Agg"],
            "env = { MPLBACKEND = \"Agg\" }",
        ),
        // A value that looks like an option comes after `--`.
        (
            "jupyter.args",
            &["--", "--ServerApp.iopub_data_rate_limit=1e10"],
            "args = [\"--ServerApp.iopub_data_rate_limit=1e10\"]",
        ),
    ];
    for (key, values, line) in changes {
        let mut args = vec!["config", "set", key];
        args.extend_from_slice(values);
        nbctl(&config, &args).expect(0, &[key]);
        let text = std::fs::read_to_string(&config).unwrap();
        assert!(
            text.lines().any(|l| l == *line),
            "no line {line:?} in:\n{text}"
        );
        assert_eq!(
            comment_lines(&text),
            comment_lines(&shipped),
            "comments changed"
        );
    }
    let text = std::fs::read_to_string(&config).unwrap();
    // Each new line sits right under its commented default.
    assert!(
        text.contains("#base_url = \"/\"\nbase_url = \"/notebook/\"\n"),
        "{text}"
    );
    assert!(
        text.contains("#max_headers = 100\nmax_headers = 200\n"),
        "{text}"
    );
    let c = Config::load(&config).unwrap();
    assert_eq!(c.server.base_url.as_str(), "/notebook/");
    assert_eq!(c.server.listen.0.len(), 2);
    assert!(!c.tls.enabled);
    assert_eq!(c.limits.max_headers, 200);
    assert_eq!(
        c.jupyter.env.get("MPLBACKEND").map(String::as_str),
        Some("Agg")
    );

    // Changing a value already set replaces just that value.
    nbctl(&config, &["config", "set", "limits.max_headers", "300"]).expect(0, &[]);
    let text2 = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        text2,
        text.replace("max_headers = 200", "max_headers = 300")
    );
    // The same value again: nothing to do.
    nbctl(&config, &["config", "set", "limits.max_headers", "300"]).expect(0, &["already"]);

    for (key, _, _) in changes {
        let key = if key.starts_with("jupyter.env.") {
            "jupyter.env"
        } else {
            key
        };
        nbctl(&config, &["config", "unset", key]).expect(0, &["removed", "default applies"]);
    }
    assert_eq!(std::fs::read_to_string(&config).unwrap(), shipped);
    nbctl(&config, &["config", "unset", "server.base_url"])
        .expect(0, &["is not set", "nothing changed"]);
}

/// Comments next to and on the changed line itself survive too.
#[test]
fn set_keeps_inline_comments() {
    let dir = open_dir();
    let config = scratch_config(
        dir.path(),
        "\n[limits]\n# my comment\nmax_headers = 50 # why 50\n# after\n",
    );
    nbctl(&config, &["config", "set", "limits.max_headers", "64"]).expect(0, &[]);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("# my comment\nmax_headers = 64 # why 50\n# after\n"),
        "{text}"
    );
}

#[test]
fn bad_keys_and_values_are_usage_errors_and_change_nothing() {
    let (_dir, config) = shipped_config();
    let before = std::fs::read_to_string(&config).unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["config", "set", "server.lisen", "x"],
            &[
                "unknown config key `server.lisen`",
                "did you mean `server.listen`",
            ],
        ),
        (
            &["config", "get", "sever.listen"],
            &["unknown config key", "did you mean `server.listen`"],
        ),
        (&["config", "unset", "nope"], &["unknown config key `nope`"]),
        (
            &["config", "set", "limits.max_headers", "many"],
            &["`limits.max_headers` takes a whole number", "\"many\""],
        ),
        (
            &["config", "set", "tls.enabled", "yes"],
            &["`tls.enabled` takes true or false"],
        ),
        (
            &["config", "set", "tls.enabled", "true", "false"],
            &["takes one value"],
        ),
        (&["config", "set", "jupyter.env", "A=b"], &["takes a table"]),
        (&["config", "set", "server", "x"], &["is a section"]),
        (
            &["config", "set", "server.listen", "localhost"],
            &[
                "server.listen: \"localhost\" is not ADDRESS:PORT",
                "e.g. \"0.0.0.0:9999\"",
                "was not changed",
            ],
        ),
        (
            &["config", "set", "limits.max_headers", "1"],
            &["limits.max_headers: 1 is out of range", "was not changed"],
        ),
        (
            &["config", "set", "auth.session_lifetime", "forever"],
            &["auth.session_lifetime", "e.g. \"30s\""],
        ),
        (
            &["config", "set", "auth.password_hash", "plain"],
            &["auth.password_hash", "nbctl passwd"],
        ),
        (
            &["config", "set", "tls.cert", "relative.pem"],
            &["tls.cert", "absolute path"],
        ),
        (
            &["config", "set", "jupyter.flavour", "classic"],
            &["jupyter.flavour", "unknown variant"],
        ),
        (&["config", "set", "limits.max_headers"], &["required"]),
        (&["config", "frobnicate"], &["unrecognized subcommand"]),
        (&["config", "set", "jupyter.args", "--foo"], &["'-- --foo'"]),
    ];
    for (args, needles) in cases {
        nbctl(&config, args).expect(2, needles);
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            before,
            "{args:?} changed the file"
        );
    }
}

#[test]
fn get_and_show_give_effective_values_with_secrets_redacted() {
    let (_dir, config) = shipped_config();
    nbctl(&config, &["config", "get", "server.listen"]).expect(0, &["[\"0.0.0.0:9999\"]"]);
    let out = nbctl(&config, &["config", "get", "server.base_url"]);
    assert_eq!(out.stdout, "/\n");
    nbctl(&config, &["config", "get", "limits.max_connections"]).expect(0, &["1024"]);
    nbctl(&config, &["config", "get", "jupyter.env.NOPE"]).expect(1, &["not set"]);
    nbctl(&config, &["config", "get", "auth"]).expect(0, &["session_lifetime = \"7d\""]);

    let hash = "sha1:0e112c3ddfce:a68df677475c2b47b6e86d0467eec97ac5f4b85a";
    nbctl(&config, &["config", "set", "auth.password_hash", hash]).expect(0, &["<redacted>"]);
    let out = nbctl(&config, &["config", "get", "auth.password_hash"]);
    assert_eq!(out.stdout.trim(), "<redacted>");
    let show = nbctl(&config, &["config", "show"]);
    show.expect(
        0,
        &[
            "[server]",
            "listen = [\"0.0.0.0:9999\"]",
            "password_hash = \"<redacted>\"",
            "[limits]",
        ],
    );
    assert!(!show.text().contains("a68df677"), "{}", show.text());
    // Every key of the schema appears in `show`.
    let shown: toml::Table = toml::from_str(&show.stdout).unwrap();
    let defaults = toml::Table::try_from(Config::default()).unwrap();
    for (section, keys) in &defaults {
        for key in keys.as_table().unwrap().keys() {
            assert!(
                shown[section].get(key).is_some(),
                "show lacks {section}.{key}"
            );
        }
    }
    let json = nbctl(&config, &["config", "show", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["auth"]["password_hash"], "<redacted>");
    assert_eq!(v["server"]["listen"][0], "0.0.0.0:9999");
}

/// `nbctl config check` is `notebookd --check-config`: same output, same status.
#[test]
fn check_matches_notebookd_check_config() {
    let dir = open_dir();
    let certs = certs();
    let good = format!(
        "[tls]\ncert = \"{}\"\nkey = \"{}\"\n[jupyter]\ncommand = \"{}\"\n",
        certs.cert().display(),
        certs.key().display(),
        jupyter_command()
    );
    let config = dir.path().join("notebook.toml");
    for (text, code) in [
        (good.clone(), 0),
        (good.replace("key.pem", "missing.pem"), 1),
        ("[server]\nlisten = \"localhost\"\n".to_string(), 1),
        ("[server\n".to_string(), 1),
    ] {
        std::fs::write(&config, &text).unwrap();
        let ours = nbctl(&config, &["config", "check"]);
        let theirs = Command::new(env!("CARGO_BIN_EXE_notebookd"))
            .arg("--check-config")
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert_eq!(ours.code, code, "{}", ours.text());
        assert_eq!(theirs.status.code(), Some(code));
        assert_eq!(ours.stdout, String::from_utf8_lossy(&theirs.stdout));
        assert_eq!(ours.stderr, String::from_utf8_lossy(&theirs.stderr));
    }
    nbctl(&config, &["config", "check"]).expect(1, &["notebook.toml:1:", "invalid table header"]);
}

#[test]
fn a_broken_file_is_not_edited() {
    let dir = open_dir();
    let config = dir.path().join("notebook.toml");
    // A syntax error: refused with its location.
    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:1\n").unwrap();
    nbctl(&config, &["config", "set", "server.base_url", "/x/"])
        .expect(1, &["notebook.toml:2:", "fix it by hand"]);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "[server]\nlisten = \"127.0.0.1:1\n"
    );
    // Valid TOML, invalid elsewhere: the error names the other key.
    std::fs::write(&config, "[server]\nlisen = 1\n").unwrap();
    nbctl(&config, &["config", "set", "server.base_url", "/x/"])
        .expect(1, &["server.lisen", "fix that first"]);
    // Setting the broken key itself to a good value repairs the file.
    std::fs::write(&config, "[limits]\nmax_headers = 1\n").unwrap();
    nbctl(&config, &["config", "set", "limits.max_headers", "100"]).expect(0, &[]);
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        "[limits]\nmax_headers = 100\n"
    );
}

#[test]
fn writes_keep_owner_and_mode_and_fail_cleanly_without_rights() {
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    if nix::unistd::Uid::effective().is_root() {
        nix::unistd::chown(
            &config,
            Some(nix::unistd::Uid::from_raw(0)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .unwrap();
    }
    let before = std::fs::metadata(&config).unwrap();
    nbctl(&config, &["config", "set", "auth.login_attempts", "5"]).expect(0, &[]);
    let after = std::fs::metadata(&config).unwrap();
    assert_ne!(before.ino(), after.ino(), "not replaced by rename");
    assert_eq!(after.mode() & 0o7777, 0o640);
    assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));

    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    if let Some(out) = nbctl_as_nobody(
        &config,
        &["config", "set", "auth.login_attempts", "6"],
        None,
    ) {
        out.expect(1, &["cannot write", "ermission denied", "sudo"]);
        assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "a temporary file was left"
        );
        // Reading is fine for anyone who may read the file.
        nbctl_as_nobody(&config, &["config", "get", "auth.login_attempts"], None)
            .unwrap()
            .expect(0, &["5"]);
    }
    nbctl(
        &dir.path().join("absent.toml"),
        &["config", "set", "auth.login_attempts", "6"],
    )
    .expect(1, &["cannot read", "absent.toml", "NOTEBOOK_CONFIG"]);
}

/// Keys that only a restart applies say so instead of asking for a reload.
#[test]
fn restart_only_keys_say_so() {
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    nbctl(
        &config,
        &["config", "set", "server.listen", "127.0.0.1:8888"],
    )
    .expect(
        0,
        &[
            "takes effect when notebookd restarts",
            "systemctl restart notebook",
        ],
    );
    nbctl(&config, &["config", "set", "auth.login_attempts", "3"])
        .expect(0, &["notebookd is not running"]);
    nbctl(
        &config,
        &["config", "set", "auth.login_attempts", "4", "--no-reload"],
    )
    .expect(0, &["not reloading", "nbctl reload"]);
    // NOTEBOOK_CONFIG names the file when --config is absent.
    let out = Command::new(super::NBCTL)
        .args(["config", "get", "auth.login_attempts"])
        .env("NOTEBOOK_CONFIG", &config)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "4");
}
