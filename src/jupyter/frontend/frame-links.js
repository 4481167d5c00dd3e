// notebookd-frame-links: written by notebookd next to Jupyter's config.
//
// When the notebook is shown in another site's iframe, Notebook 7 and
// JupyterLab 4 open notebooks, folders and some links in a new browser tab.
// That tab is a different cookie partition (browsers that block third-party
// cookies keep the iframe's login apart), so the user would have to log in
// again there. This keeps such same-origin navigation inside the frame.
// Outside a frame it does nothing. Links to other sites are not touched.
//
// A JupyterLab federated extension written by hand: no build step, no shared
// modules; the container protocol is the one JupyterLab's loader uses
// (window._JUPYTERLAB[name].init / .get('./extension')).
var _JUPYTERLAB;
(function () {
  'use strict';
  var NAME = 'notebookd-frame-links';

  function framed() {
    try {
      return window.self !== window.top;
    } catch (e) {
      return true;
    }
  }

  function sameOrigin(url) {
    try {
      return new URL(String(url), window.location.href).origin === window.location.origin;
    } catch (e) {
      return false;
    }
  }

  function wantsNewTab(target) {
    return target === undefined || target === null || target === '' || target === '_blank';
  }

  var plugin = {
    id: NAME + ':plugin',
    description: 'Keeps notebooks and same-site links inside the iframe when notebookd embeds Jupyter in another site.',
    autoStart: true,
    activate: function () {
      if (!framed()) {
        return;
      }
      var open = window.open;
      window.open = function (url, target, features) {
        if (url && wantsNewTab(target) && sameOrigin(url)) {
          window.location.assign(new URL(String(url), window.location.href).href);
          return window;
        }
        return open.apply(window, arguments);
      };
      // Plain <a target="_blank"> links to this server that nothing else handled.
      document.addEventListener('click', function (event) {
        if (event.defaultPrevented || event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey) {
          return;
        }
        var a = event.target && event.target.closest ? event.target.closest('a[href]') : null;
        if (a && a.target === '_blank' && !a.hasAttribute('download') && sameOrigin(a.href)) {
          event.preventDefault();
          window.location.assign(a.href);
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
