//! `http://` typed for notebookd's TLS port: a raw plain-HTTP request gets
//! a plain-HTTP answer (a redirect to the same address over https, or a
//! one-line hint), never TLS bytes that browsers call an invalid response,
//! and TLS clients on the same port are served as before.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::Notebookd;

/// Sends `request` as is and reads the whole answer (the server closes).
fn exchange(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    s.write_all(request.as_bytes()).expect("send");
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .expect("read until the server closes");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_on_the_tls_port_is_sent_to_https() {
    let n = Notebookd::start();
    let port = n.port;

    let answer = exchange(
        port,
        &format!("GET /tree?x=1 HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n"),
    );
    assert!(answer.starts_with("HTTP/1.1 301 "), "{answer}");
    let location = format!("location: https://localhost:{port}/tree?x=1\r\n");
    assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
    assert!(
        !answer
            .to_ascii_lowercase()
            .contains("strict-transport-security"),
        "{answer}"
    );

    // What curl and browsers see: a response they can show.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("client");
    let resp = client
        .get(format!("http://localhost:{port}/login"))
        .send()
        .await
        .expect("plain GET");
    assert_eq!(resp.status(), 301);
    assert_eq!(
        resp.headers()["location"],
        format!("https://localhost:{port}/login").as_str()
    );

    // No Host to redirect to, or a form post: a one-line hint.
    let answer = exchange(port, "GET / HTTP/1.0\r\n\r\n");
    assert!(answer.starts_with("HTTP/1.0 400 "), "{answer}");
    assert!(answer.contains("This port speaks HTTPS"), "{answer}");
    let answer = exchange(
        port,
        &format!("POST /login HTTP/1.1\r\nHost: localhost:{port}\r\nContent-Length: 3\r\n\r\nabc"),
    );
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains(&format!("use https://localhost:{port}/")),
        "{answer}"
    );

    // The same port still speaks TLS to TLS clients.
    let resp = n.client().get("login").await;
    assert_eq!(resp.status(), 200);
}
