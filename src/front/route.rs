//! The routing table: which requests notebookd answers itself (login,
//! logout, health, its stylesheet, refusals) and which go to Jupyter, and
//! the header policy that matches who made the response.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;

use super::client::ClientInfo;
use super::limits::Deadlines;
use super::proxy::{ProxiedBody, ProxyError, UpstreamConn};
use super::target::{check_host, check_path, head_size, origin_matches};
use super::{
    App, Body, ClientConn, Settings, cors, html, json, login, pages, redirect, respond, token,
};
use crate::auth::LoginLimits;
use crate::auth::session::{SessionKeys, unix_now};
use crate::auth::sessions::Ending;
use crate::jupyter::JupyterState;

/// A response, and who made it: notebookd's own pages get notebookd's
/// strict headers; Jupyter's keep its own, with only `frame-ancestors` and
/// cookie attributes edited.
pub enum Reply {
    /// Made by notebookd.
    Own(Response<Body>),
    /// Jupyter's answer, streamed through.
    Proxied(Response<Body>),
}

fn error_page(settings: &Settings, status: StatusCode, detail: &str) -> Response<Body> {
    let title = status.canonical_reason().unwrap_or("Error");
    html(
        status,
        pages::error(settings.base_url(), status.as_u16(), title, detail),
    )
}

/// Answers one request.
pub async fn handle(app: Arc<App>, conn: &ClientConn, req: Request<Incoming>) -> Response<Body> {
    let settings = app.settings();
    let client = ClientInfo::new(&conn.peer, &req, &settings.config);
    let hsts = super::headers::hsts_applies(req.headers().get(header::HOST));
    let mut resp = match route(&app, &settings, &client, &conn.upstream, req).await {
        Reply::Own(mut resp) => {
            settings.headers.own_page(resp.headers_mut(), client.https);
            resp
        }
        Reply::Proxied(mut resp) => {
            settings.headers.proxied(resp.headers_mut(), client.https);
            resp
        }
    };
    if !hsts {
        resp.headers_mut().remove(header::STRICT_TRANSPORT_SECURITY);
    }
    resp
}

async fn route(
    app: &App,
    settings: &Settings,
    client: &ClientInfo,
    upstream: &UpstreamConn,
    req: Request<Incoming>,
) -> Reply {
    let base = settings.base_url();
    let refuse = |status, why: &str| Reply::Own(error_page(settings, status, why));
    if req.uri().scheme().is_some()
        || req.uri().authority().is_some()
        || req.method() == Method::CONNECT
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Only origin-form request targets (a path) are served.",
        );
    }
    let target = req.uri().path_and_query().map_or("", |pq| pq.as_str());
    if target.len() > settings.config.limits.max_uri_bytes as usize {
        return refuse(StatusCode::URI_TOO_LONG, "The request target is too long.");
    }
    // hyper's limit is its read buffer's size, which may overshoot: exactly here.
    if head_size(req.method(), target, req.headers())
        > settings.config.limits.max_header_bytes as usize
    {
        return refuse(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "The request headers are too large (limits.max_header_bytes).",
        );
    }
    let path = req.uri().path();
    if let Err(why) = check_path(path) {
        return refuse(StatusCode::BAD_REQUEST, why);
    }
    if let Err(why) = check_host(req.headers()) {
        return refuse(StatusCode::BAD_REQUEST, why);
    }
    // A token request is not a browser's (its credential is not ambient),
    // so the cross-site and Origin refusals do not apply; a wrong token is
    // refused below.
    let token = token::presented(&req);
    if token.is_none() && (cross_site_write(&req) || foreign_origin_write(settings, client, &req)) {
        return refuse(
            StatusCode::FORBIDDEN,
            "This request came from another site; it is refused.",
        );
    }
    let Some(rel) = path.strip_prefix(base) else {
        if path.len() + 1 == base.len() && base.starts_with(path) {
            return Reply::Own(redirect(StatusCode::FOUND, base));
        }
        return refuse(StatusCode::NOT_FOUND, "Nothing is served here.");
    };
    match rel {
        "login" => return Reply::Own(login::login(app, settings, client, req).await),
        "logout" => return Reply::Own(login::logout(app, settings, client, &req)),
        "_notebookd/health" => return Reply::Own(health(app)),
        "_notebookd/probe" => {
            return Reply::Own(super::probe::answer(&app.probe_tickets, client, req));
        }
        "_notebookd/static/notebookd.css" => {
            let mut resp = respond(StatusCode::OK, "text/css; charset=utf-8", pages::STYLESHEET);
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            );
            return Reply::Own(resp);
        }
        "_notebookd/static/favicon.svg" | "favicon.ico" => {
            let mut resp = respond(StatusCode::OK, "image/svg+xml", pages::FAVICON);
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=86400"),
            );
            return Reply::Own(resp);
        }
        _ => {}
    }
    let gateway_api =
        settings.config.jupyter.gateway().is_some() && super::gateway::is_gateway_api(rel);
    if cors::is_preflight(&req) {
        return Reply::Own(cors::preflight(&req, &settings.config.server.cors_origins));
    }
    let Some(keys) = &settings.keys else {
        return Reply::Own(html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::no_password(base),
        ));
    };
    let mut req = req;
    let cors_origin = token
        .as_ref()
        .and_then(|_| cors::allowed_origin(req.headers(), &settings.config.server.cors_origins));
    let ending = match token {
        Some(presented) => match token_request(app, settings, keys, client, &mut req, presented) {
            Ok(ending) => ending,
            Err(reply) => return *reply,
        },
        None => match login::current_session(app, keys, req.headers()) {
            Some((_, ending)) => ending,
            None => return Reply::Own(login::login_required(settings, &req)),
        },
    };

    let state = app.jupyter_state();
    if state != JupyterState::Ready {
        return Reply::Own(unavailable(settings, &req, state.describe()));
    }
    let wants_html = accepts_html(&req);
    let deadlines = Deadlines::of(&settings.config);
    // A WebSocket of the session closes when the session ends (see proxy.rs).
    let forwarded = tokio::select! {
        r = app
            .upstream
            .forward(req, client, upstream, deadlines, ending.clone()) => r,
        () = ending.ended() => {
            return Reply::Own(json(
                StatusCode::UNAUTHORIZED,
                &serde_json::json!({"message": login::not_logged_in_message(base), "login": format!("{base}login")}),
            ));
        }
    };
    match forwarded {
        Ok(resp) => {
            let mut resp = if gateway_api {
                super::gateway::clarify(base, wants_html, resp, ending).await
            } else {
                resp.map(|b| Either::Left(ProxiedBody::new(b, Some(ending))))
            };
            if let Some(origin) = cors_origin {
                cors::allow(resp.headers_mut(), origin);
            }
            Reply::Proxied(resp)
        }
        Err(ProxyError::Connect(e)) => {
            tracing::warn!("{e}");
            Reply::Own(unavailable_for(settings, wants_html, "restarting"))
        }
        Err(ProxyError::ClientTimedOut) => {
            tracing::debug!(client = %client.ip, "request body timed out");
            let mut resp = error_page(
                settings,
                StatusCode::REQUEST_TIMEOUT,
                "The request body stopped arriving (limits.body_read_timeout).",
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Reply::Own(resp)
        }
        Err(e @ ProxyError::Timeout(_)) => {
            tracing::warn!("{e}");
            refuse(
                StatusCode::GATEWAY_TIMEOUT,
                "Jupyter did not answer in time (jupyter.response_timeout); it may be busy. Try again.",
            )
        }
        Err(ProxyError::Upstream(e)) => {
            tracing::warn!("proxying to Jupyter failed: {e}");
            refuse(
                StatusCode::BAD_GATEWAY,
                "Jupyter did not answer properly; try again.",
            )
        }
    }
}

/// Checks the API token of a request and prepares the request for Jupyter;
/// the token's end signal, or the answer for a refused token (401, or 429
/// once the address has used up its attempts). A browser navigation with
/// `?token=` gets a session cookie instead and is sent to the same URL
/// without the token (what a pasted link or JupyterLab Desktop does).
fn token_request(
    app: &App,
    settings: &Settings,
    keys: &SessionKeys,
    client: &ClientInfo,
    req: &mut Request<Incoming>,
    presented: token::Presented,
) -> Result<Arc<Ending>, Box<Reply>> {
    let auth = &settings.config.auth;
    let limits = LoginLimits {
        attempts: auth.login_attempts,
        window: auth.login_window.get(),
    };
    let trusted = auth.trusted_clients.iter().any(|t| t.contains(client.ip));
    if let Some(wait) = app.login.limited(client.ip, trusted, &limits) {
        let mut resp = json(
            StatusCode::TOO_MANY_REQUESTS,
            &serde_json::json!({"message": "too many failed logins or tokens from this address; wait before trying again"}),
        );
        let secs = (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1);
        if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return Err(Box::new(Reply::Own(resp)));
    }
    let Some(used) = app.tokens.check(&presented.value, unix_now()) else {
        app.login.token_failed(client.ip, trusted, &limits);
        tracing::warn!(client = %client.ip, "refused an unknown or expired API token");
        let mut resp = json(
            StatusCode::UNAUTHORIZED,
            &serde_json::json!({"message": "invalid or expired API token (see `nbctl token list`)"}),
        );
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("token realm=\"notebook\""),
        );
        return Err(Box::new(Reply::Own(resp)));
    };
    let navigation = presented.in_query
        && matches!(*req.method(), Method::GET | Method::HEAD)
        && !super::proxy::is_upgrade(req.headers())
        && accepts_html(req);
    if navigation {
        return Err(Box::new(Reply::Own(login::token_exchange(
            app, settings, keys, client, req, &used.name,
        ))));
    }
    if token::prepare_for_jupyter(req).is_err() {
        return Err(Box::new(refuse_internal(settings)));
    }
    Ok(used.ending)
}

fn refuse_internal(settings: &Settings) -> Reply {
    Reply::Own(error_page(
        settings,
        StatusCode::INTERNAL_SERVER_ERROR,
        "The server could not make a random value; see its log.",
    ))
}

/// A state-changing request (or a WebSocket) that the browser says comes
/// from another site (`Sec-Fetch-Site`), or from an opaque origin such as a
/// sandboxed page (`Origin: null`). Jupyter's XSRF and Origin checks refuse
/// these too; notebookd refuses them before they reach Jupyter or the login.
/// Requests inside an embedded notebook are same-origin, so embedding is
/// not affected.
fn cross_site_write(req: &Request<Incoming>) -> bool {
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || super::proxy::is_upgrade(req.headers());
    if !writes {
        return false;
    }
    let h = req.headers();
    let site = h.get("sec-fetch-site").map(HeaderValue::as_bytes);
    matches!(site, Some(b"cross-site" | b"same-site"))
        || h.get(header::ORIGIN)
            .is_some_and(|o| o.as_bytes() == b"null")
}

/// A state-changing request (or a WebSocket) whose `Origin` is neither this
/// site (its Host) nor an allowed embedding origin: refused here, not left
/// to Jupyter's check alone (which is off for some settings, and does not
/// guard notebookd's own login).
fn foreign_origin_write(settings: &Settings, client: &ClientInfo, req: &Request<Incoming>) -> bool {
    let writes = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || super::proxy::is_upgrade(req.headers());
    if !writes {
        return false;
    }
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        // Not a browser's request (browsers send Origin on these).
        return false;
    };
    let Some(host) = req.headers().get(header::HOST) else {
        return true;
    };
    let allowed: Vec<&str> = settings
        .config
        .embed
        .frame_ancestors
        .iter()
        .map(|a| a.as_str())
        .collect();
    !origin_matches(origin.as_bytes(), host.as_bytes(), client.https, &allowed)
}

fn accepts_html(req: &Request<Incoming>) -> bool {
    req.headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

fn unavailable(settings: &Settings, req: &Request<Incoming>, state: &str) -> Response<Body> {
    unavailable_for(settings, accepts_html(req), state)
}

fn unavailable_for(settings: &Settings, wants_html: bool, state: &str) -> Response<Body> {
    let mut resp = if wants_html {
        html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::unavailable(settings.base_url(), state),
        )
    } else {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"message": format!("Jupyter is {state}; try again shortly")}),
        )
    };
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    resp
}

fn health(app: &App) -> Response<Body> {
    let state = app.jupyter_state();
    let ok = state == JupyterState::Ready;
    let mut body =
        serde_json::json!({"status": if ok { "ok" } else { "unavailable" }, "jupyter": state});
    // Kernels on a gateway: say whether it answers (never its URL). Notebooks
    // still open without it, so this stays a 200: "degraded".
    if let Some(gateway) = app.jupyter().gateway {
        if ok && !gateway.is_ok() {
            body["status"] = "degraded".into();
        }
        body["gateway"] = serde_json::json!(gateway);
    }
    json(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        },
        &body,
    )
}
