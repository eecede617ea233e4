// Renders the formulas that pymdownx.arithmatex (generic: true) leaves in the page as \(...\) (inline, in a
// span) and \[...\] (display, in a div) inside elements of class "arithmatex". Only those elements are
// touched, so a "$" in prose or code is never taken for math. KaTeX itself is served from assets/katex/.
// (KaTeX's own throwOnError: false would draw an unknown macro in red and still count as rendered.)
document$.subscribe(({ body }) => {
  for (const el of body.querySelectorAll(".arithmatex")) {
    if (el.querySelector(".katex")) continue;
    const tex = el.textContent.trim();
    const display = tex.startsWith("\\[");
    try {
      katex.render(tex.slice(2, -2), el, { displayMode: display, throwOnError: true });
    } catch (error) {
      // A formula KaTeX cannot parse stays as its TeX source, marked for readers and for make docs-check.
      el.textContent = tex;
      el.classList.add("katex-error");
      el.title = String(error);
      console.error(error);
    }
  }
});
