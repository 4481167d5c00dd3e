#!/usr/bin/env bash
# The ACME tests (tests/it/acme.rs) run Debian's Pebble (a test-only ACME CA)
# and its pebble-challtestsrv (a DNS server answering 127.0.0.1 for the test
# domains), both on loopback ports the tests pick; openssl(1) makes the
# certificate Pebble's own API is served with; faketime(1) runs
# `nbctl doctor` with a clock that is off, for its clock check.
#
# bookworm's pebble is 2.4, without renewal information (RFC 9773, ARI): it
# covers the "a third of the lifetime" path. The ARI path needs Pebble 2.6
# (its directory offers `renewalInfo`), which only trixie packages: its .deb
# (pinned by SHA-256; it needs only libc6 >= 2.34, so it runs on bookworm) is
# unpacked with `dpkg-deb -x` into $CACHE/pebble-2.6.0, not installed.
#
# Sourced by ./dev: defines setup_acme. Run directly: unpacks Pebble 2.6 if
# needed and prints the directory holding its `pebble` (the tests do this),
# e.g.  NOTEBOOKD_CACHE=/var/cache/nb tests/setup/acme.sh

PEBBLE_ARI_VERSION=2.6.0+ds1-1+b7
PEBBLE_ARI_SHA256=94a4e1269abcad428d1276de74b984b123ac83e0313541951c41bdcb006147d3
PEBBLE_ARI_MIRROR=${PEBBLE_ARI_MIRROR:-http://deb.debian.org/debian}

# ensure_pebble_ari CACHE: unpacks Pebble 2.6 once (flock'd, checked, renamed
# into place whole); prints the directory of its binaries.
ensure_pebble_ari() {
    local cache=$1 dest=$1/pebble-2.6.0
    local deb=pebble_${PEBBLE_ARI_VERSION}_amd64.deb
    mkdir -p "$cache"
    (
        flock 9
        [[ -x $dest/usr/bin/pebble ]] && exit 0
        command -v dpkg-deb >/dev/null || { echo "dpkg-deb is missing: apt-get install dpkg" >&2; exit 1; }
        local tmp
        tmp=$(mktemp -d "$cache/.pebble-2.6.XXXXXX")
        trap 'rm -rf "$tmp"' EXIT
        echo "==> downloading Pebble 2.6 (trixie's $deb, once)" >&2
        if command -v curl >/dev/null; then
            curl -fsSL --retry 3 -o "$tmp/$deb" "$PEBBLE_ARI_MIRROR/pool/main/p/pebble/$deb"
        else
            wget -q -O "$tmp/$deb" "$PEBBLE_ARI_MIRROR/pool/main/p/pebble/$deb"
        fi || { echo "cannot download $deb from $PEBBLE_ARI_MIRROR (is Debian's archive reachable? set PEBBLE_ARI_MIRROR to a mirror)" >&2; exit 1; }
        echo "$PEBBLE_ARI_SHA256  $tmp/$deb" | sha256sum --check --quiet - \
            || { echo "$deb does not have the pinned SHA-256 $PEBBLE_ARI_SHA256: not used" >&2; exit 1; }
        dpkg-deb -x "$tmp/$deb" "$tmp/root"
        [[ -x $tmp/root/usr/bin/pebble ]] || { echo "$deb has no usr/bin/pebble" >&2; exit 1; }
        rm -rf "$dest"
        mv "$tmp/root" "$dest"
    ) 9>"$cache/pebble-2.6.lock" || return 1
    echo "$dest/usr/bin"
}

setup_acme() {
    ensure_apt pebble openssl faketime
    ensure_pebble_ari "$CACHE" >/dev/null \
        || die "could not unpack Pebble 2.6 (tests/setup/acme.sh)"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    ensure_pebble_ari "${NOTEBOOKD_CACHE:-$here/.cache}"
fi
