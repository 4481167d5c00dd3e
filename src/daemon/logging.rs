//! Logging: to the journal when stderr is the journal, to stderr otherwise
//! (supervisord, a terminal). `RUST_LOG` overrides the default level.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The default filter: rustls's own warnings are all about what a peer sent
/// ("Illegal SNI extension: ignoring IP address presented as hostname" for
/// every scanner that sends an IP as SNI), so a flood of such clients would
/// become a flood of the journal; failed handshakes are logged at debug
/// level by notebookd itself.
const DEFAULT_FILTER: &str = "info,rustls=error";

pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    if super::systemd::stderr_is_journal() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(filter)
                .with(journald.with_syslog_identifier("notebookd".into()))
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        // Colours for a terminal only: supervisord and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}
