"""``TheseusCallback``: drives the replacing rate of a ``theseus_wrap``-ed model from the Trainer's optimizer steps."""

from __future__ import annotations

import warnings
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from .modeling_theseus import TheseusController, check_trainer_model
from .schedulers import ReplacementScheduler

LOG_KEY = "theseus_replacing_rate"


class TheseusCallback(TrainerCallback, ExportableState):
    """Set ``p_t = scheduler.get_rate(t)`` and the gate draws for optimizer step ``t = state.global_step``.

    The step is read from ``TrainerState.global_step`` (completed optimizer steps), so all micro-batches of one
    accumulation window share ``t`` and its draws. Each log entry gets ``theseus_replacing_rate``, the rate of
    the last completed step.

    Resume: every checkpoint's ``trainer_state.json`` holds the scheduler, the step and the model's Theseus
    settings (seed, partition, gate, block path, distillation). The draws are a function of (seed, step,
    forward within the step) only, so a resumed run draws exactly what the uninterrupted run drew. At
    ``on_train_begin`` of a resumed run a scheduler or setting that differs from the checkpoint's raises
    ``ValueError`` naming both values; ``TrainingArguments(restore_callback_states_from_checkpoint=True)``
    instead rebuilds the callback (its scheduler) from the checkpoint.

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
        self.settings: dict[str, Any] | None = None
        self._controller: TheseusController | None = None

    def _advance(self, step: int) -> None:
        self.step, self.rate = step, self.scheduler.get_rate(step)
        self._controller.set_step(step, self.rate)

    def _check_resume(self, stored: Any) -> None:
        """Compare this run with the checkpoint's stored callback state(s); raise on any difference."""
        for entry in stored if isinstance(stored, list) else [stored]:
            ours = {"scheduler": self.scheduler.to_dict(), **self.settings}
            theirs = {"scheduler": entry.get("args", {}).get("scheduler")}
            saved = entry.get("attributes", {}).get("settings")
            if saved is None:
                warnings.warn(
                    "the checkpoint has no Theseus settings (written by an older hfplug-theseus): seed, "
                    "partition and gate cannot be checked against it",
                    stacklevel=2,
                )
            else:
                theirs.update(saved)
            changed = [
                f"{key}: the checkpoint has {theirs[key]!r}, this run has {ours.get(key)!r}"
                for key in theirs
                if theirs[key] != ours.get(key)
            ]
            if changed:
                raise ValueError(
                    "TheseusCallback: resuming from a checkpoint written with other Theseus settings would "
                    f"change the replacement gates or schedule; {'; '.join(changed)}. Wrap the model with the "
                    "checkpoint's settings and pass its scheduler (or set TrainingArguments("
                    "restore_callback_states_from_checkpoint=True) to take the checkpoint's scheduler)"
                )

    def _bind(self, model: Any) -> None:
        if model is None:
            raise ValueError("TheseusCallback needs the model: use it with transformers.Trainer")
        try:
            self._controller = check_trainer_model(model)
        except ValueError as exc:
            raise ValueError(f"TheseusCallback: {exc}") from exc
        self.settings = self._controller.settings()

    def on_init_end(self, args, state, control, model=None, **kwargs):
        self._bind(model)  # at Trainer construction: after PEFT wrapping, before TRL patches the forward

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._bind(model)
        # global_step > 0 only when the Trainer loaded a checkpoint's trainer_state.json (with its callbacks)
        stored = state.stateful_callbacks.get(type(self).__name__) if state.global_step > 0 else None
        if stored is not None:
            self._check_resume(stored)
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
            "attributes": {"step": self.step, "rate": self.rate, "settings": self.settings},
        }
