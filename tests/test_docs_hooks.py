"""Every hook is documented in docs/ with its exact signature, and the docs name every public API."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import hfplug
from hfplug import hookspecs

DOCS = Path(__file__).resolve().parent.parent / "docs"
HOOKS = [name for name, fn in vars(hookspecs).items() if hasattr(fn, "hfplug_spec")]


def hook_signature(name: str) -> str:
    """``register_losses(register: RegisterLoss) -> None``, built from the spec itself."""
    signature = inspect.signature(getattr(hookspecs, name))
    params = ", ".join(f"{p.name}: {p.annotation}" for p in signature.parameters.values())
    return f"{name}({params}) -> {signature.return_annotation}"


def test_all_five_hooks_exist():
    assert sorted(HOOKS) == [
        "register_attention_backends",
        "register_callbacks",
        "register_logits_processors",
        "register_losses",
        "register_tokenizers",
    ]


@pytest.mark.parametrize("name", HOOKS)
def test_hook_is_documented_with_exact_signature(name):
    text = "\n".join(p.read_text("utf-8") for p in DOCS.rglob("*.md"))
    assert hook_signature(name) in text, f"docs/ lacks the hook signature {hook_signature(name)!r}"


@pytest.mark.parametrize("name", sorted(n for n in hfplug.__all__ if not n.startswith("__")))
def test_public_api_is_documented(name):
    text = (DOCS / "using-plugins.md").read_text("utf-8") + (DOCS / "writing-a-plugin.md").read_text("utf-8")
    assert name in text, f"{name} is public but not mentioned in the docs"
