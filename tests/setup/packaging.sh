# Test prerequisites of the packaging tests (tests/it/package.rs,
# tests/it/nginx.rs): the tools that check the packages, Debian's nginx, and
# the pinned cargo-deb and cargo-generate-rpm that build them.
setup_packaging() {
    ensure_apt lintian rpm rpmlint nginx
    "$ROOT/packaging/build.sh" tools
}
