'use strict';
// A certificate from `nbctl cert generate --ca`, with the local CA in the
// browser's NSS database as nbctl's printed Linux steps say (certutil): the
// login page loads with no certificate warning (an untrusted certificate
// fails the navigation with net::ERR_CERT_AUTHORITY_INVALID).
const { scenario, check } = require('./lib');

scenario(async ({ cfg, context }) => {
  const page = await context.newPage();
  const resp = await page.goto(`${cfg.nb}/login`);
  check(resp.status() === 200, `login page: ${resp.status()}`);
  await page.waitForSelector('#password');
  const secure = await page.evaluate(() => window.isSecureContext);
  check(secure, 'the login page is not a secure context');
  await page.close();
  return { url: resp.url(), secure };
});
