// MathJax 3 settings for pymdownx.arithmatex's generic mode (the `arithmatex` spans and divs hold
// \( \) and \[ \] TeX), read by the vendored tex-svg.js that mkdocs.yml loads after this file.
window.MathJax = {
  tex: { inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true, processEnvironments: true },
  options: { ignoreHtmlClass: ".*|", processHtmlClass: "arithmatex" },
  svg: { fontCache: "global" },
};
// Typeset again whenever Material swaps the page in; MathJax typesets the first page itself.
document$.subscribe(() => {
  if (window.MathJax.typesetPromise) {
    MathJax.typesetPromise();
  }
});
