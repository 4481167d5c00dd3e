//! Jupyter's errors about the kernel gateway (`jupyter.gateway_url`), said
//! plainly.
//!
//! When the gateway is down or refuses the token, jupyter_server answers the
//! kernel APIs with a 503 or 401 whose message names the gateway's URL and
//! talks about a "ConnectionError". notebookd replaces those answers with
//! its own: JSON (`message`, `reason`, as Jupyter's front ends display them)
//! or, for a browser's page request, an error page, that say what is wrong
//! and where to look. Other answers pass through untouched.

use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::Incoming;

use super::proxy::ProxiedBody;
use super::{Body, html, json, pages};
use crate::auth::sessions::Ending;

/// Jupyter's gateway error answers are a line of JSON; anything bigger is not one.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// What Jupyter's answer says about the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GatewayFault {
    /// No connection: the gateway is down or unreachable.
    Unreachable,
    /// The gateway refused notebookd's token.
    Refused,
}

/// Whether a request to `rel` (relative to `base_url`) is one jupyter_server
/// forwards to the gateway in gateway mode.
pub fn is_gateway_api(rel: &str) -> bool {
    [
        "api/kernels",
        "api/kernelspecs",
        "api/sessions",
        "kernelspecs/",
    ]
    .iter()
    .any(|p| rel.starts_with(p))
}

/// Looks at an error answer of Jupyter's to a kernel API request and, if it
/// is about the gateway, replaces it.
pub async fn clarify(
    base_url: &str,
    wants_html: bool,
    resp: Response<Incoming>,
    ending: Arc<Ending>,
) -> Response<Body> {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_json {
        return resp.map(|b| Either::Left(ProxiedBody::new(b, Some(ending))));
    }
    let (parts, body) = resp.into_parts();
    let bytes = match Limited::new(body, MAX_ERROR_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        // Too big or broken: not one of Jupyter's gateway errors, and no longer forwardable.
        Err(_) => return unreadable(base_url, wants_html),
    };
    match fault(status, &bytes) {
        Some(f) => answer(base_url, wants_html, f),
        None => Response::from_parts(parts, Either::Right(Full::new(bytes))),
    }
}

fn fault(status: StatusCode, body: &[u8]) -> Option<GatewayFault> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let message = value.get("message")?.as_str()?;
    // jupyter_server's wording (gateway/gateway_client.py), 1.x and 2.x.
    // A timeout reaches jupyter_server as HTTP 599 from tornado's client.
    let unreachable = message.contains("ConnectionError was received from Gateway")
        || message.contains("doesn't appear to be valid")
        || (status.as_u16() == 599 && message.starts_with("Error from Gateway:"));
    if unreachable {
        return Some(GatewayFault::Unreachable);
    }
    if status == StatusCode::UNAUTHORIZED && message.starts_with("Error from Gateway:") {
        return Some(GatewayFault::Refused);
    }
    None
}

fn unreadable(base_url: &str, wants_html: bool) -> Response<Body> {
    let detail = "Jupyter's answer about the kernel gateway could not be read; try again.";
    if wants_html {
        html(
            StatusCode::BAD_GATEWAY,
            pages::error(base_url, 502, "Bad Gateway", detail),
        )
    } else {
        json(
            StatusCode::BAD_GATEWAY,
            &serde_json::json!({"message": detail, "reason": "Bad Gateway"}),
        )
    }
}

/// notebookd's own answer for a gateway fault. The URL is not in it: the
/// administrator knows it (`jupyter.gateway_url`), and this page may be
/// shown in an embedding site's frame.
fn answer(base_url: &str, wants_html: bool, fault: GatewayFault) -> Response<Body> {
    let (status, title, message) = match fault {
        GatewayFault::Unreachable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Kernel gateway unavailable",
            "The kernel gateway (jupyter.gateway_url) does not answer, so kernels cannot be \
             started or reached. Your notebooks are safe on this server. Administrators: is the \
             gateway running and reachable from this machine? `nbctl status` shows what \
             notebookd sees.",
        ),
        GatewayFault::Refused => (
            StatusCode::BAD_GATEWAY,
            "Kernel gateway refused the token",
            "The kernel gateway (jupyter.gateway_url) refuses notebookd's token, so kernels \
             cannot be started or reached. Administrators: put the gateway's auth token in the \
             file named by jupyter.gateway_token_file, then `sudo systemctl reload notebook`.",
        ),
    };
    let mut resp = if wants_html {
        html(
            status,
            pages::error(base_url, status.as_u16(), title, message),
        )
    } else {
        json(
            status,
            &serde_json::json!({"message": message, "reason": title}),
        )
    };
    if fault == GatewayFault::Unreachable {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jupyter_gateway_errors_are_recognised() {
        let down = br#"{"message": "ConnectionError was received from Gateway server url 'http://127.0.0.1:1'.  Check to be sure the Gateway instance is running.", "reason": null}"#;
        assert_eq!(
            fault(StatusCode::SERVICE_UNAVAILABLE, down),
            Some(GatewayFault::Unreachable)
        );
        let refused = br#"{"message": "Error from Gateway: [Unauthorized] Unauthorized. Ensure gateway url is valid and the Gateway instance is running.", "reason": null}"#;
        assert_eq!(
            fault(StatusCode::UNAUTHORIZED, refused),
            Some(GatewayFault::Refused)
        );
        let user = br#"{"message": "Error from Gateway: [Forbidden] User 'root' is not authorized to start kernel 'Python 3'.", "reason": null}"#;
        assert_eq!(fault(StatusCode::FORBIDDEN, user), None);
        let xsrf = br#"{"message": "'_xsrf' argument missing from POST", "reason": null}"#;
        assert_eq!(fault(StatusCode::FORBIDDEN, xsrf), None);
        assert!(is_gateway_api("api/kernels/abc/interrupt"));
        assert!(is_gateway_api("api/sessions"));
        assert!(!is_gateway_api("api/contents/x.ipynb"));
    }
}
