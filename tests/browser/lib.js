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

// Types `code` into the last cell of the notebook in `frame`, runs it, and
// returns the new output area's element handle once it has content.
async function runCell(frame, page, code) {
  const cells = frame.locator('.jp-Notebook .jp-Cell.jp-CodeCell');
  const before = await cells.count();
  const cell = cells.nth(before - 1);
  await enterCode(frame, page, cell, code);
  await page.keyboard.press('Shift+Enter');
  const output = cell.locator('.jp-OutputArea-output').first();
  // On a busy machine the kernel chooser can still come after the cell was
  // typed: it takes the Shift+Enter (as its default button) and the cell
  // never runs. A cell whose prompt is still `[ ]:` was not sent (a sent
  // one shows `[*]:` until it has run): enter it and run it again.
  const deadline = Date.now() + 90000;
  for (let i = 1; ; i++) {
    try {
      await output.waitFor({ timeout: 5000 });
      return { cell, output };
    } catch (e) {
      if (Date.now() > deadline) throw e;
      const prompt = (await cell.locator('.jp-InputPrompt').innerText().catch(() => '')).replace(/\s+/g, '');
      if ((await frame.locator('.jp-Dialog').count()) > 0 || prompt === '[]:') {
        console.error(`retry ${i}: the cell was not run (prompt ${JSON.stringify(prompt)})`);
        await enterCode(frame, page, cell, code);
        await page.keyboard.press('Shift+Enter');
      }
    }
  }
}

// Replaces the text of `cell` with `code`. A dialog that opens while the
// keys are typed takes the rest of them: type again until the editor shows
// exactly `code`.
async function enterCode(frame, page, cell, code) {
  const editor = cell.locator('.cm-content');
  for (let i = 1; ; i++) {
    await focusCell(frame, cell);
    await page.keyboard.press('Control+a');
    await page.keyboard.type(code);
    const text = (await editor.innerText().catch(() => '')).replace(/\u00a0/g, ' ').trim();
    if (text === code) return;
    console.error(`retry ${i}: the cell shows ${JSON.stringify(text)}, not the code typed`);
    check(i < 6, `the cell does not take the code: it shows ${JSON.stringify(text)}`);
  }
}

// Clicks into `cell`'s editor. The kernel chooser can also open between
// settling the dialogs and the click, and then covers the cell: settle
// again and retry instead of waiting out the click's whole timeout.
async function focusCell(frame, cell) {
  const deadline = Date.now() + 90000;
  for (;;) {
    await settleDialogs(frame);
    try {
      await cell.locator('.cm-content').click({ timeout: 5000 });
      return;
    } catch (e) {
      if (Date.now() > deadline) throw e;
    }
  }
}

// Waits for the notebook to finish loading. A kernel chooser (shown when the
// kernel list arrives late on a busy machine) is answered with its default;
// any other dialog fails the scenario with its text.
async function settleDialogs(frame) {
  await frame.locator('.jp-Spinner').waitFor({ state: 'detached', timeout: 90000 }).catch(() => {});
  for (let i = 0; i < 10; i++) {
    const dialog = frame.locator('.jp-Dialog');
    if ((await dialog.count()) === 0) return;
    const text = (await dialog.first().innerText().catch(() => '')).replace(/\s+/g, ' ').trim();
    if (/select kernel/i.test(text)) {
      await dialog.first().locator('.jp-Dialog-button.jp-mod-accept').click();
      await dialog.first().waitFor({ state: 'detached', timeout: 30000 }).catch(() => {});
      continue;
    }
    throw new Error(`Jupyter shows a dialog: ${text}`);
  }
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
    } catch (e) {
      // Keep what the browser showed when it failed, for the report.
      const pages = b.context.pages();
      for (let i = 0; i < pages.length && cfg.artifacts; i++) {
        const shot = path.join(cfg.artifacts, `failed-${path.basename(process.argv[1], '.js')}-${i}.png`);
        await pages[i].screenshot({ path: shot }).catch(() => {});
        console.error(`screenshot of the failure: ${shot}`);
      }
      throw e;
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
