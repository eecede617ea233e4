"""``NoLoopConfig``: one object that builds the processor and stopping-criteria lists for ``generate``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

from hfplug.validation import check_bool, check_choice, check_float, check_int

from ._utils import as_token_ids
from .logits_process import (
    ConsistentMinPLogitsWarper,
    ConsistentTopKLogitsWarper,
    ConsistentTopPLogitsWarper,
    DRYLogitsProcessor,
    LoopEOSLogitsProcessor,
    NoLoopLogitsProcessor,
    SelfTerminatingLogitsProcessor,
)
from .stopping_criteria import MAX_WINDOW, LoopDetector, LoopStoppingCriteria

DEFAULT_BREAKERS = ("\n", ":", '"', "*")
LOOP_ACTIONS = ("stop", "eos", None)


class NoLoopComponents(NamedTuple):
    """What :meth:`NoLoopConfig.build` returns: unpack as ``procs, stops = config.build(tok)``."""

    logits_processor: LogitsProcessorList
    stopping_criteria: StoppingCriteriaList

    def components(self) -> list:
        """Every processor and stopping criterion, the parts of a fused :class:`NoLoopLogitsProcessor` included."""
        parts = [
            part
            for processor in self.logits_processor
            for part in getattr(processor, "processors", (processor,))
        ]
        return [*parts, *self.stopping_criteria]

    def _find(self, cls: type) -> Any:
        return next((c for c in self.components() if isinstance(c, cls)), None)

    def stop_reasons(self, output: Any, prompt_length: int | None = None) -> list[str]:
        """Why each returned row ended: "eos", "forced_eos", "loop" or "max_length".

        ``output`` is what ``generate`` returned (a tensor, or the dict output with
        ``return_dict_in_generate=True``; for beam search pass the dict so ``beam_indices`` map the
        floor's records to the returned rows). "forced_eos" means eos came while the self-terminating
        floor had raised its probability, or was forced after a loop. "loop" means the loop stop cut
        the row. ``prompt_length`` defaults to the (decoder) prompt width the components saw.
        """
        sequences = output if isinstance(output, torch.Tensor) else getattr(output, "sequences", None)
        if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2:
            raise TypeError(
                "output must be what generate returned: a 2-D tensor of token ids or an output with "
                f".sequences, got {type(output).__name__}"
            )
        if prompt_length is not None:
            prompt_length = check_int("prompt_length", prompt_length, minimum=0)
        floor = self._find(SelfTerminatingLogitsProcessor)
        stop = self._find(LoopStoppingCriteria)
        force = self._find(LoopEOSLogitsProcessor)
        if prompt_length is None:
            known = [c.prompt_length for c in (floor, stop, force) if c is not None and c.prompt_length]
            if not known:
                raise ValueError("prompt_length is unknown (no generate call seen): pass prompt_length=")
            prompt_length = known[0]
        beam_indices = getattr(output, "beam_indices", None)
        eos = set(self._eos())
        detector = (stop or force).detector if (stop or force) else None
        reasons = []
        for row, tokens in enumerate(sequences[:, prompt_length:].tolist()):
            first_eos = next((i for i, token in enumerate(tokens) if token in eos), None)
            loop_end = detector.first_loop_end(tokens) if detector is not None else None
            if stop is not None and loop_end is not None and (first_eos is None or loop_end <= first_eos):
                reasons.append("loop")
            elif first_eos is None:
                reasons.append("max_length")
            elif (force is not None and loop_end == first_eos) or self._floor_raised(
                floor, row, first_eos, beam_indices, len(sequences)
            ):
                reasons.append("forced_eos")
            else:
                reasons.append("eos")
        return reasons

    def _eos(self) -> list[int]:
        for component in self.components():
            ids = getattr(component, "eos_token_id", None)
            if ids:
                return ids
        raise ValueError("no component of this NoLoopComponents knows the eos ids")

    @staticmethod
    def _floor_raised(floor, row: int, step: int, beam_indices, num_rows: int) -> bool:
        if floor is None or step >= len(floor.raised):
            return False
        raised = floor.raised[step]
        if beam_indices is not None:
            beam = int(beam_indices[row, step])
            return 0 <= beam < raised.shape[0] and bool(raised[beam])
        return raised.shape[0] == num_rows and bool(raised[row])


@dataclass
class NoLoopConfig:
    """Settings for no-loop generation; :meth:`build` turns them into ``generate`` arguments.

    Defaults: DRY on (0.8, 1.75, allowed 2, window 1024; ``sequence_breakers=None`` means newline : " *
    when ``build`` gets a tokenizer and none when it gets eos ids), self-terminating
    floor on (epsilon 1e-3, start 256: greedy ends within 256 + 693 tokens), loop stop on (periods
    1..64, >= 4 copies covering >= 16 tokens, window 512), truncation off. Set ``top_k`` / ``top_p`` /
    ``min_p`` for consistent truncation (use them instead of ``generate(top_k=...)``, whose warpers
    run after custom processors and may drop eos again). ``epsilon=None`` turns the floor off,
    ``dry_multiplier=0`` turns DRY off, ``loop_action=None`` turns the loop check off and
    ``loop_action="eos"`` forces eos instead of cutting the row.
    """

    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    epsilon: float | None = 1e-3
    start: int = 256
    dry_multiplier: float = 0.8
    dry_base: float = 1.75
    dry_allowed_length: int = 2
    dry_window: int = 1024
    sequence_breakers: tuple[str | int, ...] | None = None
    protected_token_ids: tuple[int, ...] = ()
    loop_action: str | None = "stop"
    min_pattern_size: int = 1
    max_pattern_size: int = 64
    min_count: int = 4
    loop_window: int = 512
    min_loop_tokens: int = 16

    def __post_init__(self) -> None:
        """Check every field by its own name (TypeError for a wrong type, ValueError out of range)."""
        if self.top_k is not None:
            check_int("top_k", self.top_k, minimum=1)
        if self.top_p is not None:
            check_float("top_p", self.top_p, minimum=0.0, maximum=1.0, min_open=True)
        if self.min_p is not None:
            check_float("min_p", self.min_p, minimum=0.0, maximum=1.0)
        if self.epsilon is not None:
            check_float("epsilon", self.epsilon, minimum=0.0, maximum=1.0, min_open=True, max_open=True)
        check_int("start", self.start, minimum=0)
        check_float("dry_multiplier", self.dry_multiplier, minimum=0.0)  # 0 turns DRY off
        check_float("dry_base", self.dry_base, minimum=1.0)
        check_int("dry_allowed_length", self.dry_allowed_length, minimum=1)
        check_int("dry_window", self.dry_window, minimum=2)
        self.sequence_breakers = _check_breakers(self.sequence_breakers)
        self.protected_token_ids = tuple(as_token_ids(self.protected_token_ids, "protected_token_ids", True))
        check_choice("loop_action", self.loop_action, LOOP_ACTIONS)
        check_int("loop_window", self.loop_window, minimum=2, maximum=MAX_WINDOW)
        try:  # the loop rule: its own argument names, except window
            self.detector()
        except ValueError as error:
            raise ValueError(f"NoLoopConfig(loop_window={self.loop_window}): {error}") from None
        self.build([0], sequence_breakers=())  # every enabled component, now rather than at build time

    def build(
        self, tokenizer_or_eos_ids: Any, sequence_breakers: tuple | None = None, fused: bool = True
    ) -> NoLoopComponents:
        """Processor and stopping-criteria lists for ``generate(logits_processor=, stopping_criteria=)``.

        ``tokenizer_or_eos_ids``: a tokenizer (eos from ``eos_token_id``, special ids protected from DRY,
        string breakers encoded with it) or the eos id(s) (breakers must then be ids). Order: DRY,
        consistent truncation, loop eos or the loop stop's tracker, floor last. ``fused`` (default True):
        two or more processors come as one :class:`NoLoopLogitsProcessor` (same output bit for bit,
        one pass over the row maxima shared); False gives them as separate list entries.
        """
        check_bool("fused", fused)
        breakers = self.sequence_breakers if sequence_breakers is None else _check_breakers(sequence_breakers)
        eos, protected, breaker_ids = _resolve(tokenizer_or_eos_ids, breakers)
        protected = sorted({*protected, *eos, *self.protected_token_ids})
        procs: list = []
        if self.dry_multiplier > 0:
            procs.append(
                DRYLogitsProcessor(
                    self.dry_multiplier,
                    self.dry_base,
                    self.dry_allowed_length,
                    self.dry_window,
                    breaker_ids,
                    protected,
                )
            )
        if self.top_k is not None:
            procs.append(ConsistentTopKLogitsWarper(self.top_k, eos))
        if self.top_p is not None:
            procs.append(ConsistentTopPLogitsWarper(self.top_p, eos))
        if self.min_p is not None:
            procs.append(ConsistentMinPLogitsWarper(self.min_p, eos))
        loop_args = (self.min_pattern_size, self.max_pattern_size, self.min_count, self.loop_window)
        stops: list = []
        loop = None  # the loop component, whose prompt clock the floor shares
        if self.loop_action == "eos":
            loop = LoopEOSLogitsProcessor(eos, *loop_args, self.min_loop_tokens)
            procs.append(loop)
        elif self.loop_action == "stop":
            loop = LoopStoppingCriteria(*loop_args, self.min_loop_tokens, eos_token_id=eos)
            procs.append(loop.tracker)  # shows every step to the criterion: assisted decoding works
            stops.append(loop)
        if self.epsilon is not None:
            floor = SelfTerminatingLogitsProcessor(self.epsilon, eos, self.start)
            if loop is not None:  # one clock for the build: the fused processor compares the rows once a step
                floor._clock = loop._clock
            procs.append(floor)
        if fused and len(procs) > 1:
            procs = [NoLoopLogitsProcessor(procs)]
        return NoLoopComponents(LogitsProcessorList(procs), StoppingCriteriaList(stops))

    def detector(self) -> LoopDetector:
        """The loop rule of this config, e.g. for :func:`hfplug_noloop.metrics.loop_rate`."""
        return LoopDetector(
            self.min_pattern_size,
            self.max_pattern_size,
            self.min_count,
            self.loop_window,
            self.min_loop_tokens,
        )


def _check_breakers(value: Any) -> tuple[str | int, ...] | None:
    """``value`` (None, or an iterable of strings and token ids >= 0) as a tuple."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"sequence_breakers must be a tuple of strings or token ids, got {value!r}")
    return tuple(
        item if isinstance(item, str) else check_int(f"sequence_breakers[{index}]", item, minimum=0)
        for index, item in enumerate(value)
    )


def _resolve(tokenizer_or_eos_ids: Any, breakers: tuple) -> tuple[list[int], list[int], list[int]]:
    """(eos ids, protected ids, breaker ids) from a tokenizer or from eos ids."""
    if hasattr(tokenizer_or_eos_ids, "convert_tokens_to_ids"):
        tokenizer = tokenizer_or_eos_ids
        breakers = DEFAULT_BREAKERS if breakers is None else breakers
        eos = tokenizer.eos_token_id
        if eos is None:
            eos = tokenizer.sep_token_id  # BERT-style vocabularies end a text with [SEP]
        eos = as_token_ids(eos, "eos_token_id (the tokenizer has neither eos_token nor sep_token)")
        breaker_ids = []
        for breaker in breakers:
            if isinstance(breaker, int):
                breaker_ids.append(breaker)
            else:
                ids = tokenizer.encode(breaker, add_special_tokens=False)
                if ids and ids[-1] != tokenizer.unk_token_id:
                    breaker_ids.append(ids[-1])
        return eos, list(tokenizer.all_special_ids), breaker_ids
    eos = as_token_ids(tokenizer_or_eos_ids, "eos_token_id")
    breakers = () if breakers is None else breakers
    strings = [b for b in breakers if not isinstance(b, int)]
    if strings:
        raise TypeError(
            f"sequence_breakers {strings!r} are strings: pass a tokenizer to build(), or give breakers as token ids"
        )
    return eos, [], list(breakers)
