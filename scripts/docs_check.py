"""Checks the built docs site as a reader sees it: pages in headless Chromium, math rendered by KaTeX.

Serves the site on 127.0.0.1, loads each page in Debian's chromium (``--dump-dom`` after the page's scripts
ran, then a screenshot), and fails when
- the page has no ``arithmatex`` element (nothing to check: wrong page or arithmatex off),
- an ``arithmatex`` element holds no KaTeX output (``class="katex"``) or still shows its raw TeX
  (``\\(``, ``\\[`` or ``$``), or KaTeX reported a parse error (``katex-error``),
- the browser asked the server for a file the site does not have (a missing script, stylesheet or font),
- the page loads a script, stylesheet or font from another host (the site must work offline).

Run by ``make docs-check`` (not in CI) on every plugin page. Usage: python scripts/docs_check.py
[--site site] [--page plugins/favor/ ...] [--out build/docs-check]
"""

from __future__ import annotations

import argparse
import functools
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--virtual-time-budget=10000",
]
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class MathScan(HTMLParser):
    """Each arithmatex element of a page: whether KaTeX output is inside it, and its text outside KaTeX."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[tuple[str, set[str]]] = []
        self.elements: list[dict] = []  # {"katex": bool, "error": bool, "raw": str}
        self.open: list[tuple[int, dict]] = []  # (stack depth, element) of the arithmatex elements open now
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        classes = set((attrs.get("class") or "").split())
        for name in ("src", "href"):
            url = attrs.get(name) or ""
            loads = tag in ("script", "img") or (
                tag == "link" and attrs.get("rel") in ("stylesheet", "preconnect")
            )
            if (
                loads
                and re.match(r"(https?:)?//", url)
                and not re.match(r"(https?:)?//127\.0\.0\.1[:/]", url)
            ):
                self.external.append(f"<{tag} {name}={url}>")
        if tag in VOID:
            return
        self.stack.append((tag, classes))
        if self.open:
            element = self.open[-1][1]
            element["katex"] |= "katex" in classes
            element["error"] |= "katex-error" in classes
        if "arithmatex" in classes:
            element = {"katex": False, "error": "katex-error" in classes, "raw": ""}
            self.elements.append(element)
            self.open.append((len(self.stack), element))

    def handle_endtag(self, tag):
        if tag in VOID or not self.stack:
            return
        depth = len(self.stack)
        self.stack.pop()
        if self.open and self.open[-1][0] == depth:
            self.open.pop()

    def handle_data(self, data):
        if not self.open:
            return
        # Text directly inside an arithmatex element, not inside KaTeX's output (which holds a TeX annotation).
        inside_katex = any("katex" in classes for _, classes in self.stack[self.open[-1][0] :])
        if not inside_katex:
            self.open[-1][1]["raw"] += data


class Handler(SimpleHTTPRequestHandler):
    missing: list[str]

    def log_message(self, format, *args):  # quiet; 404s are collected instead
        pass

    def send_error(self, code, message=None, explain=None):
        if code == 404:
            self.missing.append(self.path)
        super().send_error(code, message, explain)


def find_chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    sys.exit("docs-check: no chromium on PATH; install Debian's package: apt-get install -y chromium")


def chromium(binary: str, *args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        cmd = [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=180, check=False)


def check_page(binary: str, base: str, page: str, out: Path, missing: list[str]) -> list[str]:
    """Loads one page; returns its problems (empty when every formula rendered)."""
    url = f"{base}/{page.lstrip('/')}"
    name = page.strip("/").replace("/", "-") or "index"
    missing.clear()
    dom = chromium(binary, "--dump-dom", url)
    if dom.returncode != 0 or "<html" not in dom.stdout:
        print(dom.stderr[-2000:], file=sys.stderr)
        return [f"chromium could not load {url} (exit {dom.returncode})"]
    (out / f"{name}.dom.html").write_text(dom.stdout)
    screenshot = out / f"{name}.png"
    shot = chromium(binary, f"--screenshot={screenshot.resolve()}", "--window-size=1280,2000", url)

    scan = MathScan()
    scan.feed(dom.stdout)
    problems = []
    if not scan.elements:
        problems.append(
            "no arithmatex element on the page: nothing to check (wrong page, or arithmatex is off)"
        )
    unrendered = [e for e in scan.elements if not e["katex"]]
    raw = [e for e in scan.elements if re.search(r"\\\(|\\\[|\$", e["raw"])]
    errors = [e for e in scan.elements if e["error"]]
    for label, found in (
        ("not rendered by KaTeX", unrendered),
        ("raw TeX left", raw),
        ("KaTeX errors", errors),
    ):
        if found:
            examples = "; ".join(repr(e["raw"].strip()[:60]) for e in found[:3])
            problems.append(f"{len(found)} of {len(scan.elements)} formulas: {label} (e.g. {examples})")
    if missing:
        problems.append(f"the browser asked for files the site lacks: {', '.join(sorted(set(missing))[:8])}")
    if scan.external:
        problems.append(f"loads from other hosts (offline site expected): {', '.join(scan.external[:5])}")
    if shot.returncode != 0 or not screenshot.is_file():
        problems.append(f"no screenshot (chromium exit {shot.returncode})")
    rendered = len(scan.elements) - len(unrendered)
    print(
        f"docs-check: {page}: {len(scan.elements)} formulas, {rendered} rendered by KaTeX; screenshot {screenshot}"
    )
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="site", type=Path, help="the built site (mkdocs build)")
    parser.add_argument(
        "--page",
        action="append",
        help="page to check, relative to the site root (repeatable; default plugins/favor/)",
    )
    parser.add_argument(
        "--out", default="build/docs-check", type=Path, help="folder for screenshots and DOMs"
    )
    args = parser.parse_args()
    if not (args.site / "index.html").is_file():
        sys.exit(f"docs-check: {args.site}/index.html not found; build the site first (make docs)")
    binary = find_chromium()
    args.out.mkdir(parents=True, exist_ok=True)

    missing: list[str] = []
    handler = functools.partial(type("H", (Handler,), {"missing": missing}), directory=str(args.site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    failed = 0
    try:
        for page in args.page or ["plugins/favor/"]:
            problems = check_page(binary, base, page, args.out, missing)
            for problem in problems:
                print(f"docs-check: FAIL: {page}: {problem}", file=sys.stderr)
            failed += bool(problems)
    finally:
        server.shutdown()
        server.server_close()
    if failed:
        print(f"docs-check: FAIL: {failed} page(s) with math that does not render", file=sys.stderr)
        return 1
    print("docs-check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
