"""Adversarial training on token-embedding outputs, as ``transformers.TrainerCallback`` subclasses.

Every method perturbs the *output* of ``model.get_input_embeddings()`` (never the weights) with a direction
taken from the current micro-batch's own loss by ``torch.autograd.grad``, and hands the Trainer one loss to
back-propagate. Use ``Trainer(callbacks=[FGM(epsilon=0.5)])``; with ``Trainer(compute_loss_func=fn)`` wrap
a plain function as ``hfplug.losses.trainer_loss(fn)`` (hfplug losses need nothing).

With ``e`` the embedding output, ``L`` the training loss and ``g = dL/de``:

- FGM:  ``delta = epsilon * g / ||g||``;  FGSM: ``delta = epsilon * sign(g)``
- PGD:  ``delta <- Proj_epsilon(delta + alpha * g(delta) / ||g(delta)||)``, ``steps`` times
- FreeLB: mean of ``L(e + delta_t)`` over the ascent steps (parameter gradients accumulated, as the paper)
- GradientPenalty: ``L + 0.5 * epsilon * sum ||dL/de||^2`` (double backward)
- SMART: ``L + weight * symKL(f(e), f(e + delta))`` with ``delta`` from one ascent step on the KL

Failure semantics: an optimizer step in which any clean loss, perturbation direction, training loss or (after
clipping) any gradient is non-finite, on any rank, is skipped as a whole (no parameter, optimizer-state,
learning-rate-schedule or random-start change), counted as ``adv_skipped_steps`` and named in a warning. Bad
constructor arguments raise TypeError/ValueError naming the argument (``hfplug.validation``).

Resume: the settings and the skip counter are saved in every checkpoint's ``trainer_state.json``; seeded random
starts are a function of (seed, rank, trained step), so a resumed run draws what the uninterrupted run drew. A
checkpoint written with other settings or by another method is refused at train begin.
"""

from __future__ import annotations

import inspect
import logging
import math
from typing import Any

import torch
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import has_length

from hfplug.validation import check_bool, check_choice, check_float, check_int

from . import _perturbation as P
from ._forward import (
    AccumulationWindows,
    ForwardWrapper,
    GradientTerm,
    MicroBatch,
    any_rank,
    sum_over_ranks,
    uses_deepspeed,
    weights_sharded,
)

logger = logging.getLogger(__name__)

OBJECTIVES = ("adversarial", "sum")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes up to 2**64 - 1


def _finite_gradients(params: list[torch.Tensor]) -> bool:
    """Whether every gradient of ``params`` is finite: the L-infinity norm of all of them (no overflow, NaN
    propagates), on the local shard of DTensor gradients (FSDP2)."""
    grads = [p.grad for p in params if p.grad is not None]
    grads = [g.to_local() if hasattr(g, "to_local") else g for g in grads]
    if not grads:
        return True
    return bool(torch.isfinite(torch.nn.utils.get_total_norm(grads, norm_type=math.inf)))


def _method_names() -> set[str]:
    """Class names of every loaded :class:`AdversarialCallback` subclass (the keys of their checkpoint states)."""
    names, todo = set(), [AdversarialCallback]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def _call(name: str, settings: dict[str, Any]) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in settings.items())})"


class AdversarialCallback(TrainerCallback, ExportableState):
    """Shared machinery: installs the forward wrapper at train begin, removes it at train end, skips non-finite
    optimizer steps, logs, and saves its state with Trainer checkpoints.

    A step is skipped when any micro-batch's clean loss, perturbation direction or training loss, or any gradient
    after clipping, is non-finite on any rank (the flag is all-reduced, so ranks skip the same step): every
    gradient is set to ``None`` before ``optimizer.step()`` (torch optimizers then change neither the parameters
    nor their state, weight decay and step counts included), and the learning-rate scheduler's state and the
    param groups' ``lr`` are restored after the Trainer's ``lr_scheduler.step()``; the next step draws the random
    starts the skipped one drew. So the run continues as if the step's batch had not been drawn, except that
    ``global_step`` counts it.

    Logged through ``on_log`` with the Trainer's ``loss``, on every rank: ``adv_loss``, the adversarial loss (or
    regulariser) in the units of ``loss`` and averaged the same way: each micro-batch's value as the Trainer's
    ``training_step`` returns its loss (``world_size * scale`` times it, see :class:`MicroBatch`), summed over the
    optimizer step's micro-batches, then averaged over the trained steps since the last log and over the ranks
    (one all-reduce, which every rank reaches as it reaches the Trainer's own gather of ``loss``); so with
    ``objective="adversarial"`` it equals ``loss``. ``adv_delta_norm``: the mean, over the micro-batches of
    those steps on all ranks, of the global L2 norm of a micro-batch's perturbation. ``adv_skipped_steps``:
    optimizer steps skipped so far; each skip also logs a warning with the step number and what was non-finite.

    ``seed`` (None or an integer in [0, 2**63 - 1]) makes random starts reproducible: at the start of each optimizer
    step one CPU generator per process is seeded ``(seed + rank + world_size * t) mod 2**64``, with ``t`` the
    number of optimizer steps trained so far (``global_step - adv_skipped_steps``); without a seed, random starts
    come from torch's global generator (which the Trainer saves per rank in its checkpoints).

    Checkpoints: :meth:`state` (``TrainerState.stateful_callbacks``) holds the constructor arguments and the skip
    counter. At train begin of a resumed run (``global_step > 0``) the counter is read back, and a checkpoint
    written by another method or with other arguments raises ``ValueError`` naming both values
    (``TrainingArguments(restore_callback_states_from_checkpoint=True)`` instead rebuilds the callback from the
    checkpoint). Subclasses keep each constructor argument in an attribute of the same name.
    """

    def __init__(self, epsilon: float, *, seed: int | None = None) -> None:
        self.epsilon = check_float("epsilon", epsilon, minimum=0.0, min_open=True)
        self.seed = None if seed is None else check_int("seed", seed, minimum=0, maximum=MAX_SEED)
        self.skipped_steps = 0
        self._wrapper: ForwardWrapper | None = None
        self._windows: AccumulationWindows | None = None
        self._generator: torch.Generator | None = None
        self._rank, self._world = 0, 1
        self._deepspeed = False
        self._adv_losses: list[float] = []  # per trained optimizer step since the last log
        self._delta_norms: list[float] = []  # per micro-batch of those steps
        self._reset_step()

    def _reset_step(self) -> None:
        self._problems: list[tuple[str, torch.Tensor | bool]] = []  # (what, finite?) of this optimizer step
        self._step_records: list[tuple[float, float]] = []
        self._schedule_to_restore: tuple[dict, list[float]] | None = None

    # ---- checkpoints ----------------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The constructor arguments, by name (as saved in checkpoints)."""
        names = [
            name
            for name, p in inspect.signature(type(self).__init__).parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        return {name: getattr(self, name) for name in names}

    def state(self) -> dict[str, Any]:
        """``transformers.trainer_callback.ExportableState``: constructor arguments and the skip counter."""
        return {"args": self.settings(), "attributes": {"skipped_steps": self.skipped_steps}}

    def _resumed_skips(self, stored: dict[str, Any]) -> int:
        """The skip counter of a checkpoint's ``stateful_callbacks``; ValueError when it was written by another
        method or with other arguments."""
        ours, settings = type(self).__name__, self.settings()
        methods = {name: entry for name, entry in stored.items() if name in _method_names()}
        if ours not in methods:
            if methods:
                name, entry = next(iter(methods.items()))
                entry = entry[-1] if isinstance(entry, list) else entry
                raise ValueError(
                    f"{ours}: the checkpoint was written by {_call(name, entry.get('args', {}))}, this run uses "
                    f"{_call(ours, settings)}; resume with the checkpoint's method and arguments"
                )
            logger.warning(
                "%s: the checkpoint has no %s state (written without adversarial training or by an older "
                "hfplug-adversarial); its settings cannot be checked and adv_skipped_steps starts at 0",
                ours,
                ours,
            )
            return 0
        entry = methods[ours]
        entry = entry[-1] if isinstance(entry, list) else entry  # the Trainer appends when a name repeats
        saved = entry.get("args", {})
        changed = [
            f"{key}: the checkpoint has {saved.get(key)!r}, this run has {settings.get(key)!r}"
            for key in sorted(set(saved) | set(settings))
            if saved.get(key) != settings.get(key)
        ]
        if changed:
            raise ValueError(
                f"{ours}: resuming from a checkpoint written with other arguments would change the adversarial "
                f"training; {'; '.join(changed)}. Pass the checkpoint's arguments, or set TrainingArguments("
                "restore_callback_states_from_checkpoint=True) to take them from the checkpoint"
            )
        return int(entry.get("attributes", {}).get("skipped_steps", 0))

    # ---- Trainer events -------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self._remove()
        if model is None:
            raise ValueError(f"{type(self).__name__} needs the model at train begin")
        attention = getattr(getattr(model, "config", None), "_attn_implementation", None)
        if (
            self.double_backward
            and getattr(model, "is_gradient_checkpointing", False)
            and attention != "eager"
        ):
            raise ValueError(
                f"{type(self).__name__} differentiates twice through the attention, under the math SDPA kernel; "
                "gradient checkpointing recomputes the forward in the backward with the default kernel (torch's "
                f"CheckpointError). With attn_implementation={attention!r}: set gradient_checkpointing=False "
                "(TRL's SFTConfig defaults it to True) or load the model with attn_implementation='eager'"
            )
        # global_step > 0 only when the Trainer loaded a checkpoint's trainer_state.json (with its callbacks)
        self.skipped_steps = self._resumed_skips(state.stateful_callbacks) if state.global_step > 0 else 0
        # the Trainer saves states under the names it loaded: a checkpoint written without this callback needs one
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())
        self._wrapper = ForwardWrapper(
            model,
            self._train_loss,
            args,
            double_backward=self.double_backward,
            retraverses_graphs=self.retraverses_graphs,
        )
        self._wrapper.initial_delta = self._initial_delta
        loader = kwargs.get("train_dataloader")  # its length sets the Trainer's last, shorter GA window
        self._windows = AccumulationWindows(self._wrapper.window, len(loader) if has_length(loader) else None)
        self._windows.begin_train(state.global_step, not getattr(args, "ignore_data_skip", False))
        self._deepspeed = uses_deepspeed(args)
        self._rank = int(getattr(args, "process_index", 0))
        self._world = max(int(getattr(args, "world_size", 1)), 1)
        self._generator = None if self.seed is None else torch.Generator()
        self._adv_losses, self._delta_norms = [], []
        self._reset_step()

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self._windows is not None:
            self._windows.begin_epoch()

    def on_step_begin(self, args, state, control, **kwargs):
        self._reset_step()
        if self._wrapper is not None:
            self._wrapper.window = self._windows.next_window()
        if self._generator is not None:
            trained = state.global_step - self.skipped_steps
            self._generator.manual_seed((self.seed + self._rank + self._world * trained) % 2**64)

    def on_substep_end(self, args, state, control, **kwargs):
        if self._wrapper is not None:
            self._wrapper.check_finisher_consumed()

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if self._wrapper is not None:
            self._wrapper.check_finisher_consumed()
        params = [p for group in optimizer.param_groups for p in group["params"]]
        problems = sorted({what for what, finite in self._problems if not bool(finite)})
        if (
            self._deepspeed
        ):  # the engine has stepped (or skipped, on a non-finite gradient norm) in the backward
            if optimizer.step_was_skipped and not problems:
                problems.append("gradient")
        elif not _finite_gradients(params):
            problems.append("gradient")
        if not any_rank(bool(problems), args.device):
            self._adv_losses.append(sum(adv_loss for adv_loss, _ in self._step_records))
            self._delta_norms.extend(delta_norm for _, delta_norm in self._step_records)
            return
        for p in params:
            p.grad = None  # optimizer.step() leaves parameters without a gradient untouched
        if lr_scheduler is not None:
            self._schedule_to_restore = (
                lr_scheduler.state_dict(),
                [group["lr"] for group in optimizer.param_groups],
            )
        self.skipped_steps += 1
        logger.warning(
            "%s skipped optimizer step %d: non-finite %s; parameters, optimizer state and learning-rate "
            "schedule are unchanged (%d step(s) skipped so far)",
            type(self).__name__,
            state.global_step + 1,
            ", ".join(problems) if problems else "values on another rank",
            self.skipped_steps,
        )

    def on_step_end(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        if self._schedule_to_restore is not None:
            scheduler_state, lrs = self._schedule_to_restore
            lr_scheduler.load_state_dict(scheduler_state)
            for group, lr in zip(optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr
            self._schedule_to_restore = None

    def on_train_end(self, args, state, control, **kwargs):
        self._remove()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:
            return
        extra: dict[str, float] = {"adv_skipped_steps": self.skipped_steps}
        # every rank logs "loss" at the same steps (after the Trainer's own all-gather of it)
        adv_sum, steps, norm_sum, batches = sum_over_ranks(
            [sum(self._adv_losses), len(self._adv_losses), sum(self._delta_norms), len(self._delta_norms)],
            args.device,
        )
        if steps:
            extra["adv_loss"] = adv_sum / steps
        if batches:
            extra["adv_delta_norm"] = norm_sum / batches
        logs.update(extra)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(extra)
        self._adv_losses, self._delta_norms = [], []

    # ---- method interface -------------------------------------------------------------------------------
    double_backward = False  # True when the loss differentiates through dL/de (gradient penalty)

    @property
    def retraverses_graphs(self) -> bool:
        """Whether the Trainer's backward re-enters a graph that ``torch.autograd.grad`` already went through in
        the forward (under ZeRO-3 the parameters are then held gathered through the micro-batch, see
        ``PartitionedHold``): the double backward, FreeLB's kept graphs, ``objective="sum"``."""
        return self.double_backward or getattr(self, "objective", None) == "sum"

    def _adversarial(self, batch: MicroBatch) -> torch.Tensor:
        """The loss to train on for this micro-batch (calls :meth:`_record`, or :meth:`_non_finite` when the
        perturbation cannot be built)."""
        raise NotImplementedError

    def _train_loss(self, batch: MicroBatch) -> torch.Tensor:
        """:meth:`_adversarial`, noting whether the clean and the returned loss are finite (read once per step).

        Under DeepSpeed the engine steps inside the Trainer's backward, before any callback: a micro-batch with a
        problem returns ``loss * NaN``, so every gradient it reaches is NaN and ZeRO's own check (a non-finite
        global gradient norm, all-reduced over ranks, fp32/bf16/fp16 alike) skips the step on every rank."""
        first = len(self._problems)
        loss = self._adversarial(batch)
        self._problems.append(("clean loss", torch.isfinite(batch.loss.detach())))
        self._problems.append(("training loss", torch.isfinite(loss.detach())))
        if self._deepspeed and not all(bool(finite) for _, finite in self._problems[first:]):
            return loss * math.nan
        return loss

    def _initial_delta(
        self, output: torch.Tensor, mask: torch.Tensor | None, documents: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Perturbation of the first pass (None: the first pass is clean)."""
        return None

    # ---- helpers ----------------------------------------------------------------------------------------
    def _record(self, batch: MicroBatch, adv_loss: torch.Tensor, deltas: list[torch.Tensor]) -> None:
        """Log values of this micro-batch, kept only if its optimizer step is not skipped: ``adv_loss`` (in the
        units of ``batch.loss``) as the Trainer's ``training_step`` reports a loss, ``world_size * batch.scale``
        times it, and the global L2 norm of ``deltas``."""
        reported = float(adv_loss.detach()) * batch.scale * self._world
        self._step_records.append((reported, P.total_norm(deltas)))

    def _non_finite(self, what: str, loss: torch.Tensor) -> torch.Tensor:
        """Mark this optimizer step for skipping and return ``loss`` (its gradients will be discarded)."""
        self._problems.append((what, False))
        return loss

    def _random(self, like: torch.Tensor, normal: bool = False) -> torch.Tensor:
        draw = torch.randn if normal else torch.rand
        if self._generator is not None:
            return draw(like.shape, generator=self._generator).to(like.device)
        return draw(like.shape, device=like.device)

    def _remove(self) -> None:
        if self._wrapper is not None:
            self._wrapper.remove()
            self._wrapper = None

    @staticmethod
    def _grad(loss: torch.Tensor, embeds: list[torch.Tensor], *, retain: bool, create: bool = False):
        grads = torch.autograd.grad(
            loss, embeds, retain_graph=retain or create, create_graph=create, materialize_grads=True
        )  # materialize: an embedding call that does not reach the loss gets a zero gradient
        return list(grads)

    @staticmethod
    def _mask_like(mask: torch.Tensor | None, output: torch.Tensor) -> torch.Tensor | None:
        if mask is None or mask.shape != output.shape[:2]:
            return None
        return mask.unsqueeze(-1).to(torch.float32)

    @classmethod
    def _weights(cls, mask: torch.Tensor | None, output: torch.Tensor) -> torch.Tensor | float:
        """1 on non-padding tokens and 0 on padding, for random starts (1.0 when there is no mask)."""
        weights = cls._mask_like(mask, output)
        return 1.0 if weights is None else weights


class _OneShot(AdversarialCallback):
    """FGM and FGSM: one gradient at the clean point, one perturbed pass."""

    def __init__(self, epsilon: float, objective: str, seed: int | None) -> None:
        super().__init__(epsilon, seed=seed)
        self.objective = check_choice("objective", objective, OBJECTIVES)

    def _direction(self, grads: list[torch.Tensor], batch: MicroBatch) -> tuple[list[torch.Tensor], bool]:
        raise NotImplementedError

    def _adversarial(self, batch: MicroBatch) -> torch.Tensor:
        keep_clean = self.objective == "sum"
        grads = self._grad(batch.loss, batch.embeds, retain=keep_clean)
        direction, finite = self._direction(grads, batch)
        if not finite:
            return self._non_finite(
                "perturbation direction", batch.loss if keep_clean else batch.forward(None)[0]
            )
        deltas = [self.epsilon * d for d in direction]
        adv_loss = batch.forward(deltas)[0]
        self._record(batch, adv_loss, deltas)
        return batch.loss + adv_loss if keep_clean else adv_loss


class FGM(_OneShot):
    """Fast gradient method (Miyato et al. 2017; kexue.fm/archives/7234): ``delta = epsilon * g / (||g|| + 1e-8)``.

    Args:
        epsilon: perturbation radius (default 1.0; the post's experiment used 0.5).
        objective: ``"adversarial"`` trains on ``L(e + delta)`` only (the post, default); ``"sum"`` on
            ``L(e) + L(e + delta)`` (the common PyTorch recipe).
        norm: ``"global"`` one L2 norm over the micro-batch (the post, default) or ``"per_example"``.
        share_by_token: one perturbation per token id, from the gradient summed over its occurrences (the
            gradient of the embedding matrix): the post's matrix perturbation, without editing weights.
            Needs ``norm="global"``.
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        objective: str = "adversarial",
        norm: str = "global",
        share_by_token: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(epsilon, objective, seed)
        self.norm = check_choice("norm", norm, ("global", "per_example"))
        if check_bool("share_by_token", share_by_token) and norm != "global":
            raise ValueError(
                "share_by_token=True perturbs the embedding matrix as a whole: it needs norm='global'"
            )
        self.share_by_token = share_by_token

    def _direction(self, grads, batch):
        if self.share_by_token:
            return P.share_by_token(grads, batch.ids)
        return P.normalize(grads, self.norm, batch.documents)


class FGSM(_OneShot):
    """Fast gradient sign method (Goodfellow et al. 2015): ``delta = epsilon * sign(g)``, an L-infinity step.

    ``epsilon`` is per element (default 0.01); ``objective`` as in :class:`FGM`.
    """

    def __init__(
        self, epsilon: float = 0.01, objective: str = "adversarial", seed: int | None = None
    ) -> None:
        super().__init__(epsilon, objective, seed)

    def _direction(self, grads, batch):
        return [g.float().sign() for g in grads], P.all_finite(grads)


class PGD(AdversarialCallback):
    """Projected gradient descent (Madry et al. 2018) on the embedding output.

    ``delta_0 = 0`` (or uniform in ``[-epsilon, epsilon]`` projected to the ball with ``random_start``), then
    ``steps`` times ``delta <- Proj(delta + alpha * g(delta) / ||g(delta)||)`` onto ``||delta|| <= epsilon``;
    trains on ``L(e + delta_K)`` (``objective="adversarial"``, default) or ``L(e) + L(e + delta_K)``
    (``"sum"``, the common recipe). Defaults: epsilon 1.0, alpha 0.3, steps 3 (the snippet family's).
    """

    def __init__(
        self,
        epsilon: float = 1.0,
        alpha: float = 0.3,
        steps: int = 3,
        random_start: bool = False,
        objective: str = "adversarial",
        norm: str = "global",
        seed: int | None = None,
    ) -> None:
        super().__init__(epsilon, seed=seed)
        self.alpha = check_float("alpha", alpha, minimum=0.0, min_open=True)
        self.steps = check_int("steps", steps, minimum=1)
        self.random_start = check_bool("random_start", random_start)
        self.objective = check_choice("objective", objective, OBJECTIVES)
        self.norm = check_choice("norm", norm, ("global", "per_example"))

    def _adversarial(self, batch: MicroBatch) -> torch.Tensor:
        keep_clean = self.objective == "sum"
        if self.random_start:
            deltas = [
                (2 * self._random(e) - 1) * self.epsilon * self._weights(batch.mask, e) for e in batch.embeds
            ]
            deltas = P.project(deltas, self.epsilon, self.norm, batch.documents)
            loss, _, embeds = batch.forward(deltas)
            grads = self._grad(loss, embeds, retain=False)
        else:
            deltas = [torch.zeros_like(e, dtype=torch.float32) for e in batch.embeds]
            grads = self._grad(batch.loss, batch.embeds, retain=keep_clean)
        for step in range(self.steps):
            moved, finite = P.ascend(deltas, grads, self.alpha, self.epsilon, self.norm, batch.documents)
            if not finite:
                return self._non_finite(
                    "perturbation direction", batch.loss if keep_clean else batch.forward(None)[0]
                )
            deltas = moved
            if step < self.steps - 1:
                loss, _, embeds = batch.forward(deltas)
                grads = self._grad(loss, embeds, retain=False)
        adv_loss = batch.forward(deltas)[0]
        self._record(batch, adv_loss, deltas)
        return batch.loss + adv_loss if keep_clean else adv_loss


class FreeLB(AdversarialCallback):
    """FreeLB (Zhu et al. 2020): trains on the mean of ``L(e + delta_t)`` over ``steps`` ascent steps.

    ``delta_0 = init_magnitude * U(-1, 1) / sqrt(n_tokens * hidden)`` per example on non-padding tokens (the
    official code; ``init_magnitude`` defaults to ``epsilon``, 0 starts at the clean point), then
    ``delta <- Proj(delta + alpha * g / ||g||)`` with per-example norms by default. The parameter gradients of
    all ``steps`` passes are accumulated, as in the paper: each ascent pass's backward gives ``g`` and its
    parameter gradients at once (one backward per pass, as a hand-written loop), and the sum reaches the
    Trainer's backward of the last pass as a gradient term. Under FSDP or DeepSpeed (partitioned parameters)
    the graphs of all passes are kept instead and the Trainer back-propagates their mean (``steps - 1`` extra input
    backwards). Defaults: epsilon 1.0, alpha 0.1, steps 3.
    """

    retraverses_graphs = True  # under FSDP or DeepSpeed the Trainer back-propagates every pass's graph

    def __init__(
        self,
        epsilon: float = 1.0,
        alpha: float = 0.1,
        steps: int = 3,
        init_magnitude: float | None = None,
        norm: str = "per_example",
        seed: int | None = None,
    ) -> None:
        super().__init__(epsilon, seed=seed)
        self.alpha = check_float("alpha", alpha, minimum=0.0, min_open=True)
        self.steps = check_int("steps", steps, minimum=1)
        self.init_magnitude = (
            self.epsilon
            if init_magnitude is None
            else check_float("init_magnitude", init_magnitude, minimum=0.0)
        )
        self.norm = check_choice("norm", norm, ("global", "per_example"))
        self._sharded = False

    def _initial_delta(self, output, mask, documents):
        if self.init_magnitude == 0:
            return None
        weights = self._mask_like(mask, output)
        if weights is None:
            weights = torch.ones(*output.shape[:-1], 1, device=output.device)
        if documents is None:  # non-padding tokens per example
            tokens = weights.flatten(1).sum(1).clamp(min=1).view(-1, *[1] * (output.dim() - 1))
        else:  # tokens per packed document
            tokens = torch.bincount(documents.reshape(-1))[documents].unsqueeze(-1).to(torch.float32)
        magnitude = self.init_magnitude / (tokens * output.shape[-1]).sqrt()
        return (2 * self._random(output) - 1) * weights * magnitude

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        super().on_train_begin(args, state, control, model=model, **kwargs)
        self._sharded = weights_sharded(model, args)

    def _adversarial(self, batch: MicroBatch) -> torch.Tensor:
        deltas = [
            d.float() if d is not None else torch.zeros_like(e, dtype=torch.float32)
            for d, e in zip(batch.deltas, batch.embeds, strict=True)
        ]
        params = None
        if not self._sharded:
            params = [p for p in self._wrapper.model.parameters() if p.requires_grad] or None
        losses, embeds = [batch.loss], batch.embeds
        # per differentiated pass: parameter index -> gradient
        param_grads: list[dict[int, torch.Tensor]] = []
        for _ in range(1, self.steps):
            if params is None:
                grads = self._grad(losses[-1], embeds, retain=True)
            else:
                grads, reached = self._embedding_and_parameter_grads(losses[-1], embeds, params)
                param_grads.append(reached)
            moved, finite = P.ascend(deltas, grads, self.alpha, self.epsilon, self.norm, batch.documents)
            if not finite:  # train on the first pass only
                if params is None:
                    return self._non_finite("perturbation direction", batch.loss)
                return self._non_finite(
                    "perturbation direction",
                    batch.loss.detach() + self._gradient_term(param_grads[0], 1.0, params, batch.loss),
                )
            deltas = moved
            loss, _, embeds = batch.forward(deltas)
            losses.append(loss)
        if params is None or not param_grads:
            total = sum(loss / self.steps for loss in losses)
        else:
            summed: dict[int, torch.Tensor] = {}
            for reached in param_grads:
                for i, g in reached.items():
                    summed[i] = g if i not in summed else summed[i] + g
            total = sum(loss.detach() / self.steps for loss in losses[:-1]) + losses[-1] / self.steps
            total = total + self._gradient_term(summed, 1.0 / self.steps, params, total)
        self._record(batch, total, deltas)
        return total

    @staticmethod
    def _embedding_and_parameter_grads(loss, embeds, params):
        """One backward for ``dL/de`` (zeros where an embedding call does not reach the loss) and the parameter
        gradients, keyed by parameter index; parameters the pass does not reach are left out, so the gradient
        term never marks them used (DDP's ``find_unused_parameters``)."""
        grads = torch.autograd.grad(loss, [*embeds, *params], allow_unused=True)
        embed_grads = [
            torch.zeros_like(e) if g is None else g for e, g in zip(embeds, grads[: len(embeds)], strict=True)
        ]
        reached = {i: g for i, g in enumerate(grads[len(embeds) :]) if g is not None}
        return embed_grads, reached

    @staticmethod
    def _gradient_term(
        grads: dict[int, torch.Tensor], scale: float, params, like: torch.Tensor
    ) -> torch.Tensor:
        if not grads:
            return like.new_zeros(())
        index = sorted(grads)
        return GradientTerm.apply([grads[i] for i in index], scale, *[params[i] for i in index]).to(
            like.dtype
        )


class GradientPenalty(AdversarialCallback):
    """Gradient penalty (kexue.fm/archives/7234): ``L + 0.5 * epsilon * sum ||dL/de||^2`` over token-embedding
    outputs, by double backward; to first order the same update as an unnormalised fast gradient
    ``delta = epsilon * dL/de``. ``L`` is the loss of the whole optimizer step (gradient accumulation, also the
    shorter last step of an epoch, and DDP averaging are accounted for, so the penalty is the one of the full
    batch). Default epsilon 1.0.
    """

    double_backward = True

    def __init__(self, epsilon: float = 1.0, seed: int | None = None) -> None:
        super().__init__(epsilon, seed=seed)

    def _adversarial(self, batch: MicroBatch) -> torch.Tensor:
        grads = self._grad(batch.loss, batch.embeds, retain=True, create=True)
        squared = sum(g.float().pow(2).sum() for g in grads)
        if not torch.isfinite(squared):
            return self._non_finite("input gradient", batch.loss)
        penalty = 0.5 * self.epsilon * batch.scale * squared
        self._record(batch, penalty, [self.epsilon * g.detach() for g in grads])
        return batch.loss + penalty.to(batch.loss.dtype)


class SMART(AdversarialCallback):
    """SMART smoothness regulariser / virtual adversarial training (Jiang et al. 2020; mt-dnn's code).

    Label-free: ``R = sum_rows symKL(f(e), f(e + delta)) / N`` in float32 over the logits rows (non-padding
    positions for token-level logits), ``N`` the loss's own normaliser (``num_items_in_batch``, else the
    number of rows). ``delta_0 ~ N(0, noise_std^2)``; each of ``steps`` ascent steps sets
    ``delta <- epsilon * normalize(delta + step_size * dKL(sg f(e) || f(e + delta))/d delta)``. Trains on
    ``L + weight * R``. Defaults (mt-dnn): weight 1, epsilon 1, step_size 1e-3, noise_std 1e-5, steps 1,
    norm ``"per_token_inf"``.
    """

    def __init__(
        self,
        weight: float = 1.0,
        epsilon: float = 1.0,
        step_size: float = 1e-3,
        noise_std: float = 1e-5,
        steps: int = 1,
        norm: str = "per_token_inf",
        seed: int | None = None,
    ) -> None:
        super().__init__(epsilon, seed=seed)
        self.weight = check_float("weight", weight, minimum=0.0, min_open=True)
        self.step_size = check_float("step_size", step_size, minimum=0.0, min_open=True)
        self.noise_std = check_float("noise_std", noise_std, minimum=0.0, min_open=True)
        self.steps = check_int("steps", steps, minimum=1)
        self.norm = check_choice("norm", norm, P.NORMS)

    def _rows(self, logits: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if logits.dim() == 3 and mask is not None and mask.shape == logits.shape[:2]:
            return mask.to(torch.float32)
        return torch.ones(logits.shape[:-1], device=logits.device)

    def _adversarial(self, batch: MicroBatch) -> torch.Tensor:
        clean = batch.outputs["logits"]
        rows = self._rows(clean, batch.mask)
        target = torch.log_softmax(clean.detach().float(), dim=-1)
        deltas = [
            self.noise_std * self._random(e, normal=True) * self._weights(batch.mask, e) for e in batch.embeds
        ]
        for _ in range(self.steps):
            _, outputs, embeds = batch.forward(deltas)
            kl = (P.kl_rows(target, torch.log_softmax(outputs["logits"].float(), dim=-1)) * rows).sum()
            grads = self._grad(kl, embeds, retain=False)
            direction, finite = P.normalize(
                [d + self.step_size * g for d, g in zip(deltas, grads, strict=True)],
                self.norm,
                batch.documents,
            )
            if not finite:
                return self._non_finite("perturbation direction", batch.loss)
            deltas = [self.epsilon * d for d in direction]
        _, outputs, _ = batch.forward(deltas)
        count = batch.num_items_in_batch if batch.num_items_in_batch is not None else rows.sum().clamp(min=1)
        regulariser = (P.symmetric_kl(clean, outputs["logits"]) * rows).sum() / count
        self._record(batch, regulariser, deltas)
        return batch.loss + self.weight * regulariser.to(batch.loss.dtype)
