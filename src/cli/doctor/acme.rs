//! The ACME side of `nbctl doctor` (with `[tls.acme]`): whether each of
//! `tls.acme.domains` leads to this machine, and this machine's clock
//! against the CA's.
//!
//! "Leads here" is shown two ways: the addresses a name resolves to are
//! compared with this machine's own (its interfaces), and, while notebookd
//! runs, notebookd's probe is asked at each address with a one-time ticket,
//! which only this daemon accepts. Behind NAT the public address is on no
//! interface and may not loop back, so "not reached from here" is a warning,
//! while "another server answers there" fails.
//!
//! The clock is compared with the `Date` of the ACME directory's answer:
//! the CA is a time source notebookd already talks to, and its clock
//! decides when certificates start, expire and should be renewed.

use std::net::IpAddr;
use std::time::SystemTime;

use super::public_url::{self, Reached};
use super::{Check, Verdict, check};
use crate::config::{AcmeChallenge, Config};

/// Within this (plus the measurement's own uncertainty) the clocks agree.
const CLOCK_OK_SECS: f64 = 60.0;
/// Beyond this, renewal times and "not valid yet" go wrong: fail.
const CLOCK_FAIL_SECS: f64 = 3600.0;

/// This machine's interface addresses.
fn own_addresses() -> Vec<IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = addrs
        .filter_map(|a| a.address)
        .filter_map(|s| {
            if let Some(v4) = s.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn list(addrs: &[IpAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The port the CA connects to for the configured challenge.
fn ca_port(config: &Config) -> &'static str {
    match config.tls.acme.challenge {
        AcmeChallenge::TlsAlpn01 => "443 (tls-alpn-01)",
        AcmeChallenge::Http01 => "80 (http-01)",
    }
}

/// One line per domain of `tls.acme.domains` that resolves (one that does
/// not already failed "name resolves").
pub fn domain_checks(config: &Config, out: &mut Vec<Check>) {
    let own = own_addresses();
    let port = config.server.listen.0.first().map_or(0, |a| a.port());
    for domain in &config.tls.acme.domains {
        let Ok(found) = dns_lookup::lookup_host(domain) else {
            continue;
        };
        let mut addrs: Vec<IpAddr> = found;
        addrs.sort();
        addrs.dedup();
        if addrs.is_empty() {
            continue;
        }
        out.push(domain_check(config, domain, &addrs, &own, port));
    }
}

fn domain_check(
    config: &Config,
    domain: &str,
    addrs: &[IpAddr],
    own: &[IpAddr],
    port: u16,
) -> Check {
    let fix_dns = format!(
        "point the A/AAAA records of {domain} at this machine's public address (its interfaces have {}); behind NAT, forward port {} to this machine",
        list(own),
        ca_port(config)
    );
    let mut reached_here = Vec::new();
    let mut not_reached = Vec::new();
    let mut elsewhere = Vec::new();
    for &ip in addrs {
        match public_url::probe_at(config, ip, domain) {
            Reached::ThisNotebookd => reached_here.push(ip),
            Reached::OtherNotebookd => elsewhere.push(format!(
                "{ip} leads to another notebookd (it refused this one's probe ticket)"
            )),
            Reached::Other(what) => {
                elsewhere.push(format!("{ip} leads to another server ({what})"))
            }
            Reached::Unreachable(why) => not_reached.push((ip, why)),
            Reached::NoTicket(why) => {
                // Without the daemon, only the addresses can be compared.
                let mine: Vec<IpAddr> = addrs.iter().copied().filter(|a| own.contains(a)).collect();
                return if mine.len() == addrs.len() {
                    check(
                        "acme domain",
                        Verdict::Ok,
                        format!(
                            "{domain} resolves to {}, an address of this machine (notebookd's probe was not asked: {why})",
                            list(addrs)
                        ),
                        None,
                    )
                } else {
                    check(
                        "acme domain",
                        Verdict::Warn,
                        format!(
                            "{domain} resolves to {}, not (only) addresses of this machine ({}); notebookd's probe was not asked ({why}), so whether it leads here is unknown",
                            list(addrs),
                            list(own)
                        ),
                        Some(format!(
                            "run `sudo nbctl doctor` while notebookd runs to check through the name; else {fix_dns}"
                        )),
                    )
                };
            }
        }
    }
    if !elsewhere.is_empty() {
        return check(
            "acme domain",
            Verdict::Fail,
            format!(
                "{domain} does not lead to this notebookd: {}; the CA validates there, not here",
                elsewhere.join("; ")
            ),
            Some(fix_dns),
        );
    }
    if not_reached.is_empty() {
        let mine = reached_here.iter().filter(|a| own.contains(a)).count();
        return check(
            "acme domain",
            Verdict::Ok,
            format!(
                "{domain} resolves to {} and leads to this notebookd (its probe answered on port {port}{})",
                list(addrs),
                if mine == reached_here.len() {
                    "; addresses of this machine"
                } else {
                    ""
                }
            ),
            None,
        );
    }
    let (own_unreached, other_unreached): (Vec<_>, Vec<_>) =
        not_reached.iter().partition(|(ip, _)| own.contains(ip));
    let mut parts = Vec::new();
    for (ip, why) in &own_unreached {
        parts.push(format!(
            "{ip} is this machine's, but notebookd does not answer there on port {port} ({why})"
        ));
    }
    for (ip, why) in &other_unreached {
        parts.push(format!(
            "{ip} is not an address of this machine ({}) and notebookd does not answer there on port {port} ({why})",
            list(own)
        ));
    }
    let fix = if other_unreached.is_empty() {
        format!(
            "make server.listen cover that address (e.g. `sudo nbctl config set server.listen 0.0.0.0:{port}`)"
        )
    } else {
        fix_dns
    };
    check(
        "acme domain",
        Verdict::Warn,
        format!("{domain}: {}", parts.join("; ")),
        Some(fix),
    )
}

/// How far this machine's clock is from `date` (what the server said),
/// given the clock just before the request and just after the answer:
/// (seconds this machine is ahead, the measurement's uncertainty).
fn skew(date: SystemTime, sent: SystemTime, received: SystemTime) -> (f64, f64) {
    let secs = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    };
    let (sent, received) = (secs(sent), secs(received));
    let middle = (sent + received) / 2.0;
    // `Date` has whole seconds, and was written somewhere in the round trip.
    let uncertainty = (received - sent).max(0.0) / 2.0 + 1.0;
    (middle - secs(date), uncertainty)
}

fn clock_verdict(ahead: f64, uncertainty: f64, source: &str) -> Check {
    let off = ahead.abs() - uncertainty;
    let fix = "set the time: `timedatectl set-ntp true` (systemd-timesyncd), or chrony; `timedatectl` shows whether it is synchronized";
    if off <= CLOCK_OK_SECS {
        return check(
            "clock",
            Verdict::Ok,
            format!(
                "this machine's clock agrees with the ACME CA's within {:.0} s (the Date of {source})",
                ahead.abs().max(uncertainty).ceil()
            ),
            None,
        );
    }
    let message = format!(
        "this machine's clock is {:.0} s {} the ACME CA's (the Date of {source}): renewal happens at the wrong time and new certificates can look not yet valid",
        ahead.abs(),
        if ahead > 0.0 { "ahead of" } else { "behind" }
    );
    let verdict = if off > CLOCK_FAIL_SECS {
        Verdict::Fail
    } else {
        Verdict::Warn
    };
    check("clock", verdict, message, Some(fix.into()))
}

/// This machine's clock against the `Date` of the ACME directory's answer.
pub fn clock_check(config: &Config, out: &mut Vec<Check>) {
    let url = config.tls.acme.directory_url();
    let mut roots = Vec::new();
    if let Some(bundle) = &config.tls.acme.ca_bundle {
        if let Ok(pem) = std::fs::read(bundle.path()) {
            roots = super::chain::certificates(&pem);
        }
    }
    let answer = public_url::get_timed(url, &roots).and_then(|(a, sent, received)| {
        let date = a
            .header("date")
            .ok_or_else(|| format!("{url} sent no Date header"))?;
        let date = httpdate::parse_http_date(date)
            .map_err(|e| format!("{url} sent an unreadable Date {date:?}: {e}"))?;
        Ok((date, sent, received))
    });
    match answer {
        Ok((date, sent, received)) => {
            let (ahead, uncertainty) = skew(date, sent, received);
            out.push(clock_verdict(ahead, uncertainty, url));
        }
        Err(e) => out.push(check(
            "clock",
            Verdict::Warn,
            format!("not compared with the ACME CA's clock: {e}"),
            Some(format!(
                "check that {url} is reachable from this machine (tls.acme.ca_bundle for a private CA)"
            )),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn skew_is_measured_from_the_middle_of_the_round_trip() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let (ahead, u) = skew(
            t,
            t + Duration::from_secs(119),
            t + Duration::from_secs(121),
        );
        assert!((ahead - 120.0).abs() < 1e-6, "{ahead}");
        assert!((u - 2.0).abs() < 1e-6, "{u}");
        let (ahead, _) = skew(
            t,
            t - Duration::from_secs(7201),
            t - Duration::from_secs(7199),
        );
        assert!((ahead + 7200.0).abs() < 1e-6, "{ahead}");
    }

    #[test]
    fn verdicts_by_how_far_the_clock_is_off() {
        assert_eq!(clock_verdict(3.0, 1.5, "x").verdict, Verdict::Ok);
        // A slow round trip widens what counts as agreeing.
        assert_eq!(clock_verdict(70.0, 20.0, "x").verdict, Verdict::Ok);
        let c = clock_verdict(-300.0, 1.0, "https://ca/dir");
        assert_eq!(c.verdict, Verdict::Warn);
        assert!(c.message.contains("300 s behind"), "{}", c.message);
        assert!(
            c.fix
                .as_deref()
                .unwrap_or("")
                .contains("timedatectl set-ntp true")
        );
        let c = clock_verdict(7200.0, 1.0, "x");
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.message.contains("ahead of"), "{}", c.message);
    }
}
