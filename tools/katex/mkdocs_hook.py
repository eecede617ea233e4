"""mkdocs hook: serves KaTeX from the site itself, so formulas render offline and no page loads a CDN.

KaTeX is the npm package pinned in tools/katex/package-lock.json; ``make docs`` runs ``npm ci`` there first.
The hook adds its script, stylesheet and fonts to the site under ``assets/katex/`` (mkdocs.yml's
extra_javascript / extra_css point there; docs/javascripts/katex.js renders the arithmatex elements).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

TOOLS = Path(__file__).resolve().parent
DIST = TOOLS / "node_modules" / "katex" / "dist"
DEST = "assets/katex"


def on_files(files: Files, config) -> Files:
    if not (DIST / "katex.min.js").is_file():
        raise PluginError(
            f"KaTeX is not installed in {TOOLS}: run `make docs`, or `npm ci --prefix {TOOLS}` before mkdocs"
        )
    names = ["katex.min.js", "katex.min.css"]
    names += sorted(p.relative_to(DIST).as_posix() for p in (DIST / "fonts").iterdir() if p.is_file())
    for name in names:
        files.append(File.generated(config, f"{DEST}/{name}", abs_src_path=str(DIST / name)))
    return files
