'use strict';
// @jupyterlab/services in Node, as a script or thebe's server side uses it
// against notebookd with an API token: list the contents, start a kernel
// through KernelManager, run `print(6*7)`, read the stream output, shut
// the kernel down. Run by tests/it/remote_clients.rs with the test CA in
// NODE_EXTRA_CA_CERTS (real TLS, nothing ignored).
//
// Settings as JSON in argv[2]: { baseUrl, wsUrl, token }. Prints one line
// `RESULT {json}` on success, exits non-zero with the reason otherwise.

const WebSocket = require('ws');
const { ServerConnection, KernelManager, ContentsManager, KernelAPI } = require('@jupyterlab/services');

const cfg = JSON.parse(process.argv[2] || '{}');
const watchdog = setTimeout(() => {
  console.error('the client did not finish within 120 s');
  process.exit(3);
}, cfg.timeoutMs || 120000);

(async () => {
  // Node 20 has fetch but no WebSocket: give the client `ws`.
  const serverSettings = ServerConnection.makeSettings({
    baseUrl: cfg.baseUrl,
    wsUrl: cfg.wsUrl,
    token: cfg.token,
    WebSocket,
  });
  const contents = new ContentsManager({ serverSettings });
  const listing = await contents.get('', { content: true });
  const names = listing.content.map((c) => c.name).sort();

  const kernels = new KernelManager({ serverSettings });
  await kernels.ready;
  const kernel = await kernels.startNew({ name: 'python3' });
  const kernelId = kernel.id;
  const info = await kernel.info;
  let stream = '';
  const future = kernel.requestExecute({ code: 'print(6*7)' });
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream' && msg.content.name === 'stdout') {
      stream += msg.content.text;
    }
  };
  const reply = await future.done;
  await kernel.shutdown();
  const running = (await KernelAPI.listRunning(serverSettings)).map((k) => k.id);
  kernels.dispose();
  return {
    contents: names,
    kernelId,
    language: info.language_info.name,
    status: reply.content.status,
    stream,
    runningAfterShutdown: running,
  };
})()
  .then((result) => {
    clearTimeout(watchdog);
    console.log('RESULT ' + JSON.stringify(result));
    process.exit(0);
  })
  .catch((e) => {
    console.error(e && e.stack ? e.stack : String(e));
    if (e && e.response) console.error(`HTTP ${e.response.status} ${e.response.url}`);
    process.exit(1);
  });
