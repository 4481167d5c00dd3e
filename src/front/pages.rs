//! The pages notebookd serves itself: login, "set a password first",
//! "Jupyter is not available", and plain errors. No script, one stylesheet,
//! so they run under a strict Content-Security-Policy.

use std::fmt::Write;

/// The stylesheet of notebookd's own pages, served at `{base_url}_notebookd/static/notebookd.css`.
pub const STYLESHEET: &str = include_str!("pages/notebookd.css");

/// notebookd's icon, served at `{base_url}_notebookd/static/favicon.svg`
/// (linked from its pages) and at `{base_url}favicon.ico` to anyone, so a
/// browser's guess at an icon never meets a login wall.
pub const FAVICON: &str = include_str!("pages/favicon.svg");

/// Escapes text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn layout(base_url: &str, title: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 512);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n\
         <title>{title}</title>\n\
         <link rel=\"stylesheet\" href=\"{base}_notebookd/static/notebookd.css\">\n\
         <link rel=\"icon\" type=\"image/svg+xml\" href=\"{base}_notebookd/static/favicon.svg\">\n\
         </head>\n<body>\n<main>\n{body}</main>\n</body>\n</html>\n",
        title = escape(title),
        base = escape(base_url),
    );
    out
}

/// The login form. `message` is shown above it (e.g. "Wrong password").
pub fn login(base_url: &str, next: &str, message: Option<&str>) -> String {
    let mut body = String::from("<h1>Jupyter notebook</h1>\n");
    if let Some(m) = message {
        let _ = writeln!(body, "<p class=\"error\" role=\"alert\">{}</p>", escape(m));
    }
    let _ = write!(
        body,
        "<form method=\"post\" action=\"{base}login\">\n\
         <input type=\"hidden\" name=\"next\" value=\"{next}\">\n\
         <label for=\"password\">Password</label>\n\
         <input type=\"password\" id=\"password\" name=\"password\" autocomplete=\"current-password\" autofocus required>\n\
         <button type=\"submit\" id=\"login_submit\">Log in</button>\n\
         </form>\n",
        base = escape(base_url),
        next = escape(next),
    );
    layout(base_url, "Log in", &body)
}

/// Shown for every path while no password is configured.
pub fn no_password(base_url: &str) -> String {
    layout(
        base_url,
        "Set a password",
        "<h1>Set a password first</h1>\n\
         <p>This notebook server has no password yet, so it serves nothing.</p>\n\
         <p>On the server, run:</p>\n<pre>sudo nbctl passwd</pre>\n\
         <p>then reload this page.</p>\n",
    )
}

/// Shown while Jupyter is starting, restarting or failing.
pub fn unavailable(base_url: &str, state: &str) -> String {
    layout(
        base_url,
        "Notebook server unavailable",
        &format!(
            "<h1>The notebook server is not available</h1>\n\
             <p>Jupyter is {}. notebookd restarts it automatically; try again in a few seconds.</p>\n\
             <p>Administrators: <code>nbctl status</code> and <code>journalctl -u notebook</code> tell why.</p>\n",
            escape(state)
        ),
    )
}

/// Any other error page.
pub fn error(base_url: &str, status: u16, title: &str, detail: &str) -> String {
    layout(
        base_url,
        title,
        &format!(
            "<h1>{status} {}</h1>\n<p>{}</p>\n",
            escape(title),
            escape(detail)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_escaped() {
        let page = login("/", "/tree\"><script>x</script>", None);
        assert!(!page.contains("<script>"));
        assert!(page.contains("&quot;&gt;&lt;script&gt;"));
    }
}
