//! `nbctl cert generate|show|install`: the files they write, what openssl
//! and notebookd's rustls make of them, and TLS clients reaching a real
//! notebookd by every name of a generated certificate.

use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::{X509, X509NameBuilder};

use super::{nbctl, open_dir, scratch_config};
use crate::support::{Notebookd, Options, certs, missing_tool};

fn openssl(args: &[&str]) -> (bool, String) {
    let out = match Command::new("openssl").args(args).output() {
        Ok(o) => o,
        Err(_) => {
            missing_tool("openssl(1)", "apt-get install openssl");
            return (true, String::new());
        }
    };
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The names in a certificate, as openssl(1) prints them.
fn sans(cert: &Path) -> String {
    let (ok, text) = openssl(&[
        "x509",
        "-in",
        path_str(cert),
        "-noout",
        "-ext",
        "subjectAltName",
    ]);
    assert!(ok, "{text}");
    text
}

/// Owner and mode a key must get: root:notebook 0640 when that group exists (as root), else 0600.
fn expected_key_access() -> (u32, Option<u32>) {
    let group = nix::unistd::Group::from_name("notebook").ok().flatten();
    match group {
        Some(g) if nix::unistd::Uid::effective().is_root() => (0o640, Some(g.gid.as_raw())),
        _ => (0o600, None),
    }
}

#[test]
fn every_key_type_verifies_with_openssl_and_loads_in_rustls() {
    let dir = open_dir();
    for key_type in ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096"] {
        let cert = dir.path().join(format!("{key_type}.pem"));
        let key = dir.path().join(format!("{key_type}.key"));
        nbctl(
            &dir.path().join("unused.toml"),
            &[
                "cert",
                "generate",
                "--key-type",
                key_type,
                "--days",
                "30",
                "--host",
                "nb.test",
                "--cert",
                path_str(&cert),
                "--key",
                path_str(&key),
            ],
        )
        .expect(
            0,
            &[
                "wrote a self-signed certificate for DNS:nb.test",
                "SHA-256 fingerprint",
            ],
        );
        let (ok, text) = openssl(&["verify", "-CAfile", path_str(&cert), path_str(&cert)]);
        assert!(ok && text.contains(": OK"), "{key_type}: {text}");
        notebookd::front::tls::load(&cert, &key)
            .unwrap_or_else(|e| panic!("{key_type}: rustls: {e}"));
        let (_, text) = openssl(&["x509", "-in", path_str(&cert), "-noout", "-text"]);
        let want = match key_type {
            "ec-p256" => "NIST CURVE: P-256",
            "ec-p384" => "NIST CURVE: P-384",
            "rsa-2048" => "(2048 bit)",
            "rsa-3072" => "(3072 bit)",
            _ => "(4096 bit)",
        };
        assert!(text.contains(want), "{key_type}: {text}");
        assert!(
            text.contains("CA:FALSE") && text.contains("TLS Web Server Authentication"),
            "{text}"
        );
        let meta = std::fs::metadata(&key).unwrap();
        let (mode, gid) = expected_key_access();
        assert_eq!(meta.mode() & 0o7777, mode, "{key_type} key mode");
        if let Some(gid) = gid {
            assert_eq!((meta.uid(), meta.gid()), (0, gid));
        }
        assert_eq!(std::fs::metadata(&cert).unwrap().mode() & 0o7777, 0o644);
    }
}

/// Without --host: the hostname, localhost and the machine's addresses
/// (`hostname -I`: every address but loopback and IPv6 link-local).
#[test]
fn default_names_are_the_machines() {
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    // Written to the configured tls.cert / tls.key, creating their directory.
    nbctl(&config, &["cert", "generate"]).expect(0, &["DNS:localhost", "notebookd is not running"]);
    let cert = dir.path().join("tls/cert.pem");
    let names = sans(&cert);
    let hostname = nix::unistd::gethostname()
        .unwrap()
        .into_string()
        .unwrap()
        .to_lowercase();
    assert!(names.contains(&format!("DNS:{hostname}")), "{names}");
    assert!(names.contains("DNS:localhost"), "{names}");
    assert!(!names.contains("IP Address:127.0.0.1"), "{names}");
    let out = Command::new("hostname").arg("-I").output().unwrap();
    for addr in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let ip: IpAddr = addr.parse().unwrap();
        let shown = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            // openssl prints IPv6 SANs in full, upper case.
            IpAddr::V6(v6) => v6
                .segments()
                .iter()
                .map(|s| format!("{s:X}"))
                .collect::<Vec<_>>()
                .join(":"),
        };
        assert!(
            names.contains(&format!("IP Address:{shown}")),
            "{addr} missing: {names}"
        );
    }
    nbctl(&config, &["cert", "show"]).expect(
        0,
        &["DNS:localhost", "matches the certificate: yes", "days left"],
    );
}

#[test]
fn generate_refuses_to_overwrite_and_bad_arguments() {
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    let cert = dir.path().join("tls/cert.pem");
    let key = dir.path().join("tls/key.pem");
    nbctl(&config, &["cert", "generate", "--host", "a.test"]).expect(0, &[]);
    let before = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    nbctl(&config, &["cert", "generate", "--host", "b.test"])
        .expect(1, &["exists", "--force", "nothing was changed"]);
    assert_eq!(
        (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()),
        before
    );
    for (args, needle) in [
        (
            vec!["--host", "a b"],
            "neither a DNS name nor an IP address",
        ),
        (
            vec!["--host", "x/y"],
            "neither a DNS name nor an IP address",
        ),
        (vec!["--days", "0"], "--days"),
        (vec!["--days", "100000"], "--days"),
        (vec!["--key-type", "dsa"], "possible values"),
    ] {
        let mut all = vec!["cert", "generate", "--force"];
        all.extend(args);
        nbctl(&config, &all).expect(2, &[needle]);
        assert_eq!(
            (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()),
            before
        );
    }
    nbctl(
        &config,
        &[
            "cert",
            "generate",
            "--force",
            "--host",
            "b.test",
            "--host",
            "192.0.2.7",
        ],
    )
    .expect(0, &["DNS:b.test, IP:192.0.2.7"]);
    assert!(sans(&cert).contains("DNS:b.test"));
    assert_ne!(std::fs::read(&key).unwrap(), before.1);
}

/// A key path holding a symlink to a file elsewhere: `--force` replaces the
/// link with a regular file and the file it pointed at is untouched, for
/// the server pair and for the local CA's key.
#[test]
fn generate_replaces_a_planted_symlink_and_never_writes_through_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o755)).unwrap();
    let outside = dir.path().join("shadow");
    std::fs::write(&outside, "root:*:19000:0:99999:7:::\n").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o640)).unwrap();
    let (cert, key) = (tls.join("cert.pem"), tls.join("key.pem"));
    std::os::unix::fs::symlink(&outside, &key).unwrap();
    std::os::unix::fs::symlink(&outside, &cert).unwrap();

    nbctl(&config, &["cert", "generate", "--host", "a.test"])
        .expect(1, &["exists", "--force", "nothing was changed"]);
    nbctl(
        &config,
        &["cert", "generate", "--force", "--host", "a.test"],
    )
    .expect(0, &[]);
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "root:*:19000:0:99999:7:::\n"
    );
    assert_eq!(std::fs::metadata(&outside).unwrap().mode() & 0o7777, 0o640);
    for p in [&cert, &key] {
        let m = std::fs::symlink_metadata(p).unwrap();
        assert!(
            m.file_type().is_file(),
            "{} is not a regular file",
            p.display()
        );
    }
    assert!(
        std::fs::read_to_string(&key)
            .unwrap()
            .contains("PRIVATE KEY")
    );
    assert_eq!(
        key.metadata().unwrap().mode() & 0o7777,
        expected_key_access().0
    );

    // The local CA's key beside the certificate: the same.
    let ca_key = tls.join("ca-key.pem");
    std::fs::remove_file(&key).unwrap();
    std::os::unix::fs::symlink(&outside, &key).unwrap();
    std::os::unix::fs::symlink(&outside, &ca_key).unwrap();
    nbctl(
        &config,
        &["cert", "generate", "--ca", "--force", "--host", "a.test"],
    )
    .expect(0, &[]);
    assert_eq!(
        std::fs::read_to_string(&outside).unwrap(),
        "root:*:19000:0:99999:7:::\n"
    );
    for p in [&key, &ca_key] {
        assert!(std::fs::symlink_metadata(p).unwrap().file_type().is_file());
    }
}

/// A key directory others can write (with or without the sticky bit) is
/// refused before anything is written, with the fix in the message.
#[test]
fn generate_refuses_a_directory_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    let tls = dir.path().join("tls");
    std::fs::create_dir(&tls).unwrap();
    for mode in [0o777, 0o1777, 0o775] {
        std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = nbctl(
            &config,
            &["cert", "generate", "--force", "--host", "a.test"],
        );
        out.expect(
            1,
            &[
                "refusing to write",
                &format!("{} is writable by", tls.display()),
                &format!("chmod go-w {}", tls.display()),
            ],
        );
        assert_eq!(
            std::fs::read_dir(&tls).unwrap().count(),
            0,
            "mode {mode:o}: something was written"
        );
    }
    std::fs::set_permissions(&tls, std::fs::Permissions::from_mode(0o755)).unwrap();
    nbctl(
        &config,
        &["cert", "generate", "--force", "--host", "a.test"],
    )
    .expect(0, &[]);
    // A directory that belongs to another user (nobody): refused too.
    if nix::unistd::Uid::effective().is_root() {
        std::os::unix::fs::chown(&tls, Some(65534), Some(65534)).unwrap();
        nbctl(
            &config,
            &["cert", "generate", "--force", "--host", "b.test"],
        )
        .expect(1, &["belongs to user", "chown root"]);
        assert!(sans(&tls.join("cert.pem")).contains("DNS:a.test"));
    } else {
        eprintln!("!!! not root: cannot give the directory to another user; skipping that part");
    }
}

/// A self-signed certificate that expired yesterday, and its key.
fn expired_pair(dir: &Path) -> (PathBuf, PathBuf) {
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, "expired.test")
        .unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    b.set_not_before(&Asn1Time::from_unix(now - 10 * 86400).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(now - 86400).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    let cert_path = dir.join("expired.pem");
    let key_path = dir.join("expired.key");
    std::fs::write(&cert_path, b.build().to_pem().unwrap()).unwrap();
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    (cert_path, key_path)
}

#[test]
fn show_reports_mismatch_expiry_and_bad_files() {
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    let cert = dir.path().join("tls/cert.pem");
    let key = dir.path().join("tls/key.pem");
    nbctl(&config, &["cert", "show"])
        .expect(1, &["cannot read the certificate", "nbctl cert generate"]);
    nbctl(
        &config,
        &["cert", "generate", "--host", "a.test", "--days", "10"],
    )
    .expect(0, &[]);
    let fingerprint = openssl(&[
        "x509",
        "-in",
        path_str(&cert),
        "-noout",
        "-fingerprint",
        "-sha256",
    ])
    .1;
    let fingerprint = fingerprint.trim().rsplit('=').next().unwrap().to_string();
    let shown = nbctl(&config, &["cert", "show"]);
    shown.expect(
        0,
        &[
            "subject:      CN=a.test",
            "(self-signed)",
            "DNS:a.test",
            "EC P-256",
            &fingerprint,
            "matches the certificate: yes",
        ],
    );
    // Whole days left: ten at the second it was made, nine a second later.
    assert!(
        ["(10 days left)", "(9 days left)"]
            .iter()
            .any(|n| shown.text().contains(n)),
        "{}",
        shown.text()
    );
    // Another key.
    let other = dir.path().join("other");
    std::fs::create_dir(&other).unwrap();
    nbctl(
        &config,
        &[
            "cert",
            "generate",
            "--cert",
            path_str(&other.join("c.pem")),
            "--key",
            path_str(&other.join("k.pem")),
        ],
    )
    .expect(0, &[]);
    nbctl(
        &config,
        &["cert", "show", "--key", path_str(&other.join("k.pem"))],
    )
    .expect(
        1,
        &[
            "matches the certificate: NO",
            "does not belong to the certificate",
        ],
    );
    let (expired, expired_key) = expired_pair(dir.path());
    nbctl(
        &config,
        &[
            "cert",
            "show",
            "--cert",
            path_str(&expired),
            "--key",
            path_str(&expired_key),
        ],
    )
    .expect(1, &["EXPIRED", "expired on"]);
    std::fs::write(dir.path().join("garbage.pem"), "not a certificate\n").unwrap();
    nbctl(
        &config,
        &[
            "cert",
            "show",
            "--cert",
            path_str(&dir.path().join("garbage.pem")),
        ],
    )
    .expect(1, &["holds no certificate", "BEGIN CERTIFICATE"]);
    assert!(key.exists());
}

#[test]
fn install_checks_everything_before_touching_anything() {
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    nbctl(&config, &["cert", "generate", "--host", "old.test"]).expect(0, &[]);
    let cert = dir.path().join("tls/cert.pem");
    let key = dir.path().join("tls/key.pem");
    let before = (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap());
    let unchanged = || {
        assert_eq!(
            (std::fs::read(&cert).unwrap(), std::fs::read(&key).unwrap()),
            before
        )
    };

    let t = certs();
    let leaf = std::fs::read_to_string(t.cert()).unwrap();
    let ca = std::fs::read_to_string(t.ca()).unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let write = |name: &str, text: &str| {
        let p = src.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let garbage = write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let empty = write("empty.pem", "hello\n");
    let chain = write("chain.pem", &format!("{leaf}{ca}"));
    let reversed = write("reversed.pem", &format!("{ca}{leaf}"));
    let (expired, expired_key) = expired_pair(&src);
    let encrypted = src.join("encrypted.key");
    let (ok, text) = openssl(&[
        "pkey",
        "-in",
        path_str(&t.key()),
        "-aes256",
        "-passout",
        "pass:x",
        "-out",
        path_str(&encrypted),
    ]);
    assert!(ok, "{text}");
    let install =
        |c: &Path, k: &Path| nbctl(&config, &["cert", "install", path_str(c), path_str(k)]);

    install(&garbage, &t.key()).expect(1, &["garbage.pem is not a PEM certificate file"]);
    unchanged();
    install(&empty, &t.key()).expect(1, &["empty.pem holds no certificate"]);
    unchanged();
    install(&chain, &empty).expect(1, &["empty.pem holds no PEM private key"]);
    unchanged();
    install(&chain, &garbage).expect(1, &["holds no PEM private key"]);
    unchanged();
    install(&chain, &encrypted).expect(1, &["encrypted", "openssl pkey"]);
    unchanged();
    install(&chain, &expired_key).expect(
        1,
        &[
            "does not belong to the certificate",
            "nothing was installed",
        ],
    );
    unchanged();
    install(&reversed, &t.key()).expect(1, &["does not belong"]);
    unchanged();
    install(&expired, &expired_key).expect(1, &["expired on"]);
    unchanged();
    // The right key, but behind the leaf a certificate that did not issue it.
    let old = String::from_utf8(before.0.clone()).unwrap();
    let misordered = write("misordered.pem", &format!("{leaf}{old}"));
    install(&misordered, &t.key()).expect(
        1,
        &["was not issued by the next one", "server certificate first"],
    );
    unchanged();
    install(&chain, &dir.path().join("absent.key")).expect(1, &["cannot read the key"]);
    unchanged();

    install(&chain, &t.key()).expect(
        0,
        &["installed", "DNS:localhost", "notebookd is not running"],
    );
    assert_eq!(
        std::fs::read_to_string(&cert).unwrap(),
        format!("{leaf}{ca}")
    );
    assert_eq!(
        std::fs::read(&key).unwrap(),
        std::fs::read(t.key()).unwrap()
    );
    let (mode, _) = expected_key_access();
    assert_eq!(std::fs::metadata(&key).unwrap().mode() & 0o7777, mode);
    let (ok, text) = openssl(&["verify", "-CAfile", path_str(&t.ca()), path_str(&cert)]);
    assert!(ok, "{text}");
    nbctl(&config, &["cert", "show"]).expect(
        0,
        &[
            "2 certificates",
            "CN=notebookd test CA",
            "matches the certificate: yes",
        ],
    );
}

/// What `nbctl cert generate` makes is what notebookd serves after a reload,
/// and a client that trusts only that certificate reaches it by every name
/// in it (names resolved to loopback), and not by another.
#[tokio::test(flavor = "multi_thread")]
async fn notebookd_is_reached_by_every_name_of_a_generated_certificate() {
    let n = Notebookd::start_with(Options {
        listen: Some("[\"127.0.0.1:{port}\", \"[::1]:{port}\"]".into()),
        ..Options::default()
    });
    let dir = n.dir.path().join("generated");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let config = n.config_path();
    let (c, k, cfg) = (cert.clone(), key.clone(), config.clone());
    tokio::task::spawn_blocking(move || {
        nbctl(
            &cfg,
            &[
                "cert",
                "generate",
                "--days",
                "30",
                "--host",
                "localhost",
                "--host",
                "nb.test",
                "--host",
                "127.0.0.1",
                "--host",
                "::1",
                "--cert",
                path_str(&c),
                "--key",
                path_str(&k),
            ],
        )
        .expect(0, &[]);
        nbctl(
            &cfg,
            &["config", "set", "tls.cert", path_str(&c), "--no-reload"],
        )
        .expect(0, &["not reloading"]);
        nbctl(&cfg, &["config", "set", "tls.key", path_str(&k)]).expect(0, &["notebookd reloaded"]);
        let (ok, text) = openssl(&["verify", "-CAfile", path_str(&c), path_str(&c)]);
        assert!(ok, "{text}");
    })
    .await
    .unwrap();

    let trusted = reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap();
    let v4 = SocketAddr::from(([127, 0, 0, 1], n.port));
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(trusted)
        .resolve("nb.test", v4)
        .resolve("localhost", v4)
        .resolve("other.test", v4)
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for host in ["localhost", "nb.test", "127.0.0.1", "[::1]"] {
        let url = format!("https://{host}:{}/login", n.port);
        let r = client
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:?}"));
        assert_eq!(r.status(), 200, "{url}");
    }
    let wrong = client
        .get(format!("https://other.test:{}/login", n.port))
        .send()
        .await;
    assert!(wrong.is_err(), "a name not in the certificate was accepted");

    // The status shows the certificate being served.
    let cfg = config.clone();
    let out = tokio::task::spawn_blocking(move || nbctl(&cfg, &["status", "--json"]))
        .await
        .unwrap();
    let s: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(
        s["tls"]["certificate"]["subject"]
            .as_str()
            .unwrap()
            .contains("CN=localhost"),
        "{s}"
    );
    let days = s["tls"]["certificate"]["days_left"].as_i64().unwrap();
    assert!((29..=30).contains(&days), "{s}");

    // `cert install` into the configured files reloads the daemon too: the
    // test CA's chain is served afterwards.
    let cfg = config.clone();
    tokio::task::spawn_blocking(move || {
        let t = certs();
        let chain = cfg.parent().unwrap().join("chain.pem");
        std::fs::write(
            &chain,
            [
                std::fs::read(t.cert()).unwrap(),
                std::fs::read(t.ca()).unwrap(),
            ]
            .concat(),
        )
        .unwrap();
        nbctl(
            &cfg,
            &["cert", "install", path_str(&chain), path_str(&t.key())],
        )
        .expect(0, &["notebookd reloaded"]);
    })
    .await
    .unwrap();
    assert_eq!(n.client().get("login").await.status(), 200);
}

/// The daemon does not link openssl (nbctl does): `readelf -d` NEEDED entries.
#[test]
fn notebookd_does_not_link_libssl() {
    let needed = |bin: &str| -> Option<Vec<String>> {
        let out = match Command::new("readelf").arg("-d").arg(bin).output() {
            Ok(o) => o,
            Err(_) => {
                missing_tool("readelf", "apt-get install binutils");
                return None;
            }
        };
        assert!(out.status.success());
        Some(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("(NEEDED)"))
                .map(str::to_string)
                .collect(),
        )
    };
    let Some(daemon) = needed(env!("CARGO_BIN_EXE_notebookd")) else {
        return;
    };
    let cli = needed(super::NBCTL).unwrap();
    assert!(daemon.iter().any(|l| l.contains("libc.so")), "{daemon:?}");
    assert!(
        !daemon
            .iter()
            .any(|l| l.contains("libssl") || l.contains("libcrypto")),
        "notebookd links openssl: {daemon:?}"
    );
    assert!(
        cli.iter().any(|l| l.contains("libssl")),
        "nbctl should link libssl: {cli:?}"
    );
}

/// `cert generate --ca`: a local CA (made once, its key readable by root
/// only) signs the server certificate; the trust steps for Linux, macOS and
/// Windows and the fingerprints are printed; a client that trusts only that
/// CA connects to notebookd serving the certificate.
#[tokio::test(flavor = "multi_thread")]
async fn generate_with_a_local_ca_that_clients_can_trust() {
    let dir = open_dir();
    let config = scratch_config(dir.path(), "");
    let out = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            nbctl(
                &config,
                &[
                    "cert",
                    "generate",
                    "--ca",
                    "--host",
                    "localhost",
                    "--no-reload",
                ],
            )
        }
    })
    .await
    .unwrap();
    out.expect(
        0,
        &[
            "made the local CA",
            "update-ca-certificates",
            "update-ca-trust",
            "certutil -d sql:$HOME/.pki/nssdb",
            "security add-trusted-cert",
            "certutil -addstore -f Root",
            "SHA-256 fingerprint of the certificate: ",
        ],
    );
    let tls = dir.path().join("tls");
    let (cert, key, ca) = (
        tls.join("cert.pem"),
        tls.join("key.pem"),
        tls.join("ca.pem"),
    );
    let ca_key_mode = std::fs::metadata(tls.join("ca-key.pem")).unwrap().mode() & 0o777;
    assert_eq!(ca_key_mode, 0o600);
    let s = |p: &Path| p.display().to_string();
    let (ok, text) = openssl(&["verify", "-CAfile", &s(&ca), &s(&cert)]);
    assert!(ok, "{text}");
    // The printed fingerprint is the one a browser's warning page shows.
    let (_, fp) = openssl(&[
        "x509",
        "-noout",
        "-fingerprint",
        "-sha256",
        "-in",
        &s(&cert),
    ]);
    let fp = fp.trim().rsplit('=').next().unwrap().to_string();
    assert!(
        out.stdout
            .contains(&format!("SHA-256 fingerprint of the certificate: {fp}")),
        "{fp}\n{}",
        out.text()
    );

    // A second run keeps the CA that browsers already trust.
    let ca_before = std::fs::read(&ca).unwrap();
    let again = tokio::task::spawn_blocking({
        let config = config.clone();
        move || {
            nbctl(
                &config,
                &[
                    "cert",
                    "generate",
                    "--ca",
                    "--force",
                    "--host",
                    "localhost",
                    "--no-reload",
                ],
            )
        }
    })
    .await
    .unwrap();
    again.expect(0, &["used the local CA"]);
    assert_eq!(std::fs::read(&ca).unwrap(), ca_before);

    let n = Notebookd::start_with(Options {
        tls_files: Some((cert.clone(), key.clone())),
        ..Default::default()
    });
    let client = crate::support::rustls_client_trusting(&ca_before);
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", n.port))
        .await
        .unwrap();
    tokio_rustls::TlsConnector::from(client)
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .expect("a client trusting only the local CA accepts notebookd");

    // Chromium with the CA in its NSS database loads the login page unwarned.
    let Some(tools) = crate::browser::tools() else {
        return;
    };
    let settings = serde_json::json!({
        "ca": ca,
        "nb": format!("https://localhost:{}", n.port),
        "artifacts": crate::browser::artifacts(),
    });
    let r = tokio::task::spawn_blocking(move || {
        crate::browser::run_scenario(&tools, "trusted-login.js", &settings)
    })
    .await
    .unwrap();
    assert_eq!(r["secure"], true, "{r}");
}
