# slowhttptest (Debian's package) drives the slow-headers, slow-body and
# slow-read attacks of tests/it/hostile.rs.
setup_slowhttptest() {
    ensure_apt slowhttptest
}
