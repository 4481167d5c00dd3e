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
  await Promise.all([page.waitForURL((u) => u.pathname === '/logout'), entry.click()]);
  await page.waitForSelector('text=You have logged out.');
  // notebookd's own pages allow no fetch (strict CSP): ask by navigating.
  const after = (await page.goto(`${cfg.nb}/api/contents`)).status();
  check(after === 401, `${url}: /api/contents after logout: ${after}`);
  await page.goto(`${cfg.nb}${url}`);
  check(new URL(page.url()).pathname === '/login', `${url}: after logout, not sent to login: ${page.url()}`);
  await page.close();
  return held[0];
}

scenario(async ({ cfg, context }) => {
  const tree = await logOutFrom(context, cfg, '/tree', '.jp-DirListing');
  const lab = await logOutFrom(context, cfg, '/lab', '#jp-main-dock-panel');
  return { cookies: { tree, lab } };
});
