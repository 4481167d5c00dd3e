// The parts of @jupyterlab/services a page on another site uses (thebe
// does the same), bundled by tests/setup/browser.sh into one ES module that
// the CORS scenario (cors.js) serves from the allowed and the refused origin.
export { ServerConnection, KernelManager, ContentsManager } from '@jupyterlab/services';
