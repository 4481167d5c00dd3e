//! `nbctl doctor`: a healthy setup is all ok; an expired certificate, a
//! certificate for the wrong name, a key readable by others, a name that
//! does not resolve, a broken certificate chain, a listen address the
//! certificate does not name, a Jupyter without kernels and nginx in front
//! without `proxy_set_header Upgrade` each come with their fix; `--json`
//! says the same.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};

use super::{nbctl, nbctl_env, open_dir};
use crate::nginx::{Nginx, render_site};
use crate::support::{Notebookd, Options, certs, free_port, jupyter_command};

/// A self-signed certificate for `name` valid from `from` to `until` (Unix
/// seconds), and its key (mode 0600), in `dir/tls`.
fn certificate(dir: &Path, name: &str, from: i64, until: i64) {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let key = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
    )
    .unwrap();
    let mut subject = X509NameBuilder::new().unwrap();
    subject.append_entry_by_nid(Nid::COMMONNAME, name).unwrap();
    let subject = subject.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&subject).unwrap();
    b.set_issuer_name(&subject).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(from).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::from_unix(until).unwrap())
        .unwrap();
    let san = SubjectAlternativeName::new()
        .dns(name)
        .build(&b.x509v3_context(None, None))
        .unwrap();
    b.append_extension(san).unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    std::fs::write(tls.join("cert.pem"), b.build().to_pem().unwrap()).unwrap();
    let key_path = tls.join("key.pem");
    std::fs::write(&key_path, key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn config(dir: &Path, public_url: &str) -> PathBuf {
    config_with(dir, public_url, "", &jupyter_command())
}

/// A config with `server_extra` lines in [server] and this jupyter.command.
fn config_with(dir: &Path, public_url: &str, server_extra: &str, jupyter: &str) -> PathBuf {
    let path = dir.join("notebook.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\npublic_url = \"{public_url}\"\n{server_extra}\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[jupyter]\ncommand = \"{jupyter}\"\n",
            dir.join("state").display(),
            dir.join("run").display(),
            dir.join("tls/cert.pem").display(),
            dir.join("tls/key.pem").display(),
        ),
    )
    .unwrap();
    path
}

fn line<'a>(out: &'a str, check: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(&format!(" {check}: ")))
        .unwrap_or_else(|| panic!("no {check} line in:\n{out}"))
}

#[test]
fn healthy_setup_passes_and_each_mistake_is_named_with_its_fix() {
    let dir = open_dir();
    let day = 86400;
    certificate(dir.path(), "localhost", now() - day, now() + 90 * day);
    let cfg = config(dir.path(), "https://localhost/");
    let out = nbctl(&cfg, &["doctor"]);
    out.expect(0, &[]);
    assert!(!out.stdout.contains("FAIL"), "{}", out.text());
    for check in [
        "config",
        "certificate files",
        "certificate chain",
        "certificate expiry",
        "certificate names",
        "key permissions",
        "name resolves",
        "jupyter command",
        "jupyter version",
        "jupyter kernels",
    ] {
        assert!(line(&out.stdout, check).starts_with("ok"), "{}", out.text());
    }
    assert!(
        line(&out.stdout, "certificate chain").contains("self-signed"),
        "{}",
        out.text()
    );
    assert!(
        line(&out.stdout, "name resolves").contains("localhost resolves to"),
        "{}",
        out.text()
    );
    // The venv's kernel, and the versions of what serves the notebooks.
    assert!(line(&out.stdout, "jupyter kernels").contains("python3"));
    assert!(line(&out.stdout, "jupyter version").contains("jupyter_server"));

    // Expired.
    certificate(dir.path(), "nb.test", now() - 30 * day, now() - day);
    let out = nbctl(&cfg, &["doctor"]);
    out.expect(1, &[]);
    let l = line(&out.stdout, "certificate expiry");
    assert!(
        l.starts_with("FAIL") && l.contains("EXPIRED") && l.contains("fix: renew it"),
        "{l}"
    );

    // For another name than the one users type.
    certificate(dir.path(), "other.test", now() - day, now() + 90 * day);
    let out = nbctl(&cfg, &["doctor"]);
    out.expect(1, &[]);
    let l = line(&out.stdout, "certificate names");
    assert!(
        l.starts_with("FAIL") && l.contains("other.test") && l.contains("--host localhost"),
        "{l}"
    );

    // A name users type that has no DNS record (.invalid never resolves).
    certificate(dir.path(), "nb.invalid", now() - day, now() + 90 * day);
    let unresolved = config(dir.path(), "https://nb.invalid/");
    let out = nbctl(&unresolved, &["doctor"]);
    out.expect(1, &[]);
    let l = line(&out.stdout, "name resolves");
    assert!(
        l.starts_with("FAIL")
            && l.contains("nb.invalid does not resolve")
            && l.contains("fix: create the DNS record"),
        "{l}"
    );

    // A key every user can read.
    certificate(dir.path(), "localhost", now() - day, now() + 90 * day);
    let cfg = config(dir.path(), "https://localhost/");
    let key = dir.path().join("tls/key.pem");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = nbctl(&cfg, &["doctor", "--json"]);
    out.expect(1, &[]);
    let checks: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let perms = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "key permissions")
        .unwrap();
    assert_eq!(perms["verdict"], "fail", "{checks}");
    assert!(
        perms["fix"].as_str().unwrap().contains("chmod 0640"),
        "{checks}"
    );
    let names = checks
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "certificate names")
        .unwrap();
    assert_eq!(names["verdict"], "ok", "{checks}");
}

/// With the daemon running, doctor says so, and reaches it at
/// server.public_url: the TLS certificate verifies (the local CA next to
/// the served certificate), the probe answers with this daemon's id, and a
/// WebSocket upgrade gets its 101.
#[test]
fn a_running_daemon_is_reported_and_reached_at_its_public_url() {
    let n = Notebookd::start_with(Options {
        settings: vec![("server", "public_url = \"https://localhost/\"".into())],
        ..Default::default()
    });
    // The URL users type, with the port the test picked.
    let text = std::fs::read_to_string(n.config_path()).unwrap();
    let url = format!("https://localhost:{}/", n.port);
    std::fs::write(
        n.config_path(),
        text.replace("\"https://localhost/\"", &format!("\"{url}\"")),
    )
    .unwrap();
    let out = nbctl(&n.config_path(), &["doctor"]);
    out.expect(0, &[]);
    let l = line(&out.stdout, "daemon");
    assert!(
        l.starts_with("ok") && l.contains("notebookd is running"),
        "{l}"
    );
    for (check, says) in [
        ("certificate chain", "signed by the local CA"),
        ("public url tls", "a certificate this machine trusts"),
        ("public url", &format!("{url} reaches this notebookd")),
        ("websocket", "a WebSocket upgrade through"),
    ] {
        let l = line(&out.stdout, check);
        assert!(l.starts_with("ok") && l.contains(says), "{}", out.text());
    }
    // A healthy setup: every line is ok, but the shared test certificate's
    // expiry (it lives two days, so doctor rightly says renew it soon).
    assert!(
        out.stdout
            .lines()
            .all(|l| l.starts_with("ok ") || l.starts_with("warn certificate expiry: ")),
        "{}",
        out.text()
    );
    // Direct TLS: no proxy checks.
    assert!(!out.stdout.contains(" trusted proxy: "), "{}", out.text());

    // The URL leads to another notebookd: it never issued this one's ticket.
    let other = Notebookd::start();
    let text = std::fs::read_to_string(n.config_path()).unwrap();
    std::fs::write(
        n.config_path(),
        text.replace(&url, &format!("https://localhost:{}/", other.port)),
    )
    .unwrap();
    let out = nbctl(&n.config_path(), &["doctor"]);
    out.expect(1, &[]);
    let l = line(&out.stdout, "public url");
    assert!(
        l.starts_with("FAIL") && l.contains("reaches another notebookd"),
        "{l}"
    );
}

/// A probe ticket from the daemon's control socket, as doctor gets it.
fn probe_ticket(n: &Notebookd) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answer = rt
        .block_on(notebookd::daemon::control::request(
            &n.runtime_dir(),
            "probe-ticket",
            std::time::Duration::from_secs(10),
        ))
        .unwrap();
    assert_eq!(answer["ok"], true, "{answer}");
    answer["ticket"].as_str().unwrap().to_string()
}

/// The probe faces the internet: without a ticket from the control socket
/// it answers 403 and says nothing about the connection, plain or upgrade;
/// a ticket works once; a WebSocket from another site's Origin is refused
/// before the 101, like any page.
#[test]
fn the_probe_answers_only_its_tickets_and_keeps_the_origin_check() {
    let n = Notebookd::start();
    // (status, body) of a probe with these extra headers.
    let probe = |headers: &[String]| {
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-sk", "-w", "\n%{http_code}", "--max-time", "10"]);
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd.arg(n.url("_notebookd/probe"));
        let out = cmd.output().expect("curl(1): apt-get install curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.to_string(), body.to_string())
    };
    let upgrade = |origin: &str, ticket: Option<&str>| {
        let mut h: Vec<String> = [
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ]
        .map(String::from)
        .to_vec();
        h.push(format!("Origin: {origin}"));
        h.extend(ticket.map(|t| format!("X-Notebookd-Probe: {t}")));
        h
    };
    let here = format!("https://localhost:{}", n.port);

    // No ticket, a made-up one, a malformed one: refused, nothing told.
    for headers in [
        vec![],
        vec!["X-Notebookd-Probe: 0123456789abcdef0123456789abcdef".to_string()],
        vec![format!("X-Notebookd-Probe: {}", "x".repeat(64))],
    ] {
        let (code, body) = probe(&headers);
        assert_eq!(code, "403", "{body}");
        assert!(body.contains("no valid probe ticket"), "{body}");
        assert!(
            !body.contains("127.0.0.1") && !body.contains("peer"),
            "{body}"
        );
    }
    let (code, body) = probe(&upgrade(&here, None));
    assert_eq!(code, "403", "an upgrade without a ticket: {body}");

    // A ticket: what arrived, once.
    let ticket = probe_ticket(&n);
    let with_ticket = [format!("X-Notebookd-Probe: {ticket}")];
    let (code, body) = probe(&with_ticket);
    assert_eq!(code, "200", "{body}");
    let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(seen["probe"], true, "{seen}");
    assert_eq!(seen["tls"], true, "{seen}");
    assert_eq!(seen["peer"], "127.0.0.1", "{seen}");
    assert_eq!(probe(&with_ticket).0, "403", "a ticket works once");

    // Another site's Origin is refused before the probe looks at the
    // ticket, which then still works for the real upgrade, once.
    let ticket = probe_ticket(&n);
    assert_eq!(probe(&upgrade("https://evil.test", Some(&ticket))).0, "403");
    assert_eq!(probe(&upgrade(&here, Some(&ticket))).0, "101");
    assert_eq!(probe(&upgrade(&here, Some(&ticket))).0, "403");
}

/// Each certificate of the served file must be issued by the next: a leaf
/// without its intermediate, a file out of order, and a public CA's leaf
/// alone are named with the fix (fullchain.pem); the full chain to a root
/// this system trusts (SSL_CERT_FILE here) is ok.
#[test]
fn certificate_chain_is_complete_and_in_order() {
    let dir = open_dir();
    let tls = dir.path().join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let day = 86400;
    let key = || {
        PKey::from_ec_key(
            EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap()).unwrap(),
        )
        .unwrap()
    };
    let name = |cn: &str| {
        let mut n = X509NameBuilder::new().unwrap();
        n.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
        n.build()
    };
    // `issuer`: None for a self-signed CA.
    let make = |cn: &str,
                k: &PKey<openssl::pkey::Private>,
                issuer: Option<(&X509, &PKey<openssl::pkey::Private>)>,
                ca: bool,
                aia: bool| {
        let mut b = X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name(cn)).unwrap();
        b.set_issuer_name(issuer.map_or(&*name(cn), |(c, _)| c.subject_name()))
            .unwrap();
        b.set_pubkey(k).unwrap();
        b.set_not_before(&Asn1Time::from_unix(now() - day).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::from_unix(now() + 30 * day).unwrap())
            .unwrap();
        let mut bc = openssl::x509::extension::BasicConstraints::new();
        if ca {
            bc.critical().ca();
        }
        b.append_extension(bc.build().unwrap()).unwrap();
        if !ca {
            let san = SubjectAlternativeName::new()
                .dns("localhost")
                .build(&b.x509v3_context(issuer.map(|(c, _)| &**c), None))
                .unwrap();
            b.append_extension(san).unwrap();
        }
        if aia {
            #[allow(deprecated)]
            let ext = openssl::x509::X509Extension::new_nid(
                None,
                None,
                Nid::INFO_ACCESS,
                "caIssuers;URI:http://ca.test/intermediate.der",
            )
            .unwrap();
            b.append_extension(ext).unwrap();
        }
        b.sign(issuer.map_or(k, |(_, ik)| ik), MessageDigest::sha256())
            .unwrap();
        b.build()
    };
    let (root_key, int_key, leaf_key) = (key(), key(), key());
    let root = make("test root", &root_key, None, true, false);
    let int = make(
        "test intermediate",
        &int_key,
        Some((&root, &root_key)),
        true,
        false,
    );
    let leaf = make("localhost", &leaf_key, Some((&int, &int_key)), false, false);
    let public_leaf = make("localhost", &leaf_key, Some((&int, &int_key)), false, true);
    let root_pem = dir.path().join("root.pem");
    std::fs::write(&root_pem, root.to_pem().unwrap()).unwrap();
    let key_path = tls.join("key.pem");
    std::fs::write(&key_path, leaf_key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let serve = |certs: &[&X509]| {
        let pem: Vec<u8> = certs.iter().flat_map(|c| c.to_pem().unwrap()).collect();
        std::fs::write(tls.join("cert.pem"), pem).unwrap();
    };
    let cfg = config(dir.path(), "https://localhost/");
    let trusting_root = [("SSL_CERT_FILE", root_pem.as_path())];

    // leaf, intermediate: complete up to the root this system trusts.
    serve(&[&leaf, &int]);
    let out = nbctl_env(&cfg, &["doctor"], &trusting_root);
    out.expect(0, &[]);
    let l = line(&out.stdout, "certificate chain");
    assert!(l.starts_with("ok") && l.contains("complete"), "{l}");

    // The leaf alone (cert.pem instead of fullchain.pem).
    serve(&[&leaf]);
    let out = nbctl_env(&cfg, &["doctor"], &trusting_root);
    out.expect(0, &[]);
    let l = line(&out.stdout, "certificate chain");
    assert!(
        l.starts_with("warn")
            && l.contains("the chain lacks the intermediate")
            && l.contains("CN=test intermediate")
            && l.contains("fix: use fullchain.pem"),
        "{l}"
    );
    // A public CA's leaf (it says where its issuer is): certainly broken.
    serve(&[&public_leaf]);
    let out = nbctl_env(&cfg, &["doctor"], &trusting_root);
    out.expect(1, &[]);
    let l = line(&out.stdout, "certificate chain");
    assert!(
        l.starts_with("FAIL") && l.contains("fix: use fullchain.pem"),
        "{l}"
    );

    // Out of order: the intermediate first.
    serve(&[&int, &leaf]);
    let out = nbctl_env(&cfg, &["doctor"], &trusting_root);
    out.expect(1, &[]);
    let l = line(&out.stdout, "certificate chain");
    assert!(
        l.starts_with("FAIL") && l.contains("out of order") && l.contains("leaf first"),
        "{l}"
    );

    // A full chain whose root this system does not trust: a private CA.
    serve(&[&leaf, &int]);
    let out = nbctl(&cfg, &["doctor"]);
    out.expect(0, &[]);
    let l = line(&out.stdout, "certificate chain");
    assert!(l.starts_with("warn") && l.contains("private CA"), "{l}");
}

/// `nbctl cert generate --ca`'s certificate is ok (signed by the local CA);
/// a `server.listen` address the certificate has no IP name for is warned
/// about when server.public_url does not give the name users type.
#[test]
fn local_ca_and_listen_addresses_against_the_certificate() {
    let dir = open_dir();
    let cfg = config_with(
        dir.path(),
        "",
        "listen = [\"127.0.0.2:9999\", \"127.0.0.3:9999\", \"0.0.0.0:9998\"]",
        &jupyter_command(),
    );
    nbctl(
        &cfg,
        &[
            "cert",
            "generate",
            "--ca",
            "--host",
            "localhost",
            "--host",
            "127.0.0.2",
            "--no-reload",
        ],
    )
    .expect(0, &[]);
    let out = nbctl(&cfg, &["doctor"]);
    out.expect(0, &[]);
    let l = line(&out.stdout, "certificate chain");
    assert!(
        l.starts_with("ok") && l.contains("signed by the local CA"),
        "{l}"
    );
    let listen: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains(" listen names: "))
        .collect();
    assert_eq!(listen.len(), 2, "{}", out.text());
    assert!(
        listen[0].starts_with("ok") && listen[0].contains("127.0.0.2"),
        "{listen:?}"
    );
    assert!(
        listen[1].starts_with("warn")
            && listen[1].contains("no IP name for 127.0.0.3")
            && listen[1].contains("https://127.0.0.3:9999 gets a name warning")
            && listen[1].contains("server.public_url")
            && listen[1].contains("--host 127.0.0.3"),
        "{listen:?}"
    );

    // Once public_url says which name users type, the addresses do not matter.
    let cfg = config_with(
        dir.path(),
        "https://localhost/",
        "listen = [\"127.0.0.3:9999\"]",
        &jupyter_command(),
    );
    let out = nbctl(&cfg, &["doctor"]);
    assert!(!out.stdout.contains(" listen names: "), "{}", out.text());
}

/// A Jupyter that runs but finds no kernelspec fails with the fix; its
/// version is still reported. The command is run as the daemon runs it.
#[test]
fn jupyter_without_kernels_fails_with_the_fix() {
    let dir = open_dir();
    certificate(dir.path(), "localhost", now() - 86400, now() + 90 * 86400);
    let script = dir.path().join("jupyter");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in\n  --version) echo 'jupyter_core     : 5.7.2'; echo 'notebook         : 7.2.2' ;;\n  kernelspec) echo '{\"kernelspecs\": {}}' ;;\n  *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = config_with(
        dir.path(),
        "https://localhost/",
        "",
        &script.display().to_string(),
    );
    let out = nbctl(&cfg, &["doctor"]);
    out.expect(1, &[]);
    let l = line(&out.stdout, "jupyter version");
    assert!(l.starts_with("ok") && l.contains("notebook : 7.2.2"), "{l}");
    let l = line(&out.stdout, "jupyter kernels");
    assert!(
        l.starts_with("FAIL")
            && l.contains("no kernelspec")
            && l.contains("python3-ipykernel")
            && l.contains("ipykernel install --sys-prefix"),
        "{l}"
    );
}

/// Behind the shipped nginx site: doctor reaches this notebookd through
/// server.public_url, X-Forwarded-Proto says https, the proxy is trusted and
/// a WebSocket upgrade passes. The site without `proxy_set_header Upgrade`
/// is named with its fix, exit 1.
#[test]
fn behind_the_shipped_nginx_site_and_without_its_upgrade_line() {
    let Some(n) = crate::nginx::notebookd_for_the_shipped_site() else {
        return;
    };
    let certs = certs();
    let ca = [("SSL_CERT_FILE", certs.ca())];
    let ca: Vec<(&str, &Path)> = ca.iter().map(|(k, v)| (*k, v.as_path())).collect();
    let (https, http) = (free_port(), free_port());
    let site = render_site(n.port, https, http, &certs.cert(), &certs.key());
    let url = format!("https://localhost:{https}/notebook/");
    let text = std::fs::read_to_string(n.config_path()).unwrap();
    std::fs::write(
        n.config_path(),
        text.replacen(
            "[server]\n",
            &format!("[server]\npublic_url = \"{url}\"\n"),
            1,
        ),
    )
    .unwrap();

    // (a) As shipped.
    let nginx = Nginx::start(&site);
    nginx.wait_listening(https);
    let out = nbctl_env(&n.config_path(), &["doctor"], &ca);
    out.expect(0, &[]);
    assert!(!out.stdout.contains("FAIL"), "{}", out.text());
    for (check, says) in [
        (
            "certificate",
            "the proxy in server.trusted_proxies terminates it",
        ),
        ("public url tls", "trusts for localhost"),
        ("public url", "reaches this notebookd"),
        ("trusted proxy", "which server.trusted_proxies names"),
        ("forwarded proto", "X-Forwarded-Proto: https arrives"),
        ("websocket", "a WebSocket upgrade through"),
    ] {
        let l = line(&out.stdout, check);
        assert!(l.starts_with("ok") && l.contains(says), "{}", out.text());
    }
    drop(nginx);

    // (b) Without the Upgrade line.
    let upgrade_line = "        proxy_set_header Upgrade           $http_upgrade;\n";
    assert!(site.contains(upgrade_line), "the example changed:\n{site}");
    let nginx = Nginx::start(&site.replace(upgrade_line, ""));
    nginx.wait_listening(https);
    let out = nbctl_env(&n.config_path(), &["doctor"], &ca);
    out.expect(1, &[]);
    assert!(
        line(&out.stdout, "public url").starts_with("ok"),
        "{}",
        out.text()
    );
    let l = line(&out.stdout, "websocket");
    assert!(
        l.starts_with("FAIL")
            && l.contains("without the `Upgrade` header")
            && l.contains("proxy_set_header Upgrade $http_upgrade;")
            && l.contains("examples/nginx-notebook.conf"),
        "{l}"
    );

    // Without the client certificate's CA: the TLS failure is its own finding.
    let out = nbctl(&n.config_path(), &["doctor"]);
    out.expect(1, &[]);
    let l = line(&out.stdout, "public url tls");
    assert!(
        l.starts_with("FAIL") && l.contains("does not verify"),
        "{l}"
    );
    drop(nginx);
}
