//! The HTTP edge, in the order a request meets it: [`listen`] (bind,
//! accept, connection slots), [`tls`], [`limits`] (clocks and sizes),
//! [`route`] (request-target checks and the routing table), [`login`],
//! [`token`] (API tokens on requests), [`cors`] (their cross-origin use),
//! [`headers`], [`pages`], [`proxy`]; [`plain_http`] answers `http://` sent
//! to a TLS port. This file holds what they share: the
//! [`App`] state, the reloadable [`Settings`], a client connection, and the
//! helpers that make notebookd's own responses.
//!
//! Reloadable settings live in one [`Settings`] snapshot behind an
//! `ArcSwap`: a request loads it once and sees one consistent config.

pub mod acme;
pub mod cert_watch;
pub mod client;
pub mod cors;
pub mod gateway;
pub mod headers;
pub mod jupyter_socket;
pub mod limits;
pub mod listen;
pub mod login;
pub mod pages;
pub mod plain_http;
pub mod probe;
pub mod proxy;
pub mod route;
pub mod splice;
pub mod target;
pub mod tls;
pub mod token;
pub mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use tokio::sync::watch;

use crate::auth::LoginGuard;
use crate::auth::session::{SessionKeys, SessionSecret};
use crate::auth::sessions::SessionTable;
use crate::auth::tokens::TokenTable;
use crate::config::Config;
use crate::jupyter::{JupyterState, JupyterStatus, Supervisor};
use client::Peer;
use headers::HeaderPolicy;
use proxy::{Upstream, UpstreamConn};

/// The body of every response: streamed from Jupyter, or made here.
pub type Body = Either<proxy::ProxiedBody, Full<Bytes>>;

/// Everything that a reload may change, as one snapshot.
pub struct Settings {
    pub config: Config,
    /// `None` while no password is configured: then nothing but the setup page is served.
    pub keys: Option<SessionKeys>,
    pub headers: HeaderPolicy,
    pub tls: Option<tls::TlsDoor>,
    /// The certificate `tls` serves, swappable without a reload.
    pub live_cert: Option<Arc<tls::LiveCert>>,
}

impl Settings {
    /// Builds the snapshot, loading the TLS files; fails without side effects.
    pub fn build(config: Config, secret: &SessionSecret) -> Result<Settings, String> {
        let (tls, live_cert) = if config.tls.enabled && config.tls.acme.enabled {
            let served = acme::initial_cert(&config)?;
            let alpn = config.tls.acme.challenge == crate::config::AcmeChallenge::TlsAlpn01;
            let loaded = tls::serve(served, alpn)?;
            (Some(loaded.door), Some(loaded.live))
        } else if config.tls.enabled {
            let loaded = tls::load(&config.tls.cert, &config.tls.key).map_err(|e| e.to_string())?;
            (Some(loaded.door), Some(loaded.live))
        } else {
            (None, None)
        };
        let keys = config.auth.password_hash.as_ref().map(|hash| {
            SessionKeys::new(
                secret,
                hash,
                config.auth.session_lifetime.get(),
                config.auth.session_idle_timeout.get(),
            )
        });
        let headers = HeaderPolicy::new(
            &config.embed.frame_ancestors,
            config.tls.hsts_max_age.get().as_secs(),
        );
        Ok(Settings {
            config,
            keys,
            headers,
            tls,
            live_cert,
        })
    }

    /// The certificate new connections get now, for `nbctl status`.
    pub fn served_cert(&self) -> Option<Arc<tls::ServedCert>> {
        self.live_cert.as_ref().map(|live| live.current())
    }

    pub fn base_url(&self) -> &str {
        self.config.server.base_url.as_str()
    }
}

/// The state shared by every connection.
pub struct App {
    settings: ArcSwap<Settings>,
    pub sessions: SessionTable,
    pub tokens: TokenTable,
    pub login: LoginGuard,
    pub upstream: Upstream,
    /// ACME's state (`[tls.acme]`), kept across reloads.
    pub acme: acme::AcmeState,
    pub supervisor: Supervisor,
    jupyter: watch::Receiver<JupyterStatus>,
    pub started: Instant,
    /// The tickets that unlock `_notebookd/probe` (see probe.rs).
    pub probe_tickets: probe::ProbeTickets,
    connections: AtomicUsize,
    /// Served connections that ended (WebSockets: at their upgrade).
    closed: AtomicU64,
}

impl App {
    pub fn new(settings: Settings, supervisor: Supervisor) -> App {
        let jupyter = supervisor.status();
        let socket = jupyter.borrow().socket.clone();
        let auth = &settings.config.auth;
        let sessions = SessionTable::load(
            &settings.config.server.state_dir,
            auth.session_lifetime.get().as_secs(),
            auth.session_idle_timeout.get().as_secs(),
        );
        let tokens = TokenTable::load(&settings.config.server.state_dir);
        App {
            settings: ArcSwap::from_pointee(settings),
            sessions,
            tokens,
            login: LoginGuard::default(),
            upstream: Upstream::new(socket),
            acme: acme::AcmeState::default(),
            supervisor,
            jupyter,
            started: Instant::now(),
            probe_tickets: probe::ProbeTickets::default(),
            connections: AtomicUsize::new(0),
            closed: AtomicU64::new(0),
        }
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.settings.load_full()
    }

    pub fn replace_settings(&self, settings: Settings) {
        self.settings.store(Arc::new(settings));
    }

    pub fn jupyter(&self) -> JupyterStatus {
        self.jupyter.borrow().clone()
    }

    pub fn jupyter_state(&self) -> JupyterState {
        self.jupyter.borrow().state
    }

    pub fn open_connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Counts a served connection for `nbctl status` while `serve` runs.
    pub(crate) async fn counting_connection(&self, serve: impl std::future::Future<Output = ()>) {
        self.connections.fetch_add(1, Ordering::Relaxed);
        serve.await;
        self.connections.fetch_sub(1, Ordering::Relaxed);
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// How many served connections have ended since the start.
    pub fn closed_connections(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }
}

/// One client connection: who is at the other end, and its own connection
/// to Jupyter.
pub struct ClientConn {
    pub peer: Peer,
    pub upstream: UpstreamConn,
}

impl ClientConn {
    pub fn new(addr: SocketAddr, tls: bool) -> ClientConn {
        ClientConn {
            peer: Peer::new(addr, tls),
            upstream: UpstreamConn::default(),
        }
    }
}

/// A response made by notebookd.
pub fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut resp = Response::new(Either::Right(Full::new(body.into())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub fn html(status: StatusCode, page: String) -> Response<Body> {
    respond(status, "text/html; charset=utf-8", page)
}

pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    respond(status, "application/json", value.to_string())
}

pub fn redirect(status: StatusCode, location: &str) -> Response<Body> {
    let mut resp = respond(status, "text/plain; charset=utf-8", Bytes::new());
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}
