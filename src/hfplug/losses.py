"""Shared pieces for losses used as ``Trainer(compute_loss_func=...)``.

Normalisation: the Trainer passes ``num_items_in_batch``, the number of targets over all
micro-batches of one optimizer step (and over ranks with ``average_tokens_across_devices``) and does not
divide by the accumulation steps, so a loss returns ``sum / num_items_in_batch``; without it, the mean over
valid targets.

Loss finishers: a plugin that needs the loss inside its own computation (adversarial training runs extra
forward passes with the *same* loss function) attaches a finisher to the model outputs it returns with
:func:`attach_loss_finisher`; the next loss call in the same context consumes it. Every :class:`TrainerLoss`
hands itself to that finisher; a user's own loss function gets the same behaviour through :func:`trainer_loss`.
The finisher is held in a context variable, not on the outputs: ``DDP(find_unused_parameters=True)`` hands
the loss a rebuilt outputs object whose tensors are new ``_DDPSink`` outputs (torch 2.13), so an attribute on
either would be lost.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable
from typing import Any, Protocol

import torch

from .validation import check_float

LossFn = Callable[..., torch.Tensor]


class LossFinisher(Protocol):
    def __call__(
        self, loss_fn: LossFn, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any
    ) -> torch.Tensor: ...


# The finisher attached in this context and not yet consumed by a loss call.
_PENDING: contextvars.ContextVar[LossFinisher | None] = contextvars.ContextVar(
    "hfplug_loss_finisher", default=None
)


def attach_loss_finisher(outputs: Any, finisher: LossFinisher) -> None:
    """Ask the next loss call (on ``outputs``, or on the object a wrapper such as DDP rebuilt from them) to call
    ``finisher(loss_fn, outputs, labels, num_items_in_batch)``. ``outputs`` is left untouched."""
    _PENDING.set(finisher)


def pop_loss_finisher() -> LossFinisher | None:
    """Remove and return the pending finisher (None when there is none)."""
    finisher = _PENDING.get()
    _PENDING.set(None)
    return finisher


def call_loss(
    loss_fn: LossFn, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None
) -> torch.Tensor:
    """``loss_fn(outputs, labels, num_items_in_batch)``, routed through a finisher if one is attached."""
    finisher = pop_loss_finisher()
    if finisher is not None:
        return finisher(loss_fn, outputs, labels, num_items_in_batch)
    return loss_fn(outputs, labels, num_items_in_batch=num_items_in_batch)


def trainer_loss(loss_fn: LossFn) -> LossFn:
    """Wrap a user's ``compute_loss_func`` so plugins that attach loss finishers (adversarial training) work.

    hfplug's own losses (:class:`TrainerLoss`) need no wrapping.
    """

    @functools.wraps(loss_fn)
    def wrapped(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        return call_loss(loss_fn, outputs, labels, num_items_in_batch)

    return wrapped


def reduce_loss(
    per_item: torch.Tensor, valid: torch.Tensor | None = None, num_items_in_batch: Any = None
) -> torch.Tensor:
    """``sum(per_item[valid]) / num_items_in_batch``, or the mean over valid items when it is None.

    ``valid=None`` means every item counts. With no valid item the result is 0 and its gradient is defined
    (zero), never NaN: a count of 0 (every label ignored in the whole optimizer step) divides by 1.
    ``num_items_in_batch`` must be one finite number >= 0 (a Python number or a one-element tensor).
    """
    total = per_item.sum() if valid is None else torch.where(valid, per_item, 0.0).sum()
    if num_items_in_batch is None:
        count = torch.tensor(per_item.numel(), device=total.device) if valid is None else valid.sum()
    else:
        count = _item_count(num_items_in_batch).to(device=total.device, dtype=total.dtype)
    return total / count.clamp(min=1)


def check_num_items(num_items_in_batch: Any) -> None:
    """Check the Trainer's ``num_items_in_batch`` where a loss receives it: None, or one count (a Python
    number or a one-element tensor, as the Trainer passes it): finite, and 0 (no target in the optimizer step)
    or ``>= 1``.

    TypeError for a non-number (bool, str, a bool or complex tensor), ValueError for several numbers or a value
    out of range.
    """
    if num_items_in_batch is not None and 0 < _count(num_items_in_batch) < 1:
        raise ValueError(f"num_items_in_batch must be 0 or a count >= 1, got {num_items_in_batch!r}")


def _count(num_items_in_batch: Any) -> float:
    """One finite number >= 0, from a Python number or a one-element tensor (a divisor a loss derived from the
    Trainer's count, such as entries / classes, may lie below 1)."""
    value = num_items_in_batch
    if isinstance(value, torch.Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"num_items_in_batch must be a count (a number >= 0), got a {value.dtype} tensor")
        if value.numel() != 1:
            raise ValueError(
                f"num_items_in_batch must be one number (a one-element tensor), got shape {tuple(value.shape)}"
            )
        value = value.item()
    return check_float("num_items_in_batch", value, minimum=0.0)


def _item_count(num_items_in_batch: Any) -> torch.Tensor:
    _count(num_items_in_batch)
    if isinstance(num_items_in_batch, torch.Tensor):
        return num_items_in_batch.reshape(())
    return torch.tensor(float(num_items_in_batch))


class TrainerLoss(torch.nn.Module):
    """Base class of hfplug losses: ``Trainer(compute_loss_func=loss)`` and ``loss(logits, labels)``.

    Subclasses implement :meth:`loss` on logits. Called with model outputs, the logits are taken from
    ``outputs.logits`` and attached loss finishers are honoured. Buffers (priors, class weights) follow the
    module's device; call ``.to(device)`` or let :meth:`loss` move them to the logits' device.
    """

    def loss(
        self, logits: torch.Tensor, labels: torch.Tensor, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        raise NotImplementedError

    def _from_outputs(
        self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None
    ) -> torch.Tensor:
        logits = outputs if isinstance(outputs, torch.Tensor) else outputs["logits"]
        return self.loss(logits, labels, num_items_in_batch)

    def forward(self, outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> torch.Tensor:
        if isinstance(outputs, torch.Tensor):
            return self.loss(outputs, labels, num_items_in_batch)
        return call_loss(self._from_outputs, outputs, labels, num_items_in_batch)
