'use strict';
// A page on another site uses @jupyterlab/services with an API token, as
// thebe does: from an origin in server.cors_origins it lists the contents,
// starts a kernel and runs print(6*7); from an origin not listed, the
// browser refuses the cross-origin requests (notebookd's preflight answer
// and the missing Access-Control-Allow-Origin).
const { scenario } = require('./lib');

async function runFrom(context, origin, cfg) {
  const page = await context.newPage();
  const consoleErrors = [];
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  await page.goto(`${origin}/cors`);
  await page.waitForFunction(() => window.services !== undefined);
  const r = await page.evaluate(async ({ nb, token }) => {
    const { ServerConnection, KernelManager, ContentsManager } = window.services;
    const out = { origin: self.origin };
    // The plain request first: what any script on the page would see.
    try {
      const resp = await fetch(`${nb}/api/contents`, { headers: { Authorization: `token ${token}` } });
      out.fetchStatus = resp.status;
    } catch (e) {
      out.fetchError = String(e);
    }
    const serverSettings = ServerConnection.makeSettings({
      baseUrl: `${nb}/`,
      wsUrl: `${nb.replace(/^https:/, 'wss:')}/`,
      token,
    });
    try {
      const listing = await new ContentsManager({ serverSettings }).get('', { content: true });
      out.names = listing.content.map((c) => c.name);
    } catch (e) {
      out.contentsError = String(e);
      return out;
    }
    const kernels = new KernelManager({ serverSettings });
    try {
      await kernels.ready;
      const kernel = await kernels.startNew({ name: 'python3' });
      out.kernelId = kernel.id;
      let stream = '';
      const future = kernel.requestExecute({ code: 'print(6*7)' });
      future.onIOPub = (msg) => {
        if (msg.header.msg_type === 'stream' && msg.content.name === 'stdout') stream += msg.content.text;
      };
      const reply = await future.done;
      out.status = reply.content.status;
      out.stream = stream;
      await kernel.shutdown();
    } catch (e) {
      out.kernelError = String(e);
    } finally {
      kernels.dispose();
    }
    return out;
  }, { nb: cfg.nb, token: cfg.token });
  r.consoleErrors = consoleErrors;
  await page.close();
  return r;
}

scenario(async ({ cfg, context }) => {
  const allowed = await runFrom(context, cfg.site, cfg);
  const refused = await runFrom(context, cfg.evil, cfg);
  return { allowed, refused };
});
