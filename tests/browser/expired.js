'use strict';
// A session that ends under an open notebook loses nothing: the notebook is
// edited, the session reaches its lifetime (cfg.lifetimeSecs, short in the
// test), Save fails with notebookd's message saying how to log in again;
// after logging in in another tab, Save in the first tab works and the edit
// is on the server.
const { scenario, logIn, check } = require('./lib');

async function dialogText(page, pattern, timeout) {
  const dialog = page.locator('.jp-Dialog', { hasText: pattern });
  await dialog.first().waitFor({ timeout });
  return (await dialog.first().innerText()).replace(/\s+/g, ' ').trim();
}

async function dismissDialogs(page) {
  for (let i = 0; i < 10 && (await page.locator('.jp-Dialog').count()) > 0; i++) {
    const button = page.locator('.jp-Dialog .jp-Dialog-button').last();
    await button.click().catch(() => {});
    await page.locator('.jp-Dialog').first().waitFor({ state: 'detached', timeout: 10000 }).catch(() => {});
  }
}

// Clicks `target`. The kernel's WebSocket closes with the session, and the
// tab's attempts to reconnect it are refused: JupyterLab may report that in
// a dialog that opens late and takes the click. Dismiss it and click again.
async function clickPastDialogs(page, target) {
  for (let i = 0; ; i++) {
    await dismissDialogs(page);
    const clicked = await target.click({ timeout: 10000 }).then(() => true, () => false);
    if (clicked) return;
    console.error(`retry ${i}: the click did not land`);
    check(i < 5, 'a dialog keeps covering the cell after the session ended');
  }
}

scenario(async ({ cfg, context }) => {
  const page = await context.newPage();
  await page.goto(`${cfg.nb}/notebooks/${cfg.notebook}`);
  await logIn(page, cfg.password);
  const loggedInAt = Date.now();
  const editor = page.locator('.jp-Notebook .jp-CodeCell .cm-content').first();
  await editor.waitFor();
  // A dialog that opens late (a kernel chooser on a busy machine) takes the
  // keys: type again until the cell shows the edit.
  for (let i = 0; ; i++) {
    await dismissDialogs(page);
    await editor.click({ timeout: 10000 }).catch(() => {});
    await page.keyboard.press('Control+a');
    await page.keyboard.type(`marker = "${cfg.marker}"`);
    if ((await editor.innerText()).includes(cfg.marker)) break;
    check(i < 5, `the cell does not take the edit: ${await editor.innerText()}`);
  }

  // Wait for the session's end as the tab sees it (bounded: lifetime + 120 s).
  const deadline = loggedInAt + (cfg.lifetimeSecs + 120) * 1000;
  let status = 200;
  while (status !== 401) {
    check(Date.now() < deadline, `the session did not end within ${cfg.lifetimeSecs + 120} s`);
    await page.waitForTimeout(1000);
    status = await page.evaluate(async () => (await fetch('/api/status')).status);
  }
  const endedAfterSecs = Math.round((Date.now() - loggedInAt) / 1000);

  await clickPastDialogs(page, editor);
  await page.keyboard.press('Control+s');
  const failed = await dialogText(page, /log in again/i, 60000);
  check(failed.includes('/login'), `the Save error names no login page: ${failed}`);

  const other = await context.newPage();
  await other.goto(`${cfg.nb}/login`);
  await logIn(other, cfg.password);
  await other.close();

  await clickPastDialogs(page, editor);
  await page.keyboard.press('Control+s');
  // The edit reaches the server (read through the first tab, on the new session).
  const saveDeadline = Date.now() + 60000;
  let saved = '';
  while (!saved.includes(cfg.marker)) {
    check(Date.now() < saveDeadline, `the second Save did not reach the server: ${saved.slice(0, 300)}`);
    await page.waitForTimeout(500);
    saved = await page.evaluate(async (name) => {
      const r = await fetch(`/api/contents/${name}?content=1`);
      return r.ok ? JSON.stringify((await r.json()).content) : `HTTP ${r.status}`;
    }, cfg.notebook);
  }
  return { failed, endedAfterSecs };
});
