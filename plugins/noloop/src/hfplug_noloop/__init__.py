"""hfplug-noloop: generation that cannot loop forever, as ordinary transformers processors."""

from . import metrics
from .configuration_noloop import NoLoopComponents, NoLoopConfig
from .logits_process import (
    ConsistentMinPLogitsWarper,
    ConsistentTopKLogitsWarper,
    ConsistentTopPLogitsWarper,
    DRYLogitsProcessor,
    LoopEOSLogitsProcessor,
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
    "SelfTerminatingLogitsProcessor",
    "metrics",
]
