"""BERT-of-Theseus compression by progressive module replacement for Hugging Face transformers.

``theseus_wrap(model, n)`` prepares a fine-tuned predecessor, ``TheseusCallback(scheduler)`` drives the
replacing rate in ``Trainer``, ``export_successor(model)`` returns the plain ``n``-block transformers model.
"""

from .callbacks import TheseusCallback
from .modeling_theseus import TheseusController, TheseusModule, export_successor, get_controller, theseus_wrap
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
