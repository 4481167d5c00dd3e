//! Password-hash compatibility with the vectors made by the real
//! Jupyter/IPython code (tests/data/password-hashes.json).

use std::path::Path;

use notebookd::auth::password::PasswordHash;
use notebookd::config::Config;
use serde_json::Value;

use crate::support::{Notebookd, Options, repo_root};

fn vectors() -> Value {
    let text =
        std::fs::read_to_string(repo_root().join("tests/data/password-hashes.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn every_vector_verifies_and_its_wrong_password_does_not() {
    let v = vectors();
    let list = v["vectors"].as_array().unwrap();
    assert!(list.len() >= 19);
    for vec in list {
        let hash: PasswordHash = vec["hash"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {e}", vec["hash"]));
        assert!(
            hash.verify(vec["password"].as_str().unwrap()),
            "{} rejects its password",
            vec["hash"]
        );
        assert!(
            !hash.verify(vec["wrong"].as_str().unwrap()),
            "{} accepts the wrong password",
            vec["hash"]
        );
    }
}

#[test]
fn malformed_hashes_are_config_errors() {
    let v = vectors();
    for bad in v["malformed"].as_array().unwrap() {
        let bad = bad.as_str().unwrap();
        assert!(bad.parse::<PasswordHash>().is_err(), "{bad} parsed");
        let text = format!(
            "[auth]\npassword_hash = {}\n",
            toml::Value::String(bad.into())
        );
        let err = Config::parse(Path::new("/etc/notebook/notebook.toml"), &text)
            .expect_err(bad)
            .to_string();
        assert!(
            err.contains("/etc/notebook/notebook.toml:2:17: auth.password_hash:"),
            "{bad}: {err}"
        );
        assert!(err.contains("nbctl passwd"), "{bad}: {err}");
    }
}

/// A Jupyter argon2 hash works for logging in to the real daemon (verified off the async threads).
#[tokio::test(flavor = "multi_thread")]
async fn login_with_a_jupyter_argon2_hash() {
    let v = vectors();
    let vec = v["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["hash"].as_str().unwrap().starts_with("argon2:"))
        .unwrap()
        .clone();
    let n = Notebookd::start_with(Options {
        password_hash: Some(vec["hash"].as_str().unwrap().into()),
        ..Options::default()
    });
    let b = n.client();
    let wrong = b
        .client
        .post(n.url("login"))
        .form(&[("password", vec["wrong"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let right = b
        .client
        .post(n.url("login"))
        .form(&[("password", vec["password"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 302);
    assert_eq!(b.get("api/contents").await.status(), 200);
}
