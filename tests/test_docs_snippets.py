"""The docs' snippets run, and docs/integrations.md names the versions pinned in constraints.txt.

A snippet is the ```python block right after an HTML comment ``<!-- snippet: NAME -->`` (optionally
``<!-- snippet: NAME uses: OTHER -->``: OTHER, a snippet of the same page, runs first in the same namespace).
Each snippet runs in a fresh namespace on offline tiny models, in a temporary working directory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKER = re.compile(r"<!--\s*snippet:\s*(?P<name>[\w-]+)(?:\s+uses:\s*(?P<uses>[\w-]+))?\s*-->")
BLOCK = re.compile(r"\s*```python\n(?P<code>.*?)\n```", re.DOTALL)


@dataclass(frozen=True)
class Snippet:
    page: Path
    name: str
    uses: str | None
    code: str
    line: int  # of the code's first line, for tracebacks

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(DOCS)}:{self.name}"


def extract(page: Path) -> dict[str, Snippet]:
    """Every snippet of ``page`` by name; a marker without a python block right after it, a repeated name or
    an unknown ``uses`` is an error naming the page and the line."""
    text = page.read_text("utf-8")
    snippets: dict[str, Snippet] = {}
    for marker in MARKER.finditer(text):
        line = text.count("\n", 0, marker.start()) + 1
        block = BLOCK.match(text, marker.end())
        if block is None:
            raise ValueError(
                f"{page}:{line}: snippet marker {marker['name']!r} is not followed by a ```python block"
            )
        if marker["name"] in snippets:
            raise ValueError(f"{page}:{line}: snippet name {marker['name']!r} is used twice")
        if marker["uses"] is not None and marker["uses"] not in snippets:
            raise ValueError(
                f"{page}:{line}: snippet {marker['name']!r} uses {marker['uses']!r}, not defined above it"
            )
        code_line = text.count("\n", 0, block.start("code")) + 1
        snippets[marker["name"]] = Snippet(page, marker["name"], marker["uses"], block["code"], code_line)
    return snippets


def all_snippets() -> list[Snippet]:
    return [s for page in sorted(DOCS.rglob("*.md")) for s in extract(page).values()]


def run(snippet: Snippet) -> dict:
    """Execute ``snippet`` (after the chain of snippets it uses) in a fresh namespace; return the namespace."""
    page = extract(snippet.page)
    chain = [snippet]
    while chain[0].uses is not None:
        chain.insert(0, page[chain[0].uses])
    namespace: dict = {"__name__": f"snippet_{snippet.name}"}
    for part in chain:
        # pad with newlines so tracebacks point at the line of the .md file
        source = "\n" * (part.line - 1) + part.code
        exec(compile(source, str(part.page), "exec"), namespace)
    return namespace


SNIPPETS = all_snippets()


def test_integrations_page_has_snippets():
    names = {s.name for s in SNIPPETS if s.page.name == "integrations.md"}
    assert {"trainer", "sft", "grpo", "peft", "ddp", "pipeline"} <= names


@pytest.mark.parametrize("snippet", SNIPPETS, ids=lambda s: s.id)
def test_snippet_runs(snippet, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run(snippet)


def test_a_broken_snippet_fails(tmp_path):
    """The harness itself: an error inside a snippet (or in the snippet it uses) propagates."""
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- snippet: base -->\n```python\nvalue = 1\n```\n\n"
        "<!-- snippet: good uses: base -->\n```python\nassert value == 1\n```\n\n"
        "<!-- snippet: bad uses: base -->\n```python\nassert value == 2, 'broken'\n```\n",
        "utf-8",
    )
    snippets = extract(page)
    assert run(snippets["good"])["value"] == 1
    with pytest.raises(AssertionError, match="broken") as error:
        run(snippets["bad"])
    assert error.traceback[-1].lineno + 1 == 13  # the line of the failing statement in page.md


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- snippet: a -->\ntext\n```python\nx = 1\n```\n", "not followed by a ```python block"),
        (
            "<!-- snippet: a -->\n```python\nx = 1\n```\n<!-- snippet: a -->\n```python\nx = 2\n```\n",
            "used twice",
        ),
        ("<!-- snippet: a uses: b -->\n```python\nx = 1\n```\n", "uses 'b', not defined above it"),
    ],
)
def test_malformed_markers_are_errors(tmp_path, text, message):
    page = tmp_path / "page.md"
    page.write_text(text, "utf-8")
    with pytest.raises(ValueError, match=re.escape(message)):
        extract(page)


def test_integrations_versions_equal_constraints():
    """The version table of docs/integrations.md equals the pins of constraints.txt."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text("utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            pins[name.strip().lower()] = version.strip()
    page = (DOCS / "integrations.md").read_text("utf-8")
    table = dict(re.findall(r"^\| ([\w.-]+) \| (\d[\w.]*) \|$", page, re.MULTILINE))
    assert set(table) >= {"torch", "transformers", "trl", "peft", "accelerate"}
    assert {name: pins.get(name) for name in table} == table
