"""Replacement-rate schedules of BERT-of-Theseus, as functions of the optimizer step.

The replacing rate ``p`` is the probability that a module runs its successor block instead of its group of
predecessor blocks. ``t`` counts completed optimizer steps (``TrainerState.global_step``), never
micro-batches, so gradient accumulation does not speed the schedule up.

- constant: ``p_t = rate`` while ``t < replacing_steps``, then ``1.0`` (successor fine-tuning).
- linear (curriculum): ``p_t = min(1, k * t + b)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from hfplug.validation import check_choice, check_float, check_int


def check_rate(name: str, value: Any) -> float:
    """A replacing rate: ``check_float`` in (0, 1] (TypeError / ValueError naming ``name`` otherwise)."""
    return check_float(name, value, minimum=0.0, maximum=1.0, min_open=True)


class ReplacementScheduler(ABC):
    """Base class: ``get_rate(step)`` gives the replacing rate for optimizer step ``step`` (0-based)."""

    kind: str

    def get_rate(self, step: int) -> float:
        """The replacing rate of optimizer step ``step`` (an int >= 0)."""
        return self._rate(check_int("step", step, minimum=0))

    @abstractmethod
    def _rate(self, step: int) -> float: ...

    @abstractmethod
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable description, the inverse of :meth:`from_dict`."""

    @staticmethod
    def from_dict(spec: dict[str, Any]) -> ReplacementScheduler:
        """Build a scheduler from ``{"type": "constant" | "linear", **arguments}``."""
        if not isinstance(spec, dict):
            raise TypeError(
                f"scheduler spec must be a dict with 'type' in {sorted(_SCHEDULERS)}, got {spec!r}"
            )
        kind = check_choice("scheduler spec 'type'", spec.get("type"), sorted(_SCHEDULERS))
        arguments = {key: value for key, value in spec.items() if key != "type"}
        return _SCHEDULERS[kind](**arguments)

    def __repr__(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items() if k != "type")
        return f"{type(self).__name__}({arguments})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ReplacementScheduler) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.to_dict().items())))


class ConstantReplacementScheduler(ReplacementScheduler):
    """``p_t = rate`` for ``t < replacing_steps`` and ``1.0`` afterwards (never, when ``replacing_steps`` is None).

    Defaults follow the post (``rate=0.5``, no switch); the official code uses ``rate=0.5`` and switches to
    successor-only training after ``replacing_steps=2500``.
    """

    kind = "constant"

    def __init__(self, rate: float = 0.5, replacing_steps: int | None = None) -> None:
        self.rate = check_rate("rate", rate)
        if replacing_steps is not None:
            replacing_steps = check_int("replacing_steps", replacing_steps, minimum=0)
        self.replacing_steps = replacing_steps

    def _rate(self, step: int) -> float:
        if self.replacing_steps is not None and step >= self.replacing_steps:
            return 1.0
        return self.rate

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "rate": self.rate, "replacing_steps": self.replacing_steps}


class LinearReplacementScheduler(ReplacementScheduler):
    """``p_t = min(1, k * t + b)``: the paper's curriculum (official GLUE setting ``k=0.0006, b=0.3``)."""

    kind = "linear"

    def __init__(self, k: float, b: float) -> None:
        self.k = check_float("k", k, minimum=0.0)
        self.b = check_rate("b", b)

    def _rate(self, step: int) -> float:
        return min(1.0, self.k * step + self.b)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "k": self.k, "b": self.b}


_SCHEDULERS: dict[str, type[ReplacementScheduler]] = {
    ConstantReplacementScheduler.kind: ConstantReplacementScheduler,
    LinearReplacementScheduler.kind: LinearReplacementScheduler,
}
