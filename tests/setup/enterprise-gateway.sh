#!/usr/bin/env bash
# Jupyter Enterprise Gateway for the gateway tests (tests/it/gateway.rs) and
# `./dev bench`: pinned by tests/setup/enterprise-gateway-requirements.txt, in
# a venv of its own ($CACHE/enterprise-gateway) because it pins
# jupyter_server<2 and jupyter_client<7, which the Jupyter venv cannot share
# (on a cluster it is a separate install too). Its kernels are ipykernel
# from the same venv ("local process kernels").
#
# Sourced by ./dev: defines setup_enterprise_gateway. Run directly: installs
# the venv if needed and prints its path (the tests do this), e.g.
#   NOTEBOOKD_CACHE=/var/cache/nb tests/setup/enterprise-gateway.sh

# ensure_enterprise_gateway CACHE: the venv, rebuilt when the pins change;
# safe to run concurrently (flock) and repeatedly (a stamp). Prints its path.
ensure_enterprise_gateway() {
    local cache=$1 root want
    root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    local reqs=$root/tests/setup/enterprise-gateway-requirements.txt
    local venv=$cache/enterprise-gateway stamp=$cache/enterprise-gateway/.requirements.sha256
    want=$(sha256sum "$reqs" | cut -d' ' -f1)
    mkdir -p "$cache"
    (
        flock 9
        if [[ -x $venv/bin/jupyter-enterprisegateway && -f $stamp && $(cat "$stamp") == "$want" ]]; then
            exit 0
        fi
        command -v python3 >/dev/null || { echo "python3 is missing: apt-get install python3 python3-venv" >&2; exit 1; }
        echo "==> installing the pinned Jupyter Enterprise Gateway into $venv (once; about a minute)" >&2
        rm -rf "$venv"
        python3 -m venv "$venv" || { echo "cannot create a venv: apt-get install python3-venv" >&2; exit 1; }
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$reqs" >&2 \
            || { echo "pip could not install $reqs (is PyPI reachable?)" >&2; exit 1; }
        echo "$want" >"$stamp"
    ) 9>"$cache/enterprise-gateway.lock" || return 1
    echo "$venv"
}

setup_enterprise_gateway() {
    ensure_enterprise_gateway "$CACHE" >/dev/null || die "could not install Jupyter Enterprise Gateway (tests/setup/enterprise-gateway.sh)"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
    set -euo pipefail
    here=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
    ensure_enterprise_gateway "${NOTEBOOKD_CACHE:-$here/.cache}"
fi
