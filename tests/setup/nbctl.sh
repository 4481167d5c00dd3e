# Prerequisites of nbctl and its tests: building the openssl crate
# (pkg-config, libssl-dev), openssl(1) for `openssl verify`, readelf
# (binutils) to check that notebookd does not link libssl, and groff to
# check the generated man pages.
setup_nbctl() {
    ensure_build_deps
    ensure_apt openssl binutils groff-base
}
