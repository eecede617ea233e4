"""A timing wrapper for logits processors and stopping criteria: the cost of each call inside ``generate``.

``timed(component)`` returns an object that calls ``component`` with the same arguments, returns what it
returns and records each call's CPU time (``time.thread_time_ns``: this thread only, so time spent waiting
for a core on a busy machine is left out) and wall time (``time.perf_counter_ns``). It is a
``LogitsProcessor`` (or a ``StoppingCriteria`` when the component is one) whose ``__call__`` shows the
component's own signature, so ``LogitsProcessorList`` passes it the same arguments. Its type is not the
component's: ``generate`` does not take a timed processor for one it builds itself from its flags.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

from transformers import LogitsProcessor, StoppingCriteria


class _Timed:
    """Base of the timed wrappers; the subclass made for each component type supplies ``__call__``."""

    def __init__(self, component: Any) -> None:
        self.component = component
        self.cpu_ns: list[int] = []  # one entry per call, in call order
        self.wall_ns: list[int] = []

    def clear(self) -> None:
        self.cpu_ns.clear()
        self.wall_ns.clear()

    def _timed_call(self, *args: Any, **kwargs: Any) -> Any:
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        out = self.component(*args, **kwargs)
        cpu, wall = time.thread_time_ns() - cpu, time.perf_counter_ns() - wall
        self.cpu_ns.append(cpu)
        self.wall_ns.append(wall)
        return out


_CLASSES: dict[type, type] = {}


def _wrapper_class(cls: type) -> type:
    """A ``_Timed`` subclass whose ``__call__`` carries the signature of ``cls.__call__`` (cached)."""
    if cls not in _CLASSES:

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return self._timed_call(*args, **kwargs)

        __call__.__signature__ = inspect.signature(cls.__call__)  # unbound: self first, as a method's
        base = StoppingCriteria if issubclass(cls, StoppingCriteria) else LogitsProcessor
        _CLASSES[cls] = type(f"Timed{cls.__name__}", (_Timed, base), {"__call__": __call__})
    return _CLASSES[cls]


def timed(component: Any) -> _Timed:
    """``component`` (a logits processor or stopping criterion object) wrapped so that every call's CPU and
    wall time land in ``.cpu_ns`` / ``.wall_ns``."""
    return _wrapper_class(type(component))(component)
