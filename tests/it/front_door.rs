//! Scripted attacks on the front door, over real TLS (raw bytes where an
//! HTTP client would tidy the request up): open redirects, path tricks, Host
//! games, brute force, forged and expired cookies, oversized and slow
//! requests, too many connections, cross-site writes; and the headers every
//! response carries. Each asserts the refusal and its status.

use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::support::{Notebookd, Options, PASSWORD, rustls_client};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection to notebookd that sends exactly the bytes it is given.
struct Raw {
    io: Box<dyn Stream>,
}

impl Raw {
    async fn connect(n: &Notebookd) -> Raw {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", n.port))
            .await
            .expect("connect");
        if !n.opts.tls {
            return Raw { io: Box::new(tcp) };
        }
        let connector = tokio_rustls::TlsConnector::from(rustls_client());
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let tls = connector.connect(name, tcp).await.expect("TLS handshake");
        Raw { io: Box::new(tls) }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.io.write_all(bytes).await.expect("write");
        self.io.flush().await.expect("flush");
    }

    /// Everything until the server closes (or `limit` passes: then it is a failure).
    async fn read_to_end(&mut self, limit: Duration) -> String {
        let mut out = Vec::new();
        let read = tokio::time::timeout(limit, async {
            let mut buf = [0u8; 8192];
            loop {
                match self.io.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(
            read.is_ok(),
            "the server kept the connection open for {limit:?}; got so far: {}",
            String::from_utf8_lossy(&out)
        );
        String::from_utf8_lossy(&out).into_owned()
    }

    /// One response with a Content-Length body, leaving the connection open.
    async fn read_response(&mut self) -> Option<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                if out.len() >= end + 4 + len {
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
            }
            match tokio::time::timeout(Duration::from_secs(10), self.io.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                Err(_) => panic!("no response within 10s"),
            }
        }
    }
}

/// The status code of a raw response.
fn status(resp: &str) -> u16 {
    resp.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {resp:?}"))
}

/// Sends `request` on a fresh connection and returns the whole response.
async fn raw(n: &Notebookd, request: &str) -> String {
    let mut c = Raw::connect(n).await;
    c.send(request.as_bytes()).await;
    c.read_to_end(Duration::from_secs(15)).await
}

fn get(target: &str, extra: &str) -> String {
    format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{extra}Connection: close\r\n\r\n")
}

/// Neither the password nor these cookie values are in notebookd's log.
fn assert_log_clean(n: &Notebookd, secrets: &[String]) {
    let log = n.log_text();
    assert!(!log.contains(PASSWORD), "the password is in the log");
    for s in secrets {
        assert!(!log.contains(s.as_str()), "a secret is in the log: {s}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn open_redirects_are_refused() {
    let n = Notebookd::start_with(Options {
        base_url: "/notebook/".into(),
        ..Options::default()
    });
    let evil = [
        "//evil.example/",
        "///evil.example/",
        "/\\evil.example/",
        "\\\\evil.example",
        "https:evil.example",
        "https://evil.example/",
        "http:/\\evil.example",
        "javascript:alert(1)",
        "/notebook/../evil",
        "/notebook//evil.example",
        "/notebook/%2F%2Fevil.example",
        "/notebook/%252F%252Fevil.example",
        "%2F%2Fevil.example",
        "/notebook/%5Cevil.example",
        "/notebook/\r\nLocation: https://evil.example/",
        "/notebook/%0d%0aSet-Cookie:%20x=1",
        "/notebook/\tx",
        "/other/",
        "",
    ];
    let b = n.logged_in().await;
    let session = b.cookie("notebookd-session").unwrap();
    for next in evil {
        // After a login.
        let r = n
            .client()
            .client
            .post(n.url("login"))
            .form(&[("password", PASSWORD), ("next", next)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{next:?}");
        assert_eq!(r.headers()["location"], "/notebook/", "next={next:?}");
        // Already logged in: the login page redirects at once.
        let q: String = form_urlencoded::byte_serialize(next.as_bytes()).collect();
        let r = b.get(&format!("login?next={q}")).await;
        assert_eq!(r.status(), 302, "{next:?}");
        assert_eq!(r.headers()["location"], "/notebook/", "next={next:?}");
        // The form carries the safe value.
        let page = n
            .client()
            .get(&format!("login?next={q}"))
            .await
            .text()
            .await
            .unwrap();
        assert!(
            page.contains("name=\"next\" value=\"/notebook/\""),
            "{next:?}: {page}"
        );
    }
    // Control: a path on this site under base_url is kept, query and all.
    let r = n
        .client()
        .client
        .post(n.url("login"))
        .form(&[("password", PASSWORD), ("next", "/notebook/tree?x=1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/notebook/tree?x=1");
    assert_log_clean(&n, &[session]);
}

#[tokio::test(flavor = "multi_thread")]
async fn path_tricks_never_reach_jupyter() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let session = b.cookie("notebookd-session").unwrap();
    let cookie = format!("Cookie: notebookd-session={session}\r\n");
    let port = n.port;
    // (request target, extra headers, status) for requests WITHOUT a session.
    let cases: Vec<(String, String, u16)> = vec![
        ("/login/../api/contents".into(), String::new(), 400),
        ("/%2e%2e/api/contents".into(), String::new(), 400),
        ("/login/%2e%2e/api/contents".into(), String::new(), 400),
        ("/login/%2E%2E%2Fapi%2Fcontents".into(), String::new(), 400),
        ("/api%2fcontents".into(), String::new(), 400),
        ("/api%2Fcontents".into(), String::new(), 400),
        ("//api/contents".into(), String::new(), 400),
        ("/./api/contents".into(), String::new(), 400),
        ("/login;/../api/contents".into(), String::new(), 400),
        (
            "/_notebookd/health/../../api/contents".into(),
            String::new(),
            400,
        ),
        ("/%252e%252e/api/contents".into(), String::new(), 400),
        ("/login/%252e%252e/api/contents".into(), String::new(), 400),
        ("/api/contents%00".into(), String::new(), 400),
        ("/api/contents/%5c..%5c..%5cetc".into(), String::new(), 400),
        ("/api\\contents".into(), String::new(), 400),
        // `;` is an ordinary character: an open path with it is not open.
        ("/login;x".into(), String::new(), 401),
        ("/api;/contents".into(), String::new(), 401),
        ("/_notebookd/health;/api".into(), String::new(), 401),
        // Absolute-form and other targets that are not a path.
        (
            format!("https://localhost:{port}/api/contents"),
            String::new(),
            400,
        ),
        (
            "http://evil.example/api/contents".into(),
            String::new(),
            400,
        ),
        ("*".into(), String::new(), 400),
        // Controls.
        ("/api/contents".into(), String::new(), 401),
        ("/_notebookd/health".into(), String::new(), 200),
    ];
    for (target, extra, want) in &cases {
        let resp = raw(&n, &get(target, extra)).await;
        assert_eq!(status(&resp), *want, "GET {target}: {resp}");
        assert!(
            !resp.contains("\"content\"") && !resp.to_lowercase().contains("tornado"),
            "GET {target} reached Jupyter: {resp}"
        );
    }
    // The same tricks with a valid session are refused just the same.
    for target in [
        "/login/../api/contents",
        "/%2e%2e/api/contents",
        "//api/contents",
    ] {
        let resp = raw(&n, &get(target, &cookie)).await;
        assert_eq!(status(&resp), 400, "GET {target} with a session: {resp}");
    }
    // Host games.
    let host_cases = [
        (
            "GET /api/contents HTTP/1.1\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /api/contents HTTP/1.1\r\nHost: localhost\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /api/contents HTTP/1.1\r\nHost: user@evil.example\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /api/contents HTTP/1.1\r\nHost: localhost/x\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            "GET /api/contents HTTP/1.0\r\nConnection: close\r\n\r\n",
            400,
        ),
        // Another name for this server changes nothing about who is logged in.
        (
            "GET /api/contents HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
            401,
        ),
        (
            "CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\nConnection: close\r\n\r\n",
            400,
        ),
    ];
    for (request, want) in host_cases {
        let resp = raw(&n, request).await;
        assert_eq!(status(&resp), want, "{request:?}: {resp}");
    }
    // With the session: a file name with `;` is served (it is passed through, not cut).
    let put = b
        .send_json(
            Method::PUT,
            "api/contents/a%3Bb.txt",
            &json!({"type": "file", "format": "text", "content": "semicolon"}),
        )
        .await;
    assert_eq!(put.status(), 201);
    let resp = raw(
        &n,
        &get(
            "/files/a;b.txt",
            // Jupyter compares the Referer's host with the Host header (here without a port).
            &format!("{cookie}Referer: https://localhost/tree\r\n"),
        ),
    )
    .await;
    assert_eq!(status(&resp), 200, "{resp}");
    assert!(resp.ends_with("semicolon"), "{resp}");
    assert_log_clean(&n, &[session]);
}

#[tokio::test(flavor = "multi_thread")]
async fn brute_force_gets_429_with_retry_after() {
    let n = Notebookd::start_with(Options {
        settings: vec![
            ("auth", "login_attempts = 5".into()),
            ("auth", "login_window = \"4s\"".into()),
        ],
        ..Options::default()
    });
    let attempt = |password: &'static str| {
        let c = n.client();
        let url = n.url("login");
        async move {
            c.client
                .post(url)
                .form(&[("password", password), ("next", "/tree")])
                .send()
                .await
                .unwrap()
        }
    };
    // Twenty guesses at once: exactly five are checked, the rest are refused.
    let guesses: Vec<_> = (0..20).map(|_| tokio::spawn(attempt("guess"))).collect();
    let mut statuses = Vec::new();
    let mut retry_after = Vec::new();
    for g in guesses {
        let r = g.await.unwrap();
        statuses.push(r.status().as_u16());
        if let Some(v) = r.headers().get("retry-after") {
            retry_after.push(v.to_str().unwrap().parse::<u64>().unwrap());
        }
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        5,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        15,
        "{statuses:?}"
    );
    assert_eq!(retry_after.len(), 15);
    assert!(
        retry_after.iter().all(|s| (1..=4).contains(s)),
        "{retry_after:?}"
    );
    // The right password is refused too until the window ends.
    let r = attempt(PASSWORD).await;
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The page tells the same wait as the header.
    let page = r.text().await.unwrap();
    let words = if wait == 1 {
        "1 second".to_string()
    } else {
        format!("{wait} seconds")
    };
    assert!(page.contains(&format!("try again in {words}.")), "{page}");
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(300)).await;
    let r = attempt(PASSWORD).await;
    assert_eq!(
        r.status(),
        302,
        "after Retry-After the right password works"
    );
    n.wait_log("login refused: too many attempts", Duration::from_secs(30));
    assert_log_clean(&n, &[]);
}

/// Sends SIGHUP after rewriting the config, and waits for the `n`th reload message.
fn reload(n: &Notebookd, times: usize) {
    n.write_config();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(n.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        let done = n
            .log()
            .iter()
            .filter(|l| l.contains("configuration reloaded"))
            .count();
        if done >= times {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no reload #{times}; log:\n{}", n.log_text());
}

#[tokio::test(flavor = "multi_thread")]
async fn trusted_proxies_and_base_url() {
    // Plain HTTP behind a proxy on this machine, on a sub-path.
    let opts = |trusted: bool| Options {
        tls: false,
        base_url: "/notebook/".into(),
        settings: [
            ("auth", "login_attempts = 2".to_string()),
            ("auth", "login_window = \"1m\"".to_string()),
        ]
        .into_iter()
        .chain(trusted.then(|| ("server", "trusted_proxies = [\"127.0.0.1\"]".to_string())))
        .collect(),
        ..Options::default()
    };
    let guess = |n: &Notebookd, forwarded_for: &'static str, password: &'static str| {
        let c = n.client();
        let url = n.url("login");
        async move {
            c.client
                .post(url)
                .header("X-Forwarded-For", forwarded_for)
                .header("X-Forwarded-Proto", "https")
                // The public name the proxy passes on (HSTS is for DNS names only).
                .header("Host", "notebook.example.com")
                .form(&[("password", password), ("next", "/notebook/tree")])
                .send()
                .await
                .unwrap()
        }
    };

    let trusted = Notebookd::start_with(opts(true));
    for _ in 0..2 {
        assert_eq!(guess(&trusted, "203.0.113.1", "nope").await.status(), 401);
    }
    assert_eq!(guess(&trusted, "203.0.113.1", "nope").await.status(), 429);
    // Another client behind the same proxy has its own count.
    assert_eq!(guess(&trusted, "203.0.113.2", "nope").await.status(), 401);
    // The proxy's own hop is skipped: the rightmost untrusted address counts.
    assert_eq!(
        guess(&trusted, "198.51.100.9, 203.0.113.1, 127.0.0.1", "nope")
            .await
            .status(),
        429
    );
    trusted.wait_log("client=203.0.113.1", Duration::from_secs(30));
    // The browser reached the proxy over HTTPS: Secure cookie, HSTS, Path = base_url.
    let ok = guess(&trusted, "203.0.113.3", PASSWORD).await;
    assert_eq!(ok.status(), 302);
    assert_eq!(ok.headers()["location"], "/notebook/tree");
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("Secure") && cookie.contains("Path=/notebook/"),
        "{cookie}"
    );
    assert!(ok.headers().contains_key("strict-transport-security"));

    let untrusted = Notebookd::start_with(opts(false));
    assert_eq!(guess(&untrusted, "203.0.113.1", "nope").await.status(), 401);
    assert_eq!(guess(&untrusted, "203.0.113.2", "nope").await.status(), 401);
    // X-Forwarded-For from an untrusted peer is ignored: both were 127.0.0.1.
    assert_eq!(
        guess(&untrusted, "203.0.113.3", PASSWORD).await.status(),
        429
    );
    untrusted.wait_log("client=127.0.0.1", Duration::from_secs(30));
    assert!(!untrusted.log_text().contains("203.0.113"));
    // Nor is X-Forwarded-Proto: over plain HTTP no Secure cookie and no HSTS.
    let b = untrusted.client();
    let page = b.get("login").await;
    assert!(!page.headers().contains_key("strict-transport-security"));

    // base_url everywhere: redirects, login next, cookie path, logout.
    let n = &trusted;
    let b = n.client();
    let bare = b
        .client
        .get(format!("http://localhost:{}/notebook", n.port))
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 302);
    assert_eq!(bare.headers()["location"], "/notebook/");
    let tree = b.get_page("tree").await;
    assert_eq!(tree.status(), 302);
    assert_eq!(
        tree.headers()["location"],
        "/notebook/login?next=%2Fnotebook%2Ftree"
    );
    let login_page = b
        .get("login?next=%2Fnotebook%2Ftree")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        login_page.contains("action=\"/notebook/login\""),
        "{login_page}"
    );
    assert!(
        login_page.contains("value=\"/notebook/tree\""),
        "{login_page}"
    );
    assert!(login_page.contains("href=\"/notebook/_notebookd/static/notebookd.css\""));
    assert_eq!(
        b.client
            .get(format!("http://localhost:{}/tree", n.port))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "nothing outside base_url"
    );
    let logged = n.logged_in().await;
    assert_eq!(logged.get("api/contents").await.status(), 200);
    let out = logged.get("logout").await;
    let cleared = out.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.contains("Max-Age=0") && cleared.contains("Path=/notebook/"),
        "{cleared}"
    );
    // Jupyter's own cookie lives under base_url too.
    let xsrf_page = n.logged_in().await.get_page("tree").await;
    let xsrf = xsrf_page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|c| c.starts_with("_xsrf="))
        .expect("Jupyter sets _xsrf");
    assert!(
        xsrf.contains("Path=/notebook/") && xsrf.contains("SameSite=Lax"),
        "{xsrf}"
    );
    assert_log_clean(&trusted, &[]);
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_expired_and_revoked_sessions_are_refused() {
    let mut n = Notebookd::start_with(Options {
        settings: vec![
            ("auth", "session_idle_timeout = \"3s\"".into()),
            ("auth", "session_lifetime = \"7s\"".into()),
        ],
        ..Options::default()
    });
    let other = Notebookd::start();
    let foreign = other.logged_in().await.cookie("notebookd-session").unwrap();
    drop(other);
    let b = n.logged_in().await;
    let good = b.cookie("notebookd-session").unwrap();
    let with = |value: String| {
        let c = n.client();
        let url = n.url("api/contents");
        async move {
            c.client
                .get(url)
                .header("Cookie", format!("notebookd-session={value}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(with(good.clone()).await, 200);
    let (payload, mac) = good.rsplit_once('.').unwrap();
    let mut flipped = mac.to_string().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    // Another issue time under the same MAC, a MAC from another server, cut short, garbage.
    let (issued, rest) = payload.split_once('.').unwrap();
    let older = format!(
        "{:x}.{rest}.{mac}",
        u64::from_str_radix(issued, 16).unwrap() - 1
    );
    for forged in [
        format!("{payload}.{}", String::from_utf8(flipped).unwrap()),
        older,
        foreign,
        good[..good.len() - 3].to_string(),
        payload.to_string(),
        "x".into(),
        String::new(),
    ] {
        assert_eq!(with(forged.clone()).await, 401, "{forged}");
    }
    // Idle: nothing for longer than session_idle_timeout.
    tokio::time::sleep(Duration::from_millis(3300)).await;
    assert_eq!(b.get("api/contents").await.status(), 401, "idle session");
    // Absolute: kept busy, it still ends at session_lifetime.
    let b = n.logged_in().await;
    let start = std::time::Instant::now();
    let mut ended = None;
    while start.elapsed() < Duration::from_secs(10) {
        if b.get("api/contents").await.status() == 401 {
            ended = Some(start.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ended = ended.expect("the session outlived session_lifetime");
    assert!(ended >= Duration::from_secs(6), "ended after {ended:?}");

    // A new password ends every session (reload).
    let b = n.logged_in().await;
    assert_eq!(b.get("api/contents").await.status(), 200);
    n.opts.password_hash =
        Some("sha1:b55e52fb1d4a:a9958bcd1448241def76274ddde5784197ffa5de".into());
    reload(&n, 1);
    assert_eq!(
        b.get("api/contents").await.status(),
        401,
        "after a password change"
    );
    // A new session secret does too.
    n.opts.password_hash = Some(crate::support::PASSWORD_HASH.into());
    reload(&n, 2);
    let b = n.logged_in().await;
    assert_eq!(b.get("api/contents").await.status(), 200);
    std::fs::remove_file(n.state_dir().join("session.key")).unwrap();
    reload(&n, 3);
    assert_eq!(
        b.get("api/contents").await.status(),
        401,
        "after a new secret"
    );
    n.wait_log("session secret changed", Duration::from_secs(30));
    assert_log_clean(&n, &[good]);
    n.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_requests_get_a_clear_4xx() {
    let n = Notebookd::start_with(Options {
        settings: vec![
            ("limits", "max_header_bytes = 8192".into()),
            ("limits", "max_headers = 20".into()),
            ("limits", "max_uri_bytes = 512".into()),
        ],
        ..Options::default()
    });
    let big_header = format!("X-Big: {}\r\n", "a".repeat(9000));
    assert_eq!(status(&raw(&n, &get("/login", &big_header)).await), 431);
    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(status(&raw(&n, &get("/login", &many)).await), 431);
    let long = format!("/login?next=/{}", "a".repeat(600));
    let resp = raw(&n, &get(&long, "")).await;
    assert_eq!(status(&resp), 414, "{resp}");
    let longer = format!("/login?next=/{}", "a".repeat(10_000));
    let resp = raw(&n, &get(&longer, "")).await;
    assert!([414, 431].contains(&status(&resp)), "{resp}");
    // Controls: within the limits.
    let fine: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(
        status(&raw(&n, &get("/login?next=/tree", &fine)).await),
        200
    );
    // A login form is small.
    let form = format!("password={}", "a".repeat(20_000));
    let resp = raw(
        &n,
        &format!(
            "POST /login HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
            form.len()
        ),
    )
    .await;
    assert_eq!(status(&resp), 413, "{resp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_and_idle_connections_are_closed() {
    let n = Notebookd::start_with(Options {
        settings: vec![
            ("limits", "header_read_timeout = \"1s\"".into()),
            ("limits", "keep_alive_timeout = \"3s\"".into()),
        ],
        ..Options::default()
    });
    // Slowloris: a request head that never ends gets a 408 and the door.
    let mut c = Raw::connect(&n).await;
    c.send(b"GET /login HTTP/1.1\r\nHost: localhost\r\n").await;
    let resp = c.read_to_end(Duration::from_secs(5)).await;
    assert_eq!(status(&resp), 408, "{resp}");
    // Dribbling bytes does not buy more time: the clock runs from the first byte.
    let mut c = Raw::connect(&n).await;
    c.send(b"GET /login HTTP/1.1\r\n").await;
    let started = std::time::Instant::now();
    let mut got = String::new();
    for i in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if c.io
            .write_all(format!("X-{i}: v\r\n").as_bytes())
            .await
            .is_err()
        {
            break;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok(k)) = tokio::time::timeout(Duration::from_millis(1), c.io.read(&mut buf)).await
        {
            got.push_str(&String::from_utf8_lossy(&buf[..k]));
            break;
        }
    }
    got.push_str(&c.read_to_end(Duration::from_secs(5)).await);
    assert_eq!(status(&got), 408, "{got}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // A connection that never sends a byte is closed without a word.
    let mut c = Raw::connect(&n).await;
    assert_eq!(c.read_to_end(Duration::from_secs(5)).await, "");
    // Nor one that never finishes its TLS handshake.
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", n.port))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    // Keep-alive: a second request within keep_alive_timeout is served...
    let mut c = Raw::connect(&n).await;
    let req = b"GET /_notebookd/health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    c.send(req).await;
    assert_eq!(status(&c.read_response().await.unwrap()), 200);
    tokio::time::sleep(Duration::from_millis(2000)).await;
    c.send(req).await;
    assert_eq!(status(&c.read_response().await.unwrap()), 200);
    // ...and an idle connection is closed after it.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let rest = c.read_to_end(Duration::from_secs(2)).await;
    assert_eq!(rest, "", "an idle connection is closed without a response");
    // Requests that take longer than the header timeout are not cut (a body is not a head).
    let b = n.logged_in().await;
    let slow = b
        .send_json(Method::POST, "api/kernels", &json!({"name": "python3"}))
        .await;
    assert_eq!(slow.status(), 201);
}

#[tokio::test(flavor = "multi_thread")]
async fn over_max_connections_gets_503() {
    let n = Notebookd::start_with(Options {
        settings: vec![("limits", "max_connections = 2".into())],
        ..Options::default()
    });
    let req = b"GET /_notebookd/health HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Raw::connect(&n).await;
        c.send(req).await;
        assert_eq!(status(&c.read_response().await.unwrap()), 200);
        held.push(c);
    }
    let resp = raw(&n, &get("/_notebookd/health", "")).await;
    assert_eq!(status(&resp), 503, "{resp}");
    assert!(
        resp.contains("Retry-After: 5") || resp.contains("retry-after: 5"),
        "{resp}"
    );
    assert!(resp.contains("limits.max_connections"), "{resp}");
    // The log reaches the test through a pipe: wait for the line.
    n.wait_log("limits.max_connections reached", Duration::from_secs(30));
    // A freed slot serves again.
    drop(held.pop());
    let mut ok = false;
    for _ in 0..50 {
        if status(&raw(&n, &get("/_notebookd/health", "")).await) == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "no connection was served after one closed");
}

/// An accepted connection has TCP keepalive on, so a client that vanished
/// without a FIN gives its slot back: `ss` shows the keepalive timer on
/// notebookd's side of an idle keep-alive connection (60 s before the first
/// probe).
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_probed_with_tcp_keepalive() {
    let n = Notebookd::start();
    let mut c = Raw::connect(&n).await;
    c.send(b"GET /_notebookd/health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await;
    assert_eq!(status(&c.read_response().await.unwrap()), 200);
    let filter = format!("( sport = :{} )", n.port);
    let mut seen = String::new();
    let probed = crate::support::eventually(Duration::from_secs(30), async || {
        let out = std::process::Command::new("ss")
            .args(["-tnoH", "state", "established", &filter])
            .output()
            .expect("run ss (iproute2)");
        seen = String::from_utf8_lossy(&out.stdout).into_owned();
        seen.contains("timer:(keepalive,")
    })
    .await;
    assert!(probed, "no keepalive timer on notebookd's socket: {seen:?}");
    let secs: u64 = seen
        .split("timer:(keepalive,")
        .nth(1)
        .and_then(|t| t.split(['s', 'm', ',']).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert!((1..=60).contains(&secs), "keepalive timer: {seen:?}");
    drop(c);
}

#[tokio::test(flavor = "multi_thread")]
async fn cross_site_writes_are_refused() {
    let n = Notebookd::start();
    let b = n.logged_in().await;
    let xsrf = b.xsrf().await;
    let post = |site: Option<&'static str>, origin: &str| {
        let mut r = b
            .client
            .post(b.url("api/contents"))
            .header("X-XSRFToken", &xsrf)
            .header("Origin", origin)
            .json(&json!({"type": "notebook"}));
        if let Some(s) = site {
            r = r.header("Sec-Fetch-Site", s);
        }
        r.send()
    };
    let me = b.origin.clone();
    assert_eq!(
        post(Some("cross-site"), "https://evil.example")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post(Some("same-site"), "https://x.localhost")
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(post(None, "null").await.unwrap().status(), 403);
    assert_eq!(post(Some("same-origin"), &me).await.unwrap().status(), 201);
    // A login form posted from another site.
    let r = n
        .client()
        .client
        .post(n.url("login"))
        .header("Sec-Fetch-Site", "cross-site")
        .form(&[("password", PASSWORD), ("next", "/tree")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A WebSocket opened by another site's page.
    let ws = get(
            "/api/events/subscribe",
            &format!(
                "Cookie: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-Fetch-Site: cross-site\r\nOrigin: https://evil.example\r\n",
                b.cookie_header()
            ),
        )
        .replace("Connection: close\r\n", "");
    let mut c = Raw::connect(&n).await;
    c.send(ws.as_bytes()).await;
    let resp = c.read_response().await.expect("a response");
    assert_eq!(status(&resp), 403, "{resp}");
}

#[tokio::test(flavor = "multi_thread")]
async fn security_headers_on_every_response() {
    let mut n = Notebookd::start_with(Options {
        settings: vec![(
            "embed",
            "frame_ancestors = [\"https://site.example\"]".into(),
        )],
        ..Options::default()
    });
    let b = n.logged_in().await;
    std::fs::write(n.root_dir().join("page.html"), "<script>1</script>").unwrap();
    let fa = "frame-ancestors 'self' https://site.example";
    let referer = b.url("tree");
    let cases = [
        ("login", false),
        ("_notebookd/health", false),
        ("api/contents", true),
        ("tree", true),
        ("files/page.html", true),
        ("nothing-here", true),
    ];
    for (rel, logged_in) in cases {
        let client = if logged_in { &b } else { &n.client() };
        let r = client
            .client
            .get(client.url(rel))
            .header("Accept", "text/html")
            .header("Referer", &referer)
            .send()
            .await
            .unwrap();
        let h = r.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains(fa), "{rel}: {csp}");
        assert_eq!(csp.matches("frame-ancestors").count(), 1, "{rel}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{rel}");
        assert_eq!(h["referrer-policy"], "same-origin", "{rel}");
        // Not for localhost (see hsts_only_for_dns_names below).
        assert!(h.get("strict-transport-security").is_none(), "{rel}");
        assert!(h.get("x-frame-options").is_none(), "{rel}");
        assert!(h.get("server").is_none(), "{rel}");
        if rel.starts_with("files/") {
            assert_eq!(r.status(), 200);
            assert!(csp.contains("sandbox allow-scripts"), "{rel}: {csp}");
        }
        if rel == "login" {
            assert!(csp.starts_with("default-src 'none'"), "{csp}");
        }
        // Embedding over TLS: every cookie is SameSite=None; Secure; Partitioned.
        for c in h.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            assert!(
                c.contains("SameSite=None") && c.contains("Secure") && c.contains("Partitioned"),
                "{rel}: {c}"
            );
        }
    }
    // A reload changes who may frame, and HSTS can be switched off.
    n.opts.settings = vec![
        (
            "embed",
            "frame_ancestors = [\"https://other.example:8443\"]".into(),
        ),
        ("tls", "hsts_max_age = \"0s\"".into()),
    ];
    reload(&n, 1);
    let r = b.get("api/contents").await;
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("frame-ancestors 'self' https://other.example:8443"),
        "{csp}"
    );
    assert!(!csp.contains("site.example"), "{csp}");
    assert!(r.headers().get("strict-transport-security").is_none());
    n.opts.settings.clear();
    reload(&n, 2);
    let r = n.client().get("login").await;
    let csp = r.headers()["content-security-policy"].to_str().unwrap();
    assert!(csp.ends_with("frame-ancestors 'self'"), "{csp}");
}
