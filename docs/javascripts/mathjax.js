// MathJax 2.7 configuration, read by assets/mathjax/MathJax.js (served from this site, so formulas
// render offline; the files come from the jupyter-server-mathjax package, see docs/hooks.py).
// Only pymdownx.arithmatex spans (\( \) and \[ \]) and notebook markdown cells ($ $ and $$ $$) are
// typeset; code, outputs and the rest of the page are left alone.
window.MathJax = {
  config: ["TeX-AMS-MML_HTMLorMML-full.js"],
  skipStartupTypeset: true,
  tex2jax: {
    inlineMath: [["\\(", "\\)"], ["$", "$"]],
    displayMath: [["\\[", "\\]"], ["$$", "$$"]],
    processEscapes: true,
    processEnvironments: true,
  },
  "HTML-CSS": {availableFonts: [], preferredFont: null, webFont: "STIX-Web", imageFont: null},
  menuSettings: {zoom: "None"},
  messageStyle: "none",
  AuthorInit: function () {
    MathJax.Hub.Register.StartupHook("End", function () {
      var elements = document.querySelectorAll(".arithmatex, .jp-MarkdownOutput");
      MathJax.Hub.Queue(["Typeset", MathJax.Hub, Array.prototype.slice.call(elements)]);
    });
  },
};
