"""Adversarial training on token-embedding outputs as ``transformers.Trainer`` callbacks.

Names load on first access (:func:`hfplug.lazy.lazy_exports`): importing the package, or its ``_hooks``
module when hfplug loads plugins, imports neither torch nor transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hfplug.lazy import lazy_exports

if TYPE_CHECKING:
    from .callbacks import FGM, FGSM, PGD, SMART, AdversarialCallback, FreeLB, GradientPenalty

__all__ = ["FGM", "FGSM", "PGD", "SMART", "AdversarialCallback", "FreeLB", "GradientPenalty"]

__getattr__, __dir__ = lazy_exports(__name__, dict.fromkeys(__all__, "callbacks"))
