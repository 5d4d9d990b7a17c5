// Applies the remembered theme (or the system's) before the page paints. A classic
// script on purpose: the Content-Security-Policy allows no inline script.
(function () {
  var theme = null;
  try {
    theme = window.localStorage.getItem('vigil.theme');
  } catch (e) {
    theme = null;
  }
  if (theme !== 'light' && theme !== 'dark') {
    theme = window.matchMedia && window.matchMedia('(prefers-color-scheme: dark)').matches ? 'dark' : 'light';
  }
  document.documentElement.setAttribute('data-theme', theme);
})();
