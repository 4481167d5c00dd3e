//! The login and logout pages and the session check in front of Jupyter:
//! the HTTP side of [`crate::auth`].

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::client::ClientInfo;
use super::headers::{session_cookie, xsrf_cookie};
use super::limits::Deadlines;
use super::limits::WarnThrottle;
use super::target::check_path;
use super::{App, Body, Settings, html, json, pages, redirect};
use crate::auth::session::{COOKIE_NAME, Session, SessionKeys, unix_now};
use crate::auth::sessions::{Ending, Via};
use crate::auth::{LoginLimits, Verdict};
use subtle::ConstantTimeEq;

/// A login form is a password and a path: anything bigger is not one.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// The valid, open session of a request, if any, marked as seen: the
/// cookie's session and the signal that ends its connections.
pub fn current_session(
    app: &App,
    keys: &SessionKeys,
    headers: &HeaderMap,
) -> Option<(Session, Arc<Ending>)> {
    let now = unix_now();
    let (lifetime, idle) = keys.limits();
    cookie_values(headers, COOKIE_NAME)
        .filter_map(|v| keys.decode(v, now))
        .find_map(|s| {
            let live = app.sessions.enter(&s.id, now, lifetime, idle).ok()?;
            Some((s, live))
        })
}

fn cookie_values<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == name).then_some(v)
        })
}

fn cookie_for(
    settings: &Settings,
    keys: &SessionKeys,
    client: &ClientInfo,
    s: &Session,
    now: u64,
) -> HeaderValue {
    session_cookie(
        &keys.encode(s),
        settings.base_url(),
        client.https,
        settings.headers.cross_site_cookies(client.https),
        keys.max_age(s, now),
    )
}

/// What an unauthenticated request gets: browsers the login page, everything else 401.
pub fn login_required(settings: &Settings, req: &Request<Incoming>) -> Response<Body> {
    let base = settings.base_url();
    let is_page = (req.method() == Method::GET || req.method() == Method::HEAD)
        && !super::proxy::is_upgrade(req.headers())
        && !req
            .uri()
            .path()
            .strip_prefix(base)
            .is_some_and(|rel| rel.starts_with("api/"))
        && req
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/html"));
    if is_page {
        let target = req.uri().path_and_query().map_or(base, |pq| pq.as_str());
        let next: String = form_urlencoded::byte_serialize(target.as_bytes()).collect();
        return redirect(StatusCode::FOUND, &format!("{base}login?next={next}"));
    }
    let mut resp = json(
        StatusCode::UNAUTHORIZED,
        &serde_json::json!({"message": not_logged_in_message(base), "login": format!("{base}login")}),
    );
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("notebookd-login realm=\"notebook\""),
    );
    resp
}

/// What Jupyter's UI shows when a request of an open tab fails for lack of
/// a session (its error dialogs print the `message`): how to get back
/// without losing the tab's unsaved work.
pub fn not_logged_in_message(base: &str) -> String {
    format!(
        "Not logged in: the session ended or was never started. Log in again at {base}login in another tab (keep this one open: its unsaved changes stay), then retry here."
    )
}

/// `next` if it is a path on this site under `base_url`, else `base_url`.
///
/// Refuses anything a browser could read as another site: `//evil`,
/// `/\evil`, `https:evil`, control characters, and the same in percent
/// encoding (decoded up to three times).
pub fn safe_next(next: &str, base_url: &str) -> String {
    if next.chars().any(char::is_whitespace) {
        return base_url.to_string();
    }
    let mut current = next.to_string();
    for _ in 0..3 {
        let path = current.split(['?', '#']).next().unwrap_or("");
        let ok = current.starts_with(base_url)
            && !current.starts_with("//")
            && !current.contains('\\')
            && !current.chars().any(char::is_control)
            && check_path(path).is_ok();
        if !ok {
            return base_url.to_string();
        }
        let decoded = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == current {
            break;
        }
        current = decoded;
    }
    next.to_string()
}

fn query_next(req: &Request<Incoming>) -> Option<String> {
    form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find(|(k, _)| k == "next")
        .map(|(_, v)| v.into_owned())
}

/// `GET|POST {base_url}login`.
pub async fn login(
    app: &App,
    settings: &Settings,
    client: &ClientInfo,
    req: Request<Incoming>,
) -> Response<Body> {
    let base = settings.base_url();
    let Some(keys) = &settings.keys else {
        return html(StatusCode::SERVICE_UNAVAILABLE, pages::no_password(base));
    };
    match *req.method() {
        Method::GET | Method::HEAD => {
            let next = safe_next(&query_next(&req).unwrap_or_default(), base);
            if current_session(app, keys, req.headers()).is_some() {
                return redirect(StatusCode::FOUND, &next);
            }
            let mut resp = html(StatusCode::OK, pages::login(base, &next, None));
            if cookie_values(req.headers(), "_xsrf").next().is_none() {
                let mut raw = [0u8; 16];
                if getrandom::getrandom(&mut raw).is_ok() {
                    resp.headers_mut().append(
                        header::SET_COOKIE,
                        xsrf_cookie(
                            &hex::encode(raw),
                            base,
                            client.https,
                            settings.headers.cross_site_cookies(client.https),
                        ),
                    );
                }
            }
            resp
        }
        Method::POST => post_login(app, settings, keys, client, req).await,
        _ => {
            let mut resp = html(
                StatusCode::METHOD_NOT_ALLOWED,
                pages::login(base, base, None),
            );
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD, POST"));
            resp
        }
    }
}

async fn post_login(
    app: &App,
    settings: &Settings,
    keys: &SessionKeys,
    client: &ClientInfo,
    req: Request<Incoming>,
) -> Response<Body> {
    let base = settings.base_url();
    let auth = &settings.config.auth;
    let limits = LoginLimits {
        attempts: auth.login_attempts,
        window: auth.login_window.get(),
    };
    let trusted = auth.trusted_clients.iter().any(|t| t.contains(client.ip));
    // A client that must wait anyway is told so before its form is read.
    if let Some(wait) = app.login.wait(client.ip, trusted, &limits) {
        log_refusal(client);
        return too_many(
            base,
            base,
            wait,
            StatusCode::TOO_MANY_REQUESTS,
            &format!(
                "Too many attempts; try again in {}.",
                wait_in_words(retry_after_secs(wait))
            ),
        );
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return html(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            pages::login(
                base,
                base,
                Some("Send the login form as application/x-www-form-urlencoded."),
            ),
        );
    }
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let xsrf_cookies: Vec<String> = cookie_values(req.headers(), "_xsrf")
        .map(str::to_string)
        .collect();
    // The whole form within one body_read_timeout, before anything else:
    // a client that announces a body and sends none holds nothing for long.
    let deadline = Deadlines::of(&settings.config).body;
    let read = Limited::new(req.into_body(), MAX_FORM_BYTES).collect();
    let body = match tokio::time::timeout(deadline, read).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => {
            return html(
                StatusCode::PAYLOAD_TOO_LARGE,
                pages::login(base, base, Some("The login form was too large.")),
            );
        }
        Err(_) => {
            let mut resp = html(
                StatusCode::REQUEST_TIMEOUT,
                pages::login(base, base, Some("The login form took too long to arrive.")),
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
    };
    let mut password = None;
    let mut next = String::new();
    let mut xsrf = None;
    for (k, v) in form_urlencoded::parse(&body) {
        match &*k {
            "password" => password = Some(v.into_owned()),
            "next" => next = v.into_owned(),
            "_xsrf" => xsrf = Some(v.into_owned()),
            _ => {}
        }
    }
    let next = safe_next(&next, base);
    // Double submit, as Jupyter's login form does: a form that carries
    // `_xsrf` proves it was read from this site by matching the cookie.
    if let Some(xsrf) = &xsrf {
        let matches = xsrf_cookies
            .iter()
            .any(|c| bool::from(c.as_bytes().ct_eq(xsrf.as_bytes())));
        if !matches {
            return html(
                StatusCode::FORBIDDEN,
                pages::login(
                    base,
                    &next,
                    Some(
                        "The login form is stale or came from another site; reload the login page and try again.",
                    ),
                ),
            );
        }
    }
    let Some(password) = password else {
        return html(
            StatusCode::BAD_REQUEST,
            pages::login(base, &next, Some("Enter the password.")),
        );
    };
    let Some(hash) = &auth.password_hash else {
        return html(StatusCode::SERVICE_UNAVAILABLE, pages::no_password(base));
    };
    let verdict = app
        .login
        .check(hash, password, client.ip, trusted, &limits)
        .await;
    match verdict {
        Verdict::Accepted => {
            let Ok(session) = keys.start() else {
                return html(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    pages::login(
                        base,
                        &next,
                        Some("The server could not start a session; see its log."),
                    ),
                );
            };
            app.sessions.insert(
                session.id,
                session.issued,
                client.ip.to_string(),
                user_agent.as_deref().unwrap_or(""),
                Via::Password,
            );
            tracing::info!(client = %client.ip, "login");
            // 302, as Jupyter answers its login form: VS Code's password
            // flow accepts nothing else, and browsers follow it with a GET.
            let mut resp = redirect(StatusCode::FOUND, &next);
            resp.headers_mut().append(
                header::SET_COOKIE,
                cookie_for(settings, keys, client, &session, session.issued),
            );
            resp
        }
        Verdict::Rejected => {
            // One line per failure (fail2ban reads them): the limits bound
            // how many there can be, unlike the refusals below.
            tracing::warn!(client = %client.ip, "failed login");
            let mut resp = html(
                StatusCode::UNAUTHORIZED,
                pages::login(base, &next, Some("Wrong password.")),
            );
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("notebookd-login realm=\"notebook\""),
            );
            resp
        }
        Verdict::Limited(wait) => {
            log_refusal(client);
            too_many(
                base,
                &next,
                wait,
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "Too many attempts; try again in {}.",
                    wait_in_words(retry_after_secs(wait))
                ),
            )
        }
        Verdict::Busy => too_many(
            base,
            &next,
            Duration::from_secs(5),
            StatusCode::SERVICE_UNAVAILABLE,
            "The server is busy checking other logins; try again in a few seconds.",
        ),
    }
}

/// One line per interval however many guesses are refused: a flood of
/// guesses must not become a flood of the journal.
fn log_refusal(client: &ClientInfo) {
    static LIMITED: WarnThrottle = WarnThrottle::new();
    if let Some(n) = LIMITED.hit(10) {
        tracing::warn!(last = %client.ip, "login refused: too many attempts ({n} in the last 10s)");
    }
}

fn too_many(
    base: &str,
    next: &str,
    wait: Duration,
    status: StatusCode,
    msg: &str,
) -> Response<Body> {
    let mut resp = html(status, pages::login(base, next, Some(msg)));
    let secs = retry_after_secs(wait);
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

/// Whole seconds, rounded up: a client that waits exactly this long is let in.
fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// "1 second", "40 seconds", "3 minutes" (rounded up), for the login page.
fn wait_in_words(secs: u64) -> String {
    match secs {
        1 => "1 second".into(),
        0..120 => format!("{secs} seconds"),
        _ => format!("{} minutes", secs.div_ceil(60)),
    }
}

/// A browser that followed a link with a valid `?token=`: a session
/// started by that token (a cookie), and a redirect to the same URL
/// without the token, so that it leaves the address bar, the history and
/// any `Referer`.
pub fn token_exchange(
    app: &App,
    settings: &Settings,
    keys: &SessionKeys,
    client: &ClientInfo,
    req: &Request<Incoming>,
    token_name: &str,
) -> Response<Body> {
    let base = settings.base_url();
    let Ok(session) = keys.start() else {
        return html(
            StatusCode::INTERNAL_SERVER_ERROR,
            pages::error(
                base,
                500,
                "Internal Server Error",
                "The server could not start a session; see its log.",
            ),
        );
    };
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    app.sessions.insert(
        session.id,
        session.issued,
        client.ip.to_string(),
        user_agent,
        Via::Token(token_name.to_string()),
    );
    tracing::info!(client = %client.ip, token = token_name, "login with an API token link");
    let target = safe_next(&super::token::without_token(req.uri()), base);
    let mut resp = redirect(StatusCode::FOUND, &target);
    resp.headers_mut().append(
        header::SET_COOKIE,
        cookie_for(settings, keys, client, &session, session.issued),
    );
    resp
}

/// `{base_url}logout`: ends the session (also for a replayed copy of its cookie).
pub fn logout(
    app: &App,
    settings: &Settings,
    client: &ClientInfo,
    req: &Request<Incoming>,
) -> Response<Body> {
    let base = settings.base_url();
    // Logout is a GET (Jupyter's UI navigates to it), so another site could
    // embed it as an image to log the user out; browsers say so in Sec-Fetch-Site.
    let from_elsewhere = matches!(
        req.headers()
            .get("sec-fetch-site")
            .map(HeaderValue::as_bytes),
        Some(b"cross-site" | b"same-site")
    );
    if from_elsewhere {
        return html(
            StatusCode::FORBIDDEN,
            pages::error(
                base,
                403,
                "Forbidden",
                "Another site asked to log you out; use the notebook's own Log Out instead.",
            ),
        );
    }
    if let Some(keys) = &settings.keys {
        let now = unix_now();
        let mut ended = false;
        for session in cookie_values(req.headers(), COOKIE_NAME).filter_map(|v| keys.decode(v, now))
        {
            ended |= app.sessions.end(&session.id);
        }
        if ended {
            tracing::info!(client = %client.ip, "logout");
        }
    }
    let mut resp = html(
        StatusCode::OK,
        pages::login(base, base, Some("You have logged out.")),
    );
    // Jupyter's API answers carry Last-Modified and no Cache-Control, so
    // the browser may keep them and show them after logout (a shared
    // computer). Only the cache: "cookies" would reach other sites of the
    // same registrable domain.
    resp.headers_mut().insert(
        HeaderName::from_static("clear-site-data"),
        HeaderValue::from_static("\"cache\""),
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        session_cookie(
            "",
            base,
            client.https,
            settings.headers.cross_site_cookies(client.https),
            0,
        ),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_site() {
        for evil in [
            "//evil.example",
            "/\\evil.example",
            "https:evil.example",
            "https://evil.example/",
            "/%2F%2Fevil.example",
            "/%252F%252Fevil.example",
            "%2F%2Fevil.example",
            "/\r\nLocation: https://evil",
            "/%0d%0aSet-Cookie:x",
            "/tree/../../x",
            "javascript:alert(1)",
            " /tree",
        ] {
            assert_eq!(safe_next(evil, "/"), "/", "{evil:?}");
        }
        assert_eq!(safe_next("/tree?x=1", "/"), "/tree?x=1");
        assert_eq!(
            safe_next("/notebooks/a%20b.ipynb", "/"),
            "/notebooks/a%20b.ipynb"
        );
        assert_eq!(safe_next("/other/", "/nb/"), "/nb/");
        assert_eq!(safe_next("/nb/tree", "/nb/"), "/nb/tree");
    }
}
