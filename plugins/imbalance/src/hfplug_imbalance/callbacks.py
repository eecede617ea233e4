"""Deferred re-weighting (DRW, Cao et al. 2019) for :class:`LDAMLoss` as a ``TrainerCallback``."""

from __future__ import annotations

from transformers import TrainerCallback

from hfplug.validation import check_float

from .losses import LDAMLoss


class LDAMDRWCallback(TrainerCallback):
    """Switch ``loss.reweight`` on from ``start_epoch`` (epochs, may be fractional) or from
    ``start_fraction`` of ``max_steps`` (default 0.8: the paper re-weights from epoch 160 of 200).

    The state is recomputed before every optimizer step, so resuming from a checkpoint is consistent.
    ``Trainer(compute_loss_func=loss, callbacks=[LDAMDRWCallback(loss, start_epoch=3)])``.
    """

    def __init__(
        self, loss: LDAMLoss, *, start_epoch: float | None = None, start_fraction: float | None = None
    ):
        if not isinstance(loss, LDAMLoss):
            raise TypeError(
                f"loss must be an LDAMLoss (the loss passed as compute_loss_func), got {type(loss).__name__}"
            )
        if start_epoch is not None and start_fraction is not None:
            raise ValueError("pass at most one of start_epoch and start_fraction")
        if start_epoch is None and start_fraction is None:
            start_fraction = 0.8
        if start_epoch is not None:
            start_epoch = check_float("start_epoch", start_epoch, minimum=0.0)
        if start_fraction is not None:
            start_fraction = check_float("start_fraction", start_fraction, minimum=0.0, maximum=1.0)
        self.loss = loss
        self.start_epoch = start_epoch
        self.start_fraction = start_fraction

    def _update(self, state) -> None:
        if self.start_epoch is not None:
            self.loss.reweight = (state.epoch or 0.0) >= self.start_epoch
        else:
            self.loss.reweight = state.global_step >= self.start_fraction * state.max_steps

    def on_train_begin(self, args, state, control, **kwargs):
        self._update(state)

    def on_step_begin(self, args, state, control, **kwargs):
        self._update(state)
