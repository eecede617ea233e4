"""Periodic feature redraw during training, identical on every rank without communication."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback

from hfplug.validation import check_int

from .configuration_favor import (
    LOADED,
    REDRAWS,
    attach_favor_state,
    get_favor_config,
    number_attention_layers,
    set_favor_config,
)


class FeatureRedrawCallback(TrainerCallback):
    """Redraw the FAVOR+ projections every ``every_n_steps`` optimizer steps.

    After step t the features are those of ``redraw_count = t // every_n_steps`` (stored in
    ``model.config.favor``): a pure function of the global step, so all ranks redraw the same features at the
    same step with no broadcast, and a resumed run continues with the right draw. Evaluation between redraws
    uses whatever draw is current; nothing changes outside training steps.

    Resume: at Trainer construction the callback gives the model its ``favor_state`` buffer (seed, redraw
    count; saved in every checkpoint). Resuming adopts the checkpoint's redraw count and then checks it
    against ``global_step // every_n_steps``: a different interval, or a different seed, raises
    ``ValueError`` with both values.

    Args:
        every_n_steps: redraw interval; default ``FavorConfig.redraw_interval`` of the model.
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None:
            check_int("every_n_steps", every_n_steps, minimum=1)
        self.every_n_steps = every_n_steps

    def _interval(self, model: Any) -> int:
        interval = self.every_n_steps or get_favor_config(model).redraw_interval
        if interval is None:
            raise ValueError(
                "FeatureRedrawCallback needs every_n_steps, or FavorConfig(redraw_interval=...) stored on the "
                "model with hfplug_favor.set_favor_config"
            )
        return interval

    def on_init_end(self, args, state, control, model=None, **kwargs):
        if model is not None:  # before Trainer(resume_from_checkpoint=...) loads the checkpoint's buffer
            setattr(model, REDRAWS, True)
            attach_favor_state(model)
            number_attention_layers(model)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None:
            raise ValueError("FeatureRedrawCallback needs the model (the Trainer passes it to callbacks)")
        implementation = getattr(model.config, "_attn_implementation", None)
        if implementation != "favor":
            raise ValueError(
                f"FeatureRedrawCallback: the model uses attn_implementation={implementation!r}, not 'favor'; load it "
                "with attn_implementation=hfplug.use_attention('favor') or call model.set_attn_implementation('favor')"
            )
        interval = self._interval(model)
        loaded = getattr(model, LOADED, None)  # the checkpoint's redraw count when resuming
        setattr(model, LOADED, None)
        if state.global_step and loaded is not None and loaded != state.global_step // interval:
            raise ValueError(
                f"the resumed checkpoint's FAVOR+ features are at redraw_count={loaded}, but this callback gives "
                f"global_step // every_n_steps = {state.global_step} // {interval} = {state.global_step // interval} "
                "(a different every_n_steps than the run that wrote the checkpoint?)"
            )
        self._sync(model, state.global_step)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if model is not None:
            self._sync(model, state.global_step)

    def _sync(self, model: Any, global_step: int) -> None:
        config = get_favor_config(model)
        count = global_step // self._interval(model)
        if count != config.redraw_count:
            set_favor_config(model, config.replace(redraw_count=count))
