"""``TheseusCallback``: drives the replacing rate of a ``theseus_wrap``-ed model from the Trainer's optimizer steps."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .modeling_theseus import TheseusController, get_controller
from .schedulers import ReplacementScheduler

LOG_KEY = "theseus_replacing_rate"


class TheseusCallback(TrainerCallback, ExportableState):
    """Set ``p_t = scheduler.get_rate(t)`` and the gate draws for optimizer step ``t = state.global_step``.

    The step is read from ``TrainerState.global_step`` (completed optimizer steps), so all micro-batches of one
    accumulation window share ``t`` and its draws, and a run resumed from a checkpoint continues the schedule
    exactly. Each log entry gets ``theseus_replacing_rate``, the rate of the last completed step. The callback state (the
    scheduler and the last step) is written to each checkpoint's ``trainer_state.json``; with
    ``TrainingArguments(restore_callback_states_from_checkpoint=True)`` the Trainer rebuilds the callback from it.

    Args:
        scheduler: a :class:`ReplacementScheduler` or its ``to_dict()`` form, e.g.
            ``{"type": "linear", "k": 0.0006, "b": 0.3}``.
    """

    def __init__(self, scheduler: ReplacementScheduler | dict[str, Any]) -> None:
        if isinstance(scheduler, dict):
            scheduler = ReplacementScheduler.from_dict(scheduler)
        if not isinstance(scheduler, ReplacementScheduler):
            raise TypeError(
                "scheduler must be a ConstantReplacementScheduler, a LinearReplacementScheduler or a dict "
                f"spec, got {type(scheduler).__name__}"
            )
        self.scheduler = scheduler
        self.step: int | None = None
        self.rate: float | None = None
        self._controller: TheseusController | None = None

    def _advance(self, step: int) -> None:
        self.step, self.rate = step, self.scheduler.get_rate(step)
        self._controller.set_step(step, self.rate)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("TheseusCallback needs the model: use it with transformers.Trainer")
        self._controller = get_controller(model)
        self._advance(state.global_step)

    def on_step_end(self, args, state, control, **kwargs):
        self._advance(state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._controller is None or logs is None:
            return
        rate = self.scheduler.get_rate(max(state.global_step - 1, 0))  # the rate of the step just finished
        logs[LOG_KEY] = rate
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1][LOG_KEY] = rate

    def state(self) -> dict[str, Any]:
        return {
            "args": {"scheduler": self.scheduler.to_dict()},
            "attributes": {"step": self.step, "rate": self.rate},
        }
