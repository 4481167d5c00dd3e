//! notebookd's icon: on its own pages, and for a browser's guess at
//! `/favicon.ico` before any login (not a 401).

use crate::support::Notebookd;

/// A browser's guess at an icon, before any login, gets notebookd's icon,
/// which its own pages link to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_favicon_needs_no_login() {
    let n = Notebookd::start();
    let c = n.client();
    let page = c.get_page("login").await.text().await.unwrap();
    let link = "<link rel=\"icon\" type=\"image/svg+xml\" href=\"/_notebookd/static/favicon.svg\">";
    assert!(page.contains(link), "{page}");
    for rel in ["favicon.ico", "_notebookd/static/favicon.svg"] {
        let r = c.get(rel).await;
        assert_eq!(r.status(), 200, "{rel}");
        assert_eq!(r.headers()["content-type"], "image/svg+xml", "{rel}");
        assert!(r.text().await.unwrap().starts_with("<svg "), "{rel}");
    }
}
