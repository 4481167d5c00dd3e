//! TLS: the configured certificate and key files → a rustls server config.
//!
//! TLS 1.2 and 1.3, ALPN `http/1.1` (WebSockets need HTTP/1.1 upgrades).
//! The crypto is aws-lc-rs: it signs with an RSA 2048 key 2.3 times as fast
//! as ring (as fast as OpenSSL), which is most of a full handshake's cost.
//! Loaded at start and again at each reload; a reload with broken files
//! keeps the old config.
//!
//! The served certificate sits in a [`LiveCert`] that the handshake reads:
//! swapping it (new files seen by `cert_watch`, a renewal) changes what new
//! connections get without touching the open ones, whose TLS sessions
//! already hold their keys.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;

use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs as crypto;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}{hint}")]
    Read {
        path: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("{path}: {what}")]
    Invalid { path: String, what: String },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| {
        let hint = match source.kind() {
            std::io::ErrorKind::NotFound => {
                " (make one with `sudo nbctl cert generate`, or install yours with `sudo nbctl cert install CERT KEY`)"
            }
            std::io::ErrorKind::PermissionDenied => {
                " (the service runs as user notebook: the key must be readable by group notebook; `sudo nbctl cert install CERT KEY` sets that up)"
            }
            _ => "",
        };
        TlsError::Read {
            path: path.display().to_string(),
            source,
            hint,
        }
    })
}

/// The certificate chain and key from PEM files, checked to belong together.
pub fn load_certified_key(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let invalid = |path: &Path, what: String| TlsError::Invalid {
        path: path.display().to_string(),
        what,
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(cert_path, format!("not a PEM certificate file ({e})")))?;
    if chain.is_empty() {
        return Err(invalid(
            cert_path,
            "holds no certificate (expected -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        invalid(
            key_path,
            format!("no usable private key ({e}); expected a PEM PKCS#8, PKCS#1 or SEC1 key"),
        )
    })?;
    let provider = crypto::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(key_path, format!("unsupported private key ({e})")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(_)) => {
            return Err(invalid(
                key_path,
                format!(
                    "this key does not belong to the certificate in {}",
                    cert_path.display()
                ),
            ));
        }
        // The key's public half could not be computed: nothing to compare, accept.
        Err(_) => {}
    }
    Ok(certified)
}

/// What `nbctl status` shows of the certificate being served. Read once
/// per load (start and reload), never per request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSummary {
    pub subject: String,
    /// Seconds since the Unix epoch.
    pub not_after: i64,
    /// Hex, as browsers and `openssl x509 -serial` show it (without colons).
    pub serial: String,
    /// Seconds since the Unix epoch.
    pub not_before: i64,
    /// The DNS names of its subjectAltName.
    pub dns_names: Vec<String>,
}

impl CertSummary {
    /// Parses a DER certificate (with x509-parser: the daemon links no openssl).
    pub fn of(cert: &CertificateDer<'_>) -> Option<CertSummary> {
        let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        Some(CertSummary {
            subject: x509.subject().to_string(),
            not_after: x509.validity().not_after.timestamp(),
            serial: x509.raw_serial_as_string().replace(':', "").to_uppercase(),
            not_before: x509.validity().not_before.timestamp(),
            dns_names: x509
                .subject_alternative_name()
                .ok()
                .flatten()
                .map(|san| {
                    san.value
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// A loaded certificate and key: the rustls config, the leaf's summary,
/// and the swappable certificate the config serves.
pub struct LoadedTls {
    pub config: Arc<ServerConfig>,
    /// Handshakes with the cipher suite chosen for each client.
    pub door: TlsDoor,
    pub leaf: Option<CertSummary>,
    pub live: Arc<LiveCert>,
}

/// Accepts TLS connections, choosing the cipher suite as Go's crypto/tls
/// does: AES-128-GCM first (RFC 8446's mandatory suite, and what browsers
/// ask for), unless the client lists ChaCha20 first, which says that it
/// has no AES hardware; then the client's order. Clients whose libraries
/// put AES-256 first (OpenSSL's and rustls' defaults: curl, Node.js and
/// so VS Code, Python) get AES-128 too: measured, a full handshake costs
/// the server a fifth less CPU (SHA-256, which the CPU computes, instead of
/// SHA-384 for the key schedule), and so does the client.
#[derive(Clone)]
pub struct TlsDoor {
    aes128_first: Arc<ServerConfig>,
    client_order: Arc<ServerConfig>,
}

impl TlsDoor {
    pub async fn accept<IO>(&self, io: IO) -> std::io::Result<tokio_rustls::server::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await?;
        let config = if chacha_first(&start.client_hello()) {
            self.client_order.clone()
        } else {
            self.aes128_first.clone()
        };
        start.into_stream(config).await
    }
}

fn chacha_first(hello: &rustls::server::ClientHello<'_>) -> bool {
    use rustls::CipherSuite;
    matches!(
        hello.cipher_suites().first(),
        Some(
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
                | CipherSuite::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
        )
    )
}

/// One certificate as served: the key pair, its summary, and where it came from.
pub struct ServedCert {
    pub key: Arc<CertifiedKey>,
    pub leaf: Option<CertSummary>,
    /// For `nbctl status`, e.g. "files /etc/notebook/tls/cert.pem and .../key.pem".
    pub source: String,
    /// When it was put in service.
    pub since: SystemTime,
}

impl ServedCert {
    /// A certificate and key loaded from files.
    pub fn from_files(key: CertifiedKey, cert_path: &Path, key_path: &Path) -> ServedCert {
        ServedCert {
            leaf: key.cert.first().and_then(CertSummary::of),
            key: Arc::new(key),
            source: format!("files {} and {}", cert_path.display(), key_path.display()),
            since: SystemTime::now(),
        }
    }
}

/// The ALPN protocol of ACME's TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

/// The certificate new handshakes get; replaced without a restart. Also
/// holds the TLS-ALPN-01 challenge certificates of an ACME order under way.
pub struct LiveCert {
    served: ArcSwap<ServedCert>,
    challenges: std::sync::Mutex<std::collections::HashMap<String, Arc<CertifiedKey>>>,
}

impl LiveCert {
    pub fn new(served: ServedCert) -> LiveCert {
        LiveCert {
            served: ArcSwap::from_pointee(served),
            challenges: Default::default(),
        }
    }

    pub fn current(&self) -> Arc<ServedCert> {
        self.served.load_full()
    }

    /// Serves `served` to new connections; open ones keep what they negotiated.
    pub fn replace(&self, served: ServedCert) {
        self.served.store(Arc::new(served));
    }

    /// Whether `key` holds the same chain as the one being served.
    pub fn serves(&self, key: &CertifiedKey) -> bool {
        self.served.load().key.cert == key.cert
    }

    /// Answers TLS-ALPN-01 handshakes for `domain` with `key` (`None`: stop).
    pub fn set_challenge(&self, domain: &str, key: Option<Arc<CertifiedKey>>) {
        let mut map = self
            .challenges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match key {
            Some(k) => map.insert(domain.to_ascii_lowercase(), k),
            None => map.remove(&domain.to_ascii_lowercase()),
        };
    }

    fn challenge(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.challenges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&domain.to_ascii_lowercase())
            .cloned()
    }
}

/// A key pair in rustls' form from DER (what rcgen and ACME orders give).
pub fn certified_key_from_der(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, rustls::Error> {
    let signing_key = crypto::default_provider()
        .key_provider
        .load_private_key(key)?;
    Ok(CertifiedKey::new(chain, signing_key))
}

/// A rustls server config for the certificate and key files.
pub fn server_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    load(cert_path, key_path).map(|l| l.config)
}

/// Loads the certificate and key files for serving.
pub fn load(cert_path: &Path, key_path: &Path) -> Result<LoadedTls, TlsError> {
    let certified = load_certified_key(cert_path, key_path)?;
    let served = ServedCert::from_files(certified, cert_path, key_path);
    serve(served, false).map_err(|what| TlsError::Invalid {
        path: cert_path.display().to_string(),
        what,
    })
}

/// A rustls config serving `served` (swappable); `acme_alpn` also answers
/// ACME's TLS-ALPN-01 challenges.
pub fn serve(served: ServedCert, acme_alpn: bool) -> Result<LoadedTls, String> {
    let leaf = served.leaf.clone();
    let live = Arc::new(LiveCert::new(served));
    let mut config = ServerConfig::builder_with_provider(Arc::new(aes128_first()))
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(LiveResolver(live.clone())));
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if acme_alpn {
        // Browsers never offer it; only the CA's validation does.
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    let client_order = Arc::new(config.clone());
    config.ignore_client_order = true;
    let config = Arc::new(config);
    Ok(LoadedTls {
        door: TlsDoor {
            aes128_first: config.clone(),
            client_order,
        },
        config,
        leaf,
        live,
    })
}

/// aws-lc-rs's suites with AES-128-GCM ahead of AES-256-GCM in each TLS
/// version (see [`TlsDoor`]).
fn aes128_first() -> rustls::crypto::CryptoProvider {
    use rustls::CipherSuite as S;
    let mut provider = crypto::default_provider();
    let rank = |s: &rustls::SupportedCipherSuite| {
        let aes128 = matches!(
            s.suite(),
            S::TLS13_AES_128_GCM_SHA256
                | S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | S::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        );
        (
            s.version().version != rustls::ProtocolVersion::TLSv1_3,
            !aes128,
        )
    };
    // A stable sort: otherwise aws-lc-rs's order stands.
    provider.cipher_suites.sort_by_key(rank);
    provider
}

struct LiveResolver(Arc<LiveCert>);

impl std::fmt::Debug for LiveResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LiveResolver")
    }
}

impl rustls::server::ResolvesServerCert for LiveResolver {
    fn resolve(&self, hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if acme {
            // RFC 8737: only the challenge certificate, or no handshake at all.
            return self.0.challenge(hello.server_name()?);
        }
        Some(self.0.served.load().key.clone())
    }
}

/// Why `dir` is no place for a private key, if it is not: others may
/// write there (and so rename their own file over the key, or plant a
/// link), or it belongs to a user other than root and the writer.
pub fn check_private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir).map_err(|e| format!("cannot inspect {}: {e}", dir.display()))?;
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(format!(
            "its directory {} is writable by {} (mode {mode:04o}), so they could replace the file; \
             run `chmod go-w {}` or pick a directory only root can write",
            dir.display(),
            if mode & 0o002 != 0 {
                "every user"
            } else {
                "its group"
            },
            dir.display()
        ));
    }
    let me = nix::unistd::Uid::effective().as_raw();
    if m.uid() != 0 && m.uid() != me {
        let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(m.uid()))
            .ok()
            .flatten()
            .map_or(m.uid().to_string(), |u| u.name);
        return Err(format!(
            "its directory {} belongs to user {owner}, who could replace the file; \
             run `chown root {}` or pick a directory owned by root",
            dir.display(),
            dir.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The suite a client that lists `suites` (in its order) gets.
    async fn negotiated(
        door: &TlsDoor,
        cert: &CertificateDer<'static>,
        suites: &[rustls::SupportedCipherSuite],
    ) -> rustls::CipherSuite {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.clone()).unwrap();
        let mut provider = crypto::default_provider();
        provider.cipher_suites = suites.to_vec();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let server = tokio::spawn({
            let door = door.clone();
            async move { door.accept(server_io).await.map(|_| ()) }
        });
        let name = rustls_pki_types::ServerName::try_from("nb.test").unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(name, client_io)
            .await
            .unwrap();
        server.await.unwrap().unwrap();
        stream
            .get_ref()
            .1
            .negotiated_cipher_suite()
            .unwrap()
            .suite()
    }

    #[tokio::test]
    async fn aes128_unless_the_client_puts_chacha20_first() {
        use crypto::cipher_suite as cs;
        let served = crate::front::acme::temporary_cert(&["nb.test".to_string()]).unwrap();
        let cert = served.key.cert[0].clone();
        let door = serve(served, false).unwrap().door;
        use rustls::CipherSuite as S;
        let cases: [(&str, &[rustls::SupportedCipherSuite], S); 4] = [
            (
                "OpenSSL's and rustls' order (curl, Node.js, Python): AES-256 first",
                &[
                    cs::TLS13_AES_256_GCM_SHA384,
                    cs::TLS13_CHACHA20_POLY1305_SHA256,
                    cs::TLS13_AES_128_GCM_SHA256,
                ],
                S::TLS13_AES_128_GCM_SHA256,
            ),
            (
                "a client without AES hardware lists ChaCha20 first",
                &[
                    cs::TLS13_CHACHA20_POLY1305_SHA256,
                    cs::TLS13_AES_128_GCM_SHA256,
                ],
                S::TLS13_CHACHA20_POLY1305_SHA256,
            ),
            (
                "a client with AES-256 only",
                &[cs::TLS13_AES_256_GCM_SHA384],
                S::TLS13_AES_256_GCM_SHA384,
            ),
            (
                "TLS 1.2, AES-256 first",
                &[
                    cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
                    cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                ],
                S::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            ),
        ];
        for (client, suites, expected) in cases {
            assert_eq!(negotiated(&door, &cert, suites).await, expected, "{client}");
        }
    }
}
