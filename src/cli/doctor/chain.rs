//! The served certificate file's chain: complete and in order, and the
//! names it gives the listen addresses.

use std::net::IpAddr;
use std::path::Path;

use openssl::x509::store::X509StoreBuilder;
use openssl::x509::{X509, X509StoreContext, X509VerifyResult};

use super::{Check, Verdict, check};

/// Whether `issuer` issued `cert`: names (and key identifiers) match and its
/// key verifies the signature.
fn issued_by(cert: &X509, issuer: &X509) -> bool {
    issuer.issued(cert) == X509VerifyResult::OK
        && issuer
            .public_key()
            .and_then(|k| cert.verify(&k))
            .unwrap_or(false)
}

fn names(name: &openssl::x509::X509NameRef) -> String {
    let parts: Vec<String> = name
        .entries()
        .filter_map(|e| {
            Some(format!(
                "{}={}",
                e.object().nid().short_name().ok()?,
                e.data().to_string().ok()?
            ))
        })
        .collect();
    if parts.is_empty() {
        "(no name)".into()
    } else {
        parts.join(", ")
    }
}

fn subject(cert: &X509) -> String {
    names(cert.subject_name())
}

fn issuer(cert: &X509) -> String {
    names(cert.issuer_name())
}

/// Whether this system's trust store (OpenSSL's default paths, which
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` override) completes `chain` to a root.
fn trusted_by_system(chain: &[X509]) -> bool {
    let Some((leaf, rest)) = chain.split_first() else {
        return false;
    };
    let Ok(mut store) = X509StoreBuilder::new() else {
        return false;
    };
    if store.set_default_paths().is_err() {
        return false;
    }
    let store = store.build();
    let Ok(mut untrusted) = openssl::stack::Stack::new() else {
        return false;
    };
    for c in rest {
        if untrusted.push(c.clone()).is_err() {
            return false;
        }
    }
    let Ok(mut ctx) = X509StoreContext::new() else {
        return false;
    };
    ctx.init(&store, leaf, &untrusted, |c| c.verify_cert())
        .unwrap_or(false)
}

/// The certificates of `pem`, leaf first, as the file has them.
pub fn certificates(pem: &[u8]) -> Vec<X509> {
    X509::stack_from_pem(pem).unwrap_or_default()
}

/// Checks that each certificate of the file is issued by the next one, and
/// that the last one is a root, the local CA, or issued by a CA this system
/// trusts.
pub fn chain_check(cert_path: &Path, chain: &[X509]) -> Check {
    let fullchain_fix = || {
        format!(
            "serve the full chain, leaf first then each issuer: certbot's fullchain.pem, or `cat cert.pem intermediate.pem > {}`",
            cert_path.display()
        )
    };
    let Some(leaf) = chain.first() else {
        return check(
            "certificate chain",
            Verdict::Fail,
            format!("{} has no certificate", cert_path.display()),
            Some(fullchain_fix()),
        );
    };
    for (i, pair) in chain.windows(2).enumerate() {
        if !issued_by(&pair[0], &pair[1]) {
            return check(
                "certificate chain",
                Verdict::Fail,
                format!(
                    "certificate {} ({}) is not issued by certificate {} ({}) that follows it: the file is out of order or mixes chains",
                    i + 1,
                    subject(&pair[0]),
                    i + 2,
                    subject(&pair[1]),
                ),
                Some(fullchain_fix()),
            );
        }
    }
    let Some(last) = chain.last() else {
        return check("certificate chain", Verdict::Fail, String::new(), None);
    };
    // The local CA (`nbctl cert generate --ca`) may also be in the file.
    let local_ca = cert_path.with_file_name("ca.pem");
    if let Ok(pem) = std::fs::read(&local_ca) {
        if certificates(&pem).iter().any(|ca| issued_by(last, ca)) {
            return check(
                "certificate chain",
                Verdict::Ok,
                format!(
                    "signed by the local CA {}: clients must trust that CA (`nbctl cert generate --ca` printed how)",
                    local_ca.display()
                ),
                None,
            );
        }
    }
    if issued_by(last, last) {
        return check(
            "certificate chain",
            Verdict::Ok,
            if chain.len() == 1 {
                "self-signed: browsers warn until each user trusts it (`nbctl cert generate --ca` makes a CA to trust once, [tls.acme] a public certificate)".into()
            } else {
                format!(
                    "{} certificates in order, ending at the root {}",
                    chain.len(),
                    subject(last)
                )
            },
            None,
        );
    }
    if trusted_by_system(chain) {
        return check(
            "certificate chain",
            Verdict::Ok,
            format!(
                "complete: {} certificate{} leading to a root this system trusts",
                chain.len(),
                if chain.len() == 1 { "" } else { "s" }
            ),
            None,
        );
    }
    // A leaf that names where its issuer is published (Authority
    // Information Access) comes from a public CA: the intermediate is
    // missing for sure. Without it, it may be a private CA the clients trust.
    let public = leaf.authority_info().is_some();
    if chain.len() == 1 {
        check(
            "certificate chain",
            if public { Verdict::Fail } else { Verdict::Warn },
            format!(
                "the chain lacks the intermediate: the file has only the leaf, issued by {}, which is neither in the file nor trusted by this system",
                issuer(leaf)
            ),
            Some(format!(
                "use fullchain.pem (not cert.pem); {}",
                fullchain_fix()
            )),
        )
    } else {
        check(
            "certificate chain",
            Verdict::Warn,
            format!(
                "{} certificates in order, but the last one's issuer ({}) is not trusted by this system: fine only for a private CA every client trusts",
                chain.len(),
                issuer(last)
            ),
            Some(fullchain_fix()),
        )
    }
}

/// The IP addresses of the leaf's subjectAltName.
pub fn ip_names(leaf: &X509) -> Vec<IpAddr> {
    leaf.subject_alt_names()
        .map(|names| {
            names
                .iter()
                .filter_map(|n| n.ipaddress())
                .filter_map(|b| match b.len() {
                    4 => <[u8; 4]>::try_from(b).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(b).ok().map(IpAddr::from),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `server.listen` addresses that are one IP (not 0.0.0.0 or ::): a user
/// typing `https://IP:PORT` gets a name warning unless the certificate
/// names that IP. Only when `server.public_url` does not say which name
/// users type instead.
pub fn listen_checks(
    listen: &[std::net::SocketAddr],
    leaf: &X509,
    public_url_set: bool,
    out: &mut Vec<Check>,
) {
    if public_url_set {
        return;
    }
    let ips = ip_names(leaf);
    for addr in listen {
        let ip = addr.ip();
        if ip.is_unspecified() {
            continue;
        }
        if ips.contains(&ip) {
            out.push(check(
                "listen names",
                Verdict::Ok,
                format!("the certificate names {ip} (server.listen {addr})"),
                None,
            ));
        } else {
            let host = match ip {
                IpAddr::V6(_) => format!("[{ip}]"),
                IpAddr::V4(_) => ip.to_string(),
            };
            out.push(check(
                "listen names",
                Verdict::Warn,
                format!(
                    "server.listen is {addr} but the certificate has no IP name for {ip}: https://{host}:{} gets a name warning",
                    addr.port()
                ),
                Some(format!(
                    "set the name users type (`sudo nbctl config set server.public_url https://NAME/`), or add the address: `sudo nbctl cert generate --force --host {ip}`"
                )),
            ));
        }
    }
}
