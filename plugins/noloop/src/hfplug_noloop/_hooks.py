"""hfplug hook implementations: register the no-loop processors and the loop stop by name."""

from __future__ import annotations

from hfplug import hookimpl


@hookimpl
def register_logits_processors(register) -> None:
    from .logits_process import (
        ConsistentMinPLogitsWarper,
        ConsistentTopKLogitsWarper,
        ConsistentTopPLogitsWarper,
        DRYLogitsProcessor,
        LoopEOSLogitsProcessor,
        SelfTerminatingLogitsProcessor,
    )
    from .stopping_criteria import LoopStoppingCriteria

    register("consistent_top_k", ConsistentTopKLogitsWarper)
    register("consistent_top_p", ConsistentTopPLogitsWarper)
    register("consistent_min_p", ConsistentMinPLogitsWarper)
    register("self_terminating", SelfTerminatingLogitsProcessor)
    register("dry", DRYLogitsProcessor)
    register("loop_stop", LoopStoppingCriteria)
    register("loop_eos", LoopEOSLogitsProcessor)
