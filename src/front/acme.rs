//! ACME (`[tls.acme]`): notebookd obtains and renews its own certificate.
//!
//! At start the stored ACME certificate is served if there is one, else a
//! temporary self-signed one, so the service is up at once; a background
//! task ([`run`]) orders the real certificate and swaps it into the served
//! [`LiveCert`] without a restart, then sleeps until renewal is due. A
//! failure keeps the current certificate and retries with backoff; the
//! state (what failed, when the next try is, what to check) is kept in
//! [`AcmeState`] for `nbctl status`.
//!
//! Challenges: TLS-ALPN-01 is answered by the TLS listener itself (the
//! resolver in `tls.rs` hands the challenge certificate to handshakes that
//! offer `acme-tls/1`); HTTP-01 by the plain listeners of
//! `tls.acme.http_listen` ([`serve_http`]), which redirect everything else
//! to https.
//!
//! When renewal is due: `tls.acme.renew_before` before expiry, or when a
//! third of the lifetime is left; where the CA offers renewal information
//! (RFC 9773, ARI: `renewalInfo` in its directory), a time picked at random
//! in the CA's suggested window moves renewal earlier, never later (as
//! Certbot and Caddy do). The window is asked for again when the CA's
//! `Retry-After` says (clamped to a minute .. a day) and at each reload; a
//! renewal names the certificate it `replaces`.
//!
//! The client is instant-acme (RFC 8555, aws-lc-rs, hyper-rustls: no
//! openssl). Account key, certificate and key live in `STATE_DIR/acme`,
//! files 0600: `/etc` is read-only for the service.

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, Der, PrivateKeyDer};
use tokio::net::TcpListener;

use super::App;
use super::tls::{self, CertSummary, LiveCert, ServedCert};
use crate::config::{Acme, AcmeChallenge, Config};

/// The first retry after a failure; doubled at each further failure up to
/// [`RETRY_AT_MOST`]. Let's Encrypt allows 5 failed validations per
/// hostname and hour, so the retries must slow down quickly.
const RETRY_FIRST: Duration = Duration::from_secs(15);
const RETRY_AT_MOST: Duration = Duration::from_secs(6 * 3600);
/// However far away renewal is, look again this often (the config may change).
const RECHECK: Duration = Duration::from_secs(3600);
/// While ACME is off, how often to look whether a reload turned it on.
const OFF_RECHECK: Duration = Duration::from_secs(5);
/// RFC 9773 §4.3.2: the CA's `Retry-After` for its renewal window, kept
/// within a minute and a day.
const ARI_RECHECK_AT_LEAST: i64 = 60;
const ARI_RECHECK_AT_MOST: i64 = 86_400;
/// RFC 9773 §4.3.3: after a failed window request, retry after a minute,
/// doubling up to six hours.
const ARI_RETRY_FIRST: i64 = 60;
const ARI_RETRY_AT_MOST: i64 = 6 * 3600;

const TEMPORARY: &str = "temporary self-signed certificate (waiting for the ACME CA)";

/// What `nbctl status` and `nbctl cert acme` show of ACME.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AcmeReport {
    /// "waiting", "ordering", "valid", "failing".
    pub state: String,
    pub directory: String,
    pub challenge: String,
    pub domains: Vec<String>,
    /// Seconds since the Unix epoch.
    pub last_success: Option<i64>,
    pub last_error: Option<String>,
    pub last_error_at: Option<i64>,
    /// What to check about the last error.
    pub hint: Option<String>,
    pub failures: u32,
    pub next_attempt: Option<i64>,
    /// When renewal is due, for a valid certificate.
    pub renew_at: Option<i64>,
    /// Which rule set `renew_at`: "ari" (the CA's renewal window),
    /// "renew_before" (`tls.acme.renew_before`), "lifetime" (a third of the
    /// lifetime left).
    pub renew_rule: Option<String>,
    /// The CA's renewal information for the served certificate; `None`
    /// while there is no certificate of this CA to ask about.
    pub ari: Option<AriReport>,
}

/// What the CA said about when to renew the served certificate (RFC 9773).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct AriReport {
    /// "window" (the CA suggested one), "unsupported" (its directory offers
    /// no `renewalInfo`), "failing" (it could not be fetched: the other
    /// rules apply).
    pub state: String,
    /// The suggested window, seconds since the Unix epoch.
    pub start: Option<i64>,
    pub end: Option<i64>,
    /// The time picked at random in the window (RFC 9773 §4.2).
    pub selected: Option<i64>,
    /// The CA's page on why the window is what it is.
    pub explanation_url: Option<String>,
    pub error: Option<String>,
    /// When the window is asked for again.
    pub next_check: Option<i64>,
}

/// ACME's shared state: the report, the HTTP-01 answers, and ways to ask
/// for an early renewal or a new look at the plan.
#[derive(Default)]
pub struct AcmeState {
    report: Mutex<AcmeReport>,
    http_tokens: Mutex<HashMap<String, String>>,
    wake: tokio::sync::Notify,
    renew_asked: AtomicBool,
}

impl AcmeState {
    pub fn report(&self) -> AcmeReport {
        self.report
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update(&self, f: impl FnOnce(&mut AcmeReport)) {
        f(&mut self.report.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// Asks the ACME task to order a new certificate now (`nbctl cert acme --renew`).
    pub fn renew_now(&self) {
        self.renew_asked.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Asks the ACME task to plan again after a reload: new settings take
    /// effect at once, and the CA's renewal window is asked for again.
    pub fn recheck(&self) {
        self.wake.notify_one();
    }

    fn http_answer(&self, token: &str) -> Option<String> {
        self.http_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token)
            .cloned()
    }

    fn set_http_answer(&self, token: &str, answer: Option<String>) {
        let mut map = self
            .http_tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match answer {
            Some(a) => map.insert(token.to_string(), a),
            None => map.remove(token),
        };
    }
}

fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `STATE_DIR/acme`.
pub fn acme_dir(config: &Config) -> PathBuf {
    config.server.state_dir.join("acme")
}

fn cert_path(config: &Config) -> PathBuf {
    acme_dir(config).join("cert.pem")
}

fn key_path(config: &Config) -> PathBuf {
    acme_dir(config).join("key.pem")
}

/// One account per directory URL: an account exists only at its CA.
fn account_path(config: &Config) -> PathBuf {
    use sha2::Digest;
    let url = config.tls.acme.directory_url();
    let digest = hex::encode(sha2::Sha256::digest(url.as_bytes()));
    acme_dir(config).join(format!("account-{}.json", &digest[..16]))
}

/// Writes `bytes` to `path` (see [`crate::private_file::write`]) in a
/// directory writable by its owner only, that owner root or this process's
/// user (made 0700 if missing).
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        check_private_dir(dir)?;
    }
    crate::private_file::write(path, bytes)
}

/// [`super::tls::check_private_dir`] as an I/O error.
fn check_private_dir(dir: &Path) -> std::io::Result<()> {
    super::tls::check_private_dir(dir)
        .map_err(|why| std::io::Error::new(std::io::ErrorKind::PermissionDenied, why))
}

/// The certificate to serve at start: the stored ACME one if it is for the
/// configured domains, else a temporary self-signed one.
pub fn initial_cert(config: &Config) -> Result<ServedCert, String> {
    if let Ok(key) = tls::load_certified_key(&cert_path(config), &key_path(config)) {
        let served = stored(key, config);
        if covers(served.leaf.as_ref(), &config.tls.acme.domains) {
            return Ok(served);
        }
    }
    temporary_cert(&config.tls.acme.domains)
}

fn stored(key: rustls::sign::CertifiedKey, config: &Config) -> ServedCert {
    ServedCert {
        leaf: key.cert.first().and_then(CertSummary::of),
        key: Arc::new(key),
        source: format!("ACME ({})", config.tls.acme.directory_url()),
        since: SystemTime::now(),
    }
}

/// Whether `leaf` names every domain.
fn covers(leaf: Option<&CertSummary>, domains: &[String]) -> bool {
    leaf.is_some_and(|l| {
        domains
            .iter()
            .all(|d| l.dns_names.iter().any(|n| n.eq_ignore_ascii_case(d)))
    })
}

/// A self-signed certificate for `domains`, valid a few days, to serve
/// until the CA's arrives.
pub fn temporary_cert(domains: &[String]) -> Result<ServedCert, String> {
    let mut params = rcgen::CertificateParams::new(domains.to_vec())
        .map_err(|e| format!("cannot make a temporary certificate: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        domains.first().map_or("notebookd", String::as_str),
    );
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(7);
    let key = rcgen::KeyPair::generate()
        .map_err(|e| format!("cannot make a temporary certificate key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot make a temporary certificate: {e}"))?;
    let der = PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| format!("cannot use the temporary key: {e}"))?;
    let certified = tls::certified_key_from_der(vec![cert.der().clone()], der)
        .map_err(|e| format!("cannot use the temporary key: {e}"))?;
    Ok(ServedCert {
        leaf: certified.cert.first().and_then(CertSummary::of),
        key: Arc::new(certified),
        source: TEMPORARY.into(),
        since: SystemTime::now(),
    })
}

/// Which rule decides when a certificate is renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RenewRule {
    /// The time picked in the CA's renewal window (RFC 9773).
    Ari,
    /// `tls.acme.renew_before` before expiry.
    RenewBefore,
    /// A third of the lifetime left.
    Lifetime,
}

impl RenewRule {
    fn name(self) -> &'static str {
        match self {
            RenewRule::Ari => "ari",
            RenewRule::RenewBefore => "renew_before",
            RenewRule::Lifetime => "lifetime",
        }
    }
}

/// When `leaf` should be renewed: `renew_before` (seconds, 0 for a third of
/// the lifetime) before expiry, or earlier at `ari_selected`, the time
/// picked in the CA's window. The CA moves renewal earlier, never later, so
/// a window that a CA (or a bug) puts late cannot let the certificate run
/// closer to expiry than the administrator chose.
fn renewal_plan(
    leaf: &CertSummary,
    renew_before: u64,
    ari_selected: Option<i64>,
) -> (i64, RenewRule) {
    let (before, rule) = match renew_before as i64 {
        0 => ((leaf.not_after - leaf.not_before) / 3, RenewRule::Lifetime),
        s => (s, RenewRule::RenewBefore),
    };
    let by_rule = leaf.not_after - before;
    match ari_selected {
        Some(at) if at < by_rule => (at, RenewRule::Ari),
        _ => (by_rule, rule),
    }
}

/// Whether `served` was issued by the configured CA (not the temporary
/// certificate, nor one from a directory configured before).
fn from_this_ca(served: &ServedCert, acme: &Acme) -> bool {
    served.source == format!("ACME ({})", acme.directory_url())
}

/// The RFC 9773 §4.1 identifier of a certificate: base64url of its
/// authority key identifier's keyIdentifier, ".", base64url of its DER
/// serial number (leading zero byte included).
fn certificate_id(cert: &CertificateDer<'_>) -> Result<CertificateIdentifier<'static>, String> {
    use x509_parser::extensions::ParsedExtension;
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| format!("cannot read the certificate: {e}"))?;
    let aki = x509
        .iter_extensions()
        .find_map(|ext| match ext.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref(),
            _ => None,
        })
        .ok_or(
            "the certificate has no authority key identifier, which renewal information needs",
        )?;
    Ok(CertificateIdentifier::new(
        Der::from_slice(aki.0),
        Der::from_slice(x509.tbs_certificate.raw_serial()),
    ))
}

/// A uniformly random second in `[start, end)` (RFC 9773 §4.2).
fn pick_in_window(start: i64, end: i64) -> i64 {
    let mut bytes = [0u8; 8];
    // getrandom failing would leave zeros: the window's start, still in it.
    let _ = getrandom::getrandom(&mut bytes);
    let span = (end - start).max(1) as u64;
    start + (u64::from_le_bytes(bytes) % span) as i64
}

/// The CA's renewal window for one certificate, as last asked.
#[derive(Debug, Clone)]
struct Ari {
    /// The serial of the certificate it is about.
    serial: String,
    report: AriReport,
    failures: u32,
}

impl Ari {
    fn selected(&self) -> Option<i64> {
        (self.report.state == "window")
            .then_some(self.report.selected)
            .flatten()
    }

    fn next_check(&self) -> i64 {
        self.report.next_check.unwrap_or(0)
    }
}

/// Asks the CA for its renewal window for `served` (RFC 9773 §4.2). An
/// unchanged window keeps the time picked before, so asking again does not
/// move renewal around within it.
async fn fetch_ari(config: &Config, served: &ServedCert, serial: &str, before: Option<Ari>) -> Ari {
    let now = unix(SystemTime::now());
    let before = before.filter(|a| a.serial == serial);
    let answer = async {
        let leaf = served
            .key
            .cert
            .first()
            .ok_or_else(|| Some("the served certificate is empty".to_string()))?;
        let id = certificate_id(leaf).map_err(Some)?;
        let account = account(config).await.map_err(Some)?;
        account.renewal_info(&id).await.map_err(|e| match e {
            instant_acme::Error::Unsupported(_) => None,
            other => Some(problem(other)),
        })
    }
    .await;
    match answer {
        Ok((info, retry_after)) => {
            let start = info.suggested_window.start.unix_timestamp();
            let end = info.suggested_window.end.unix_timestamp();
            if end <= start {
                // §4.2: as if there had been no answer.
                return ari_failed(
                    before,
                    serial,
                    now,
                    format!("the CA's renewal window ends ({end}) before it starts ({start})"),
                );
            }
            let selected = before
                .as_ref()
                .filter(|a| a.report.start == Some(start) && a.report.end == Some(end))
                .and_then(|a| a.report.selected)
                .unwrap_or_else(|| pick_in_window(start, end));
            let recheck =
                (retry_after.as_secs() as i64).clamp(ARI_RECHECK_AT_LEAST, ARI_RECHECK_AT_MOST);
            Ari {
                serial: serial.to_string(),
                report: AriReport {
                    state: "window".into(),
                    start: Some(start),
                    end: Some(end),
                    selected: Some(selected),
                    explanation_url: info.explanation_url,
                    error: None,
                    next_check: Some(now + recheck),
                },
                failures: 0,
            }
        }
        // The directory has no renewalInfo; a CA may add it, so look daily.
        Err(None) => Ari {
            serial: serial.to_string(),
            report: AriReport {
                state: "unsupported".into(),
                next_check: Some(now + ARI_RECHECK_AT_MOST),
                ..AriReport::default()
            },
            failures: 0,
        },
        Err(Some(e)) => ari_failed(before, serial, now, e),
    }
}

/// A failed window request: the other rules apply, and it is asked again
/// with backoff; a window known before for this certificate stays in use
/// until then.
fn ari_failed(before: Option<Ari>, serial: &str, now: i64, error: String) -> Ari {
    let failures = before.as_ref().map_or(0, |a| a.failures).saturating_add(1);
    let delay = ARI_RETRY_FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(20))
        .min(ARI_RETRY_AT_MOST);
    tracing::warn!(
        "ACME: the CA's renewal window for serial {serial} could not be fetched ({error}); asking again in {delay}s"
    );
    let mut report = before
        .map(|a| a.report)
        .filter(|r| r.state == "window")
        .unwrap_or_else(|| AriReport {
            state: "failing".into(),
            ..AriReport::default()
        });
    report.error = Some(error);
    report.next_check = Some(now + delay);
    Ari {
        serial: serial.to_string(),
        report,
        failures,
    }
}

/// What to tell the administrator to check for an error message.
fn hint_for(error: &str, acme: &Acme) -> String {
    let e = error.to_ascii_lowercase();
    let port = match acme.challenge {
        AcmeChallenge::TlsAlpn01 => "443 (tls-alpn-01: server.listen must be reachable there)",
        AcmeChallenge::Http01 => "80 (http-01: tls.acme.http_listen must be reachable there)",
    };
    if e.contains("ratelimit") || e.contains("rate limit") || e.contains("too many") {
        "the CA's rate limits: wait for the time it names, or test with tls.acme.staging = true"
            .into()
    } else if e.contains("dns") || e.contains("nxdomain") || e.contains("servfail") {
        format!(
            "DNS: each of tls.acme.domains must resolve (A/AAAA) to this machine ({})",
            acme.domains.join(", ")
        )
    } else if e.contains("connect")
        || e.contains("timeout")
        || e.contains("refused")
        || e.contains("unauthorized")
        || e.contains("incorrect")
    {
        format!(
            "that the CA reaches this machine on port {port}, and that the domains resolve to it"
        )
    } else if e.contains("rejectedidentifier") || e.contains("not allowed") || e.contains("policy")
    {
        "tls.acme.domains: the CA will not issue for these names (a public CA needs public DNS names)".into()
    } else if e.contains("http request failure") || e.contains("error trying to connect") {
        format!(
            "that {} is reachable from this machine (and tls.acme.ca_bundle for a private CA)",
            acme.directory_url()
        )
    } else {
        format!(
            "the CA's message above; DNS of the domains, port {port}, and the directory {}",
            acme.directory_url()
        )
    }
}

/// Runs ACME for as long as the daemon runs (nothing to do while it is off).
pub async fn run(app: Arc<App>) {
    // instant-acme's HTTP client asks for the process-wide provider; make it
    // the one the listener uses (aws-lc-rs). An error means one is set already.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut failures: u32 = 0;
    // No order before this (Unix seconds) after a failure, unless asked.
    let mut backoff_until: i64 = 0;
    let mut ari: Option<Ari> = None;
    let mut asked = false;
    loop {
        let settings = app.settings();
        let config = settings.config.clone();
        let acme = &config.tls.acme;
        let Some(live) = settings.live_cert.clone().filter(|_| acme.enabled) else {
            drop(settings);
            // A reload may turn ACME on; it must not wait an hour for us.
            wait(&app, OFF_RECHECK).await;
            continue;
        };
        drop(settings);
        let served = live.current();
        let ours = served.source != TEMPORARY && covers(served.leaf.as_ref(), &acme.domains);
        let now = unix(SystemTime::now());
        // The CA's window, for a certificate of this CA that has not expired
        // (§4.3: never asked for after expiry or replacement).
        let askable = served
            .leaf
            .as_ref()
            .filter(|l| ours && from_this_ca(&served, acme) && l.not_after > now);
        match askable {
            Some(leaf) => {
                let stale = ari
                    .as_ref()
                    .is_none_or(|a| a.serial != leaf.serial || a.next_check() <= now);
                if stale {
                    ari = Some(fetch_ari(&config, &served, &leaf.serial, ari.take()).await);
                }
            }
            None => ari = None,
        }
        let plan = served.leaf.as_ref().filter(|_| ours).map(|leaf| {
            renewal_plan(
                leaf,
                acme.renew_before.get().as_secs(),
                ari.as_ref().and_then(Ari::selected),
            )
        });
        app.acme.update(|r| {
            r.directory = acme.directory_url().to_string();
            r.challenge = match acme.challenge {
                AcmeChallenge::TlsAlpn01 => "tls-alpn-01".into(),
                AcmeChallenge::Http01 => "http-01".into(),
            };
            r.domains = acme.domains.clone();
            r.renew_at = plan.map(|(at, _)| at);
            r.renew_rule = plan.map(|(_, rule)| rule.name().to_string());
            r.ari = ari.as_ref().map(|a| a.report.clone());
        });
        let now = unix(SystemTime::now());
        if !asked {
            // Sleep until renewal is due, the window is to be asked for
            // again, a reload, or `nbctl cert acme --renew`.
            let until = match plan {
                // A failed early renewal (`--renew`) stays "failing" until
                // its backoff is over; the certificate served is still good.
                Some((at, _)) if at > now && backoff_until <= now => {
                    app.acme.update(|r| {
                        r.state = "valid".into();
                        r.next_attempt = Some(at);
                    });
                    Some(at)
                }
                Some((at, _)) if at > now => Some(backoff_until.min(at)),
                _ if backoff_until > now => Some(backoff_until),
                _ => None,
            };
            if let Some(until) = until {
                let mut next = until;
                if let Some(a) = &ari {
                    next = next.min(a.next_check().max(now));
                }
                let left = Duration::from_secs((next - now).max(0) as u64);
                match wait(&app, left.min(RECHECK)).await {
                    Wake::Renew => asked = true,
                    Wake::Recheck => {
                        // A reload: ask the CA for its window again.
                        if let Some(a) = ari.as_mut() {
                            a.report.next_check = Some(0);
                        }
                    }
                    Wake::Timeout => {}
                }
                continue;
            }
        }
        asked = false;
        app.acme.update(|r| r.state = "ordering".into());
        // A renewal names the certificate it replaces (RFC 9773 §5) when the
        // CA speaks ARI.
        let replaces = ari
            .as_ref()
            .filter(|a| ours && a.report.state != "unsupported")
            .and_then(|_| served.key.cert.first())
            .and_then(|c| certificate_id(c).ok());
        tracing::info!(
            "ACME: ordering a certificate for {} from {}{}",
            acme.domains.join(", "),
            acme.directory_url(),
            match (&replaces, &served.leaf) {
                (Some(_), Some(l)) => format!(" (replacing serial {})", l.serial),
                _ => String::new(),
            }
        );
        match obtain(&app, &config, &live, replaces).await {
            Ok(new) => {
                failures = 0;
                backoff_until = 0;
                let leaf = new.leaf.clone();
                live.replace(new);
                app.acme.update(|r| {
                    r.state = "valid".into();
                    r.last_success = Some(unix(SystemTime::now()));
                    r.last_error = None;
                    r.hint = None;
                    r.failures = 0;
                });
                if let Some(l) = leaf {
                    tracing::info!(
                        "ACME: new certificate for {} (serial {}) is served to new connections",
                        l.dns_names.join(", "),
                        l.serial
                    );
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let delay = RETRY_FIRST
                    .saturating_mul(1 << failures.saturating_sub(1).min(20))
                    .min(RETRY_AT_MOST);
                let hint = hint_for(&e, acme);
                let now = unix(SystemTime::now());
                backoff_until = now + delay.as_secs() as i64;
                tracing::warn!(
                    "ACME: no certificate for {} ({e}); the current certificate stays; next try in {}s; check {hint}",
                    acme.domains.join(", "),
                    delay.as_secs()
                );
                app.acme.update(|r| {
                    r.state = "failing".into();
                    r.last_error = Some(e.clone());
                    r.last_error_at = Some(now);
                    r.hint = Some(hint);
                    r.failures = failures;
                    r.next_attempt = Some(backoff_until);
                });
            }
        }
    }
}

/// Why the ACME task woke up.
enum Wake {
    Timeout,
    /// `nbctl cert acme --renew`.
    Renew,
    /// A reload.
    Recheck,
}

/// Sleeps `d`, or less if a renewal or a new look is asked for.
async fn wait(app: &App, d: Duration) -> Wake {
    tokio::select! {
        _ = tokio::time::sleep(d) => Wake::Timeout,
        _ = app.acme.wake.notified() => {
            if app.acme.renew_asked.swap(false, Ordering::SeqCst) {
                Wake::Renew
            } else {
                Wake::Recheck
            }
        }
    }
}

fn problem(e: instant_acme::Error) -> String {
    match e {
        instant_acme::Error::Api(p) => {
            let mut s = p.detail.clone().unwrap_or_default();
            if let Some(t) = &p.r#type {
                s = format!("{s} ({t})");
            }
            for sub in &p.subproblems {
                if let Some(d) = &sub.detail {
                    s.push_str(&format!("; {d}"));
                }
            }
            format!("the CA refused: {s}")
        }
        other => other.to_string(),
    }
}

async fn account(config: &Config) -> Result<Account, String> {
    let acme = &config.tls.acme;
    let builder = match &acme.ca_bundle {
        Some(bundle) => Account::builder_with_root(bundle.path())
            .map_err(|e| format!("tls.acme.ca_bundle {}: {e}", bundle.path().display()))?,
        None => Account::builder().map_err(|e| e.to_string())?,
    };
    let path = account_path(config);
    if let Ok(text) = std::fs::read(&path) {
        if let Ok(creds) = serde_json::from_slice::<AccountCredentials>(&text) {
            return builder
                .from_credentials(creds)
                .await
                .map_err(|e| format!("ACME directory {}: {}", acme.directory_url(), problem(e)));
        }
    }
    let contact: Vec<&str> = acme.contact.iter().map(String::as_str).collect();
    let (account, creds) = builder
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory_url().to_string(),
            None,
        )
        .await
        .map_err(|e| format!("ACME directory {}: {}", acme.directory_url(), problem(e)))?;
    let json = serde_json::to_vec(&creds).map_err(|e| e.to_string())?;
    write_private(&path, &json)
        .map_err(|e| format!("cannot store the ACME account in {}: {e}", path.display()))?;
    tracing::info!("ACME: new account at {}", acme.directory_url());
    Ok(account)
}

/// The TLS-ALPN-01 answer for `domain` (RFC 8737): a self-signed
/// certificate carrying the key authorization's digest.
fn alpn_certificate(domain: &str, digest: &[u8]) -> Result<rustls::sign::CertifiedKey, String> {
    let mut params =
        rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::try_from(key.serialize_der()).map_err(|e| e.to_string())?;
    tls::certified_key_from_der(vec![cert.der().clone()], der).map_err(|e| e.to_string())
}

/// One order, from account to stored certificate; `replaces` names the
/// certificate it renews (RFC 9773 §5).
async fn obtain(
    app: &App,
    config: &Config,
    live: &LiveCert,
    replaces: Option<CertificateIdentifier<'static>>,
) -> Result<ServedCert, String> {
    let acme = &config.tls.acme;
    let account = account(config).await?;
    let ids: Vec<Identifier> = acme
        .domains
        .iter()
        .map(|d| Identifier::Dns(d.clone()))
        .collect();
    let ordered = match replaces {
        Some(id) => {
            match account.new_order(&NewOrder::new(&ids).replaces(id)).await {
                Ok(order) => Ok(order),
                // The CA refused the predecessor (already replaced, issued to
                // another account, unknown to it): a plain order still renews.
                Err(e) => {
                    tracing::info!(
                        "ACME: the CA refused an order that names the certificate it replaces ({}); ordering without",
                        problem(e)
                    );
                    account.new_order(&NewOrder::new(&ids)).await
                }
            }
        }
        None => account.new_order(&NewOrder::new(&ids)).await,
    };
    let mut order = ordered.map_err(problem)?;
    let kind = match acme.challenge {
        AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        AcmeChallenge::Http01 => ChallengeType::Http01,
    };
    let mut answered: Vec<(String, String)> = Vec::new();
    let result = async {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(problem)?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let mut challenge = authz
                .challenge(kind.clone())
                .ok_or_else(|| format!("the CA offers no {kind:?} challenge"))?;
            let domain = challenge.identifier().to_string();
            let key_auth = challenge.key_authorization();
            match acme.challenge {
                AcmeChallenge::TlsAlpn01 => {
                    let cert = alpn_certificate(&domain, key_auth.digest().as_ref())?;
                    live.set_challenge(&domain, Some(Arc::new(cert)));
                }
                AcmeChallenge::Http01 => {
                    app.acme
                        .set_http_answer(&challenge.token, Some(key_auth.as_str().to_string()));
                }
            }
            answered.push((domain, challenge.token.clone()));
            challenge.set_ready().await.map_err(problem)?;
        }
        let retry = RetryPolicy::new().timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retry).await.map_err(problem)?;
        if status != OrderStatus::Ready {
            return Err(format!(
                "order {status:?}: {}",
                order_errors(&mut order).await
            ));
        }
        let key_pem = order.finalize().await.map_err(problem)?;
        let chain_pem = order.poll_certificate(&retry).await.map_err(problem)?;
        Ok((key_pem, chain_pem))
    }
    .await;
    for (domain, token) in &answered {
        live.set_challenge(domain, None);
        app.acme.set_http_answer(token, None);
    }
    let (key_pem, chain_pem) = result?;
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the CA sent an unreadable certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| format!("unreadable order key: {e}"))?;
    let certified = tls::certified_key_from_der(chain, key).map_err(|e| e.to_string())?;
    write_private(&key_path(config), key_pem.as_bytes())
        .and_then(|()| write_private(&cert_path(config), chain_pem.as_bytes()))
        .map_err(|e| {
            format!(
                "cannot store the certificate in {}: {e}",
                acme_dir(config).display()
            )
        })?;
    Ok(stored(certified, config))
}

/// The CA's reasons for a failed order, from its authorizations.
async fn order_errors(order: &mut instant_acme::Order) -> String {
    let mut out = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        for c in &authz.challenges {
            if let Some(p) = &c.error {
                out.push(format!(
                    "{}: {}",
                    authz.identifier(),
                    p.detail
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", p.r#type))
                ));
            }
        }
    }
    if out.is_empty() {
        "the CA gave no reason".into()
    } else {
        out.join("; ")
    }
}

/// Serves one plain-HTTP listener of `tls.acme.http_listen`: HTTP-01
/// answers, and a redirect to https for everything else.
pub async fn serve_http(app: Arc<App>, listener: TcpListener) {
    // Unauthenticated and plain: few connections, short deadlines.
    let slots = Arc::new(tokio::sync::Semaphore::new(64));
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let app = app.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, std::convert::Infallible>(http_answer(&app, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(false)
                .max_buf_size(16 * 1024)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
        });
    }
}

fn http_answer<B>(app: &App, req: &http::Request<B>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if let Some(token) = path.strip_prefix("/.well-known/acme-challenge/") {
        if let Some(answer) = app.acme.http_answer(token) {
            let mut resp = Response::new(Full::new(Bytes::from(answer)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/octet-stream"),
            );
            return resp;
        }
        let mut resp = Response::new(Full::new(Bytes::from_static(b"no such challenge\n")));
        *resp.status_mut() = StatusCode::NOT_FOUND;
        return resp;
    }
    let settings = app.settings();
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_string())
        .filter(|h| {
            settings
                .config
                .tls
                .acme
                .domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(h))
        })
        .or_else(|| settings.config.tls.acme.domains.first().cloned());
    let port = settings
        .config
        .server
        .listen
        .0
        .first()
        .map_or(443, |a| a.port());
    let authority = match (host, port) {
        (Some(h), 443) => h,
        (Some(h), p) => format!("{h}:{p}"),
        (None, _) => "localhost".into(),
    };
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = format!("https://{authority}{target}");
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::MOVED_PERMANENTLY;
    if let Ok(v) = http::HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn leaf(not_before: i64, not_after: i64) -> CertSummary {
        CertSummary {
            subject: "CN=nb.test".into(),
            not_after,
            serial: "01".into(),
            not_before,
            dns_names: vec!["nb.test".into()],
        }
    }

    #[test]
    fn renewal_by_rule_or_earlier_by_the_cas_window() {
        let day = 86_400;
        let l = leaf(0, 90 * day);
        // A third of the lifetime left, or renew_before before expiry.
        assert_eq!(renewal_plan(&l, 0, None), (60 * day, RenewRule::Lifetime));
        assert_eq!(
            renewal_plan(&l, 10 * day as u64, None),
            (80 * day, RenewRule::RenewBefore)
        );
        // The CA's time wins when it is earlier...
        assert_eq!(
            renewal_plan(&l, 0, Some(50 * day)),
            (50 * day, RenewRule::Ari)
        );
        assert_eq!(
            renewal_plan(&l, 10 * day as u64, Some(70 * day)),
            (70 * day, RenewRule::Ari)
        );
        // ...and never delays renewal.
        assert_eq!(
            renewal_plan(&l, 0, Some(85 * day)),
            (60 * day, RenewRule::Lifetime)
        );
        // A revoked certificate's window lies in the past: renew now.
        assert_eq!(renewal_plan(&l, 0, Some(-3600)).1, RenewRule::Ari);
    }

    #[test]
    fn window_times_are_picked_inside_the_window() {
        for _ in 0..200 {
            let t = pick_in_window(1_000, 1_100);
            assert!((1_000..1_100).contains(&t), "{t}");
        }
        assert_eq!(pick_in_window(5, 5), 5);
    }

    /// RFC 9773 §4.1's own example: AKI keyIdentifier 69:88:5B:...:C8:D4 and
    /// serial 00:87:65:43:21 give "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE".
    #[test]
    fn certificate_identifier_of_the_rfc_example() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![
            0x69, 0x88, 0x5B, 0x6B, 0x87, 0x46, 0x40, 0x41, 0xE1, 0xB3, 0x7B, 0x84, 0x7B, 0xA0,
            0xAE, 0x2C, 0xDE, 0x01, 0xC8, 0xD4,
        ]);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut params = rcgen::CertificateParams::new(vec!["nb.test".to_string()]).unwrap();
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[
            0x00, 0x87, 0x65, 0x43, 0x21,
        ]));
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &issuer).unwrap();
        let id = certificate_id(cert.der()).unwrap();
        assert_eq!(id.to_string(), "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE");

        // A self-signed certificate without the extension cannot be asked about.
        let own = rcgen::CertificateParams::new(vec!["nb.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let e = certificate_id(own.der()).unwrap_err();
        assert!(e.contains("authority key identifier"), "{e}");
    }

    #[test]
    fn private_writes_replace_links_and_refuse_open_directories() {
        let dir = tempfile::tempdir().unwrap();
        let acme = dir.path().join("acme");
        let outside = dir.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        let key = acme.join("key.pem");
        std::fs::create_dir(&acme).unwrap();
        // A link at the final name and one at the temporary name.
        std::os::unix::fs::symlink(&outside, &key).unwrap();
        std::os::unix::fs::symlink(&outside, key.with_extension("tmp")).unwrap();
        write_private(&key, b"key").unwrap();
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
        let m = std::fs::symlink_metadata(&key).unwrap();
        assert!(m.file_type().is_file());
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(std::fs::read(&key).unwrap(), b"key");

        std::fs::set_permissions(&acme, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = write_private(&key, b"other").unwrap_err().to_string();
        assert!(e.contains("chmod go-w"), "{e}");
        assert_eq!(std::fs::read(&key).unwrap(), b"key");
    }
}
