"""hfplug hook implementations: the no-loop processors and the loop stop by name, as lazy references to the
package's public names (loading plugins imports nothing; the first lookup imports the class)."""

from __future__ import annotations

from hfplug import hookimpl
from hfplug.hookspecs import RegisterLogitsProcessor

_PROCESSORS = {
    "consistent_top_k": "ConsistentTopKLogitsWarper",
    "consistent_top_p": "ConsistentTopPLogitsWarper",
    "consistent_min_p": "ConsistentMinPLogitsWarper",
    "self_terminating": "SelfTerminatingLogitsProcessor",
    "dry": "DRYLogitsProcessor",
    "loop_stop": "LoopStoppingCriteria",  # a StoppingCriteria: the hook registers both kinds
    "loop_eos": "LoopEOSLogitsProcessor",
}


@hookimpl
def register_logits_processors(register: RegisterLogitsProcessor) -> None:
    for name, cls in _PROCESSORS.items():
        register(name, f"hfplug_noloop:{cls}")
