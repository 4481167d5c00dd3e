//! The routing table: which requests notebookd answers itself (login,
//! logout, health, its stylesheet, refusals) and which go to Jupyter, and
//! the header policy that matches who made the response.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;

use super::client::ClientInfo;
use super::proxy::{ProxyError, UpstreamConn};
use super::target::{check_host, check_path, head_size, origin_matches};
use super::{App, Body, ClientConn, Settings, html, json, login, pages, redirect, respond};
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
    if cross_site_write(&req) || foreign_origin_write(settings, client, &req) {
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
    let Some(keys) = &settings.keys else {
        return Reply::Own(html(
            StatusCode::SERVICE_UNAVAILABLE,
            pages::no_password(base),
        ));
    };
    let Some(session) = login::current_session(app, keys, req.headers()) else {
        return Reply::Own(login::login_required(settings, &req));
    };
    let refresh = login::refreshed_cookie(app, settings, keys, client, &session);

    let state = app.jupyter_state();
    if state != JupyterState::Ready {
        return Reply::Own(unavailable(settings, &req, state.describe()));
    }
    let wants_html = accepts_html(&req);
    let gateway_api =
        settings.config.jupyter.gateway().is_some() && super::gateway::is_gateway_api(rel);
    match app
        .upstream
        .forward(req, client, crate::auth::session::COOKIE_NAME, upstream)
        .await
    {
        Ok(resp) => {
            let mut resp = if gateway_api {
                super::gateway::clarify(base, wants_html, resp).await
            } else {
                resp.map(Either::Left)
            };
            if let Some(cookie) = refresh {
                resp.headers_mut().append(header::SET_COOKIE, cookie);
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
