'use strict';
// The notebook inside another site's iframe. From the allowed site: the
// login inside the frame works (partitioned cookies), New > Python 3 stays in
// the frame (notebookd's frame-links extension), and a cell runs. From a site
// that is not allowed: Chromium blocks the frame by its frame-ancestors CSP.
const path = require('path');
const { scenario, logIn, runCell, check } = require('./lib');

async function loadParent(page, url, nbOrigin) {
  const consoleErrors = [];
  const failed = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('requestfailed', (r) => {
    if (r.url().startsWith(nbOrigin)) failed.push(r.failure().errorText);
  });
  await page.goto(url, { waitUntil: 'load' });
  const frame = await (await page.$('iframe#nb')).contentFrame();
  const cspError = consoleErrors.find(
    (t) => t.includes('violates the following Content Security Policy directive') && t.includes('frame-ancestors'),
  );
  return { frame, cspError, failed };
}

scenario(async ({ cfg, context }) => {
  // Allowed site.
  const page = await context.newPage();
  const site = await loadParent(page, `${cfg.site}/embed`, cfg.nb);
  check(site.cspError === undefined, `CSP error on the allowed site: ${site.cspError}`);
  check(site.failed.length === 0, `failed frame requests: ${site.failed}`);
  const frame = site.frame;
  check(new URL(frame.url()).pathname === '/login', `frame shows ${frame.url()}`);
  await logIn(frame, cfg.password);
  await frame.waitForSelector('.jp-DirListing');
  check(new URL(frame.url()).pathname === '/tree', `frame after login: ${frame.url()}`);
  const cookies = await context.cookies();
  const session = cookies.find((c) => c.name === 'notebookd-session');
  const xsrf = cookies.find((c) => c.name === '_xsrf');
  check(session && xsrf, `cookies after login in the frame: ${JSON.stringify(cookies)}`);
  for (const c of [session, xsrf]) {
    check(c.sameSite === 'None' && c.secure, `${c.name} is not SameSite=None; Secure: ${JSON.stringify(c)}`);
    check(c.partitionKey && c.partitionKey.startsWith('https://site.test'), `${c.name} is not partitioned under site.test: ${JSON.stringify(c)}`);
  }

  // New > Python 3: in a frame the notebook opens in the frame, not in a new tab.
  const pagesBefore = context.pages().length;
  await frame.locator('.lm-MenuBar-item', { hasText: 'New' }).first().click();
  const newTab = context.waitForEvent('page', { timeout: 90000 }).then(
    (p) => { throw new Error(`the notebook opened in a new tab (${p.url()}), not in the frame`); },
    () => {},
  );
  await frame.locator('.lm-Menu-item[data-command="notebook:create-new"]').first().click();
  await Promise.race([frame.waitForURL(/\/notebooks\/Untitled.*\.ipynb$/), newTab]);
  check(context.pages().length === pagesBefore, 'a new tab was opened');
  check(page.url() === `${cfg.site}/embed`, `the top page moved: ${page.url()}`);
  await frame.waitForSelector('.jp-Notebook .jp-CodeCell .cm-content');
  const run = await runCell(frame, page, 'print(6*7)');
  await run.output.filter({ hasText: '42' }).waitFor();
  const printed = (await run.output.innerText()).trim();
  check(printed === '42', `print(6*7) in the frame showed ${JSON.stringify(printed)}`);
  const framedShot = path.join(cfg.artifacts, 'embedded-allowed.png');
  await page.screenshot({ path: framedShot });

  // Not allowed: evil.test frames the same URL; a fresh page, as after any failed load.
  const evilPage = await context.newPage();
  const evil = await loadParent(evilPage, `${cfg.evil}/embed`, cfg.nb);
  check(evil.frame.url() === 'chrome-error://chromewebdata/', `evil frame shows ${evil.frame.url()}`);
  check(evil.cspError, 'no frame-ancestors CSP violation was reported for evil.test');
  check(evil.cspError.includes(`https://site.test:`), `violation names another policy: ${evil.cspError}`);
  check(evil.failed.includes('net::ERR_BLOCKED_BY_RESPONSE'), `frame request errors: ${evil.failed}`);
  const blockedShot = path.join(cfg.artifacts, 'embedded-refused.png');
  await evilPage.screenshot({ path: blockedShot });

  return {
    screenshots: [framedShot, blockedShot],
    printed,
    cspError: evil.cspError,
    cookies: cookies.map((c) => ({ name: c.name, value: c.value, partitionKey: c.partitionKey || null })),
  };
});
