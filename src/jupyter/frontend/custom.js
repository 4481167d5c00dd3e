// Written by notebookd for the classic Notebook (6.x).
//
// - When the notebook is shown in another site's iframe, open notebooks,
//   folders and files in the frame instead of new browser tabs (a new tab is
//   another cookie partition, where the user would have to log in again).
//   Outside a frame: unchanged.
// - notebookd, not Jupyter, owns the login, so the classic header's Logout
//   button (shown only when Jupyter itself has a password) is added here: it
//   opens notebookd's `{base_url}logout`, which ends the session.
define(['base/js/namespace'], function (Jupyter) {
  'use strict';
  var framed;
  try {
    framed = window.self !== window.top;
  } catch (e) {
    framed = true;
  }
  if (framed) {
    Jupyter._target = '_self';
  }

  function addLogOut() {
    var widget = document.getElementById('login_widget');
    if (!widget || document.getElementById('logout')) {
      return;
    }
    var base = document.body.getAttribute('data-base-url') || '/';
    if (base.charAt(base.length - 1) !== '/') {
      base += '/';
    }
    var button = document.createElement('button');
    button.id = 'logout';
    button.className = 'btn btn-sm navbar-btn';
    button.textContent = 'Logout';
    button.title = 'End this notebookd session';
    button.addEventListener('click', function () {
      window.location.assign(base + 'logout');
    });
    widget.appendChild(button);
  }
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', addLogOut);
  } else {
    addLogOut();
  }
});
