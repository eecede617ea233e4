"""hfplug-noloop: generation that cannot loop forever, as ordinary transformers processors.

Names load on first access (:func:`hfplug.lazy.lazy_exports`), so loading plugins imports neither torch nor
transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hfplug.lazy import lazy_exports

if TYPE_CHECKING:
    from . import metrics
    from .configuration_noloop import NoLoopComponents, NoLoopConfig
    from .logits_process import (
        ConsistentMinPLogitsWarper,
        ConsistentTopKLogitsWarper,
        ConsistentTopPLogitsWarper,
        DRYLogitsProcessor,
        LoopEOSLogitsProcessor,
        NoLoopLogitsProcessor,
        SelfTerminatingLogitsProcessor,
    )
    from .stopping_criteria import LoopDetector, LoopStoppingCriteria

__all__ = [
    "ConsistentMinPLogitsWarper",
    "ConsistentTopKLogitsWarper",
    "ConsistentTopPLogitsWarper",
    "DRYLogitsProcessor",
    "LoopDetector",
    "LoopEOSLogitsProcessor",
    "LoopStoppingCriteria",
    "NoLoopComponents",
    "NoLoopConfig",
    "NoLoopLogitsProcessor",
    "SelfTerminatingLogitsProcessor",
    "metrics",
]

__getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "metrics": "metrics",
        **dict.fromkeys(["NoLoopComponents", "NoLoopConfig"], "configuration_noloop"),
        **dict.fromkeys(
            [
                "ConsistentMinPLogitsWarper",
                "ConsistentTopKLogitsWarper",
                "ConsistentTopPLogitsWarper",
                "DRYLogitsProcessor",
                "LoopEOSLogitsProcessor",
                "NoLoopLogitsProcessor",
                "SelfTerminatingLogitsProcessor",
            ],
            "logits_process",
        ),
        **dict.fromkeys(["LoopDetector", "LoopStoppingCriteria"], "stopping_criteria"),
    },
)
