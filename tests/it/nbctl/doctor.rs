//! `nbctl doctor`: a healthy setup is all ok; an expired certificate, a
//! certificate for the wrong name and a key readable by others each fail
//! with their fix; `--json` says the same.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use openssl::asn1::Asn1Time;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::extension::SubjectAlternativeName;
use openssl::x509::{X509, X509NameBuilder};

use super::{nbctl, open_dir};
use crate::support::{Notebookd, Options, jupyter_command};

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
    let path = dir.join("notebook.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nstate_dir = \"{}\"\nruntime_dir = \"{}\"\npublic_url = \"{public_url}\"\n\n\
             [tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[jupyter]\ncommand = \"{}\"\n",
            dir.join("state").display(),
            dir.join("run").display(),
            dir.join("tls/cert.pem").display(),
            dir.join("tls/key.pem").display(),
            jupyter_command(),
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
    certificate(dir.path(), "nb.test", now() - day, now() + 90 * day);
    let cfg = config(dir.path(), "https://nb.test/");
    let out = nbctl(&cfg, &["doctor"]);
    out.expect(0, &[]);
    assert!(!out.stdout.contains("FAIL"), "{}", out.text());
    for check in [
        "config",
        "certificate files",
        "certificate expiry",
        "certificate names",
        "key permissions",
        "jupyter command",
    ] {
        assert!(line(&out.stdout, check).starts_with("ok"), "{}", out.text());
    }

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
        l.starts_with("FAIL") && l.contains("other.test") && l.contains("--host nb.test"),
        "{l}"
    );

    // A key every user can read.
    certificate(dir.path(), "nb.test", now() - day, now() + 90 * day);
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

/// With the daemon running, doctor says so (and still passes).
#[test]
fn a_running_daemon_is_reported() {
    let n = Notebookd::start_with(Options {
        settings: vec![("server", "public_url = \"https://localhost/\"".into())],
        ..Default::default()
    });
    let out = nbctl(&n.config_path(), &["doctor"]);
    out.expect(0, &[]);
    let l = line(&out.stdout, "daemon");
    assert!(
        l.starts_with("ok") && l.contains("notebookd is running"),
        "{l}"
    );
}
