//! `nbctl embed allow|deny|list` and the running daemon's frame-ancestors.

use std::time::Duration;

use notebookd::config::Config;

use super::{nbctl, shipped_config};
use crate::support::Notebookd;

#[test]
fn allow_deny_list() {
    let (_dir, config) = shipped_config();
    let shipped = std::fs::read_to_string(&config).unwrap();
    nbctl(&config, &["embed", "list"]).expect(0, &["no site may embed"]);
    nbctl(&config, &["embed", "allow", "https://My.Example.com"]).expect(
        0,
        &[
            "allowed to embed the notebook: https://my.example.com",
            "notebookd is not running",
        ],
    );
    nbctl(&config, &["embed", "allow", "https://*.example.org:8443"]).expect(0, &[]);
    nbctl(&config, &["embed", "allow", "https://my.example.com"])
        .expect(0, &["already allowed", "nothing changed"]);
    let out = nbctl(&config, &["embed", "list"]);
    assert_eq!(
        out.stdout,
        "https://my.example.com\nhttps://*.example.org:8443\n"
    );
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("#frame_ancestors = []\nframe_ancestors = [\"https://my.example.com\", \"https://*.example.org:8443\"]\n"),
        "{text}"
    );
    assert_eq!(
        Config::load(&config).unwrap().embed.frame_ancestors.len(),
        2
    );

    nbctl(&config, &["embed", "deny", "https://nope.example.com"]).expect(
        1,
        &[
            "not in embed.frame_ancestors",
            "https://my.example.com",
            "nothing changed",
        ],
    );
    nbctl(&config, &["embed", "deny", "HTTPS://MY.EXAMPLE.COM"])
        .expect(0, &["https://*.example.org:8443"]);
    nbctl(&config, &["embed", "deny", "https://*.example.org:8443"])
        .expect(0, &["no site may embed"]);
    let text = std::fs::read_to_string(&config).unwrap();
    assert_eq!(
        text,
        shipped.replace(
            "#frame_ancestors = []\n",
            "#frame_ancestors = []\nframe_ancestors = []\n"
        )
    );
    nbctl(&config, &["config", "unset", "embed.frame_ancestors"]).expect(0, &[]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), shipped);
}

#[test]
fn bad_origins_are_refused_with_the_accepted_forms() {
    let (_dir, config) = shipped_config();
    let before = std::fs::read_to_string(&config).unwrap();
    for bad in [
        "*",
        "'unsafe-inline'",
        "'self'",
        "my.example.com",
        "https://my.example.com/path",
        "https://my.example.com?q=1",
        "https://my.example.com; script-src *",
        "https://a.example.com https://b.example.com",
        "https://my.example.com:99999",
        "ftp://my.example.com",
        "https://*",
        "javascript:alert(1)",
    ] {
        nbctl(&config, &["embed", "allow", bad]).expect(
            2,
            &[
                "not an origin",
                "https://my.example.com",
                "https://*.example.com",
            ],
        );
        nbctl(&config, &["embed", "deny", bad]).expect(2, &["not an origin"]);
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            before,
            "{bad} changed the file"
        );
    }
}

/// A running daemon reloads and frames-ancestors its pages accordingly.
#[tokio::test(flavor = "multi_thread")]
async fn allow_reloads_the_daemon() {
    let n = Notebookd::start();
    async fn csp(n: &Notebookd) -> String {
        n.client()
            .get("login")
            .await
            .headers()
            .get("content-security-policy")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    let before = csp(&n).await;
    assert!(before.contains("frame-ancestors 'self'"), "{before}");
    assert!(!before.contains("site.example"), "{before}");
    let config = n.config_path();
    let out = tokio::task::spawn_blocking(move || {
        nbctl(&config, &["embed", "allow", "https://site.example"])
    })
    .await
    .unwrap();
    out.expect(0, &["notebookd reloaded", "configuration reloaded"]);
    let allowed = csp(&n).await;
    assert!(
        allowed.contains("frame-ancestors 'self' https://site.example"),
        "{allowed}"
    );
    let config = n.config_path();
    tokio::task::spawn_blocking(move || nbctl(&config, &["embed", "deny", "https://site.example"]))
        .await
        .unwrap()
        .expect(0, &["notebookd reloaded"]);
    let denied = csp(&n).await;
    assert!(!denied.contains("site.example"), "{denied}");
    n.wait_log("configuration reloaded", Duration::from_secs(5));
}
