//! The test harness: the pinned Jupyter venv, test certificates, and a real
//! notebookd process started with a config of the test's own.

pub mod container;
pub mod kernel;
pub mod node;
pub mod packages;
pub mod v1_frames;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The password of every test instance, and its hash in the legacy IPython
/// form (fast to verify, so logins do not slow the suite down).
pub const PASSWORD: &str = "mypassword";
pub const PASSWORD_HASH: &str = "sha1:0e112c3ddfce:a68df677475c2b47b6e86d0467eec97ac5f4b85a";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A missing tool: a failure under CI (with the install hint), a loud skip elsewhere.
/// Returns normally only outside CI; callers then return early.
pub fn missing_tool(what: &str, hint: &str) {
    if in_ci() {
        panic!("{what} is missing under CI=true: {hint}");
    }
    eprintln!("\n!!! SKIPPING: {what} is missing ({hint}); under CI=true this fails\n");
}

/// The pinned Jupyter venv, installed by `./dev venv` if it is not there yet.
pub fn venv() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| {
        if let Ok(v) = std::env::var("NOTEBOOKD_VENV") {
            let v = PathBuf::from(v);
            if v.join("bin/jupyter").exists() {
                return v;
            }
        }
        let out = Command::new(repo_root().join("dev"))
            .arg("venv")
            .stderr(Stdio::inherit())
            .output()
            .expect("run ./dev venv");
        assert!(
            out.status.success(),
            "./dev venv failed: install the pinned Jupyter with ./dev venv"
        );
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
    .clone()
}

pub fn jupyter_command() -> String {
    venv().join("bin/jupyter").display().to_string()
}

/// A test CA and a leaf certificate for localhost, 127.0.0.1 and ::1 (and, for the
/// browser tests, notebook.test, site.test and evil.test), made with openssl(1).
pub struct TestCerts {
    pub dir: tempfile::TempDir,
}

impl TestCerts {
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }
    pub fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.ca()).expect("read ca.pem")
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl(1) is needed to make test certificates: apt-get install openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Certificates shared by all tests of this process.
pub fn certs() -> &'static TestCerts {
    static CERTS: OnceLock<TestCerts> = OnceLock::new();
    CERTS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::write(
            d.join("leaf.ext"),
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1,DNS:notebook.test,DNS:site.test,DNS:evil.test\n",
        )
        .expect("write leaf.ext");
        openssl(d, &["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3", "-subj", "/CN=notebookd test CA", "-keyout", "ca.key", "-out", "ca.pem"]);
        openssl(d, &["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost", "-keyout", "key.pem", "-out", "leaf.csr"]);
        openssl(d, &["x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-extfile", "leaf.ext", "-out", "cert.pem"]);
        TestCerts { dir }
    })
}

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// How to start a notebookd for a test.
pub struct Options {
    pub tls: bool,
    pub base_url: String,
    pub password_hash: Option<String>,
    pub jupyter_command: Option<String>,
    /// Extra TOML appended to the generated config (whole sections).
    pub extra: String,
    /// Single settings as (table, `key = value`), put into that table (which
    /// may be one the generated config already has, like `auth`).
    pub settings: Vec<(&'static str, String)>,
    pub env: Vec<(String, String)>,
    pub wait_ready: bool,
    /// `server.listen` as a TOML value in which `{port}` stands for the
    /// instance's port, e.g. `["127.0.0.1:{port}", "[::1]:{port}"]`;
    /// `None`: `"127.0.0.1:{port}"`.
    pub listen: Option<String>,
    /// `tls.cert` and `tls.key`; `None`: the shared test certificate.
    pub tls_files: Option<(PathBuf, PathBuf)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            tls: true,
            base_url: "/".into(),
            password_hash: Some(PASSWORD_HASH.into()),
            jupyter_command: None,
            extra: String::new(),
            settings: Vec::new(),
            env: Vec::new(),
            wait_ready: true,
            listen: None,
            tls_files: None,
        }
    }
}

/// A running notebookd (and its Jupyter), stopped when dropped.
pub struct Notebookd {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub opts: Options,
    child: Option<Child>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Notebookd {
    pub fn start() -> Notebookd {
        Notebookd::start_with(Options::default())
    }

    pub fn start_with(opts: Options) -> Notebookd {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut n = Notebookd {
            dir,
            port,
            opts,
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
        };
        n.write_config();
        n.spawn();
        if n.opts.wait_ready {
            n.wait_ready(Duration::from_secs(90));
        }
        n
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("notebook.toml")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn runtime_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn root_dir(&self) -> PathBuf {
        self.dir.path().join("notebooks")
    }
    pub fn jupyter_socket(&self) -> PathBuf {
        self.runtime_dir().join("jupyter/jupyter.sock")
    }

    /// The config text this instance runs with.
    pub fn config_text(&self) -> String {
        let mut text = self.base_config_text();
        for (table, line) in &self.opts.settings {
            let header = format!("[{table}]\n");
            if text.contains(&header) {
                text = text.replacen(&header, &format!("{header}{line}\n"), 1);
            } else {
                text.push_str(&format!("\n{header}{line}\n"));
            }
        }
        text
    }

    fn base_config_text(&self) -> String {
        let o = &self.opts;
        let certs = certs();
        let hash = o.password_hash.clone().unwrap_or_default();
        let command = o.jupyter_command.clone().unwrap_or_else(jupyter_command);
        format!(
            "[server]\nlisten = {listen}\nbase_url = \"{base}\"\nstate_dir = \"{state}\"\nruntime_dir = \"{run}\"\nshutdown_timeout = \"3s\"\n\n\
             [tls]\nenabled = {tls}\ncert = \"{cert}\"\nkey = \"{key}\"\n\n\
             [auth]\npassword_hash = \"{hash}\"\n\n\
             [jupyter]\ncommand = \"{command}\"\nroot_dir = \"{root}\"\nstop_timeout = \"10s\"\n\n{extra}",
            listen = o
                .listen
                .as_deref()
                .unwrap_or("\"127.0.0.1:{port}\"")
                .replace("{port}", &self.port.to_string()),
            base = o.base_url,
            state = self.state_dir().display(),
            run = self.runtime_dir().display(),
            tls = o.tls,
            cert = o
                .tls_files
                .as_ref()
                .map_or(certs.cert(), |f| f.0.clone())
                .display(),
            key = o
                .tls_files
                .as_ref()
                .map_or(certs.key(), |f| f.1.clone())
                .display(),
            root = self.root_dir().display(),
            extra = o.extra,
        )
    }

    pub fn write_config(&self) {
        std::fs::write(self.config_path(), self.config_text()).expect("write config");
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_notebookd"));
        cmd.arg("--config")
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .envs(self.opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start notebookd");
        let stderr = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("NOTEBOOKD_TEST_LOG").is_some() {
                    eprintln!("notebookd: {line}");
                }
                log.lock().expect("log").push(line);
            }
        });
        self.child = Some(child);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// notebookd's log so far (stderr lines).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log").clone()
    }

    pub fn log_text(&self) -> String {
        self.log().join("\n")
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().iter().any(|l| l.contains(needle)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "no log line with {needle:?} within {timeout:?}; log:\n{}",
            self.log_text()
        );
    }

    /// Waits until notebookd says it is ready (Jupyter answered).
    pub fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(child_exit) = self.exited() {
                panic!(
                    "notebookd exited ({child_exit}) before it was ready; log:\n{}",
                    self.log_text()
                );
            }
            if self.log().iter().any(|l| l.contains("notebookd is ready")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "notebookd was not ready within {timeout:?}; log:\n{}",
            self.log_text()
        );
    }

    fn exited(&self) -> Option<String> {
        let child = self.child.as_ref()?;
        let mut status = 0;
        // Peek without reaping: WNOWAIT keeps the zombie for `stop` to collect.
        let pid = child.id() as i32;
        let r = nix::sys::wait::waitid(
            nix::sys::wait::Id::Pid(Pid::from_raw(pid)),
            nix::sys::wait::WaitPidFlag::WEXITED
                | nix::sys::wait::WaitPidFlag::WNOHANG
                | nix::sys::wait::WaitPidFlag::WNOWAIT,
        );
        match r {
            Ok(nix::sys::wait::WaitStatus::StillAlive) => None,
            Ok(s) => {
                status += 1;
                Some(format!("{s:?} {status}"))
            }
            Err(_) => None,
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.opts.tls { "https" } else { "http" }
    }

    /// Absolute URL of `rel` (relative to base_url) at host `localhost`.
    pub fn url(&self, rel: &str) -> String {
        format!(
            "{}://localhost:{}{}{}",
            self.scheme(),
            self.port,
            self.opts.base_url,
            rel
        )
    }

    pub fn ws_url(&self, rel: &str) -> String {
        let scheme = if self.opts.tls { "wss" } else { "ws" };
        format!(
            "{scheme}://localhost:{}{}{}",
            self.port, self.opts.base_url, rel
        )
    }

    /// A client that trusts only the test CA, keeps cookies and does not follow redirects.
    pub fn client(&self) -> Browser {
        Browser::new(self)
    }

    pub fn blocking_client(&self) -> reqwest::blocking::Client {
        let ca = reqwest::Certificate::from_pem(&certs().ca_pem()).expect("ca");
        reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client")
    }

    /// A client logged in with the test password.
    pub async fn logged_in(&self) -> Browser {
        let b = self.client();
        let resp = b
            .client
            .post(self.url("login"))
            .form(&[
                ("password", PASSWORD),
                ("next", &format!("{}tree", self.opts.base_url)),
            ])
            .send()
            .await
            .expect("POST login");
        assert_eq!(resp.status(), 302, "login failed: {:?}", resp.text().await);
        b
    }

    /// Starts notebookd again after [`Notebookd::stop`]: same directory,
    /// port and config, a fresh log; waits until it is ready.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        self.log.lock().expect("log").clear();
        self.spawn();
        self.wait_ready(Duration::from_secs(90));
    }

    /// Sends SIGTERM and waits for notebookd to exit; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.code(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "notebookd did not stop within 30s of SIGTERM; log:\n{}",
                        self.log_text()
                    );
                }
            }
        }
    }
}

impl Drop for Notebookd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP client with a cookie jar, as a browser would hold it.
pub struct Browser {
    pub client: reqwest::Client,
    pub jar: Arc<reqwest::cookie::Jar>,
    /// e.g. `https://localhost:1234/nb/`
    pub base: String,
    /// e.g. `https://localhost:1234`
    pub origin: String,
}

impl Browser {
    pub fn new(n: &Notebookd) -> Browser {
        Browser::trusting(&n.url(""), &certs().ca_pem(), None)
    }

    /// A browser for the site at `base` (e.g. `https://localhost:1234/nb/`)
    /// that trusts only the certificates in `ca_pem`, connecting from
    /// `local` (a loopback address of its own) if given.
    pub fn trusting(base: &str, ca_pem: &[u8], local: Option<std::net::IpAddr>) -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let mut builder = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .local_address(local)
            .timeout(Duration::from_secs(120));
        for cert in reqwest::Certificate::from_pem_bundle(ca_pem).expect("CA PEM") {
            builder = builder.add_root_certificate(cert);
        }
        let url = reqwest::Url::parse(base).expect("base URL");
        let origin = url.origin().ascii_serialization();
        Browser {
            client: builder.build().expect("client"),
            jar,
            base: base.to_string(),
            origin,
        }
    }

    /// A browser for `base` that accepts any certificate: for a test about
    /// connections across a certificate change that no test CA signed
    /// (ACME's), where what is checked is the connection, not the trust.
    pub fn accepting_any_certificate(base: &str) -> Browser {
        let jar = Arc::new(reqwest::cookie::Jar::default());
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .cookie_provider(jar.clone())
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(120))
            .build()
            .expect("client");
        let url = reqwest::Url::parse(base).expect("base URL");
        Browser {
            client,
            jar,
            base: base.to_string(),
            origin: url.origin().ascii_serialization(),
        }
    }

    pub fn url(&self, rel: &str) -> String {
        format!("{}{rel}", self.base)
    }

    /// Starts a python3 kernel and runs `code` in it over the kernel WebSocket,
    /// verifying TLS with `tls`.
    pub async fn run_in_new_kernel(
        &self,
        code: &str,
        tls: Arc<rustls::ClientConfig>,
    ) -> kernel::Execution {
        let id = self.start_kernel().await;
        let ws = format!(
            "{}api/kernels/{id}/channels",
            self.base.replacen("http", "ws", 1)
        );
        kernel::execute_trusting(&ws, &self.cookie_header(), &self.origin, code, tls)
            .await
            .expect("run code in the kernel")
    }

    /// Starts a python3 kernel; its id.
    pub async fn start_kernel(&self) -> String {
        let resp = self
            .send_json(
                reqwest::Method::POST,
                "api/kernels",
                &serde_json::json!({"name": "python3"}),
            )
            .await;
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        assert_eq!(status, 201, "start a kernel: {body}");
        body["id"].as_str().expect("kernel id").to_string()
    }

    /// Keeps trying to log in to the site at `base` (trusting `ca_pem`) until
    /// notebookd accepts `password` and its API answers; panics after `timeout`.
    pub async fn wait_logged_in(
        base: &str,
        ca_pem: &[u8],
        password: &str,
        timeout: Duration,
    ) -> Browser {
        let deadline = Instant::now() + timeout;
        loop {
            let b = Browser::trusting(base, ca_pem, None);
            let login = b
                .client
                .post(b.url("login"))
                .form(&[("password", password), ("next", "/")])
                .send()
                .await;
            if let Ok(r) = login {
                if r.status() == 302 && b.get("api/contents").await.status() == 200 {
                    return b;
                }
            }
            assert!(
                Instant::now() < deadline,
                "could not log in to {base} within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Logs in with `password`; panics unless notebookd answers 302.
    pub async fn login(&self, password: &str) {
        let path = reqwest::Url::parse(&self.base)
            .expect("base URL")
            .path()
            .to_string();
        let resp = self
            .client
            .post(self.url("login"))
            .form(&[("password", password), ("next", &format!("{path}tree"))])
            .send()
            .await
            .expect("POST login");
        let status = resp.status();
        assert_eq!(status, 302, "login failed: {:?}", resp.text().await);
    }

    pub async fn get(&self, rel: &str) -> reqwest::Response {
        self.client.get(self.url(rel)).send().await.expect("GET")
    }

    /// GET `rel` as a browser navigating to a page (`Accept: text/html`).
    pub async fn get_page(&self, rel: &str) -> reqwest::Response {
        self.client
            .get(self.url(rel))
            .header("Accept", "text/html")
            .send()
            .await
            .expect("GET page")
    }

    /// The `Cookie` header the jar would send to the base URL.
    pub fn cookie_header(&self) -> String {
        use reqwest::cookie::CookieStore;
        let url = reqwest::Url::parse(&self.base).expect("url");
        self.jar
            .cookies(&url)
            .and_then(|v| v.to_str().ok().map(str::to_owned))
            .unwrap_or_default()
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookie_header().split("; ").find_map(|c| {
            let (k, v) = c.split_once('=')?;
            (k == name).then(|| v.to_string())
        })
    }

    /// Jupyter's XSRF token, fetching a page first if no `_xsrf` cookie is held yet.
    pub async fn xsrf(&self) -> String {
        if let Some(x) = self.cookie("_xsrf") {
            return x;
        }
        let r = self.get_page("tree").await;
        assert_eq!(r.status(), 200, "GET tree");
        self.cookie("_xsrf").expect("Jupyter set no _xsrf cookie")
    }

    /// A state-changing request as the Jupyter UI sends it (XSRF header, same Origin).
    pub async fn send_json(
        &self,
        method: reqwest::Method,
        rel: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        let xsrf = self.xsrf().await;
        self.client
            .request(method, self.url(rel))
            .header("X-XSRFToken", xsrf)
            .header("Origin", &self.origin)
            .json(body)
            .send()
            .await
            .expect("request")
    }
}

/// A rustls client config trusting only the test CA (for WebSockets).
pub fn rustls_client() -> Arc<rustls::ClientConfig> {
    rustls_client_trusting(&certs().ca_pem())
}

/// A rustls client config trusting only the certificates in `pem`.
pub fn rustls_client_trusting(pem: &[u8]) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        roots.add(cert.expect("ca pem")).expect("add ca");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Processes whose command line contains `needle` (from /proc).
pub fn processes_matching(needle: &str) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            out.push((pid, cmdline));
        }
    }
    out
}

/// Polls `check` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
