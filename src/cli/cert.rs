//! `nbctl cert generate|show|install`: the TLS certificate and key, with
//! openssl (only nbctl calls this code, so the daemon does not link libssl).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Integer, Asn1Time, Asn1TimeRef};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, PKeyRef, Private};
use openssl::rsa::Rsa;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509NameBuilder, X509NameRef, X509Ref, X509VerifyResult};

use super::CliError;
use super::args::{CertGenerateArgs, CertInstallArgs, CertPaths, CertShowArgs, KeyType};
use super::file::{self, Access};
use crate::config::Config;

fn ssl_error(what: &str) -> impl Fn(ErrorStack) -> CliError + '_ {
    move |e| CliError::Failed(format!("{what}: {e}"))
}

/// A name the certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Dns(String),
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Host::Dns(name) => write!(f, "DNS:{name}"),
            Host::Ip(ip) => write!(f, "IP:{ip}"),
        }
    }
}

impl std::str::FromStr for Host {
    type Err = String;
    fn from_str(s: &str) -> Result<Host, String> {
        let text = s.trim();
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Host::Ip(ip));
        }
        let name = text.trim_end_matches('.').to_ascii_lowercase();
        let labels = name.strip_prefix("*.").unwrap_or(&name);
        let ok = !labels.is_empty()
            && name.len() <= 253
            && labels.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            });
        if ok {
            Ok(Host::Dns(name))
        } else {
            Err(format!(
                "--host {s:?} is neither a DNS name nor an IP address; expected e.g. nb.example.com, *.example.com, 192.0.2.10 or 2001:db8::10 (internationalized names in their xn-- form)"
            ))
        }
    }
}

/// The names a certificate made on this machine should carry: its hostname,
/// its fully qualified name, `localhost`, and its non-loopback addresses.
pub fn default_hosts() -> Vec<Host> {
    let mut hosts = Vec::new();
    let mut add = |h: Host| {
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    };
    let hostname = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .and_then(|h| h.parse::<Host>().ok());
    if let Some(Host::Dns(name)) = &hostname {
        add(Host::Dns(name.clone()));
        let hints = dns_lookup::AddrInfoHints {
            flags: libc::AI_CANONNAME,
            ..dns_lookup::AddrInfoHints::default()
        };
        let canonical = dns_lookup::getaddrinfo(Some(name), None, Some(hints))
            .ok()
            .and_then(|mut found| found.next())
            .and_then(Result::ok)
            .and_then(|info| info.canonname)
            .and_then(|c| c.parse::<Host>().ok());
        if let Some(fqdn @ Host::Dns(_)) = canonical {
            add(fqdn);
        }
    }
    add(Host::Dns("localhost".into()));
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for ifaddr in addrs {
            let Some(address) = ifaddr.address else {
                continue;
            };
            let ip = if let Some(v4) = address.as_sockaddr_in() {
                IpAddr::V4(v4.ip())
            } else if let Some(v6) = address.as_sockaddr_in6() {
                IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            let link_local = match ip {
                IpAddr::V4(v4) => v4.is_link_local(),
                IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
            };
            if !ip.is_loopback() && !ip.is_unspecified() && !link_local {
                add(Host::Ip(ip));
            }
        }
    }
    hosts
}

fn new_key(kind: KeyType) -> Result<PKey<Private>, ErrorStack> {
    let ec = |nid: Nid| -> Result<PKey<Private>, ErrorStack> {
        let group = EcGroup::from_curve_name(nid)?;
        PKey::from_ec_key(EcKey::generate(&group)?)
    };
    match kind {
        KeyType::EcP256 => ec(Nid::X9_62_PRIME256V1),
        KeyType::EcP384 => ec(Nid::SECP384R1),
        KeyType::Rsa2048 => PKey::from_rsa(Rsa::generate(2048)?),
        KeyType::Rsa3072 => PKey::from_rsa(Rsa::generate(3072)?),
        KeyType::Rsa4096 => PKey::from_rsa(Rsa::generate(4096)?),
    }
}

/// A self-signed server certificate for `hosts`, valid for `days`.
pub fn self_signed(
    key: &PKeyRef<Private>,
    kind: KeyType,
    hosts: &[Host],
    days: u32,
) -> Result<X509, ErrorStack> {
    let common_name = hosts
        .iter()
        .map(|h| match h {
            Host::Dns(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        })
        .find(|n| n.len() <= 64)
        .unwrap_or_else(|| "notebookd".into());
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::COMMONNAME, &common_name)?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "notebookd (self-signed)")?;
    let name = name.build();

    let mut builder = X509::builder()?;
    builder.set_version(2)?;
    let serial = random_serial()?;
    builder.set_serial_number(&serial)?;
    builder.set_subject_name(&name)?;
    builder.set_issuer_name(&name)?;
    builder.set_pubkey(key)?;
    // An hour of slack for clients whose clocks run a little behind.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let start = libc::time_t::try_from(now.saturating_sub(3600)).unwrap_or(0);
    let not_before = Asn1Time::from_unix(start)?;
    let not_after = Asn1Time::days_from_now(days)?;
    builder.set_not_before(&not_before)?;
    builder.set_not_after(&not_after)?;

    builder.append_extension(BasicConstraints::new().critical().build()?)?;
    let mut usage = KeyUsage::new();
    usage.critical().digital_signature();
    if matches!(kind, KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096) {
        usage.key_encipherment();
    }
    builder.append_extension(usage.build()?)?;
    builder.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&builder.x509v3_context(None, None))?;
    builder.append_extension(ski)?;
    let mut san = SubjectAlternativeName::new();
    for host in hosts {
        match host {
            Host::Dns(n) => san.dns(n),
            Host::Ip(ip) => san.ip(&ip.to_string()),
        };
    }
    let san = san.build(&builder.x509v3_context(None, None))?;
    builder.append_extension(san)?;
    let digest = match kind {
        KeyType::EcP384 => MessageDigest::sha384(),
        _ => MessageDigest::sha256(),
    };
    builder.sign(key, digest)?;
    Ok(builder.build())
}

/// The certificate and key paths: the options, else the config's tls.cert/tls.key.
/// Also says whether they are the configured ones (then the daemon reloads).
fn paths(
    config_path: &Path,
    given: &CertPaths,
) -> Result<(PathBuf, PathBuf, Option<Config>), CliError> {
    if let (Some(cert), Some(key)) = (&given.cert, &given.key) {
        return Ok((cert.clone(), key.clone(), None));
    }
    let config = Config::load(config_path).map_err(|e| {
        CliError::Failed(format!(
            "{e}\n(or name the files with --cert PATH --key PATH)"
        ))
    })?;
    let cert = given
        .cert
        .clone()
        .unwrap_or_else(|| config.tls.cert.path().to_owned());
    let key = given
        .key
        .clone()
        .unwrap_or_else(|| config.tls.key.path().to_owned());
    let configured = cert == config.tls.cert.path() && key == config.tls.key.path();
    Ok((cert, key, configured.then_some(config)))
}

fn describe_access(access: Access) -> String {
    match access {
        Access::Exactly { uid, gid, mode } => {
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map_or(uid.to_string(), |u| u.name);
            let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                .ok()
                .flatten()
                .map_or(gid.to_string(), |g| g.name);
            format!("mode {mode:04o}, {user}:{group}")
        }
        Access::Keep { new_mode } => format!("mode {new_mode:04o}"),
    }
}

/// Makes the parent directory of a TLS file if it is missing.
fn ensure_dir(path: &Path) -> Result<(), CliError> {
    match path.parent() {
        // Not group-writable whatever the umask: a key may only go where others cannot write.
        Some(dir) if !dir.as_os_str().is_empty() && !dir.exists() => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| CliError::Failed(format!("cannot create {}: {e}", dir.display()))),
        _ => Ok(()),
    }
}

/// Writes certificate and key: both staged first, then both renamed, so a
/// failure leaves the old pair in place.
fn write_pair(
    cert_path: &Path,
    cert_pem: &[u8],
    key_path: &Path,
    key_pem: &[u8],
) -> Result<Access, CliError> {
    ensure_dir(cert_path)?;
    ensure_dir(key_path)?;
    let key_access = file::key_access();
    let failed = |e: file::FileError| CliError::Failed(e.to_string());
    let key = file::stage_private(key_path, key_pem, key_access).map_err(failed)?;
    let cert = file::stage_private(cert_path, cert_pem, Access::Keep { new_mode: 0o644 })
        .map_err(failed)?;
    key.commit().map_err(failed)?;
    cert.commit().map_err(failed)?;
    Ok(key_access)
}

/// `nbctl cert generate`.
pub fn generate(config_path: &Path, args: &CertGenerateArgs) -> Result<(), CliError> {
    let mut hosts = Vec::new();
    for h in &args.hosts {
        let host: Host = h.parse().map_err(CliError::Usage)?;
        if !hosts.contains(&host) {
            hosts.push(host);
        }
    }
    if hosts.is_empty() {
        hosts = default_hosts();
    }
    let (cert_path, key_path, configured) = paths(config_path, &args.paths)?;
    if !args.force {
        for p in [&cert_path, &key_path] {
            if std::fs::symlink_metadata(p).is_ok() {
                return Err(CliError::Failed(format!(
                    "{} exists; nothing was changed (pass --force to replace the certificate and key; the old ones are then gone)",
                    p.display()
                )));
            }
        }
    }
    let key = new_key(args.key_type).map_err(ssl_error("cannot make a private key"))?;
    if args.ca {
        return generate_with_ca(&cert_path, &key_path, configured, &key, &hosts, args);
    }
    let cert = self_signed(&key, args.key_type, &hosts, args.days)
        .map_err(ssl_error("cannot make the certificate"))?;
    let cert_pem = cert
        .to_pem()
        .map_err(ssl_error("cannot encode the certificate"))?;
    let key_pem = key
        .private_key_to_pem_pkcs8()
        .map_err(ssl_error("cannot encode the private key"))?;
    let key_access = write_pair(&cert_path, &cert_pem, &key_path, &key_pem)?;
    let names: Vec<String> = hosts.iter().map(Host::to_string).collect();
    say!(
        "wrote a self-signed certificate for {} to {} (valid {} days)",
        names.join(", "),
        cert_path.display(),
        args.days
    );
    say!(
        "wrote its private key to {} ({})",
        key_path.display(),
        describe_access(key_access)
    );
    say!("SHA-256 fingerprint: {}", fingerprint(&cert)?);
    match configured {
        Some(config) => super::daemon::after_change(&config, "the new certificate", args.reload),
        None => Ok(()),
    }
}

/// The local CA next to `cert_path`: loaded if both files exist, else made
/// (EC P-256, ten years). Returns it and whether it is new.
fn local_ca(cert_path: &Path) -> Result<(X509, PKey<Private>, bool, PathBuf), CliError> {
    let ca_path = cert_path.with_file_name("ca.pem");
    let ca_key_path = cert_path.with_file_name("ca-key.pem");
    if ca_path.exists() && ca_key_path.exists() {
        let ca = certificates(&ca_path, &read(&ca_path, "CA certificate")?)?
            .into_iter()
            .next()
            .ok_or_else(|| {
                CliError::Failed(format!("{} holds no certificate", ca_path.display()))
            })?;
        let key = private_key(&ca_key_path, &read(&ca_key_path, "CA key")?)?;
        return Ok((ca, key, false, ca_path));
    }
    let key = new_key(KeyType::EcP256).map_err(ssl_error("cannot make the CA key"))?;
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    let build = || -> Result<X509, ErrorStack> {
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(Nid::COMMONNAME, &format!("notebookd local CA ({host})"))?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "notebookd")?;
        let name = name.build();
        let mut b = X509::builder()?;
        b.set_version(2)?;
        let serial = random_serial()?;
        b.set_serial_number(&serial)?;
        b.set_subject_name(&name)?;
        b.set_issuer_name(&name)?;
        b.set_pubkey(&key)?;
        let (from, until) = (Asn1Time::days_from_now(0)?, Asn1Time::days_from_now(3650)?);
        b.set_not_before(&from)?;
        b.set_not_after(&until)?;
        b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
        b.append_extension(
            KeyUsage::new()
                .critical()
                .key_cert_sign()
                .crl_sign()
                .build()?,
        )?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
        b.append_extension(ski)?;
        b.sign(&key, MessageDigest::sha256())?;
        Ok(b.build())
    };
    let ca = build().map_err(ssl_error("cannot make the CA certificate"))?;
    let ca_pem = ca.to_pem().map_err(ssl_error("cannot encode the CA"))?;
    let key_pem = key
        .private_key_to_pem_pkcs8()
        .map_err(ssl_error("cannot encode the CA key"))?;
    ensure_dir(&ca_path)?;
    let failed = |e: file::FileError| CliError::Failed(e.to_string());
    // The CA key signs certificates every browser that trusts the CA accepts:
    // only its owner (root) may read it; the service never needs it.
    let staged_key = file::stage_private(&ca_key_path, &key_pem, Access::Keep { new_mode: 0o600 })
        .map_err(failed)?;
    let staged_ca =
        file::stage_private(&ca_path, &ca_pem, Access::Keep { new_mode: 0o644 }).map_err(failed)?;
    staged_key.commit().map_err(failed)?;
    staged_ca.commit().map_err(failed)?;
    Ok((ca, key, true, ca_path))
}

/// `nbctl cert generate --ca`: a server certificate signed by the local CA,
/// and how to trust that CA.
fn generate_with_ca(
    cert_path: &Path,
    key_path: &Path,
    configured: Option<Config>,
    key: &PKeyRef<Private>,
    hosts: &[Host],
    args: &CertGenerateArgs,
) -> Result<(), CliError> {
    let (ca, ca_key, new_ca, ca_path) = local_ca(cert_path)?;
    let leaf = self_signed(key, args.key_type, hosts, args.days)
        .map_err(ssl_error("cannot make the certificate"))?;
    let sign = || -> Result<X509, ErrorStack> {
        // The self-signed one's fields, re-issued by the CA.
        let mut b = X509::builder()?;
        b.set_version(2)?;
        b.set_serial_number(leaf.serial_number())?;
        b.set_subject_name(leaf.subject_name())?;
        b.set_issuer_name(ca.subject_name())?;
        b.set_pubkey(key)?;
        b.set_not_before(leaf.not_before())?;
        b.set_not_after(leaf.not_after())?;
        b.append_extension(BasicConstraints::new().critical().build()?)?;
        let mut usage = KeyUsage::new();
        usage.critical().digital_signature();
        if matches!(
            args.key_type,
            KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096
        ) {
            usage.key_encipherment();
        }
        b.append_extension(usage.build()?)?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(&ca), None))?;
        b.append_extension(ski)?;
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&b.x509v3_context(Some(&ca), None))?;
        b.append_extension(aki)?;
        let mut san = SubjectAlternativeName::new();
        for host in hosts {
            match host {
                Host::Dns(n) => san.dns(n),
                Host::Ip(ip) => san.ip(&ip.to_string()),
            };
        }
        let san = san.build(&b.x509v3_context(Some(&ca), None))?;
        b.append_extension(san)?;
        b.sign(&ca_key, MessageDigest::sha256())?;
        Ok(b.build())
    };
    let cert = sign().map_err(ssl_error("cannot sign the certificate"))?;
    let mut chain = cert
        .to_pem()
        .map_err(ssl_error("cannot encode the certificate"))?;
    chain.extend(ca.to_pem().map_err(ssl_error("cannot encode the CA"))?);
    let key_pem = key
        .private_key_to_pem_pkcs8()
        .map_err(ssl_error("cannot encode the private key"))?;
    let key_access = write_pair(cert_path, &chain, key_path, &key_pem)?;
    let names: Vec<String> = hosts.iter().map(Host::to_string).collect();
    let ca_shown = ca_path.display();
    say!(
        "{} the local CA {ca_shown} (its key: {}, readable by root only)",
        if new_ca { "made" } else { "used" },
        ca_path.with_file_name("ca-key.pem").display()
    );
    say!(
        "wrote a certificate for {} signed by it to {} (valid {} days)",
        names.join(", "),
        cert_path.display(),
        args.days
    );
    say!(
        "wrote its private key to {} ({})",
        key_path.display(),
        describe_access(key_access)
    );
    say!(
        "SHA-256 fingerprint of the certificate: {}",
        fingerprint(&cert)?
    );
    say!(
        "SHA-256 fingerprint of the CA:          {}",
        fingerprint(&ca)?
    );
    say!(
        "Trust the CA once on each machine whose browser opens the notebook (copy {ca_shown} there first):\n\
         \x20 Debian, Ubuntu:  sudo cp ca.pem /usr/local/share/ca-certificates/notebookd-ca.crt && sudo update-ca-certificates\n\
         \x20 Fedora, RHEL, SUSE:  sudo cp ca.pem /etc/pki/ca-trust/source/anchors/notebookd-ca.pem && sudo update-ca-trust\n\
         \x20 Chromium/Firefox on Linux (their own NSS store):  certutil -d sql:$HOME/.pki/nssdb -A -t C,, -n notebookd -i ca.pem\n\
         \x20 macOS:  sudo security add-trusted-cert -d -r trustRoot -k /Library/Keychains/System.keychain ca.pem\n\
         \x20 Windows (administrator):  certutil -addstore -f Root ca.pem\n\
         Until then, compare the certificate's SHA-256 fingerprint above with the one the browser's warning page shows."
    );
    match configured {
        Some(config) => super::daemon::after_change(&config, "the new certificate", args.reload),
        None => Ok(()),
    }
}

fn name_text(name: &X509NameRef) -> String {
    name.entries()
        .map(|e| {
            let field = e.object().nid().short_name().unwrap_or("?");
            let value = e.data().to_string().unwrap_or_else(|_| "?".into());
            format!("{field}={value}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn sans(cert: &X509Ref) -> Vec<String> {
    let Some(names) = cert.subject_alt_names() else {
        return Vec::new();
    };
    names
        .iter()
        .filter_map(|n| {
            if let Some(dns) = n.dnsname() {
                return Some(format!("DNS:{dns}"));
            }
            let ip = match n.ipaddress()? {
                b if b.len() == 4 => IpAddr::from(<[u8; 4]>::try_from(b).ok()?),
                b if b.len() == 16 => IpAddr::from(<[u8; 16]>::try_from(b).ok()?),
                _ => return None,
            };
            Some(format!("IP:{ip}"))
        })
        .collect()
}

fn fingerprint(cert: &X509Ref) -> Result<String, CliError> {
    let digest = cert
        .digest(MessageDigest::sha256())
        .map_err(ssl_error("cannot hash the certificate"))?;
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

fn key_text<T: openssl::pkey::HasPublic>(key: &PKeyRef<T>) -> String {
    match key.id() {
        Id::EC => {
            let curve = key
                .ec_key()
                .ok()
                .and_then(|k| k.group().curve_name())
                .map(|nid| match nid {
                    Nid::X9_62_PRIME256V1 => "P-256".to_string(),
                    Nid::SECP384R1 => "P-384".to_string(),
                    Nid::SECP521R1 => "P-521".to_string(),
                    other => other.short_name().unwrap_or("?").to_string(),
                })
                .unwrap_or_else(|| "?".into());
            format!("EC {curve}")
        }
        Id::RSA => format!("RSA {} bits", key.bits()),
        Id::ED25519 => "Ed25519".into(),
        other => format!("type {}", other.as_raw()),
    }
}

/// Days from now until `t` (negative once past).
fn days_left(t: &Asn1TimeRef) -> Result<i32, CliError> {
    let now = Asn1Time::days_from_now(0).map_err(ssl_error("no clock"))?;
    let diff = now.diff(t).map_err(ssl_error("bad date"))?;
    Ok(if diff.days == 0 && diff.secs < 0 {
        -1
    } else {
        diff.days
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::NotFound => " (make one with `sudo nbctl cert generate`)",
            std::io::ErrorKind::PermissionDenied => " (run it as root: sudo nbctl ...)",
            _ => "",
        };
        CliError::Failed(format!(
            "cannot read the {what} {}: {e}{hint}",
            path.display()
        ))
    })
}

/// All certificates of a PEM file; an error when there are none.
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<X509>, CliError> {
    let chain = X509::stack_from_pem(pem).map_err(|e| {
        CliError::Failed(format!(
            "{} is not a PEM certificate file ({e}); expected -----BEGIN CERTIFICATE----- blocks",
            path.display()
        ))
    })?;
    if chain.is_empty() {
        return Err(CliError::Failed(format!(
            "{} holds no certificate; expected -----BEGIN CERTIFICATE----- blocks",
            path.display()
        )));
    }
    Ok(chain)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PKey<Private>, CliError> {
    let text = String::from_utf8_lossy(pem);
    if text.contains("ENCRYPTED") {
        return Err(CliError::Failed(format!(
            "{} is encrypted with a passphrase; notebookd needs it unencrypted: `openssl pkey -in {} -out key-plain.pem` (then keep that file private)",
            path.display(),
            path.display()
        )));
    }
    let expected = "expected -----BEGIN PRIVATE KEY----- (PKCS#8), -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----";
    if !text.contains("PRIVATE KEY-----") {
        return Err(CliError::Failed(format!(
            "{} holds no PEM private key; {expected}",
            path.display()
        )));
    }
    PKey::private_key_from_pem(pem).map_err(|e| {
        let reason = e
            .errors()
            .first()
            .and_then(|e| e.reason())
            .unwrap_or("unreadable");
        CliError::Failed(format!(
            "{}: cannot read the private key ({reason}); {expected}",
            path.display()
        ))
    })
}

/// `nbctl cert show`.
pub fn show(config_path: &Path, args: &CertShowArgs) -> Result<(), CliError> {
    let (cert_path, key_path, _) = paths(config_path, &args.paths)?;
    let chain = certificates(&cert_path, &read(&cert_path, "certificate")?)?;
    let leaf = &chain[0];
    let mut out = String::new();
    let mut problems = Vec::new();
    let _ = writeln!(
        out,
        "certificate: {} ({} certificate{})",
        cert_path.display(),
        chain.len(),
        if chain.len() == 1 { "" } else { "s" }
    );
    let subject = name_text(leaf.subject_name());
    let issuer = name_text(leaf.issuer_name());
    let self_signed = leaf.issued(leaf) == X509VerifyResult::OK;
    let _ = writeln!(out, "  subject:      {subject}");
    let _ = writeln!(
        out,
        "  issuer:       {issuer}{}",
        if self_signed { " (self-signed)" } else { "" }
    );
    let names = sans(leaf);
    let _ = writeln!(
        out,
        "  names (SAN):  {}",
        if names.is_empty() {
            "none (browsers will refuse it)".to_string()
        } else {
            names.join(", ")
        }
    );
    let _ = writeln!(out, "  valid from:   {}", leaf.not_before());
    let left = days_left(leaf.not_after())?;
    if left < 0 {
        problems.push(format!("the certificate expired on {}", leaf.not_after()));
        let _ = writeln!(out, "  valid until:  {} (EXPIRED)", leaf.not_after());
    } else {
        let _ = writeln!(
            out,
            "  valid until:  {} ({left} days left)",
            leaf.not_after()
        );
    }
    if let Ok(public) = leaf.public_key() {
        let _ = writeln!(out, "  key type:     {}", key_text(&public));
    }
    let _ = writeln!(out, "  SHA-256:      {}", fingerprint(leaf)?);
    let _ = writeln!(out, "key: {}", key_path.display());
    match std::fs::metadata(&key_path) {
        Ok(m) => {
            let access = Access::Exactly {
                uid: m.uid(),
                gid: m.gid(),
                mode: m.mode() & 0o7777,
            };
            let _ = writeln!(out, "  file:         {}", describe_access(access));
            if m.mode() & 0o004 != 0 {
                problems.push(format!(
                    "{} is readable by every user; `sudo chmod 0640 {}`",
                    key_path.display(),
                    key_path.display()
                ));
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  file:         cannot inspect ({e})");
        }
    }
    match read(&key_path, "key").and_then(|pem| private_key(&key_path, &pem)) {
        Ok(key) => {
            let matches = leaf
                .public_key()
                .map(|public| public.public_eq(&key))
                .unwrap_or(false);
            let _ = writeln!(
                out,
                "  matches the certificate: {}",
                if matches { "yes" } else { "NO" }
            );
            if !matches {
                problems.push(format!(
                    "{} does not belong to the certificate in {}",
                    key_path.display(),
                    cert_path.display()
                ));
            }
        }
        Err(e) => {
            let _ = writeln!(out, "  matches the certificate: unknown");
            problems.push(e.to_string());
        }
    }
    if let Some(served) = served_now(config_path) {
        let _ = writeln!(out, "served now: {served}");
    }
    super::emit(out.trim_end())?;
    if problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::Failed(problems.join("\n")))
    }
}

/// Where the certificate the running daemon serves came from: these files,
/// ACME, a temporary one, or nothing; `None` without a config to find
/// the daemon by (files checked on their own).
fn served_now(config_path: &Path) -> Option<String> {
    Some(match super::daemon::running_status(config_path) {
        Ok(answer) => {
            let cert = &answer["tls"]["certificate"];
            match cert["source"].as_str() {
                Some(source) => format!(
                    "{source} (serial {}, since {})",
                    cert["serial"].as_str().unwrap_or("?"),
                    cert["since"].as_str().unwrap_or("?")
                ),
                None => "nothing: TLS is off in the running notebookd".into(),
            }
        }
        Err(CliError::NotRunning(_)) => "unknown: notebookd is not running".into(),
        Err(_) if !config_path.exists() => return None,
        Err(e) => format!("unknown: {e}"),
    })
}

/// Checks a chain: each certificate issued by the next, none expired.
fn check_chain(path: &Path, chain: &[X509]) -> Result<(), CliError> {
    for (i, pair) in chain.windows(2).enumerate() {
        let (child, parent) = (&pair[0], &pair[1]);
        let signed = parent
            .public_key()
            .and_then(|k| child.verify(&k))
            .unwrap_or(false);
        if parent.issued(child) != X509VerifyResult::OK || !signed {
            return Err(CliError::Failed(format!(
                "{}: certificate #{} ({}) was not issued by the next one, #{} ({}); put the server certificate first, then the certificate that issued it, and so on",
                path.display(),
                i + 1,
                name_text(child.subject_name()),
                i + 2,
                name_text(parent.subject_name())
            )));
        }
    }
    for (i, cert) in chain.iter().enumerate() {
        if days_left(cert.not_after())? < 0 {
            return Err(CliError::Failed(format!(
                "{}: certificate #{} ({}) expired on {}; get a new one",
                path.display(),
                i + 1,
                name_text(cert.subject_name()),
                cert.not_after()
            )));
        }
    }
    Ok(())
}

/// `nbctl cert install CERT KEY`.
pub fn install(config_path: &Path, args: &CertInstallArgs) -> Result<(), CliError> {
    let (cert_path, key_path, configured) = paths(config_path, &args.paths)?;
    let cert_pem = read(&args.source_cert, "certificate")?;
    let key_pem = read(&args.source_key, "key")?;
    let chain = certificates(&args.source_cert, &cert_pem)?;
    let key = private_key(&args.source_key, &key_pem)?;
    let leaf = &chain[0];
    let matches = leaf
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !matches {
        return Err(CliError::Failed(format!(
            "{} does not belong to the certificate in {} (their public keys differ); nothing was installed",
            args.source_key.display(),
            args.source_cert.display()
        )));
    }
    check_chain(&args.source_cert, &chain)?;
    // What the daemon itself will load, with its own TLS stack.
    crate::front::tls::load_certified_key(&args.source_cert, &args.source_key).map_err(|e| {
        CliError::Failed(format!(
            "notebookd could not use it: {e}; nothing was installed"
        ))
    })?;
    let now = Asn1Time::days_from_now(0).map_err(ssl_error("no clock"))?;
    if matches!(
        leaf.not_before().compare(&now),
        Ok(std::cmp::Ordering::Greater)
    ) {
        eprintln!(
            "note: the certificate is not valid before {}",
            leaf.not_before()
        );
    }
    let key_access = write_pair(&cert_path, &cert_pem, &key_path, &key_pem)?;
    say!(
        "installed {} as {} (for {})",
        args.source_cert.display(),
        cert_path.display(),
        sans(leaf).join(", ")
    );
    say!(
        "installed {} as {} ({})",
        args.source_key.display(),
        key_path.display(),
        describe_access(key_access)
    );
    match configured {
        Some(config) => super::daemon::after_change(&config, "the certificate", args.reload),
        None => Ok(()),
    }
}

/// A random 127-bit serial number, positive as RFC 5280 asks.
fn random_serial() -> Result<Asn1Integer, ErrorStack> {
    let mut serial = BigNum::new()?;
    serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
    Asn1Integer::from_bn(&serial)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse() {
        assert_eq!(
            "LocalHost.".parse::<Host>().unwrap(),
            Host::Dns("localhost".into())
        );
        assert_eq!(
            "[::1]".parse::<Host>().unwrap(),
            Host::Ip("::1".parse().unwrap())
        );
        assert!("*.example.com".parse::<Host>().is_ok());
        for bad in ["", "a b", "x/y", "-a.com", "*", "a..b"] {
            assert!(bad.parse::<Host>().is_err(), "{bad}");
        }
    }

    #[test]
    fn default_hosts_have_localhost_and_no_loopback_ip() {
        let hosts = default_hosts();
        assert!(hosts.contains(&Host::Dns("localhost".into())));
        assert!(
            !hosts
                .iter()
                .any(|h| matches!(h, Host::Ip(ip) if ip.is_loopback()))
        );
    }
}
