'use strict';
// An uploaded HTML file, opened from the tree as a user would, must not run
// its script with the user's rights: Jupyter's `sandbox allow-scripts` CSP,
// kept by notebookd, gives it an opaque origin without cookies.
const { scenario, logIn, check } = require('./lib');

scenario(async ({ cfg, context }) => {
  const page = await context.newPage();
  await page.goto(`${cfg.nb}/login`);
  await logIn(page, cfg.password);
  await page.waitForSelector('.jp-DirListing');
  // Control: a page of the app itself can read the _xsrf cookie.
  const appCookies = await page.evaluate(() => document.cookie);
  check(appCookies.includes('_xsrf='), `the app page sees no _xsrf: ${appCookies}`);

  const [resp] = await Promise.all([
    page.waitForNavigation(),
    page.evaluate((href) => { window.location.href = href; }, `/files/${cfg.file}`),
  ]);
  check(resp.status() === 200, `GET of the uploaded page: ${resp.status()}`);
  const csp = resp.headers()['content-security-policy'] || '';
  await page.waitForFunction(() => window.__result !== undefined, null, { timeout: 30000 });
  const r = await page.evaluate(() => window.__result);
  check(csp.includes('sandbox allow-scripts'), `CSP of /files/: ${csp}`);
  check(csp.includes("frame-ancestors 'self'"), `CSP of /files/: ${csp}`);
  check(r.ran === true, 'the page script did not run at all');
  check(r.origin === 'null', `the page runs with origin ${r.origin}`);
  check(r.cookie === undefined && /sandboxed/.test(r.cookieError || ''), `document.cookie: ${JSON.stringify(r)}`);
  check(r.apiStatus === undefined && r.apiError, `fetch of the API: ${JSON.stringify(r)}`);
  return { csp, page: r };
});
