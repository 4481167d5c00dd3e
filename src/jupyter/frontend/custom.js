// Written by notebookd for the classic Notebook (6.x): when the notebook is
// shown in another site's iframe, open notebooks, folders and files in the
// frame instead of new browser tabs (a new tab is another cookie partition,
// where the user would have to log in again). Outside a frame: unchanged.
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
});
