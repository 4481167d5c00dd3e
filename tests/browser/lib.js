'use strict';
// Shared by the browser scenarios that tests/it/browser.rs runs: Debian's
// Chromium driven by playwright-core, trusting only the test CA (through an
// NSS database in a temporary HOME; no "ignore certificate errors"), with
// notebook.test, site.test and evil.test resolved to 127.0.0.1 so that they
// are three different sites.
//
// A scenario gets its settings as JSON in argv[2], prints one line
// `RESULT {json}` on success, and exits non-zero with the reason otherwise.

const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const { chromium } = require('playwright-core');

// Exactly these flags, plus what playwright needs to talk to the browser.
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const RESOLVER =
  '--host-resolver-rules=MAP notebook.test 127.0.0.1, MAP site.test 127.0.0.1, MAP evil.test 127.0.0.1';

function settings() {
  const raw = process.argv[2];
  if (!raw) throw new Error('usage: node SCENARIO.js SETTINGS_JSON');
  return JSON.parse(raw);
}

// A HOME whose NSS database trusts the test CA for TLS servers.
function nssHome(caPath) {
  const home = fs.mkdtempSync(path.join(os.tmpdir(), 'notebookd-browser-home-'));
  const db = path.join(home, '.pki', 'nssdb');
  fs.mkdirSync(db, { recursive: true });
  execFileSync('certutil', ['-d', `sql:${db}`, '-N', '--empty-password']);
  execFileSync('certutil', ['-d', `sql:${db}`, '-A', '-t', 'C,,', '-n', 'notebookd-test-ca', '-i', caPath]);
  return home;
}

async function launch(cfg) {
  const home = nssHome(cfg.ca);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'notebookd-browser-profile-'));
  const browser = await chromium.launch({
    executablePath: cfg.chromium || '/usr/bin/chromium',
    ignoreDefaultArgs: true,
    args: [...FLAGS, `--user-data-dir=${profile}`, '--remote-debugging-pipe', '--no-startup-window', RESOLVER],
    env: { ...process.env, HOME: home },
    timeout: 60000,
  });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(60000);
  return {
    browser,
    context,
    async close() {
      await context.close().catch(() => {});
      await browser.close().catch(() => {});
      fs.rmSync(home, { recursive: true, force: true });
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// Logs in through notebookd's own login form in `frame` (a Page or a Frame).
async function logIn(frame, password) {
  await frame.waitForSelector('#password');
  await frame.fill('#password', password);
  await Promise.all([frame.waitForNavigation(), frame.click('#login_submit')]);
}

// Types `code` into the active cell of the notebook in `frame`, runs it, and
// returns the new output area's element handle once it has content.
async function runCell(frame, page, code) {
  const cells = frame.locator('.jp-Notebook .jp-Cell.jp-CodeCell');
  const before = await cells.count();
  const cell = cells.nth(before - 1);
  await cell.locator('.cm-content').click();
  await page.keyboard.type(code);
  await page.keyboard.press('Shift+Enter');
  const output = cell.locator('.jp-OutputArea-output').first();
  await output.waitFor({ timeout: 90000 });
  return { cell, output };
}

// Runs `body(ctx)` with a browser and a watchdog; prints RESULT or fails.
function scenario(body) {
  const cfg = settings();
  const watchdog = setTimeout(() => {
    console.error(`scenario did not finish within ${cfg.timeoutMs || 240000} ms`);
    process.exit(3);
  }, cfg.timeoutMs || 240000);
  (async () => {
    const b = await launch(cfg);
    try {
      const result = await body({ cfg, ...b });
      console.log('RESULT ' + JSON.stringify(result));
    } finally {
      await b.close();
    }
  })()
    .then(() => {
      clearTimeout(watchdog);
      process.exit(0);
    })
    .catch((e) => {
      console.error(e && e.stack ? e.stack : String(e));
      process.exit(1);
    });
}

module.exports = { scenario, logIn, runCell, check };
