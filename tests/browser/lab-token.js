'use strict';
// A pasted JupyterLab link with a token (what JupyterLab Desktop and a
// "copy server URL" give): `/lab?token=T` lands in Lab logged in, the token
// is gone from the address bar and from every later request, and the
// session cookie it was exchanged for carries a later navigation.
const path = require('path');
const { scenario, check } = require('./lib');

scenario(async ({ cfg, context }) => {
  const page = await context.newPage();
  const seen = [];
  page.on('request', (r) => seen.push({ url: r.url(), referer: r.headers()['referer'] || null }));
  const first = await page.goto(`${cfg.nb}/lab?token=${cfg.token}`);
  check(first.ok(), `GET /lab?token= ended with ${first.status()}`);
  await page.waitForSelector('#jp-main-dock-panel');
  // The Lab shell is up once the launcher (or a restored tab) shows.
  await page.waitForSelector('.jp-Launcher, .jp-MainAreaWidget', { timeout: 90000 });
  const landed = page.url();
  check(new URL(landed).pathname === '/lab', `landed on ${landed}`);
  const shot = path.join(cfg.artifacts, 'lab-token.png');
  await page.screenshot({ path: shot });

  // A later navigation, with no token anywhere, works on the cookie.
  const api = await page.goto(`${cfg.nb}/api/contents`);
  const apiStatus = api.status();
  const listing = apiStatus === 200 ? await api.json() : null;

  const cookies = await context.cookies();
  const withToken = seen.filter(
    (r, i) => i > 0 && (r.url.includes(cfg.token) || (r.referer || '').includes(cfg.token)),
  );
  return {
    landed,
    apiStatus,
    names: listing ? listing.content.map((c) => c.name) : [],
    requests: seen.length,
    firstRequest: seen.length ? seen[0].url : null,
    laterRequestsWithToken: withToken,
    screenshot: shot,
    cookies: cookies.map((c) => ({ name: c.name, value: c.value, sameSite: c.sameSite })),
  };
});
