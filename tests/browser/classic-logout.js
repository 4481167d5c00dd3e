'use strict';
// The classic Notebook 6.x's Logout button, which notebookd's custom.js adds
// to the header (Jupyter shows its own only when it does the login): it is
// in the tree page's header, it lands on notebookd's "You have logged out."
// page, and the browser's next API request is refused. The session cookie
// held before is returned so that the test can replay it.
const { scenario, logIn, check } = require('./lib');

scenario(async ({ cfg, context }) => {
  const page = await context.newPage();
  await page.goto(`${cfg.nb}/tree`);
  check(new URL(page.url()).pathname === '/login', `not sent to the login page: ${page.url()}`);
  await logIn(page, cfg.password);
  await page.waitForSelector('#notebook_list');
  const held = (await context.cookies()).filter((c) => c.name === cfg.cookieName).map((c) => c.value);
  check(held.length === 1, `session cookies held: ${held.length}`);
  const button = page.locator('#login_widget #logout');
  await button.waitFor();
  const label = (await button.innerText()).trim();
  check(label === 'Logout', `the button reads ${JSON.stringify(label)}`);
  await Promise.all([page.waitForURL((u) => u.pathname === '/logout'), button.click()]);
  await page.waitForSelector('text=You have logged out.');
  const after = (await page.goto(`${cfg.nb}/api/contents`)).status();
  check(after === 401, `/api/contents after logout: ${after}`);
  await page.goto(`${cfg.nb}/tree`);
  check(new URL(page.url()).pathname === '/login', `after logout, not sent to login: ${page.url()}`);
  await page.close();
  return { cookie: held[0], label };
});
