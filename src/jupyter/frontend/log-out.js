// notebookd-log-out: written by notebookd next to Jupyter's config.
//
// notebookd, not Jupyter, owns the login, so Jupyter's own Log Out entry
// (shown only together with its Shut Down, which would stop the server the
// supervisor keeps running) stays hidden. This adds File > Log Out to
// Notebook 7 and JupyterLab 4: it opens notebookd's `{base_url}logout`,
// which ends the session and closes its kernels' and terminals' WebSockets.
// The menu entry itself is declared in this extension's settings schema
// (`jupyter.lab.menus`); the plugin only registers the command.
//
// A federated extension written by hand, like notebookd-frame-links.
var _JUPYTERLAB;
(function () {
  'use strict';
  var NAME = 'notebookd-log-out';
  var COMMAND = 'notebookd:log-out';

  function baseUrl() {
    try {
      var data = document.getElementById('jupyter-config-data');
      var base = JSON.parse(data.textContent).baseUrl;
      if (typeof base === 'string' && base.charAt(0) === '/') {
        return base.charAt(base.length - 1) === '/' ? base : base + '/';
      }
    } catch (e) {
      // Fall through: notebookd serves Jupyter at the root unless told otherwise.
    }
    return '/';
  }

  var plugin = {
    id: NAME + ':plugin',
    description: 'File > Log Out: ends the notebookd session.',
    autoStart: true,
    activate: function (app) {
      app.commands.addCommand(COMMAND, {
        label: 'Log Out',
        caption: 'End this notebookd session (unsaved changes in open tabs are not saved)',
        execute: function () {
          window.location.assign(baseUrl() + 'logout');
        }
      });
    }
  };

  _JUPYTERLAB = _JUPYTERLAB || {};
  _JUPYTERLAB[NAME] = {
    init: function () {
      return Promise.resolve();
    },
    get: function (module) {
      if (module !== './extension') {
        return Promise.reject(new Error(NAME + ' has no module ' + module));
      }
      return Promise.resolve(function () {
        return { __esModule: true, default: plugin };
      });
    }
  };
})();
