#!/usr/bin/env bash
# A Debian bookworm root tree that systemd-nspawn can boot, for the tests that
# install the .deb into a real systemd (tests/it/container.rs).
#
# Sourced by ./dev: defines setup_bookworm_tree (builds the tree once).
# Run directly: builds the tree if needed and prints its path (the tests do
# this), e.g.  NOTEBOOKD_CACHE=/var/cache/nb tests/setup/bookworm-tree.sh
#
# What is in the tree:
# - installed: systemd, dbus, apt, supervisor, rpm, and python3-matplotlib (the
#   package's Recommends; its dependency chain is most of the tree's 1.5 GB);
# - downloaded only (in /var/cache/apt/archives): Debian's Jupyter, so that
#   `apt install ./notebookd_*.deb` in the test really resolves and installs
#   the package's Depends, without needing the network.
#
# The tree's name carries a hash of this recipe: a changed recipe builds a new
# tree next to the old one. The build happens in a temporary directory renamed
# into place when complete (rename(2) is atomic), under a flock, so concurrent
# or interrupted runs never publish half a tree.

BOOKWORM_TREE_RECIPE=1
BOOKWORM_TREE_MIRROR=${BOOKWORM_TREE_MIRROR:-http://deb.debian.org/debian}
BOOKWORM_TREE_SECURITY=${BOOKWORM_TREE_SECURITY:-http://deb.debian.org/debian-security}
BOOKWORM_TREE_HOSTNAME=notebookd-test
BOOKWORM_TREE_INSTALL="systemd systemd-sysv dbus apt ca-certificates python3-matplotlib supervisor rpm"
# What notebookd's Depends pull in; downloaded, not installed.
BOOKWORM_TREE_DOWNLOAD="jupyter-notebook python3-notebook python3-ipykernel jupyter-core"

# bookworm_tree_path CACHE: where the tree for this recipe lives.
bookworm_tree_path() {
    local key
    key=$(printf '%s\n' "$BOOKWORM_TREE_RECIPE" "$BOOKWORM_TREE_MIRROR" "$BOOKWORM_TREE_SECURITY" \
        "$BOOKWORM_TREE_HOSTNAME" "$BOOKWORM_TREE_INSTALL" "$BOOKWORM_TREE_DOWNLOAD" \
        | sha256sum | cut -c1-12)
    echo "$1/trees/bookworm-$key"
}

_tree_log() { printf '==> bookworm tree: %s\n' "$*" >&2; }

# _tree_remove DIR: unmounts anything left below DIR, then deletes it.
_tree_remove() {
    local m
    for m in $(awk -v p="$1/" 'index($2, p) == 1 {print $2}' /proc/self/mounts | sort -r); do
        umount -l "$m" 2>/dev/null || true
    done
    rm -rf --one-file-system "$1"
}

# _tree_build CACHE FINAL: builds the tree into FINAL (holding the lock).
_tree_build() {
    local cache=$1 final=$2 tmp log child="" t0 rc=0
    for d in "$cache"/trees/.build.*; do
        [[ -e $d ]] || continue
        _tree_log "removing the partial build $d"
        _tree_remove "$d"
    done
    tmp=$(mktemp -d "$cache/trees/.build.XXXXXX")
    log=$cache/trees/build.log
    : >"$log"
    t0=$SECONDS
    # Long steps run in their own session and we `wait` for them, so a
    # signal reaches this shell at once and the trap can kill the step's group.
    # debootstrap and apt mount proc inside the tree: in a private mount
    # namespace those mounts vanish with the step even if it is killed.
    _tree_step() {
        setsid "$@" >>"$log" 2>&1 </dev/null &
        child=$!
        local r=0
        wait "$child" || r=$?
        child=""
        return $r
    }
    trap '[[ -n $child ]] && kill -TERM -- "-$child" 2>/dev/null; _tree_remove "$tmp"; exit 130' INT TERM HUP
    _tree_log "debootstrap --variant=minbase bookworm (once, 2-4 minutes; log: $log)"
    _tree_step unshare --mount --propagation private -- \
        debootstrap --variant=minbase bookworm "$tmp" "$BOOKWORM_TREE_MIRROR" || rc=$?
    if ((rc == 0)); then
        cat >"$tmp/etc/apt/sources.list" <<EOF
deb $BOOKWORM_TREE_MIRROR bookworm main
deb $BOOKWORM_TREE_MIRROR bookworm-updates main
deb $BOOKWORM_TREE_SECURITY bookworm-security main
EOF
        # debootstrap copies the host's hostname and writes no /etc/hosts.
        echo "$BOOKWORM_TREE_HOSTNAME" >"$tmp/etc/hostname"
        printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
            "$BOOKWORM_TREE_HOSTNAME" >"$tmp/etc/hosts"
        # A small server: no Recommends, as many admins configure apt.
        printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\nDpkg::Use-Pty "false";\n' \
            >"$tmp/etc/apt/apt.conf.d/90notebookd-test"
        # Nothing may start while we install in a chroot.
        printf '#!/bin/sh\nexit 101\n' >"$tmp/usr/sbin/policy-rc.d"
        chmod 755 "$tmp/usr/sbin/policy-rc.d"
        _tree_log "apt: installing $BOOKWORM_TREE_INSTALL; downloading $BOOKWORM_TREE_DOWNLOAD"
        # `apt-get clean` would drop the downloaded .debs: not run. The lists
        # stay, so apt in the container resolves without an update.
        _tree_step unshare --mount --propagation private -- /bin/sh -euc '
            t=$1; shift
            mount -t proc proc "$t/proc"
            mount -t tmpfs tmpfs "$t/run"
            mount -t tmpfs tmpfs "$t/tmp"
            exec chroot "$t" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive HOME=/root /bin/sh -ec "$@"' \
            in_tree "$tmp" "apt-get -q update; apt-get -q -y dist-upgrade
                apt-get -q -y install $BOOKWORM_TREE_INSTALL; apt-get clean
                apt-get -q -y install --download-only $BOOKWORM_TREE_DOWNLOAD" || rc=$?
    fi
    trap - INT TERM HUP
    if ((rc != 0)); then
        _tree_log "the build failed (exit $rc); the end of $log:"
        tail -25 "$log" >&2
        _tree_remove "$tmp"
        return 1
    fi
    rm -f "$tmp/usr/sbin/policy-rc.d"
    printf 'built=%s\nseconds=%s\n' "$(date -u +%FT%TZ)" "$((SECONDS - t0))" >"$tmp/etc/notebookd-test-tree"
    mv "$log" "$tmp/var/log/notebookd-test-tree-build.log"
    mv -T "$tmp" "$final"
    _tree_log "ready after $((SECONDS - t0))s: $final"
}

# ensure_bookworm_tree CACHE: builds the tree unless it exists; prints its path.
ensure_bookworm_tree() {
    local cache=$1 final
    final=$(bookworm_tree_path "$cache")
    if [[ ! -d $final ]]; then
        [[ $(id -u) == 0 ]] || { _tree_log "building the tree needs root"; return 1; }
        command -v debootstrap >/dev/null || { _tree_log "debootstrap is missing: apt-get install debootstrap"; return 1; }
        mkdir -p "$cache/trees"
        (
            flock 9
            [[ -d $final ]] || _tree_build "$cache" "$final"
        ) 9>"$cache/trees/.lock" || return 1
    fi
    echo "$final"
}

# The first build takes minutes, mostly waiting for the mirror: it runs in
# the background while cargo compiles, and the container tests wait for it
# (the flock) when they first need the tree. A failed background build is
# simply done again, in the foreground, by the first test that needs it.
setup_bookworm_tree() {
    ensure_apt debootstrap systemd-container
    [[ -d $(bookworm_tree_path "$CACHE") ]] && return 0
    mkdir -p "$CACHE/trees"
    say "building the bookworm tree for the container tests in the background (log: $CACHE/trees/background.log)"
    (ensure_bookworm_tree "$CACHE" >/dev/null) </dev/null >"$CACHE/trees/background.log" 2>&1 &
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    ensure_bookworm_tree "${NOTEBOOKD_CACHE:-$root/.cache}"
fi
