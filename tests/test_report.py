"""The benchmark and reproduction tables of the docs are what ``scripts/report.py`` renders from the committed JSON."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT_FILES = sorted(
    path.relative_to(ROOT).as_posix()
    for pattern in (
        "examples/results/*.json",
        "plugins/*/bench/results/*.json",
        "assets/zh-bert/src/hfplug_zh_bert/*/pretraining.json",
    )
    for path in ROOT.glob(pattern)
)


def load_report():
    spec = importlib.util.spec_from_file_location("report", ROOT / "scripts" / "report.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


report = load_report()


@pytest.fixture(scope="module")
def rendered() -> dict[Path, str]:
    return report.rendered_pages()


@pytest.mark.parametrize(
    "path", [report.RESULTS_PAGE, *(ROOT / page for page in report.PAGES)], ids=lambda path: path.name
)
def test_committed_page_is_what_its_json_renders(path: Path, rendered: dict[Path, str]):
    committed = path.read_text()
    assert committed == rendered[path], (
        f"{path.relative_to(ROOT)} differs from what the committed JSON renders: "
        "run `python scripts/report.py --render-only` (never edit a generated block by hand)"
    )


@pytest.mark.parametrize("page", sorted((ROOT / "docs" / "plugins").glob("*.md")), ids=lambda p: p.name)
def test_every_plugin_page_has_generated_tables(page: Path):
    blocks = report.PAGES.get(page.relative_to(ROOT).as_posix(), {})
    assert blocks, f"{page.name} has no tables rendered from JSON"
    assert set(report.GENERATED.findall(page.read_text())) == set(blocks)


def test_generated_blocks_appear_only_on_rendered_pages():
    marked = {
        page.relative_to(ROOT).as_posix()
        for page in (ROOT / "docs").rglob("*.md")
        if report.GENERATED.search(page.read_text())
    }
    assert marked <= set(report.PAGES)


def test_every_committed_result_file_is_rendered(monkeypatch):
    read = []
    original = report.load
    monkeypatch.setattr(report, "load", lambda relative: read.append(relative) or original(relative))
    report.rendered_pages()
    assert sorted(set(read)) == RESULT_FILES


def test_result_files_are_named_by_what_they_measure():
    assert not [
        name for name in RESULT_FILES if re.search(r"run_?\d{4}|utc|\d{4}-\d\d-\d\d", name, re.IGNORECASE)
    ]


def test_a_hand_edited_block_is_rendered_back():
    page = "docs/plugins/favor.md"
    text = (ROOT / page).read_text()
    start = "<!-- generated: favor-decode -->\n"
    head, _, rest = text.partition(start)
    edited = (
        head
        + start
        + "| context L | SDPA | FAVOR+ |\n|---|---|---|\n| 1,024 | 0.10 | 0.20 |\n"
        + rest[rest.index(report.END) :]
    )
    assert edited != text
    assert report.fill_generated_blocks(edited, report.PAGES[page], page) == text


def test_a_block_without_renderer_is_an_error():
    page = "docs/plugins/theseus.md"
    text = (ROOT / page).read_text() + "\n<!-- generated: theseus-speed -->\n<!-- end generated -->\n"
    with pytest.raises(ValueError, match="theseus-speed"):
        report.fill_generated_blocks(text, report.PAGES[page], page)
