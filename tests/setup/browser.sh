# Test prerequisites of the browser tests (tests/it/browser.rs): Debian's
# Chromium, NSS's certutil (the tests trust their own CA through an NSS
# database in a temporary HOME), and playwright-core from npm, pinned by
# tests/browser/package-lock.json and installed with `npm ci` into
# $CACHE/browser-node (never a browser download: playwright-core has none).
setup_browser() {
    ensure_apt chromium libnss3-tools
    command -v npm >/dev/null || ensure_apt nodejs npm
    local dest=$CACHE/browser-node want
    want=$(cat "$ROOT/tests/browser/package.json" "$ROOT/tests/browser/package-lock.json" | sha256sum | cut -d' ' -f1)
    exec 7>"$CACHE/browser-node.lock"
    flock 7
    if [[ ! -f $dest/.stamp || $(cat "$dest/.stamp") != "$want" ]]; then
        say "installing playwright-core into $dest (npm ci)"
        rm -rf "$dest"
        mkdir -p "$dest"
        cp "$ROOT/tests/browser/package.json" "$ROOT/tests/browser/package-lock.json" "$dest/"
        (cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
            || die "npm ci of tests/browser/package-lock.json failed (is the npm registry reachable?)"
        echo "$want" >"$dest/.stamp"
    fi
    exec 7>&-
}
