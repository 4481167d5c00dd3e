//! Hot certificate reload: new certificate files are swapped in without a
//! restart; new connections get them, an open kernel WebSocket stays open;
//! a half-written or mismatched pair is refused and the old one kept.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

use crate::nbctl::nbctl;
use crate::support::kernel::KernelSocket;
use crate::support::{Notebookd, Options, certs, eventually, rustls_client};

/// A new key and a certificate for localhost signed by the test CA, in `dir`
/// as `NAME.pem` and `NAME.key`.
fn new_leaf(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let ca = certs().dir.path();
    let (cert, key, csr) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.csr")),
    );
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n",
    )
    .unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let s = |p: &Path| p.display().to_string();
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-subj",
        &format!("/CN=localhost {name}"),
        "-keyout",
        &s(&key),
        "-out",
        &s(&csr),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        &s(&csr),
        "-CA",
        &s(&ca.join("ca.pem")),
        "-CAkey",
        &s(&ca.join("ca.key")),
        "-set_serial",
        &format!("0x{}", random_serial()),
        "-days",
        "2",
        "-extfile",
        &s(&ext),
        "-out",
        &s(&cert),
    ]);
    (cert, key)
}

fn random_serial() -> String {
    let mut bytes = [0u8; 12];
    getrandom::getrandom(&mut bytes).unwrap();
    bytes[0] = (bytes[0] & 0x7f) | 0x10;
    hex::encode_upper(bytes)
}

/// The serial of the first certificate in a PEM file, as notebookd reports it.
fn serial_of_file(path: &Path) -> String {
    let der = CertificateDer::pem_file_iter(path)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    serial_of(&der)
}

fn serial_of(der: &CertificateDer<'_>) -> String {
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    x509.raw_serial_as_string().replace(':', "").to_uppercase()
}

/// The serial of the certificate a new TLS connection to `port` gets,
/// verified against the test CA.
async fn served_serial(port: u16) -> String {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let connector = tokio_rustls::TlsConnector::from(rustls_client());
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("a verified TLS handshake");
    let (_, conn) = tls.get_ref();
    serial_of(&conn.peer_certificates().unwrap()[0])
}

/// Replaces `to` by `from` in one rename, as `nbctl cert install` and most tools do.
fn replace_atomically(from: &Path, to: &Path) {
    let tmp = to.with_extension("new");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

fn count_log(n: &Notebookd, needle: &str) -> usize {
    n.log().iter().filter(|l| l.contains(needle)).count()
}

const REFUSED: &str = "were not swapped in, the served certificate stays";

async fn wait_refusals(n: &Notebookd, at_least: usize) {
    let ok = eventually(Duration::from_secs(20), async || {
        count_log(n, REFUSED) >= at_least
    })
    .await;
    assert!(ok, "no refusal logged; log:\n{}", n.log_text());
}

/// A kernel started through `browser`, and an open WebSocket to it.
async fn open_kernel(n: &Notebookd, browser: &crate::support::Browser) -> KernelSocket {
    let resp = browser
        .send_json(
            reqwest::Method::POST,
            "api/kernels",
            &serde_json::json!({"name": "python3"}),
        )
        .await;
    assert_eq!(resp.status(), 201);
    let body: serde_json::Value = resp.json().await.unwrap();
    let id = body["id"].as_str().unwrap();
    KernelSocket::open(
        &n.ws_url(&format!("api/kernels/{id}/channels")),
        &browser.cookie_header(),
        &browser.origin,
        rustls_client(),
    )
    .await
    .expect("open the kernel WebSocket")
}

/// `nbctl cert install`-style replacement: a half-written file and a
/// mismatched pair are refused (logged, old certificate kept), the complete
/// pair is swapped in, and a kernel WebSocket opened before stays usable.
#[tokio::test(flavor = "multi_thread")]
async fn replaced_files_are_served_and_a_websocket_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(certs().cert(), &cert).unwrap();
    std::fs::copy(certs().key(), &key).unwrap();
    let n = Notebookd::start_with(Options {
        tls_files: Some((cert.clone(), key.clone())),
        ..Default::default()
    });
    let first = serial_of_file(&cert);
    assert_eq!(served_serial(n.port).await, first);

    let browser = n.logged_in().await;
    let mut kernel = open_kernel(&n, &browser).await;
    assert_eq!(kernel.run("print(1+1)").await.unwrap().stdout.trim(), "2");

    let staging = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = new_leaf(staging.path(), "second");
    let second = serial_of_file(&new_cert);
    assert_ne!(first, second);

    // Half-written: the first half of the new certificate, written in place.
    let pem = std::fs::read(&new_cert).unwrap();
    std::fs::write(&cert, &pem[..pem.len() / 2]).unwrap();
    wait_refusals(&n, 1).await;
    assert_eq!(
        served_serial(n.port).await,
        first,
        "a broken file is kept out"
    );

    // The whole new certificate, but the old key: a mismatched pair.
    let refused = count_log(&n, REFUSED);
    replace_atomically(&new_cert, &cert);
    wait_refusals(&n, refused + 1).await;
    assert!(
        n.log_text()
            .contains("this key does not belong to the certificate"),
        "{}",
        n.log_text()
    );
    assert_eq!(
        served_serial(n.port).await,
        first,
        "a mismatched pair is kept out"
    );

    // The key that goes with it: the pair is complete and swapped in.
    replace_atomically(&new_key, &key);
    let swapped = eventually(Duration::from_secs(20), async || {
        served_serial(n.port).await == second
    })
    .await;
    assert!(
        swapped,
        "the new certificate was not served; log:\n{}",
        n.log_text()
    );
    n.wait_log(&format!("serial {second}"), Duration::from_secs(30));

    // The WebSocket opened under the old certificate still carries the kernel.
    assert_eq!(kernel.run("print(2+2)").await.unwrap().stdout.trim(), "4");
    // And the session still works over a new connection.
    assert_eq!(browser.get("api/kernels").await.status(), 200);

    let config = n.config_path();
    let out = tokio::task::spawn_blocking(move || nbctl(&config, &["status", "--json"]))
        .await
        .unwrap();
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(s["tls"]["certificate"]["serial"], second, "{s}");
    assert_eq!(
        s["tls"]["certificate"]["subject"], "CN=localhost second",
        "{s}"
    );
    assert!(
        s["tls"]["certificate"]["source"]
            .as_str()
            .unwrap()
            .contains(&cert.display().to_string()),
        "{s}"
    );
}

/// certbot's layout: `live/NAME/{fullchain,privkey}.pem` are symlinks into
/// `archive/NAME/`, and a renewal writes new archive files and re-points the
/// symlinks (each by a rename). The swap happens once both point at the new pair.
#[tokio::test(flavor = "multi_thread")]
async fn certbot_symlink_renewal_is_picked_up() {
    let root = tempfile::tempdir().unwrap();
    let archive = root.path().join("archive/nb.example");
    let live = root.path().join("live/nb.example");
    std::fs::create_dir_all(&archive).unwrap();
    std::fs::create_dir_all(&live).unwrap();
    std::fs::copy(certs().cert(), archive.join("fullchain1.pem")).unwrap();
    std::fs::copy(certs().key(), archive.join("privkey1.pem")).unwrap();
    let link = |name: &str, target: &str| {
        let tmp = live.join(format!("{name}.tmp"));
        std::os::unix::fs::symlink(format!("../../archive/nb.example/{target}"), &tmp).unwrap();
        std::fs::rename(&tmp, live.join(name)).unwrap();
    };
    link("fullchain.pem", "fullchain1.pem");
    link("privkey.pem", "privkey1.pem");

    let n = Notebookd::start_with(Options {
        tls_files: Some((live.join("fullchain.pem"), live.join("privkey.pem"))),
        ..Default::default()
    });
    let first = serial_of_file(&archive.join("fullchain1.pem"));
    assert_eq!(served_serial(n.port).await, first);

    let (new_cert, new_key) = new_leaf(root.path(), "renewed");
    // certbot writes the chain as leaf + CA.
    let mut chain = std::fs::read(&new_cert).unwrap();
    chain.extend(certs().ca_pem());
    std::fs::write(archive.join("fullchain2.pem"), chain).unwrap();
    std::fs::copy(&new_key, archive.join("privkey2.pem")).unwrap();
    let second = serial_of_file(&new_cert);
    link("fullchain.pem", "fullchain2.pem");
    link("privkey.pem", "privkey2.pem");

    let deadline = Instant::now() + Duration::from_secs(20);
    while served_serial(n.port).await != second {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was not served; log:\n{}",
            n.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
