'use strict';
// File > Log Out, in Notebook 7's tree and in JupyterLab: the entry is there,
// it lands on notebookd's "You have logged out." page, and the browser's
// next API request is refused. The cookies held before each logout are
// returned so that the test can replay them.
const { scenario, logIn, check } = require('./lib');

async function logOutFrom(context, cfg, url, ready) {
  const page = await context.newPage();
  await page.goto(`${cfg.nb}${url}`);
  check(new URL(page.url()).pathname === '/login', `${url}: not sent to the login page: ${page.url()}`);
  await logIn(page, cfg.password);
  await page.waitForSelector(ready);
  // Lab's restore finishes before its status bar shows; a news popup would
  // be up by then.
  if (url === '/lab') await page.waitForSelector('#jp-main-statusbar');
  const before = await context.cookies();
  const held = before.filter((c) => c.name === cfg.cookieName).map((c) => c.value);
  check(held.length === 1, `${url}: session cookies held: ${held.length}`);
  const api = await page.evaluate(async () => (await fetch('/api/contents')).status);
  check(api === 200, `${url}: /api/contents before logout: ${api}`);

  await page.locator('.lm-MenuBar-item', { hasText: 'File' }).first().click();
  const entry = page.locator('.lm-Menu-item[data-command="notebookd:log-out"]');
  await entry.waitFor();
  const label = (await entry.innerText()).trim();
  check(label === 'Log Out', `${url}: the menu entry reads ${JSON.stringify(label)}`);
  const news = await page.locator('.Toastify__toast', { hasText: /news/i }).count();
  check(news === 0, `${url}: Jupyter asks about its news feed`);
  await Promise.all([page.waitForURL((u) => u.pathname === '/logout'), entry.click()]);
  await page.waitForSelector('text=You have logged out.');
  // notebookd's own pages allow no fetch (strict CSP): ask by navigating.
  const afterResp = await page.goto(`${cfg.nb}/api/contents`);
  const after = afterResp.status();
  // (A 200 here once came from the browser's cache: logout clears it.)
  check(after === 401, `${url}: /api/contents after logout: ${after}, dated ${afterResp.headers().date}`);
  await page.goto(`${cfg.nb}${url}`);
  check(new URL(page.url()).pathname === '/login', `${url}: after logout, not sent to login: ${page.url()}`);
  await page.close();
  return held[0];
}

// The login page's icon, and /favicon.ico, which a browser asks for on its
// own: both answered without a session.
async function icons(context, cfg) {
  const page = await context.newPage();
  await page.goto(`${cfg.nb}/tree`);
  const href = await page.locator('link[rel~="icon"]').first().getAttribute('href');
  const result = {};
  for (const url of [new URL(href, page.url()).href, `${cfg.nb}/favicon.ico`]) {
    const r = await page.goto(url);
    const type = r.headers()['content-type'] || '';
    check(r.status() === 200 && type.startsWith('image/'), `${url}: ${r.status()} ${type}`);
    result[new URL(url).pathname] = type;
  }
  await page.close();
  return result;
}

scenario(async ({ cfg, context }) => {
  const icon = await icons(context, cfg);
  const tree = await logOutFrom(context, cfg, '/tree', '.jp-DirListing');
  const lab = await logOutFrom(context, cfg, '/lab', '#jp-main-dock-panel');
  return { cookies: { tree, lab }, icon };
});
