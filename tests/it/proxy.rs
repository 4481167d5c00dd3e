//! End to end through notebookd over TLS: login, the session check, the
//! REST API, a kernel over the proxied WebSocket, big files, Jupyter's XSRF.

use reqwest::Method;
use serde_json::json;

use crate::support::kernel;
use crate::support::{Notebookd, Options};

#[tokio::test(flavor = "multi_thread")]
async fn login_with_right_and_wrong_password() {
    let n = Notebookd::start();
    let b = n.client();

    let page = b
        .client
        .get(n.url("login?next=%2Ftree"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("name=\"password\"") && html.contains("value=\"/tree\""),
        "{html}"
    );

    let wrong = b
        .client
        .post(n.url("login"))
        .form(&[("password", "nope"), ("next", "/tree")])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(wrong.text().await.unwrap().contains("Wrong password"));
    assert_eq!(b.get("api/contents").await.status(), 401);

    let right = b
        .client
        .post(n.url("login"))
        .form(&[("password", crate::support::PASSWORD), ("next", "/tree")])
        .send()
        .await
        .unwrap();
    assert_eq!(right.status(), 302);
    assert_eq!(right.headers()["location"], "/tree");
    let cookie = right.headers()["set-cookie"].to_str().unwrap().to_string();
    for attr in [
        "notebookd-session=",
        "HttpOnly",
        "Secure",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=",
    ] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    let tree = b.get_page("tree").await;
    assert_eq!(tree.status(), 200);
    assert!(
        tree.text().await.unwrap().contains("<html"),
        "Jupyter's page"
    );

    // The session cookie never reaches Jupyter; the login redirect never leaves the site.
    let evil = b
        .client
        .post(n.url("login"))
        .form(&[
            ("password", crate::support::PASSWORD),
            ("next", "//evil.example/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(evil.headers()["location"], "/");

    let out = b.get("logout").await;
    assert_eq!(out.status(), 200);
    assert!(
        out.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // Jupyter's API answers are cacheable; what the browser kept goes too.
    assert_eq!(out.headers()["clear-site-data"], "\"cache\"");
    assert_eq!(b.get("api/contents").await.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_a_copied_cookie() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let stolen = b.cookie("notebookd-session").unwrap();
    // Another site cannot log the user out (e.g. with an <img src=".../logout">).
    let forged = b
        .client
        .get(n.url("logout"))
        .header("Sec-Fetch-Site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    assert_eq!(b.get("api/contents").await.status(), 200, "still logged in");
    assert_eq!(b.get("logout").await.status(), 200);
    let replay = n
        .client()
        .client
        .get(n.url("api/contents"))
        .header("Cookie", format!("notebookd-session={stolen}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 401);
}

#[tokio::test(flavor = "multi_thread")]
async fn unauthenticated_requests_are_refused() {
    let n = Notebookd::start();
    let b = n.client();
    let api = b.get("api/contents").await;
    assert_eq!(api.status(), 401);
    assert_eq!(api.headers()["content-type"], "application/json");

    let tree = b.get_page("tree").await;
    assert_eq!(tree.status(), 302);
    assert_eq!(tree.headers()["location"], "/login?next=%2Ftree");

    for forged in [
        "x",
        "1.2.3.abc",
        "6b047447.6b047447.a170b505d3762cb96fc1241b.HmekhSptXYQvTpeANuZNRCaqiko08MzI_a42kCmft9w",
    ] {
        let r = b
            .client
            .get(n.url("api/contents"))
            .header("Cookie", format!("notebookd-session={forged}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{forged}");
    }

    let err = kernel::execute(&n.ws_url("api/kernels/x/channels"), "", &b.origin, "1")
        .await
        .unwrap_err();
    assert!(err.contains("HTTP 401"), "{err}");

    // The health endpoint and the login page's stylesheet are the only open paths.
    assert_eq!(b.get("_notebookd/health").await.status(), 200);
    assert_eq!(b.get("_notebookd/static/notebookd.css").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn notebook_and_kernel_over_the_proxied_websocket() {
    let n = Notebookd::start();
    let b = n.logged_in().await;

    let nb = json!({"type": "notebook", "content": {
        "cells": [{"cell_type": "code", "source": "print(6*7)", "metadata": {}, "outputs": [], "execution_count": null}],
        "metadata": {}, "nbformat": 4, "nbformat_minor": 5}});
    let created = b
        .send_json(Method::PUT, "api/contents/test.ipynb", &nb)
        .await;
    assert_eq!(created.status(), 201, "{:?}", created.text().await);
    assert!(n.root_dir().join("test.ipynb").exists());

    let kernel = b
        .send_json(Method::POST, "api/kernels", &json!({"name": "python3"}))
        .await;
    assert_eq!(kernel.status(), 201);
    let id = kernel.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let run = kernel::execute(
        &n.ws_url(&format!(
            "api/kernels/{id}/channels?session_id=notebookd-test"
        )),
        &b.cookie_header(),
        &b.origin,
        "print(6*7)",
    )
    .await
    .unwrap();
    assert_eq!(run.stdout, "42\n", "{run:?}");
    assert_eq!(run.status, "ok");

    let del = b
        .send_json(Method::DELETE, &format!("api/kernels/{id}"), &json!({}))
        .await;
    assert_eq!(del.status(), 204);
}

#[tokio::test(flavor = "multi_thread")]
async fn jupyter_xsrf_protection_stays_on() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let no_token = b
        .client
        .post(n.url("api/contents"))
        .json(&json!({"type": "notebook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        no_token.status(),
        403,
        "a POST without _xsrf must be refused by Jupyter"
    );
    let with_token = b
        .send_json(Method::POST, "api/contents", &json!({"type": "notebook"}))
        .await;
    assert_eq!(with_token.status(), 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_mib_upload_and_download_round_trip() {
    use base64::Engine;
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let data: Vec<u8> = (0..50u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let body = json!({"type": "file", "format": "base64",
        "content": base64::engine::general_purpose::STANDARD.encode(&data)});
    let put = b
        .send_json(Method::PUT, "api/contents/big.bin", &body)
        .await;
    assert_eq!(put.status(), 201, "{:?}", put.text().await);
    assert_eq!(
        std::fs::read(n.root_dir().join("big.bin")).unwrap().len(),
        data.len()
    );

    // A GET of /files/ needs a same-site Referer (Jupyter's XSSI check), as a browser sends it.
    let bare = b.get("files/big.bin").await;
    assert_eq!(bare.status(), 403, "Jupyter's Referer check is on");
    let got = b
        .client
        .get(b.url("files/big.bin"))
        .header("Referer", b.url("tree"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let bytes = got.bytes().await.unwrap();
    assert_eq!(bytes.len(), data.len());
    assert!(bytes == data, "downloaded bytes differ");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_password_only_the_setup_page_is_served() {
    let n = Notebookd::start_with(Options {
        password_hash: None,
        ..Options::default()
    });
    let b = n.client();
    for rel in ["", "tree", "api/contents", "login"] {
        let r = b.get_page(rel).await;
        assert_eq!(r.status(), 503, "{rel}");
        assert!(
            r.text().await.unwrap().contains("sudo nbctl passwd"),
            "{rel}"
        );
    }
    let login = b
        .client
        .post(n.url("login"))
        .form(&[("password", "")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_when_tls_is_off() {
    let n = Notebookd::start_with(Options {
        tls: false,
        ..Options::default()
    });
    assert!(n.log_text().contains("TLS is off"), "{}", n.log_text());
    let b = n.logged_in().await;
    assert_eq!(b.get("api/contents").await.status(), 200);
    let cookie = b.cookie("notebookd-session");
    assert!(cookie.is_some(), "a non-Secure cookie over plain HTTP");
}

/// A kernel output far larger than what one read of the WebSocket splice
/// takes (64 KiB) arrives whole and in order: the bytes the client does not
/// take at once wait in the splice, and none is lost or repeated.
#[tokio::test(flavor = "multi_thread")]
async fn large_kernel_output_crosses_the_websocket_splice_intact() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let code = "print(''.join(f'{i:07d}' for i in range(300000)))";
    let run = b
        .run_in_new_kernel(code, crate::support::rustls_client())
        .await;
    assert_eq!(run.status, "ok", "{:?}", run.status);
    let expected: String = (0..300_000).map(|i| format!("{i:07}")).collect();
    let got = run.stdout.trim_end_matches('\n');
    assert_eq!(got.len(), expected.len(), "2.1 MB of output, whole");
    assert!(got == expected, "the output arrived in order");
}
