'use strict';
// Top level: log in, create a notebook from the tree's New menu, run
// print(6*7) and a matplotlib cell, save a screenshot; then follow a link to
// /files/ as a browser does (same-origin Referer: Jupyter's XSRF fallback for
// GET) and check that the same URL without a Referer is refused. Also reports
// the TLS the browser negotiated.
const path = require('path');
const { scenario, logIn, runCell, check } = require('./lib');

scenario(async ({ cfg, context }) => {
  const page = await context.newPage();
  // What TLS the browser negotiated for the first page (DevTools' Security panel).
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  let tls = null;
  cdp.on('Network.responseReceived', (e) => {
    if (!tls && e.type === 'Document' && e.response.securityDetails) {
      const d = e.response.securityDetails;
      tls = { protocol: d.protocol, keyExchangeGroup: d.keyExchangeGroup || null, cipher: d.cipher };
    }
  });
  const first = await page.goto(`${cfg.nb}/tree`);
  check(first.status() === 200, `GET /tree ended with ${first.status()}`);
  const loginUrl = new URL(page.url());
  check(loginUrl.pathname === '/login', `not sent to the login page: ${page.url()}`);
  check(loginUrl.searchParams.get('next') === '/tree', `login next: ${page.url()}`);
  await logIn(page, cfg.password);
  check(new URL(page.url()).pathname === '/tree', `after login: ${page.url()}`);
  await page.waitForSelector('.jp-DirListing');
  const xsrfVisible = await page.evaluate(() => document.cookie.includes('_xsrf='));
  check(xsrfVisible, 'the tree page sees no _xsrf cookie');

  // New > Python 3 opens the notebook in a new tab (not embedded: Notebook 7's default).
  await page.locator('.lm-MenuBar-item', { hasText: 'New' }).first().click();
  const [nbPage] = await Promise.all([
    context.waitForEvent('page'),
    page.locator('.lm-Menu-item[data-command="notebook:create-new"]').first().click(),
  ]);
  await nbPage.waitForURL(/\/notebooks\/Untitled.*\.ipynb$/);
  await nbPage.waitForSelector('.jp-Notebook .jp-CodeCell .cm-content');

  const print = await runCell(nbPage, nbPage, 'print(6*7)');
  await print.output.filter({ hasText: '42' }).waitFor();
  const printed = (await print.output.innerText()).trim();
  check(printed === '42', `print(6*7) showed ${JSON.stringify(printed)}`);

  const plot = await runCell(
    nbPage,
    nbPage,
    'import matplotlib.pyplot as plt; plt.plot([1, 2, 3], [1, 4, 9]); plt.title("notebookd"); plt.show()',
  );
  const img = plot.cell.locator('.jp-OutputArea-output img');
  await img.first().waitFor();
  const src = await img.first().getAttribute('src');
  check(src && src.startsWith('data:image/png'), `plot output is not a PNG image: ${String(src).slice(0, 40)}`);
  const size = await img.first().evaluate((e) => [e.naturalWidth, e.naturalHeight]);
  check(size[0] > 100 && size[1] > 100, `plot image is ${size}`);
  const screenshot = path.join(cfg.artifacts, 'notebook.png');
  await nbPage.screenshot({ path: screenshot });

  // A link followed inside the app carries the same-origin Referer that Jupyter
  // needs for a GET of /files/ (Referrer-Policy: same-origin keeps it).
  const [viaLink] = await Promise.all([
    page.waitForNavigation(),
    page.evaluate((href) => { window.location.href = href; }, `/files/${cfg.file}`),
  ]);
  check(viaLink.status() === 200, `/files/ via a link: ${viaLink.status()}`);
  const referer = await viaLink.request().headerValue('referer');
  check(referer === `${cfg.nb}/tree`, `Referer sent: ${referer}`);
  const body = await page.evaluate(() => document.body.innerText);
  check(body.trim() === cfg.fileContent, `file content: ${body}`);
  // The same GET without a Referer (typed into the address bar): Jupyter refuses it.
  const bare = await context.newPage();
  const direct = await bare.goto(`${cfg.nb}/files/${cfg.file}`);
  check(direct.status() === 403, `/files/ without Referer: ${direct.status()}`);

  const cookies = await context.cookies();
  check(tls, 'DevTools reported no TLS details for the first page');
  return {
    tls,
    screenshot,
    printed,
    plotSize: size,
    referer,
    cookies: cookies.map((c) => ({ name: c.name, value: c.value, sameSite: c.sameSite, secure: c.secure, path: c.path, partitionKey: c.partitionKey || null })),
  };
});
