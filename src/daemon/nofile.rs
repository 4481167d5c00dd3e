//! The file-descriptor limit: every client connection costs a descriptor,
//! and a proxied one a second (its connection to Jupyter). Service managers
//! start notebookd with a soft limit of 1024, which the default
//! `limits.max_connections` alone would use up; at that point accept(2)
//! and the health check fail with EMFILE. So at start the soft limit is
//! raised to the hard one, and a `max_connections` the limit cannot carry
//! is refused with the fix.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors that are not client connections: listeners, the control
/// socket, Jupyter's pipes and health checks, idle connections to Jupyter,
/// the connections answered 503, log files.
const RESERVED: u64 = 256;

/// Descriptors `max_connections` proxied connections need at most.
pub fn needed(max_connections: u32) -> u64 {
    2 * u64::from(max_connections) + RESERVED
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and checks that it
/// carries `max_connections`. Returns the limit now in force.
pub fn raise(max_connections: u32) -> Result<u64, String> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)
        .map_err(|e| format!("cannot read RLIMIT_NOFILE: {e}"))?;
    let mut limit = soft;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => limit = hard,
            Err(e) => tracing::warn!("cannot raise the open-file limit from {soft} to {hard}: {e}"),
        }
    }
    let need = needed(max_connections);
    if limit < need {
        return Err(format!(
            "limits.max_connections = {max_connections} needs up to {need} open files, but notebookd may open only {limit} (RLIMIT_NOFILE, hard limit {hard}): \
             raise the limit (LimitNOFILE= in a drop-in for notebook.service, minfds in supervisord.conf, `ulimit -n` in a shell) \
             or lower limits.max_connections to {}",
            limit.saturating_sub(RESERVED) / 2
        ));
    }
    Ok(limit)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_default_limit_needs_more_than_a_service_managers_soft_default() {
        assert!(super::needed(1024) > 1024);
        assert_eq!(super::needed(1), 258);
    }
}
