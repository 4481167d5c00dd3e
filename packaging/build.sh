#!/usr/bin/env bash
# Builds notebookd's .deb and .rpm from the metadata in Cargo.toml
# ([package.metadata.deb], [package.metadata.generate-rpm]). Run as
# `./dev package`.
#
#   ./dev package                     target/packages/notebookd_VERSION-1_ARCH.deb
#                                     target/packages/notebookd-VERSION-1.ARCH.rpm
#   PACKAGE_REVISION=2 ./dev package  the same build as package revision 2
#                                     (a newer package, e.g. to try an upgrade)
#   PACKAGE_OUT=DIR ./dev package     put the packages in DIR
#   ./dev package tools               only install the packaging tools
#
# cargo-deb and cargo-generate-rpm (pinned versions) are installed once into
# $NOTEBOOKD_CACHE/cargo-tools (default .cache/cargo-tools).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${NOTEBOOKD_CACHE:-$ROOT/.cache}
TOOLS=$CACHE/cargo-tools
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
REVISION=${PACKAGE_REVISION:-1}
OUT=${PACKAGE_OUT:-$ROOT/target/packages}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ensure_packaging_tools: cargo-deb and cargo-generate-rpm at the pinned
# versions, built once (a few minutes) and reused; safe to run concurrently.
ensure_packaging_tools() {
    mkdir -p "$TOOLS"
    (
        flock 7
        local tool version
        for tool in cargo-deb:$CARGO_DEB_VERSION cargo-generate-rpm:$CARGO_GENERATE_RPM_VERSION; do
            version=${tool#*:}
            tool=${tool%:*}
            if ! "$TOOLS/bin/$tool" --version 2>/dev/null | grep -qw -- "$version"; then
                say "installing $tool $version into $TOOLS (once)"
                cargo install --locked --quiet --force --root "$TOOLS" "$tool" --version "$version" \
                    || die "cargo install $tool failed (is crates.io reachable?)"
            fi
        done
    ) 7>"$TOOLS.lock"
}

build_packages() {
    [[ $REVISION =~ ^[0-9]+$ ]] || die "PACKAGE_REVISION must be a number, not '$REVISION'"
    ensure_packaging_tools
    export PATH=$TOOLS/bin:$PATH
    say "building notebookd and nbctl (profile dist: release, stripped)"
    cargo build --profile dist --locked --bins --quiet --manifest-path "$ROOT/Cargo.toml"
    # Man pages and completions, generated from the clap definitions by the
    # binary just built; man pages gzipped as both package formats want.
    local target=${CARGO_TARGET_DIR:-$ROOT/target} docs=$ROOT/target/docs
    rm -rf "$docs"
    "$target/dist/nbctl" generate-docs "$docs" >/dev/null
    gzip -9n "$docs"/man/man*/*
    mkdir -p "$OUT"
    say "building the .deb (revision $REVISION)"
    (cd "$ROOT" && cargo deb --no-build --profile dist --deb-revision "$REVISION" --output "$OUT") >&2
    say "building the .rpm (release $REVISION)"
    (cd "$ROOT" && cargo generate-rpm --profile dist --set-metadata "release = \"$REVISION\"" --output "$OUT") >&2
    local version
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/Cargo.toml" | head -1)
    ls -1 "$OUT"/notebookd_"$version"-"$REVISION"_*.deb "$OUT"/notebookd-"$version"-"$REVISION".*.rpm
}

case ${1:-} in
    "") build_packages ;;
    tools) ensure_packaging_tools ;;
    *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
