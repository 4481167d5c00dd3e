//! The shipped nginx site (packaging/examples/nginx-notebook.conf) in front of
//! notebookd, under Debian's real nginx: TLS at nginx (a certificate the
//! client verifies), notebookd on loopback in plain HTTP under /notebook/.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::Digest;

use crate::support::{
    Browser, Notebookd, Options, PASSWORD, certs, free_port, missing_tool, repo_root, rustls_client,
};

/// nginx run by the test with a config of its own; stopped when dropped.
pub struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
}

impl Nginx {
    pub fn start(site: &str) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // nginx's workers run as nobody: their temporary files go here.
        let tmp = d.join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        std::fs::write(d.join("site.conf"), site).unwrap();
        let temp_paths: String = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
            .iter()
            .map(|t| format!("    {t}_temp_path {}/{t};\n", tmp.display()))
            .collect();
        std::fs::write(
            d.join("nginx.conf"),
            format!(
                "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n    access_log {d}/access.log;\n{temp_paths}    include {d}/site.conf;\n}}\n",
                d = d.display()
            ),
        )
        .unwrap();
        let conf = d.join("nginx.conf");
        let check = Command::new("nginx")
            .arg("-t")
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "nginx -t refused the site:\n{}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new("nginx")
            .arg("-e")
            .arg(d.join("error.log"))
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Nginx { child, dir }
    }

    pub fn wait_listening(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nginx does not listen on {port}; error.log:\n{}",
                self.error_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful stop of the master and its worker.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped example with the test's ports and certificate, changing
/// nothing else. Every replaced line must be in the example.
pub fn render_site(upstream: u16, https: u16, http: u16, cert: &Path, key: &Path) -> String {
    let example =
        std::fs::read_to_string(repo_root().join("packaging/examples/nginx-notebook.conf"))
            .unwrap();
    let mut site = example.clone();
    for (from, to) in [
        (
            "server 127.0.0.1:9999;".to_string(),
            format!("server 127.0.0.1:{upstream};"),
        ),
        (
            "listen 443 ssl;".into(),
            format!("listen 127.0.0.1:{https} ssl;"),
        ),
        ("listen [::]:443 ssl;".into(), String::new()),
        ("listen 80;".into(), format!("listen 127.0.0.1:{http};")),
        ("listen [::]:80;".into(), String::new()),
        (
            "ssl_certificate     /etc/ssl/certs/notebook.example.com.pem;".into(),
            format!("ssl_certificate     {};", cert.display()),
        ),
        (
            "ssl_certificate_key /etc/ssl/private/notebook.example.com.key;".into(),
            format!("ssl_certificate_key {};", key.display()),
        ),
        (
            "server_name notebook.example.com;".into(),
            "server_name localhost;".into(),
        ),
    ] {
        assert!(
            site.contains(&from),
            "the nginx example no longer has {from:?}"
        );
        site = site.replace(&from, &to);
    }
    site
}

/// The example's step 1 (`sudo nbctl config set ...` lines), run on a copy
/// of the shipped config, configures notebookd as the site expects.
#[test]
fn nginx_example_nbctl_steps_configure_notebookd() {
    let example =
        std::fs::read_to_string(repo_root().join("packaging/examples/nginx-notebook.conf"))
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("notebook.toml");
    std::fs::copy(repo_root().join("etc/notebook.toml"), &config).unwrap();
    let steps: Vec<&str> = example
        .lines()
        .filter_map(|l| l.trim_start_matches('#').trim().strip_prefix("sudo nbctl "))
        .collect();
    assert_eq!(steps.len(), 4, "{steps:?}");
    for step in steps {
        let out = Command::new(env!("CARGO_BIN_EXE_nbctl"))
            .args(step.split_whitespace())
            .arg("--config")
            .arg(&config)
            .arg("--no-reload")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nbctl {step}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let c = notebookd::config::Config::load(&config).unwrap();
    assert_eq!(c.server.listen.0, ["127.0.0.1:9999".parse().unwrap()]);
    assert_eq!(c.server.base_url.as_str(), "/notebook/");
    assert_eq!(c.server.trusted_proxies.len(), 1);
    assert!(c.server.trusted_proxies[0].contains("127.0.0.1".parse().unwrap()));
    assert!(!c.tls.enabled);
}

/// `client=ADDRESS` of notebookd's log lines that contain `event`.
fn logged_clients(n: &Notebookd, event: &str) -> Vec<String> {
    n.log()
        .iter()
        .filter(|l| l.contains(event))
        .filter_map(|l| {
            let rest = &l[l.find("client=")? + "client=".len()..];
            Some(rest.split_whitespace().next()?.to_string())
        })
        .collect()
}

/// A plain-HTTP notebookd on `/notebook/` that trusts the nginx in front
/// of it (as the shipped site sets it up), or `None` without Debian's nginx.
pub fn notebookd_for_the_shipped_site() -> Option<Notebookd> {
    if notebookd::jupyter::flavour::find_program("nginx", Some("/usr/sbin:/usr/bin")).is_none() {
        missing_tool("nginx", "apt-get install nginx, or run ./dev test");
        return None;
    }
    Some(Notebookd::start_with(Options {
        tls: false,
        base_url: "/notebook/".into(),
        settings: vec![("server", "trusted_proxies = [\"127.0.0.1\"]".into())],
        ..Options::default()
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn shipped_nginx_site_fronts_notebookd_on_a_sub_path() {
    let Some(n) = notebookd_for_the_shipped_site() else {
        return;
    };
    let (https, http) = (free_port(), free_port());
    let certs = certs();
    let nginx = Nginx::start(&render_site(
        n.port,
        https,
        http,
        &certs.cert(),
        &certs.key(),
    ));
    nginx.wait_listening(https);

    let base = format!("https://localhost:{https}/notebook/");
    let client_ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
    let b = Browser::trusting(&base, &certs.ca_pem(), Some(client_ip));

    // Plain HTTP is redirected to HTTPS; /notebook gets its slash.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://localhost:{http}/notebook/tree"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "https://localhost/notebook/tree");
    let r = b
        .client
        .get(format!("https://localhost:{https}/notebook"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert!(
        r.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("/notebook/")
    );

    // The login redirect, the form's `next`, the cookie's Path: all /notebook/.
    let r = b.get_page("tree").await;
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "/notebook/login?next=%2Fnotebook%2Ftree"
    );
    let page = b
        .client
        .get(b.url("login?next=%2Fnotebook%2Ftree"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("value=\"/notebook/tree\"") && html.contains("/notebook/login"),
        "{html}"
    );
    let login = b
        .client
        .post(b.url("login"))
        .form(&[("password", PASSWORD), ("next", "/notebook/tree")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 302);
    assert_eq!(login.headers()["location"], "/notebook/tree");
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    // Secure although notebookd speaks plain HTTP: nginx said the browser used HTTPS.
    for attr in ["Path=/notebook/", "Secure", "HttpOnly"] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    let tree = b.get_page("tree").await;
    assert_eq!(tree.status(), 200);

    // X-Forwarded-For is believed from the trusted nginx only: through nginx
    // the client is the browser's address (not what the browser claims);
    // straight to notebookd from another address, the header is ignored.
    // The log reaches the test through a pipe: wait for the line, then compare.
    n.wait_log(" login client=", Duration::from_secs(30));
    assert_eq!(logged_clients(&n, " login"), ["127.0.0.3"]);
    let forger = Browser::trusting(
        &base,
        &certs.ca_pem(),
        Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 4))),
    );
    let r = forger
        .client
        .post(forger.url("login"))
        .header("X-Forwarded-For", "203.0.113.9")
        .form(&[("password", "wrong"), ("next", "/notebook/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let direct = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .no_proxy()
        .build()
        .unwrap();
    let r = direct
        .post(format!("http://127.0.0.1:{}/notebook/login", n.port))
        .header("X-Forwarded-For", "203.0.113.7")
        .form(&[("password", "wrong"), ("next", "/notebook/")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    n.wait_log("failed login client=127.0.0.2", Duration::from_secs(30));
    assert_eq!(
        logged_clients(&n, "failed login"),
        ["127.0.0.4", "127.0.0.2"],
        "{}",
        n.log_text()
    );

    // A kernel over the WebSocket, through nginx.
    let run = b.run_in_new_kernel("print(6 * 7)", rustls_client()).await;
    assert_eq!((run.status.as_str(), run.stdout.trim()), ("ok", "42"));

    // 50 MiB from /files/ through nginx.
    let data: Vec<u8> = (0..50u32 * 1024 * 1024)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(n.root_dir().join("big.bin"), &data).unwrap();
    let started = Instant::now();
    let mut got = b
        .client
        .get(b.url("files/big.bin"))
        .header("Referer", b.url("tree"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let mut hash = sha2::Sha256::new();
    let mut len = 0;
    while let Some(chunk) = got.chunk().await.unwrap() {
        len += chunk.len();
        hash.update(&chunk);
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(len, data.len());
    assert_eq!(hash.finalize(), sha2::Sha256::digest(&data));
    eprintln!(
        "50 MiB through nginx and notebookd: {secs:.2}s ({:.0} MB/s)",
        len as f64 / secs / 1e6
    );
    drop(nginx);
}
