//! ACME against Debian's Pebble (a real ACME CA for tests) and
//! pebble-challtestsrv (DNS answering 127.0.0.1 for the test domains), all on
//! loopback: notebookd gets a certificate for `nb.test` through TLS-ALPN-01
//! and through HTTP-01, a client trusting only Pebble's root accepts it, a
//! CA that is down at start leaves the service up on its temporary
//! certificate until the CA is back, a failed validation is a clear
//! status line, and a kernel WebSocket stays open across a renewal.
//!
//! Two Pebbles: bookworm's 2.4 has no renewal information (the rules
//! `renew_before` and "a third of the lifetime"); trixie's 2.6, unpacked by
//! tests/setup/acme.sh, offers it (RFC 9773, ARI): its window moves renewal
//! earlier, and a revoked certificate is replaced at once, the new order
//! naming the one it replaces. `nbctl doctor` runs against both, with the
//! test domains in an /etc/hosts of its own mount namespace.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;

use crate::nbctl::{NBCTL, nbctl};
use crate::support::kernel::KernelSocket;
use crate::support::{
    Browser, Notebookd, Options, certs, free_port, missing_tool, repo_root, rustls_client_trusting,
};

const DOMAIN: &str = "nb.test";

fn pebble_installed() -> bool {
    let found = ["pebble", "pebble-challtestsrv"].iter().all(|p| {
        Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        missing_tool(
            "pebble and pebble-challtestsrv",
            "apt-get install pebble (tests/setup/acme.sh; ./dev test installs it)",
        );
    }
    found
}

/// The directory of Pebble 2.6's binaries (which offer ARI), unpacked by
/// tests/setup/acme.sh if needed; `None` after a loud skip outside CI.
fn pebble_with_ari() -> Option<PathBuf> {
    let out = Command::new(repo_root().join("tests/setup/acme.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("run tests/setup/acme.sh");
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !out.status.success() || !dir.join("pebble").exists() {
        missing_tool(
            "Pebble 2.6 (renewal information)",
            "tests/setup/acme.sh unpacks it into $NOTEBOOKD_CACHE/pebble-2.6.0; ./dev test runs it",
        );
        return None;
    }
    Some(dir)
}

/// A Pebble CA and its DNS server, on ports picked here; stopped when dropped.
struct Pebble {
    /// `pebble` itself: bookworm's (no ARI) or Pebble 2.6's.
    program: PathBuf,
    dir: tempfile::TempDir,
    acme_port: u16,
    management_port: u16,
    dns_port: u16,
    dns_management_port: u16,
    children: Vec<Child>,
}

impl Pebble {
    /// Picks the ports; nothing runs yet.
    fn reserve() -> Pebble {
        Pebble {
            program: PathBuf::from("pebble"),
            dir: tempfile::tempdir().unwrap(),
            acme_port: free_port(),
            management_port: free_port(),
            dns_port: free_port(),
            dns_management_port: free_port(),
            children: Vec::new(),
        }
    }

    /// The same with Pebble 2.6 (its directory offers `renewalInfo`).
    fn reserve_with_ari(bin: &Path) -> Pebble {
        let mut p = Pebble::reserve();
        p.program = bin.join("pebble");
        p
    }

    fn directory(&self) -> String {
        format!("https://localhost:{}/dir", self.acme_port)
    }

    /// Starts both; Pebble validates on `tls_port` (TLS-ALPN-01) and
    /// `http_port` (HTTP-01) of the address the DNS server gives.
    fn start(&mut self, tls_port: u16, http_port: u16, validity_secs: Option<u64>) {
        let dns = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns_port)])
            .args([
                "-management",
                &format!("127.0.0.1:{}", self.dns_management_port),
            ])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pebble-challtestsrv");
        self.children.push(dns);
        let mut pebble = serde_json::json!({
            "listenAddress": format!("127.0.0.1:{}", self.acme_port),
            "managementListenAddress": format!("127.0.0.1:{}", self.management_port),
            "certificate": certs().cert(),
            "privateKey": certs().key(),
            "httpPort": http_port,
            "tlsPort": tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false,
        });
        if let Some(v) = validity_secs {
            pebble["certificateValidityPeriod"] = v.into();
        }
        let config = self.dir.path().join("pebble.json");
        std::fs::write(&config, serde_json::json!({ "pebble": pebble }).to_string()).unwrap();
        let log = std::fs::File::create(self.dir.path().join("pebble.log")).unwrap();
        let ca = Command::new(&self.program)
            .arg("-config")
            .arg(&config)
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pebble");
        self.children.push(ca);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.get(&self.directory()).is_err() {
            assert!(
                Instant::now() < deadline,
                "pebble did not start: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("pebble.log")).unwrap_or_default()
    }

    fn client() -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&certs().ca_pem()).unwrap())
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    fn get(&self, url: &str) -> Result<String, String> {
        let resp = Pebble::client()
            .get(url)
            .send()
            .map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(resp.status().to_string());
        }
        resp.text().map_err(|e| e.to_string())
    }

    /// Makes the DNS server answer `host` with `ip`.
    fn add_a(&self, host: &str, ip: &str) {
        let resp = Pebble::client()
            .post(format!(
                "http://127.0.0.1:{}/add-a",
                self.dns_management_port
            ))
            .json(&serde_json::json!({"host": host, "addresses": [ip]}))
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "add-a: {}", resp.status());
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn acme_section(pebble: &Pebble, domain: &str, challenge: &str, http_port: u16) -> String {
    format!(
        "[tls.acme]\nenabled = true\ndomains = [\"{domain}\"]\ncontact = [\"mailto:admin@{domain}\"]\n\
         directory = \"{dir}\"\nca_bundle = \"{ca}\"\nchallenge = \"{challenge}\"\n\
         http_listen = [\"127.0.0.1:{http_port}\"]\n",
        dir = pebble.directory(),
        ca = certs().ca().display(),
    )
}

/// The serial and issuer of the certificate a new connection to `port`
/// gets for `name`, verified with `client`.
async fn handshake(
    port: u16,
    name: &str,
    client: Arc<rustls::ClientConfig>,
) -> Result<(String, String), String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    Ok((
        x509.raw_serial_as_string().replace(':', "").to_uppercase(),
        x509.issuer().to_string(),
    ))
}

/// A rustls client config that accepts any certificate (to look at what a
/// server serves before anything trusts it).
fn accept_anything() -> Arc<rustls::ClientConfig> {
    #[derive(Debug)]
    struct Anything;
    impl rustls::client::danger::ServerCertVerifier for Anything {
        fn verify_server_cert(
            &self,
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &[rustls_pki_types::CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls_pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls_pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Anything))
            .with_no_client_auth(),
    )
}

/// Waits until a client trusting only Pebble's root completes a handshake
/// for `nb.test`; returns the served serial.
async fn wait_pebble_certificate(
    n: &Notebookd,
    port: u16,
    pebble: &Pebble,
    timeout: Duration,
) -> String {
    let client = rustls_client_trusting(&pebble_root(pebble).await);
    let deadline = Instant::now() + timeout;
    loop {
        match handshake(port, DOMAIN, client.clone()).await {
            Ok((serial, _)) => return serial,
            Err(e) => assert!(
                Instant::now() < deadline,
                "no Pebble certificate within {timeout:?} ({e}); notebookd log:\n{}\npebble log:\n{}",
                n.log_text(),
                pebble.log()
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

async fn pebble_root(pebble: &Pebble) -> Vec<u8> {
    let url = format!("https://localhost:{}/roots/0", pebble.management_port);
    blocking(move || {
        Pebble::client()
            .get(url)
            .send()
            .and_then(|r| r.error_for_status())
            .and_then(|r| r.bytes())
            .expect("pebble's root")
            .to_vec()
    })
    .await
}

async fn status_json(n: &Notebookd) -> serde_json::Value {
    let config = n.config_path();
    blocking(move || {
        let out = nbctl(&config, &["status", "--json"]);
        serde_json::from_str(&out.stdout).unwrap()
    })
    .await
}

fn assert_private(path: &Path) {
    let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{} is {mode:o}", path.display());
}

/// `nbctl doctor --json` with `hosts` as /etc/hosts (in a mount namespace
/// of its own, so the test domains resolve for it as Pebble's DNS server
/// resolves them for the CA), through `faketime OFFSET` if given: the exit
/// status and the checks. `None` (after a loud skip outside CI) when this
/// cannot be done: not root, or no unshare/faketime.
async fn doctor_resolving(
    config: &Path,
    hosts: &str,
    faketime: Option<&str>,
) -> Option<(i32, Vec<serde_json::Value>)> {
    if !nix::unistd::Uid::effective().is_root() {
        missing_tool(
            "root",
            "nbctl doctor with the test domains in /etc/hosts needs a mount namespace",
        );
        return None;
    }
    if faketime.is_some() && notebookd::jupyter::flavour::find_program("faketime", None).is_none() {
        missing_tool("faketime", "apt-get install faketime (tests/setup/acme.sh)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hosts");
    std::fs::write(
        &file,
        format!("127.0.0.1 localhost\n::1 localhost\n{hosts}"),
    )
    .unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/hosts && exec \"$@\"")
        .arg(&file);
    if let Some(offset) = faketime {
        cmd.args(["faketime", "-f", offset]);
    }
    cmd.arg(NBCTL)
        .arg("--config")
        .arg(config)
        .args(["doctor", "--json"]);
    let out = blocking(move || cmd.output().expect("run unshare")).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let checks: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    Some((out.status.code().unwrap_or(-1), checks))
}

/// The check named `name` (the first, or the one whose message contains `about`).
fn doctor_line<'a>(
    checks: &'a [serde_json::Value],
    name: &str,
    about: &str,
) -> &'a serde_json::Value {
    checks
        .iter()
        .find(|c| c["name"] == name && c["message"].as_str().unwrap_or("").contains(about))
        .unwrap_or_else(|| panic!("no {name} check about {about:?} in {checks:#?}"))
}

/// Revokes the certificate notebookd stored, as its ACME account (the
/// credentials in STATE_DIR/acme), the way an administrator or the CA
/// would after a key leak.
async fn revoke_stored_certificate(n: &Notebookd) {
    let acme = n.state_dir().join("acme");
    let account = std::fs::read_dir(&acme)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("account-"))
        .expect("an account file");
    let creds: instant_acme::AccountCredentials =
        serde_json::from_slice(&std::fs::read(account.path()).unwrap()).unwrap();
    let pem = std::fs::read(acme.join("cert.pem")).unwrap();
    let leaf = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let account = instant_acme::Account::builder_with_root(certs().ca())
        .unwrap()
        .from_credentials(creds)
        .await
        .expect("the stored ACME account");
    account
        .revoke(&instant_acme::RevocationRequest {
            certificate: &leaf,
            reason: None,
        })
        .await
        .expect("revoke at Pebble");
}

/// Waits until new connections get a certificate other than `serial`
/// (verified against Pebble's root); returns the new serial.
async fn wait_new_serial(
    n: &Notebookd,
    port: u16,
    pebble: &Pebble,
    serial: &str,
    what: &str,
) -> String {
    let client = rustls_client_trusting(&pebble_root(pebble).await);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = handshake(port, DOMAIN, client.clone()).await.unwrap().0;
        if now != serial {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no new certificate: {}",
            n.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const DAY: i64 = 86_400;
/// tls.acme.renew_before in these scenarios: far later than a third of
/// Pebble's five-year lifetime, so a renewal time years earlier can only
/// come from the CA's window.
const RENEW_BEFORE_DAYS: i64 = 30;

/// TLS-ALPN-01 runs against Pebble 2.6 (with ARI), HTTP-01 against 2.4
/// (without): both with renew_before = 30 days.
async fn obtains_through(challenge: &str) {
    if !pebble_installed() {
        return;
    }
    let with_ari = challenge == "tls-alpn-01";
    let ari_bin = match with_ari {
        true => match pebble_with_ari() {
            Some(b) => Some(b),
            None => return,
        },
        false => None,
    };
    let port = free_port();
    let http_port = free_port();
    let pebble = blocking(move || {
        let mut p = match &ari_bin {
            Some(bin) => Pebble::reserve_with_ari(bin),
            None => Pebble::reserve(),
        };
        p.start(port, http_port, None);
        p
    })
    .await;
    let n = Notebookd::start_with(Options {
        listen: Some(format!("\"127.0.0.1:{port}\"")),
        extra: format!(
            "{}renew_before = \"{RENEW_BEFORE_DAYS}d\"\n",
            acme_section(&pebble, DOMAIN, challenge, http_port)
        ),
        ..Default::default()
    });
    // Pebble validates on `port`, chosen before notebookd: this instance
    // listens there (n.port is unused).
    let serial = wait_pebble_certificate(&n, port, &pebble, Duration::from_secs(60)).await;
    n.wait_log("ACME: new certificate for nb.test", Duration::from_secs(10));

    let acme = n.state_dir().join("acme");
    assert_private(&acme.join("key.pem"));
    assert_private(&acme.join("cert.pem"));
    let account = std::fs::read_dir(&acme)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("account-"))
        .expect("an account file");
    assert_private(&account.path());

    // The window is asked for right after issuance; wait for its answer.
    let deadline = Instant::now() + Duration::from_secs(30);
    let s = loop {
        let s = status_json(&n).await;
        if s["acme"]["ari"].is_object() && s["tls"]["certificate"]["serial"] == serial {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "no renewal information in the status: {s}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(s["acme"]["state"], "valid", "{s}");
    assert_eq!(s["acme"]["challenge"], challenge, "{s}");
    assert_eq!(s["tls"]["certificate"]["serial"], serial, "{s}");
    assert!(
        s["tls"]["certificate"]["source"]
            .as_str()
            .unwrap()
            .starts_with("ACME ("),
        "{s}"
    );
    let renew_at = s["acme"]["renew_at"].as_i64().unwrap();
    let not_after = s["tls"]["certificate"]["not_after_unix"].as_i64().unwrap();
    let not_before = s["tls"]["certificate"]["not_before_unix"].as_i64().unwrap();
    let ari = &s["acme"]["ari"];
    if with_ari {
        // Pebble 2.6's window: 24 h either side of a third of the lifetime
        // left (core.RenewalInfoSimple); the time picked lies in it, years
        // before renew_before would renew.
        assert_eq!(ari["state"], "window", "{s}");
        assert_eq!(s["acme"]["renew_rule"], "ari", "{s}");
        let (start, end) = (ari["start"].as_i64().unwrap(), ari["end"].as_i64().unwrap());
        assert!((end - start - 2 * DAY).abs() <= 1, "a 48-hour window: {s}");
        let ideal = not_after + 1 - (not_after + 1 - not_before) / 3;
        assert!(
            (start + DAY - ideal).abs() <= 2,
            "centred at a third of the lifetime left: {s}"
        );
        assert!(
            (start..=end).contains(&renew_at),
            "renewal in the window: {s}"
        );
        assert!(
            renew_at < not_after - RENEW_BEFORE_DAYS * DAY - 365 * DAY,
            "{s}"
        );
        // Pebble says Retry-After: 6 h.
        let next = ari["next_check"].as_i64().unwrap();
        let asked = s["acme"]["last_success"].as_i64().unwrap();
        assert!(
            (6 * 3600 - 60..=6 * 3600 + 120).contains(&(next - asked)),
            "{s}"
        );
    } else {
        assert_eq!(ari["state"], "unsupported", "{s}");
        assert_eq!(s["acme"]["renew_rule"], "renew_before", "{s}");
        assert_eq!(renew_at, not_after - RENEW_BEFORE_DAYS * DAY, "{s}");
    }

    // nbctl: where the served certificate came from, the ACME state, and a forced renewal.
    let config = n.config_path();
    let (show, acme_out, renew) = blocking(move || {
        let show = nbctl(&config, &["cert", "show"]);
        let acme = nbctl(&config, &["cert", "acme"]);
        let renew = nbctl(&config, &["cert", "acme", "--renew"]);
        (show, acme, renew)
    })
    .await;
    assert!(
        show.stdout.contains("served now: ACME ("),
        "{}",
        show.text()
    );
    assert!(show.stdout.contains(&serial), "{}", show.text());
    acme_out.expect(0, &["certificate for nb.test from", &serial]);
    acme_out.expect(
        0,
        &[if with_ari {
            "picked at random in the CA's renewal window"
        } else {
            "tls.acme.renew_before before expiry; the CA offers no renewal window (ARI)"
        }],
    );
    renew.expect(0, &["ordering a new certificate"]);
    let renewed = wait_new_serial(&n, port, &pebble, &serial, "nbctl cert acme --renew").await;

    if with_ari {
        // doctor: the ACME state, the domain leading to this notebookd, and
        // the clock against Pebble's Date; then with a clock two hours ahead.
        if let Some((code, checks)) =
            doctor_resolving(&n.config_path(), &format!("127.0.0.1 {DOMAIN}\n"), None).await
        {
            let acme = doctor_line(&checks, "acme", "certificate for nb.test");
            assert_eq!(acme["verdict"], "ok", "{checks:#?}");
            let domain = doctor_line(&checks, "acme domain", DOMAIN);
            assert_eq!(domain["verdict"], "ok", "{checks:#?}");
            assert!(
                domain["message"]
                    .as_str()
                    .unwrap()
                    .contains("leads to this notebookd"),
                "{checks:#?}"
            );
            let clock = doctor_line(&checks, "clock", "ACME CA");
            assert_eq!(clock["verdict"], "ok", "{checks:#?}");
            let failed: Vec<_> = checks.iter().filter(|c| c["verdict"] == "fail").collect();
            assert_eq!(code, i32::from(!failed.is_empty()), "{checks:#?}");
        }
        if let Some((code, checks)) = doctor_resolving(
            &n.config_path(),
            &format!("127.0.0.1 {DOMAIN}\n"),
            Some("+2h"),
        )
        .await
        {
            let clock = doctor_line(&checks, "clock", "ACME CA");
            assert_eq!(clock["verdict"], "fail", "{checks:#?}");
            assert!(
                clock["message"].as_str().unwrap().contains("ahead of"),
                "{checks:#?}"
            );
            assert!(
                clock["fix"]
                    .as_str()
                    .unwrap()
                    .contains("timedatectl set-ntp true"),
                "{checks:#?}"
            );
            assert_eq!(code, 1);
        }

        // Pebble revokes the served certificate: its window moves into the
        // past (core.RenewalInfoImmediate). A reload asks for the window
        // again; notebookd renews at once, naming what it replaces.
        revoke_stored_certificate(&n).await;
        let config = n.config_path();
        blocking(move || nbctl(&config, &["reload"]))
            .await
            .expect(0, &["reloaded"]);
        let third = wait_new_serial(&n, port, &pebble, &renewed, "after revocation").await;
        assert!(
            n.log_text()
                .contains(&format!("(replacing serial {renewed})")),
            "{}",
            n.log_text()
        );
        assert!(
            pebble.log().contains("is a replacement of"),
            "Pebble saw no replacement order:\n{}",
            pebble.log()
        );
        // The new certificate's window is asked for in turn, in the future.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = status_json(&n).await;
            let start = s["acme"]["ari"]["start"].as_i64().unwrap_or(0);
            if s["tls"]["certificate"]["serial"] == third.as_str()
                && s["acme"]["state"] == "valid"
                && start > not_before + 365 * DAY
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no window for the new certificate: {s}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    if challenge == "http-01" {
        // Everything but a challenge is sent to https, to a configured name only.
        let url = format!("http://127.0.0.1:{http_port}/tree?x=1");
        let (status, location) = blocking(move || {
            let plain = reqwest::blocking::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap();
            let resp = plain
                .get(url)
                .header("Host", "evil.example")
                .send()
                .unwrap();
            let location = resp.headers()["location"].to_str().unwrap().to_string();
            (resp.status(), location)
        })
        .await;
        assert_eq!(status, 301);
        assert_eq!(location, format!("https://{DOMAIN}:{port}/tree?x=1"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_through_tls_alpn_01() {
    obtains_through("tls-alpn-01").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn certificate_through_http_01_and_the_plain_listener_redirects() {
    obtains_through("http-01").await;
}

async fn wait_failing(n: &Notebookd) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = status_json(n).await;
        if s["acme"]["state"] == "failing" {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "ACME never reported a failure: {s}\n{}",
            n.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The CA is down at start: the service is up at once on a temporary
/// self-signed certificate, status says what failed and when it retries,
/// and once the CA is up the real certificate replaces it without a restart.
#[tokio::test(flavor = "multi_thread")]
async fn ca_down_at_start_then_back() {
    if !pebble_installed() {
        return;
    }
    let port = free_port();
    let http_port = free_port();
    let pebble = Pebble::reserve();
    let n = Notebookd::start_with(Options {
        listen: Some(format!("\"127.0.0.1:{port}\"")),
        extra: acme_section(&pebble, DOMAIN, "tls-alpn-01", http_port),
        ..Default::default()
    });
    let (_, issuer) = handshake(port, DOMAIN, accept_anything())
        .await
        .expect("serving at once");
    assert_eq!(
        issuer,
        format!("CN={DOMAIN}"),
        "a temporary self-signed certificate"
    );

    let s = wait_failing(&n).await;
    let acme = &s["acme"];
    assert!(
        acme["last_error"].as_str().unwrap().contains("localhost"),
        "{s}"
    );
    assert!(acme["hint"].as_str().unwrap().contains("reachable"), "{s}");
    assert!(acme["next_attempt"].as_i64().unwrap() > acme["last_error_at"].as_i64().unwrap());
    assert!(
        s["tls"]["certificate"]["source"]
            .as_str()
            .unwrap()
            .contains("temporary"),
        "{s}"
    );
    let config = n.config_path();
    let text = blocking(move || nbctl(&config, &["status"]).stdout).await;
    assert!(text.contains("FAILING for nb.test"), "{text}");
    assert!(text.contains("next try at"), "{text}");

    let pebble = blocking(move || {
        let mut p = pebble;
        p.start(port, http_port, None);
        p
    })
    .await;
    // The first retry comes 15 s after the first failure.
    wait_pebble_certificate(&n, port, &pebble, Duration::from_secs(90)).await;
    let s = status_json(&n).await;
    assert_eq!(s["acme"]["state"], "valid", "{s}");
}

/// A validation the CA cannot complete (the name resolves to an address
/// where nothing answers) is refused; the status line names the domain,
/// the CA's reason and what to check; the temporary certificate stays.
#[tokio::test(flavor = "multi_thread")]
async fn refused_order_is_a_clear_status_line() {
    if !pebble_installed() {
        return;
    }
    let port = free_port();
    let http_port = free_port();
    let pebble = blocking(move || {
        let mut p = Pebble::reserve();
        p.start(port, http_port, None);
        p.add_a("wrong.test", "127.0.0.2");
        p
    })
    .await;
    let n = Notebookd::start_with(Options {
        listen: Some(format!("\"127.0.0.1:{port}\"")),
        extra: acme_section(&pebble, "wrong.test", "tls-alpn-01", http_port),
        ..Default::default()
    });
    let s = wait_failing(&n).await;
    let error = s["acme"]["last_error"].as_str().unwrap();
    // The CA's own reason: where it tried to connect.
    assert!(error.contains("127.0.0.2"), "{s}");
    assert!(
        s["acme"]["hint"].as_str().unwrap().contains("port 443"),
        "{s}"
    );
    let (_, issuer) = handshake(port, "wrong.test", accept_anything())
        .await
        .unwrap();
    assert_eq!(issuer, "CN=wrong.test", "the temporary certificate stays");
    let config = n.config_path();
    let text = blocking(move || nbctl(&config, &["status"]).stdout).await;
    assert!(text.contains("FAILING for wrong.test"), "{text}");
    assert!(
        text.contains("check that the CA reaches this machine on port 443"),
        "{text}"
    );

    // doctor, with wrong.test resolving where Pebble's DNS sends the CA: the
    // ACME state fails with what to check, and the domain is named as not
    // leading to this notebookd, with the DNS fix.
    if let Some((code, checks)) =
        doctor_resolving(&n.config_path(), "127.0.0.2 wrong.test\n", None).await
    {
        assert_eq!(code, 1, "{checks:#?}");
        let acme = doctor_line(&checks, "acme", "FAILING for wrong.test");
        assert_eq!(acme["verdict"], "fail", "{checks:#?}");
        assert!(
            acme["fix"].as_str().unwrap().contains("port 443"),
            "{checks:#?}"
        );
        let domain = doctor_line(&checks, "acme domain", "wrong.test");
        assert_eq!(domain["verdict"], "warn", "{checks:#?}");
        let message = domain["message"].as_str().unwrap();
        assert!(
            message.contains("127.0.0.2 is not an address of this machine")
                && message.contains("notebookd does not answer there"),
            "{checks:#?}"
        );
        assert!(
            domain["fix"]
                .as_str()
                .unwrap()
                .contains("point the A/AAAA records of wrong.test at this machine"),
            "{checks:#?}"
        );
    }
}

/// Pebble issuing 30-second certificates: notebookd renews each when a
/// third of its lifetime is left, and new connections get the new serial
/// without a restart, while a kernel WebSocket opened before stays open.
#[tokio::test(flavor = "multi_thread")]
async fn short_lived_certificates_are_renewed() {
    if !pebble_installed() {
        return;
    }
    let port = free_port();
    let http_port = free_port();
    let pebble = blocking(move || {
        let mut p = Pebble::reserve();
        p.start(port, http_port, Some(30));
        p
    })
    .await;
    let n = Notebookd::start_with(Options {
        listen: Some(format!("\"127.0.0.1:{port}\"")),
        extra: acme_section(&pebble, DOMAIN, "tls-alpn-01", http_port),
        ..Default::default()
    });
    let first = wait_pebble_certificate(&n, port, &pebble, Duration::from_secs(60)).await;
    // A kernel WebSocket opened under the first certificate (the check is
    // the connection across the renewal, not trust: see the handshakes below).
    let b = Browser::accepting_any_certificate(&format!("https://localhost:{port}/"));
    b.login(crate::support::PASSWORD).await;
    let id = b.start_kernel().await;
    let mut ws = KernelSocket::open(
        &format!("wss://localhost:{port}/api/kernels/{id}/channels"),
        &b.cookie_header(),
        &b.origin,
        accept_anything(),
    )
    .await
    .expect("open the kernel WebSocket");
    assert_eq!(ws.run("print(1+1)").await.unwrap().stdout.trim(), "2");
    let s = status_json(&n).await;
    let renew_at = s["acme"]["renew_at"].as_i64().unwrap();
    let not_after = s["tls"]["certificate"]["not_after_unix"].as_i64().unwrap();
    assert!(
        (9..=11).contains(&(not_after - renew_at)),
        "renewal a third of 30 s before expiry: {s}"
    );
    // Pebble 2.4 offers no renewal window: the lifetime rule decides.
    assert_eq!(s["acme"]["renew_rule"], "lifetime", "{s}");
    assert_eq!(s["acme"]["ari"]["state"], "unsupported", "{s}");
    let client = rustls_client_trusting(&pebble_root(&pebble).await);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (serial, _) = handshake(port, DOMAIN, client.clone()).await.unwrap();
        if serial != first {
            break;
        }
        assert!(Instant::now() < deadline, "not renewed: {}", n.log_text());
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(count_orders(&n) >= 2, "{}", n.log_text());
    // The WebSocket opened before the renewal still carries the kernel.
    assert_eq!(ws.run("print(2+2)").await.unwrap().stdout.trim(), "4");
}

fn count_orders(n: &Notebookd) -> usize {
    n.log_text().matches("ACME: ordering").count()
}
