"""BERT-of-Theseus compression by progressive module replacement for Hugging Face transformers.

``theseus_wrap(model, n)`` prepares a fine-tuned predecessor, ``TheseusCallback(scheduler)`` drives the
replacing rate in ``Trainer``, ``export_successor(model)`` returns the plain ``n``-block transformers model.
Names load on first access (:func:`hfplug.lazy.lazy_exports`), so loading plugins imports neither torch nor
transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hfplug.lazy import lazy_exports

if TYPE_CHECKING:
    from .callbacks import TheseusCallback
    from .modeling_theseus import (
        TheseusController,
        TheseusModule,
        export_successor,
        get_controller,
        theseus_wrap,
    )
    from .schedulers import ConstantReplacementScheduler, LinearReplacementScheduler, ReplacementScheduler

__all__ = [
    "ConstantReplacementScheduler",
    "LinearReplacementScheduler",
    "ReplacementScheduler",
    "TheseusCallback",
    "TheseusController",
    "TheseusModule",
    "export_successor",
    "get_controller",
    "theseus_wrap",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "TheseusCallback": "callbacks",
        **dict.fromkeys(
            ["TheseusController", "TheseusModule", "export_successor", "get_controller", "theseus_wrap"],
            "modeling_theseus",
        ),
        **dict.fromkeys(
            ["ConstantReplacementScheduler", "LinearReplacementScheduler", "ReplacementScheduler"],
            "schedulers",
        ),
    },
)
