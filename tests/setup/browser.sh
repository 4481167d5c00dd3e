# Test prerequisites of the browser tests (tests/it/browser.rs): Debian's
# Chromium, NSS's certutil (the tests trust their own CA through an NSS
# database in a temporary HOME), and playwright-core from npm, pinned by
# tests/browser/package-lock.json and installed with `npm ci` into
# $CACHE/browser-node (never a browser download: playwright-core has none),
# with @jupyterlab/services and ws for the Node client test, and esbuild,
# which bundles @jupyterlab/services once into
# $CACHE/browser-node/jupyterlab-services.mjs for the CORS page.
setup_browser() {
    ensure_apt chromium libnss3-tools
    command -v npm >/dev/null || ensure_apt nodejs npm
    local dest=$CACHE/browser-node want
    want=$(cat "$ROOT/tests/browser/package.json" "$ROOT/tests/browser/package-lock.json" \
        "$ROOT/tests/browser/services-entry.js" | sha256sum | cut -d' ' -f1)
    exec 7>"$CACHE/browser-node.lock"
    flock 7
    if [[ ! -f $dest/.stamp || $(cat "$dest/.stamp") != "$want" ]]; then
        say "installing playwright-core and @jupyterlab/services into $dest (npm ci)"
        rm -rf "$dest"
        mkdir -p "$dest"
        cp "$ROOT/tests/browser/package.json" "$ROOT/tests/browser/package-lock.json" \
            "$ROOT/tests/browser/services-entry.js" "$dest/"
        (cd "$dest" && npm ci --no-audit --no-fund --loglevel=error >/dev/null) \
            || die "npm ci of tests/browser/package-lock.json failed (is the npm registry reachable?)"
        (cd "$dest" && node_modules/.bin/esbuild services-entry.js --bundle \
            --format=esm --platform=browser --log-level=warning \
            --define:process.env.NODE_ENV='"production"' \
            --outfile=jupyterlab-services.mjs) \
            || die "esbuild could not bundle @jupyterlab/services (tests/browser/services-entry.js)"
        echo "$want" >"$dest/.stamp"
    fi
    exec 7>&-
}
