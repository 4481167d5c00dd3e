//! `nbctl passwd`: prompts on a real terminal, `--stdin`, `--print`, the
//! hash round trip with the real Python Jupyter, and sessions ending.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use notebookd::auth::password::PasswordHash;
use notebookd::config::Config;

use super::{
    nbctl, nbctl_as_nobody, nbctl_on_pty, nbctl_stdin, open_dir, scratch_config, shipped_config,
};
use crate::support::{Notebookd, PASSWORD, venv};

fn hash_in(config: &Path) -> Option<PasswordHash> {
    Config::load(config).unwrap().auth.password_hash
}

fn python_check(hash: &str, password: &str) -> bool {
    let out = Command::new(venv().join("bin/python"))
        .args([
            "-c",
            "import sys; from jupyter_server.auth.security import passwd_check; print(passwd_check(sys.argv[1], sys.argv[2]))",
            hash,
            password,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match String::from_utf8_lossy(&out.stdout).trim() {
        "True" => true,
        "False" => false,
        other => panic!("passwd_check printed {other:?}"),
    }
}

/// `nbctl passwd --print` writes the form jupyter_server writes, and the real
/// `passwd_check` accepts it (and refuses a wrong password).
#[test]
fn printed_hash_verifies_in_jupyter() {
    let dir = tempfile::tempdir().unwrap();
    // --print needs no config at all.
    let absent = dir.path().join("absent.toml");
    for password in ["s3cret pass", "pässwörd ✓", "trailing space "] {
        let out = nbctl_stdin(
            &absent,
            &["passwd", "--stdin", "--print"],
            &format!("{password}\n"),
        );
        out.expect(0, &[]);
        let hash = out.stdout.trim();
        assert!(
            hash.starts_with("argon2:$argon2id$v=19$m=10240,t=10,p=8$"),
            "{hash}"
        );
        assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
        assert!(python_check(hash, password), "{hash} rejects {password:?}");
        assert!(
            !python_check(hash, "wrong"),
            "{hash} accepts a wrong password"
        );
        assert!(!absent.exists());
    }
}

#[test]
fn stdin_sets_the_hash_keeping_the_file() {
    let (_dir, config) = shipped_config();
    let before = std::fs::read_to_string(&config).unwrap();
    let out = nbctl_stdin(&config, &["passwd", "--stdin"], "correct horse\n");
    out.expect(0, &["password set in", "notebookd is not running"]);
    let hash = hash_in(&config).expect("a hash in the config");
    assert!(hash.verify("correct horse"));
    assert!(!hash.verify("correct horse\n"));
    // Only one line was added, below the commented default.
    let after = std::fs::read_to_string(&config).unwrap();
    let added: Vec<&str> = after
        .lines()
        .filter(|l| !before.lines().any(|b| b == *l))
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");
    assert!(
        added[0].starts_with("password_hash = \"argon2:"),
        "{added:?}"
    );
    assert!(after.contains("#password_hash = \"\"\npassword_hash = \"argon2:"));

    // A second line must confirm the first; CRLF line ends are fine.
    nbctl_stdin(
        &config,
        &["passwd", "--stdin"],
        "other one\r\nother one\r\n",
    )
    .expect(0, &[]);
    assert!(hash_in(&config).unwrap().verify("other one"));
}

#[test]
fn stdin_refusals_change_nothing() {
    let (_dir, config) = shipped_config();
    let before = std::fs::read_to_string(&config).unwrap();
    nbctl_stdin(&config, &["passwd", "--stdin"], "one\ntwo\n")
        .expect(1, &["do not match", "nothing changed"]);
    nbctl_stdin(&config, &["passwd", "--stdin"], "\n")
        .expect(1, &["empty password refused", "--allow-empty"]);
    nbctl_stdin(&config, &["passwd", "--stdin"], "").expect(1, &["no password on standard input"]);
    nbctl_stdin(&config, &["passwd", "--stdin"], "a\na\na\n").expect(1, &["3 lines"]);
    nbctl_stdin(&config, &["passwd", "--stdin", "--print"], "x\ny\n").expect(1, &["do not match"]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
    // Without --stdin and without a terminal: a usage error that says what to do.
    nbctl(&config, &["passwd"]).expect(2, &["no terminal", "--stdin"]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
    // Weak ones: refused with the reason, unless asked for explicitly.
    nbctl_stdin(&config, &["passwd", "--stdin"], "abc\n").expect(
        1,
        &[
            "weak password refused",
            "3 character(s)",
            "--allow-weak",
            "nothing changed",
        ],
    );
    nbctl_stdin(&config, &["passwd", "--stdin"], "Password123\n")
        .expect(1, &["weak password refused", "most common"]);
    nbctl_stdin(&config, &["passwd", "--stdin", "--print"], "12345678\n")
        .expect(1, &["weak password refused"]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
    nbctl_stdin(&config, &["passwd", "--stdin", "--allow-weak"], "abc\n").expect(0, &[]);
    assert!(hash_in(&config).unwrap().verify("abc"));
    // An empty password when asked for explicitly.
    nbctl_stdin(&config, &["passwd", "--stdin", "--allow-empty"], "\n").expect(0, &[]);
    assert!(hash_in(&config).unwrap().verify(""));
}

#[test]
fn missing_and_unwritable_configs() {
    let dir = open_dir();
    nbctl_stdin(
        &dir.path().join("absent.toml"),
        &["passwd", "--stdin"],
        "pw\n",
    )
    .expect(1, &["cannot read", "absent.toml", "--config"]);
    let config = scratch_config(dir.path(), "");
    let before = std::fs::read_to_string(&config).unwrap();
    if let Some(out) = nbctl_as_nobody(&config, &["passwd", "--stdin"], Some("a fine password\n")) {
        out.expect(1, &["cannot write", "ermission denied", "sudo"]);
        assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}

/// On a real terminal: two prompts, nothing echoed, a mismatch refused.
#[test]
fn terminal_prompts_without_echo() {
    let (_dir, config) = shipped_config();
    let before = std::fs::read_to_string(&config).unwrap();
    let run = nbctl_on_pty(
        &config,
        &["passwd"],
        &[
            ("New password:", "first-secret"),
            ("Retype new password:", "second-secret"),
        ],
    );
    assert_eq!(
        run.code, 1,
        "screen: {:?} stderr: {}",
        run.screen, run.stderr
    );
    assert!(run.stderr.contains("do not match"), "{}", run.stderr);
    assert!(!run.screen.contains("secret"), "echoed: {:?}", run.screen);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);

    let run = nbctl_on_pty(
        &config,
        &["passwd", "--no-reload"],
        &[
            ("New password:", "tty-secret"),
            ("Retype new password:", "tty-secret"),
        ],
    );
    assert_eq!(
        run.code, 0,
        "screen: {:?} stderr: {}",
        run.screen, run.stderr
    );
    assert!(
        !run.screen.contains("tty-secret"),
        "echoed: {:?}",
        run.screen
    );
    assert!(run.screen.contains("password set in"), "{:?}", run.screen);
    assert!(hash_in(&config).unwrap().verify("tty-secret"));

    let run = nbctl_on_pty(
        &config,
        &["passwd"],
        &[("New password:", ""), ("Retype new password:", "")],
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("empty password refused"),
        "{}",
        run.stderr
    );
    assert!(hash_in(&config).unwrap().verify("tty-secret"));
}

/// Changing the password on a running daemon: it reloads, every existing
/// session ends, the old password stops working and the new one works.
#[tokio::test(flavor = "multi_thread")]
async fn new_password_ends_every_session() {
    let n = Notebookd::start();
    let alice = n.logged_in().await;
    let bob = n.logged_in().await;
    assert_eq!(alice.get("api/contents").await.status(), 200);
    assert_eq!(bob.get("api/contents").await.status(), 200);

    let config = n.config_path();
    let out = tokio::task::spawn_blocking(move || {
        nbctl_stdin(&config, &["passwd", "--stdin"], "a brand new one\n")
    })
    .await
    .unwrap();
    out.expect(
        0,
        &[
            "notebookd reloaded",
            "password changed: every session ended",
        ],
    );

    for browser in [&alice, &bob] {
        let r = browser.get("api/contents").await;
        assert!(
            r.status() == 401 || r.status() == 403 || r.status().is_redirection(),
            "an old session still works: {}",
            r.status()
        );
    }
    let fresh = n.client();
    let old = fresh
        .client
        .post(n.url("login"))
        .form(&[("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401, "the old password still works");
    let new = fresh
        .client
        .post(n.url("login"))
        .form(&[("password", "a brand new one")])
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 302);
    assert_eq!(fresh.get("api/contents").await.status(), 200);
    n.wait_log(
        "password changed: every session ended",
        Duration::from_secs(5),
    );
}
