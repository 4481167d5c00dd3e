#!/usr/bin/env bash
# The kernel gateways for the gateway tests (tests/it/gateway.rs) and the
# gateway part of `./dev bench` (Enterprise Gateway only), each pinned and
# in a venv of its own under $CACHE:
# - Jupyter Enterprise Gateway (enterprise-gateway-requirements.txt): it pins
#   jupyter_server<2 and jupyter_client<7, which the Jupyter venv cannot
#   share (on a cluster it is a separate install too);
# - Jupyter Kernel Gateway (kernel-gateway-requirements.txt).
# Their kernels are ipykernel from the same venv ("local process kernels").
#
# Sourced by ./dev: defines setup_gateway (installs both). Run directly with
# `enterprise` or `kernel`: installs that venv if needed and prints its path
# (the tests do this), e.g.
#   NOTEBOOKD_CACHE=/var/cache/nb tests/setup/gateway.sh enterprise

# ensure_gateway_venv CACHE KIND: the venv of KIND (enterprise|kernel),
# rebuilt when its pins change; safe to run concurrently (flock) and
# repeatedly (a stamp). Prints its path.
ensure_gateway_venv() {
    local cache=$1 kind=$2 root want
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    local reqs=$root/tests/setup/$kind-gateway-requirements.txt
    local venv=$cache/$kind-gateway
    local stamp=$venv/.requirements.sha256
    [[ -f $reqs ]] || { echo "unknown gateway $kind (enterprise or kernel)" >&2; return 2; }
    want=$(sha256sum "$reqs" | cut -d' ' -f1)
    mkdir -p "$cache"
    (
        flock 9
        if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
            exit 0
        fi
        command -v python3 >/dev/null || { echo "python3 is missing: apt-get install python3 python3-venv" >&2; exit 1; }
        echo "==> installing the pinned Jupyter $kind gateway into $venv (once; about a minute)" >&2
        rm -rf "$venv"
        python3 -m venv "$venv" || { echo "cannot create a venv: apt-get install python3-venv" >&2; exit 1; }
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs" >&2 \
            || { echo "pip could not install $reqs (is PyPI reachable?)" >&2; exit 1; }
        echo "$want" >"$stamp"
    ) 9>"$cache/$kind-gateway.lock" || return 1
    echo "$venv"
}

setup_gateway() {
    local kind
    for kind in enterprise kernel; do
        ensure_gateway_venv "$CACHE" "$kind" >/dev/null \
            || die "could not install the Jupyter $kind gateway (tests/setup/gateway.sh $kind)"
    done
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    ensure_gateway_venv "${NOTEBOOKD_CACHE:-$here/.cache}" "${1:?usage: tests/setup/gateway.sh enterprise|kernel}"
fi
