# The ACME tests run Debian's Pebble (a test-only ACME CA) and its
# pebble-challtestsrv (a DNS server answering 127.0.0.1 for the test
# domains), both on loopback ports the tests pick; openssl(1) makes the
# certificate Pebble's own API is served with.
setup_acme() {
    ensure_apt pebble openssl
}
