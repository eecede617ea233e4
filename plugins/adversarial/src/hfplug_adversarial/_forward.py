"""The forward wrapper that carries adversarial training inside one Trainer forward/backward.

At train begin the callback replaces the unwrapped model's ``forward`` (DDP/Accelerate wrappers still call
it, so gradient synchronisation is untouched) and puts a forward hook on ``model.get_input_embeddings()``.
A training forward then runs the first pass while the hook records the embedding outputs, and:

- when the model computed its loss from labels, runs the method at once and returns the outputs with
  ``.loss`` replaced by the combined loss (one backward by the Trainer, so DDP, gradient accumulation,
  AMP scaling and clipping apply to the final gradient);
- when the Trainer popped the labels for ``compute_loss_func``, attaches a loss finisher
  (:func:`hfplug.losses.attach_loss_finisher`); the loss function calls it with itself, and the method runs
  with that same loss function on the perturbed passes;
- when TRL's ``SFTTrainer`` asks for its fused LM head (``fused_lm_head=True``; it builds its loss from the
  per-token ``log_probs`` it returns, not from ``.loss``), runs the method on the model's own loss and returns
  the fused outputs of a clean no-grad pass (TRL's metrics) whose ``log_probs`` carry the combined loss.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers.masking_utils import find_packed_sequence_indices

from hfplug.losses import attach_loss_finisher

logger = logging.getLogger(__name__)

DeltaFn = Callable[[int, torch.Tensor], "torch.Tensor | None"]
InitialDelta = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], "torch.Tensor | None"]


class EmbeddingTap:
    """Forward hook on the input-embedding module: adds perturbations and records the outputs it returns."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.active = False
        self.delta_fn: DeltaFn | None = None
        self.outputs: list[torch.Tensor] = []
        self.ids: list[torch.Tensor | None] = []
        self.deltas: list[torch.Tensor | None] = []
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if not self.active:
            return None
        delta = self.delta_fn(len(self.outputs), output) if self.delta_fn is not None else None
        if delta is not None:
            output = output + delta.to(output.dtype)
        if not output.requires_grad:  # frozen embeddings (PEFT): a leaf we can differentiate against
            output = output.detach().requires_grad_()
        self.outputs.append(output)
        self.ids.append(args[0] if args and torch.is_tensor(args[0]) else None)
        self.deltas.append(delta)
        return output

    def run(self, forward: Callable[..., Any], args: tuple, kwargs: dict, delta_fn: DeltaFn | None):
        self.outputs, self.ids, self.deltas = [], [], []
        self.delta_fn, self.active = delta_fn, True
        try:
            outputs = forward(*args, **kwargs)
        finally:
            self.active, self.delta_fn = False, None
        if not self.outputs:
            raise RuntimeError("the model's forward did not call model.get_input_embeddings()")
        return outputs

    def remove(self) -> None:
        self.handle.remove()


@dataclass
class MicroBatch:
    """One training micro-batch: its first pass and how to re-run it with perturbed embeddings.

    ``loss`` is in the units the Trainer will back-propagate; ``scale`` is the weight the Trainer (gradient
    accumulation, DDP averaging) gives that loss in the optimizer step's objective, needed by terms that are
    not linear in the loss (gradient penalty) and by logging (``training_step`` returns ``world_size * scale``
    times the loss). A loss normalised by ``num_items_in_batch`` has ``scale = 1 / world_size`` (times
    ``world_size`` under ``average_tokens_across_devices``); a micro-batch-mean model loss, which the Trainer
    divides by the number of micro-batches of the optimizer step, ``1 / (window * world_size)``
    (:class:`AccumulationWindows`).
    """

    run: Callable[[DeltaFn | None], Any]
    loss_of: Callable[[Any], torch.Tensor]
    tap: EmbeddingTap
    outputs: Any
    embeds: list[torch.Tensor]
    ids: list[torch.Tensor | None]
    deltas: list[torch.Tensor | None]
    mask: torch.Tensor | None
    documents: torch.Tensor | None  # packed batches: the document of each token (per-example norms)
    num_items_in_batch: Any
    scale: float
    loss: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.loss = self.loss_of(self.outputs)

    def forward(self, deltas: list[torch.Tensor] | None) -> tuple[torch.Tensor, Any, list[torch.Tensor]]:
        """Loss, outputs and embedding outputs of a pass with ``deltas`` added (None: a clean pass)."""
        delta_fn = None if deltas is None else (lambda index, output: deltas[index])
        outputs = self.run(delta_fn)
        return self.loss_of(outputs), outputs, list(self.tap.outputs)


def _several_ranks() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def any_rank(flag: bool, device: torch.device) -> bool:
    """``flag`` OR-ed over the ranks of the default process group (unchanged in a single process)."""
    if not _several_ranks():
        return flag
    value = torch.tensor([float(flag)], device=device)
    torch.distributed.all_reduce(value, op=torch.distributed.ReduceOp.MAX)
    return bool(value.item())


def sum_over_ranks(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed element-wise over the ranks of the default process group (unchanged in a single
    process); a collective, so every rank must call it."""
    if not _several_ranks():
        return list(values)
    total = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.all_reduce(total)
    return total.tolist()


def uses_deepspeed(args: Any) -> bool:
    """True when the Trainer runs a DeepSpeed engine (``TrainingArguments(deepspeed=...)`` or ``accelerate launch``
    with a DeepSpeed config, which sets ``ACCELERATE_USE_DEEPSPEED``: both give ``args.deepspeed_plugin``)."""
    return getattr(args, "deepspeed_plugin", None) is not None


def zero3_partitioned(model: torch.nn.Module) -> bool:
    """True when DeepSpeed ZeRO-3 partitions the parameters of ``model`` (they carry a ``ds_id``)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def weights_sharded(model: torch.nn.Module, args: Any) -> bool:
    """True when the parameters are partitioned or flattened by FSDP or DeepSpeed (the Trainer's arguments,
    Accelerate's environment, DTensor or ZeRO-3 parameters): then ``model.parameters()`` are not the tensors
    the forward differentiates, and gradients must reach them through the Trainer's own backward."""
    if getattr(args, "fsdp", None) or uses_deepspeed(args) or zero3_partitioned(model):
        return True
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("1", "true", "yes"):
        return True
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


class GradientTerm(torch.autograd.Function):
    """``GradientTerm.apply(grads, scale, *params)``: a scalar 0 whose gradient with respect to ``params[i]`` is
    ``scale * grads[i]`` (times the incoming gradient). Hands parameter gradients computed earlier in the
    forward to the Trainer's one backward, so loss scaling, DDP reduction and clipping apply to them."""

    @staticmethod
    def forward(ctx, grads: list[torch.Tensor], scale: float, *params: torch.Tensor) -> torch.Tensor:
        ctx.grads, ctx.scale = grads, scale
        return params[0].new_zeros(())

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        factor = grad_output * ctx.scale
        return (None, None, *[g * factor for g in ctx.grads])


def _regather_root(model: torch.nn.Module) -> None:
    """All-gather the parameters an FSDP2 root (``fully_shard``) owns directly before a further pass inside its
    forward: a ``torch.autograd.grad`` over an earlier pass ends FSDP's backward, which reshards them, and the
    root's forward pre-hook does not run again for passes made from inside its forward. No-op otherwise."""
    if torch.distributed.is_available():
        from torch.distributed.fsdp import FSDPModule

        if isinstance(model, FSDPModule):
            model.unshard()


def _fsdp_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The FSDP2 (``fully_shard``) modules in ``model``, root first; empty without FSDP2."""
    if not torch.distributed.is_available():
        return []
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


class _BackwardHold:
    """Keeps partitioned parameters gathered from a training forward until the end of the micro-batch's final
    backward (the Trainer's), which re-enters graphs that ``torch.autograd.grad`` already went through."""

    def hold(self, model: torch.nn.Module) -> None:
        raise NotImplementedError

    def release(self) -> None:
        raise NotImplementedError

    def restore(self) -> None:
        """Undo :meth:`hold` for good (train end)."""
        self.release()

    def _holding(self) -> bool:
        raise NotImplementedError

    def release_after_backward(self, tensor: torch.Tensor) -> None:
        """:meth:`release` once the backward that reaches ``tensor`` (a first-pass embedding output) has finished."""
        if self._holding() and tensor.requires_grad:
            tensor.register_hook(self._queue_release)

    def _queue_release(self, grad: torch.Tensor) -> None:
        torch.autograd.Variable._execution_engine.queue_callback(self.release)


class UnshardedHold(_BackwardHold):
    """Keeps FSDP2 parameters gathered from a double-backward step's first forward until :meth:`release`.

    A graph built by ``torch.autograd.grad(..., create_graph=True)`` reads the gathered parameters in the
    final backward through nodes that FSDP's pre-backward hooks never see; resharding (after forward or after
    the inner backward) frees that storage under them (a segfault on CPU). So resharding is switched off and
    the parameters are resharded at the end of the micro-batch's final backward, after FSDP's own
    end-of-backward callback: gradient clipping and the optimizer then see the sharded parameters and
    gradients, and the next forward gathers the updated shards. :meth:`restore` puts back each module's own
    settings at train end. Cost: the full parameters stay on every rank through each micro-batch's forward and
    backward. Reads FSDP2's per-group settings (``_get_fsdp_state()._fsdp_param_groups``) to restore them:
    ``FSDPModule`` (torch 2.13) has ``set_reshard_after_forward`` / ``set_reshard_after_backward`` and no getter
    (pinned by ``test_fsdp2_has_no_public_getter_for_the_reshard_settings``)."""

    def __init__(self) -> None:
        self.held = False
        self.saved: list[tuple[torch.nn.Module, bool, list[bool]]] = []

    def hold(self, model: torch.nn.Module) -> None:
        if self.held:  # once per training run: FSDP wraps the model before the first training forward
            return
        self.held = True
        for module in _fsdp_modules(model):
            groups = module._get_fsdp_state()._fsdp_param_groups
            after_forward = any(g.post_forward_mesh_info is not None for g in groups)
            self.saved.append((module, after_forward, [g.reshard_after_backward for g in groups]))
            module.set_reshard_after_forward(False, recurse=False)
            module.set_reshard_after_backward(False, recurse=False)

    def _holding(self) -> bool:
        return bool(self.saved)

    def release(self) -> None:
        for module, _, _ in self.saved:
            module.reshard()

    def restore(self) -> None:
        self.release()
        for module, after_forward, after_backward in self.saved:
            module.set_reshard_after_forward(after_forward, recurse=False)
            for group, value in zip(module._get_fsdp_state()._fsdp_param_groups, after_backward, strict=True):
                group.reshard_after_backward = value
        self.held, self.saved = False, []


class PartitionedHold(_BackwardHold):
    """Keeps DeepSpeed ZeRO-3 parameters gathered from each training forward until the end of the micro-batch's
    final backward.

    ZeRO-3 (0.19.8, ``deepspeed/runtime/zero/parameter_offload.py``) gathers a module's parameters in a forward
    pre-hook and, for its backward, in ``PreBackwardFunctionForModule.backward`` on the module's outputs, and
    re-partitions them after each (``release_sub_module``). That backward gather runs only while the module's
    ``applied_pre_backward_ref_cnt`` (one per output of each forward) is positive, and ``torch.autograd.grad``
    inside the forward has used it up; so the Trainer's backward, re-entering those graphs, found the saved
    parameters partitioned (``RuntimeError: Expected weight to be of same shape as normalized_shape, but got
    weight of shape [0]``). DeepSpeed frees a parameter only when its ``ds_active_sub_modules`` (the users that
    still need it) is empty (``PartitionedParameterCoordinator.__release_param``, ``free_param``): the hold adds
    itself there, so the hooks gather each parameter once and never release it while held. At the end of the
    final backward the hold removes itself and partitions the parameters no module still uses
    (``param.partition``; the rest the engine's ``release_backward_leftovers`` releases), so the optimizer step
    and the next micro-batch see the partitioned parameters; gradients reach ZeRO's reducer through its own
    hooks, unchanged. Cost: the full parameters on every rank through each micro-batch's forward and backward."""

    MARKER = (
        "hfplug-adversarial"  # in ds_active_sub_modules beside the ds_id of the modules using a parameter
    )

    def __init__(self) -> None:
        self.params: list[torch.nn.Parameter] = []

    def hold(self, model: torch.nn.Module) -> None:
        self.params = [p for p in model.parameters() if hasattr(p, "ds_active_sub_modules")]
        for param in self.params:
            param.ds_active_sub_modules.add(self.MARKER)

    def _holding(self) -> bool:
        return bool(self.params)

    def release(self) -> None:
        from deepspeed.runtime.zero.partition_parameters import ZeroParamStatus

        for param in self.params:
            param.ds_active_sub_modules.discard(self.MARKER)
        idle = [
            p for p in self.params if p.ds_status == ZeroParamStatus.AVAILABLE and not p.ds_active_sub_modules
        ]
        if idle:
            idle[0].partition(param_list=idle)
        self.params = []


def _map_tensors(fn: Callable[[torch.Tensor], torch.Tensor], value: Any) -> Any:
    """``value`` with ``fn`` applied to each tensor in it (through nested tuples and lists)."""
    if torch.is_tensor(value):
        return fn(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_map_tensors(fn, v) for v in value)
    return value


def _detached(value: Any) -> Any:
    """``value`` with its tensors detached. Under ``DDP(find_unused_parameters=True)`` every output tensor goes
    through DDP's backward hook node, which sends a zero gradient into each, also into the graph of a first pass
    that ``torch.autograd.grad`` has already freed; only the returned loss carries the graph to train on."""
    return _map_tensors(torch.Tensor.detach, value)


def _aliased(outputs: Any) -> Any:
    """A copy of ``outputs`` whose tensors that require grad are new views (``view_as``) of the originals.

    DeepSpeed's engine (0.19) puts backward hooks on the tensors its ``forward`` returns; a backward that
    reaches them outside ``engine.backward`` counts as the step's backward and reduces (empty) gradients when it
    ends. With ``compute_loss_func`` the method differentiates the first pass *after* the engine's forward, so
    the engine gets these views and the method the hook-free originals."""
    aliased = copy.copy(outputs)
    for key in list(aliased.keys()):
        aliased[key] = _map_tensors(lambda t: t.view_as(t) if t.requires_grad else t, outputs[key])
    return aliased


def _attention_mask(kwargs: dict) -> torch.Tensor | None:
    mask = kwargs.get("attention_mask")
    return mask if torch.is_tensor(mask) and mask.dim() == 2 else None


def packed_documents(kwargs: dict) -> torch.Tensor | None:
    """The document index of each token of a packed, padding-free batch (TRL's ``padding_free`` / ``packing``,
    transformers' ``DataCollatorWithFlattening``): no attention mask and 2-D ``position_ids`` that restart inside
    a row. A document starts where the position does not follow the previous one, as transformers' masking
    (``find_packed_sequence_indices``) separates them; indices are unique across rows. None for other batches."""
    positions = kwargs.get("position_ids")
    if kwargs.get("attention_mask") is not None or not torch.is_tensor(positions) or positions.dim() != 2:
        return None
    local = find_packed_sequence_indices(positions)
    if local is None:
        return None
    counts = local[:, -1] + 1
    return local + (counts.cumsum(0) - counts)[:, None]


class AccumulationWindows:
    """The number of micro-batches of each optimizer step, by which the Trainer divides a micro-batch-mean loss
    (``current_gradient_accumulation_steps``).

    Transformers 5.23 (``Trainer._run_epoch``) splits an epoch of ``n = len(train_dataloader)`` micro-batches into
    ``U = ceil(n / GA)`` optimizer steps of ``GA`` (``gradient_accumulation_steps``) micro-batches, the last one
    of ``n - (U - 1) * GA``. A resumed run starts its first epoch at step ``global_step mod U`` of it (at 0 with
    ``ignore_data_skip``). Without a length (``n`` None, an iterable dataset) every step counts as ``GA``.
    """

    def __init__(self, accumulation: int, batches: int | None) -> None:
        self.accumulation = accumulation
        self.updates = -(-batches // accumulation) if batches else None
        self.last = batches - (self.updates - 1) * accumulation if batches else accumulation
        self.index = 0  # optimizer steps of the epoch so far
        self.resume_at = 0

    def begin_train(self, global_step: int, skips_data: bool) -> None:
        """Train begin: ``global_step`` (> 0 when resumed) and whether the Trainer skips trained batches."""
        self.resume_at = global_step % self.updates if self.updates and skips_data else 0

    def begin_epoch(self) -> None:
        self.index, self.resume_at = self.resume_at, 0

    def next_window(self) -> int:
        """Step begin: the number of micro-batches of the optimizer step starting now."""
        window = self.last if self.updates and self.index == self.updates - 1 else self.accumulation
        self.index += 1
        return window


class ForwardWrapper:
    """Replaces ``model.forward``; see the module docstring. ``method(batch)`` returns the loss to train on."""

    def __init__(
        self,
        model: torch.nn.Module,
        method: Callable[[MicroBatch], torch.Tensor],
        args: Any,
        double_backward: bool = False,
        retraverses_graphs: bool = False,
    ) -> None:
        embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
        if not isinstance(embeddings, torch.nn.Module):
            raise ValueError(
                f"{type(model).__name__} has no input embeddings (model.get_input_embeddings() returned "
                f"{embeddings!r}); adversarial training perturbs the output of that module"
            )
        self.model = model
        self.method = method
        self.loss_type = getattr(args, "loss_type", None)  # TRL configs: the loss SFTTrainer builds
        # (embedding output, attention mask, packed documents) -> perturbation of the first pass
        self.initial_delta: InitialDelta | None = None
        self.world = max(int(getattr(args, "world_size", 1)), 1)
        # micro-batches of the current optimizer step (AccumulationWindows, set by the callback at step begin)
        self.window = max(int(getattr(args, "gradient_accumulation_steps", 1)), 1)
        self.average_tokens = bool(getattr(args, "average_tokens_across_devices", False))
        self.deepspeed = uses_deepspeed(args)
        self.ignores_num_items: bool | None = None  # measured by _loss_ignores_num_items
        # fused attention kernels (flash, memory-efficient) have no double backward: use the math kernel
        self.kernel = (lambda: sdpa_kernel(SDPBackend.MATH)) if double_backward else contextlib.nullcontext
        self.pending_finisher = False
        self.hold: _BackwardHold | None = None
        if retraverses_graphs and zero3_partitioned(model):
            self.hold = PartitionedHold()
        elif double_backward:
            self.hold = UnshardedHold()
        self.tap = EmbeddingTap(embeddings)
        self.instance_forward = model.__dict__.get("forward")  # e.g. Accelerate's autocast wrapper
        self.original = model.forward
        model.forward = self

    def remove(self) -> None:
        self.tap.remove()
        if self.hold is not None:
            self.hold.restore()
        if self.model.__dict__.get("forward") is self:
            if self.instance_forward is None:
                del self.model.forward  # the class method shows through again
            else:
                self.model.forward = self.instance_forward

    def check_finisher_consumed(self) -> None:
        if self.pending_finisher:
            self.pending_finisher = False
            raise ValueError(
                "adversarial training left a loss finisher pending for the Trainer's loss, but that loss did "
                "not call it, so the step trained on the clean loss only. With Trainer(compute_loss_func=fn), "
                "wrap it: compute_loss_func=hfplug.losses.trainer_loss(fn) (hfplug losses need no wrapping). "
                "Label smoothing (label_smoothing_factor > 0) is not supported."
            )

    def _scale(self, num_items_in_batch: Any, model_loss: bool) -> float:
        if num_items_in_batch is not None:
            return (self.world if self.average_tokens else 1) / self.world
        return 1.0 / (self.window * self.world) if model_loss else 1.0 / self.world

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not (self.model.training and torch.is_grad_enabled()):
            return self.original(*args, **kwargs)
        self.check_finisher_consumed()
        if self.hold is not None:
            self.hold.hold(self.model)
        if kwargs.get("fused_lm_head"):
            return self._fused_lm_head(args, kwargs)
        outputs, common = self._first_pass(args, kwargs)
        if outputs.get("loss") is not None:
            return self._with_loss(outputs, common, args, kwargs)
        if torch.is_tensor(kwargs.get("labels")):
            raise ValueError(
                f"{type(self.model).__name__} received labels but returned no loss, and no loss function took "
                "the labels: use a model head that computes a loss or pass Trainer(compute_loss_func=...)"
            )

        def finisher(loss_fn, finished_outputs, labels, num_items_in_batch):
            self.pending_finisher = False
            if self.deepspeed:  # the engine's hooks sit on finished_outputs (see _aliased)
                finished_outputs = outputs

            def loss_of(out):
                return loss_fn(out, labels, num_items_in_batch=num_items_in_batch)

            batch = MicroBatch(
                loss_of=loss_of,
                num_items_in_batch=num_items_in_batch,
                scale=self._scale(num_items_in_batch, False),
                **{**common, "outputs": finished_outputs},
            )
            return self._run_method(batch)

        attach_loss_finisher(outputs, finisher)
        self.pending_finisher = True
        return _aliased(outputs) if self.deepspeed else outputs

    def _first_pass(self, args: tuple, kwargs: dict) -> tuple[Any, dict[str, Any]]:
        """The first training pass (perturbed when the method has an initial delta) and the :class:`MicroBatch`
        fields shared by both loss paths."""
        mask = _attention_mask(kwargs)
        documents = packed_documents(kwargs)
        initial = self.initial_delta

        def run(delta_fn):
            with self.kernel():
                return self.tap.run(self.original, args, kwargs, delta_fn)

        def rerun(delta_fn):
            _regather_root(self.model)
            return run(delta_fn)

        first_delta = None if initial is None else (lambda index, output: initial(output, mask, documents))
        outputs = run(first_delta)
        if not isinstance(outputs, dict):
            raise TypeError("adversarial training needs dict-like model outputs (return_dict=True)")
        common = dict(
            run=rerun,
            tap=self.tap,
            outputs=outputs,
            embeds=list(self.tap.outputs),
            ids=list(self.tap.ids),
            deltas=list(self.tap.deltas),
            mask=mask,
            documents=documents,
        )
        return outputs, common

    def _run_method(self, batch: MicroBatch) -> torch.Tensor:
        loss = self.method(batch)
        if self.hold is not None:
            self.hold.release_after_backward(batch.embeds[0])
        return loss

    def _with_loss(
        self, outputs: Any, common: dict[str, Any], args: tuple, kwargs: dict, items: Any = None
    ) -> Any:
        """The model computed its loss from the labels: ``outputs`` with ``.loss`` replaced by the method's loss.
        ``items`` overrides the method's ``num_items_in_batch`` (the fused LM head's count of targets)."""
        num_items = kwargs.get("num_items_in_batch")
        factor = None
        if (
            num_items is not None
            and torch.is_tensor(kwargs.get("labels"))
            and self._loss_ignores_num_items(args, kwargs)
        ):
            count = kwargs["labels"].ne(-100).sum()
            factor = count / torch.as_tensor(num_items, device=count.device)

        def loss_of(out):
            return out["loss"] if factor is None else out["loss"] * factor.to(out["loss"].dtype)

        batch = MicroBatch(
            loss_of=loss_of,
            num_items_in_batch=num_items if items is None else items,
            scale=self._scale(num_items, True),
            **common,
        )
        loss = self._run_method(batch)
        for key in [k for k in outputs if k != "loss"]:  # the first pass's graph may be freed
            outputs[key] = _detached(outputs[key])
        outputs["loss"] = loss
        return outputs

    def _loss_ignores_num_items(self, args: tuple, kwargs: dict) -> bool:
        """Whether the model's own loss ignores the ``num_items_in_batch`` the Trainer passes it, as
        ``BertForSequenceClassification`` and Llama's classification heads do (a micro-batch mean): the Trainer,
        counting on it, does not divide by the accumulation steps, so that loss comes out GA times (under DDP
        world-size times) too large. Measured once per run by two no-grad passes in eval mode on this
        micro-batch with ``num_items_in_batch`` 1 and 2: a loss ``sum / num_items_in_batch`` halves, an ignored
        one does not. A zero or non-finite loss on any rank decides nothing and every rank measures again on its next
        micro-batch (the ranks stay in step: under FSDP or ZeRO-3 a forward gathers parameters collectively)."""
        if self.ignores_num_items is None:
            modes = {module: module.training for module in self.model.modules()}
            self.model.eval()
            try:
                with torch.no_grad():
                    one, two = (
                        self.original(*args, **{**kwargs, "num_items_in_batch": n})["loss"] for n in (1, 2)
                    )
            finally:
                for module, training in modes.items():
                    module.training = training
            if not any_rank(not (bool(torch.isfinite(one)) and bool(one != 0)), one.device):
                self.ignores_num_items = bool(one == two)
                if self.ignores_num_items:
                    logger.warning(
                        "%s ignores num_items_in_batch although the Trainer passes it, so its loss would be a "
                        "micro-batch mean treated as sum/num_items_in_batch (2x too large under GA=2 or 2-process "
                        "DDP). hfplug-adversarial rescales that loss to sum/num_items_in_batch while it trains.",
                        type(self.model).__name__,
                    )
        return bool(self.ignores_num_items)

    def _fused_lm_head(self, args: tuple, kwargs: dict) -> Any:
        """TRL's fused LM head (``add_fused_lm_head``): ``SFTTrainer`` computes its loss as
        ``-sum(log_probs) / num_items_in_batch`` and its metrics from ``entropy``, ``is_top1`` and ``label_mask``.

        The method runs on the model's own loss (full logits, ``fused_lm_head`` dropped): ``C``, the mean over
        this micro-batch's ``M`` targets. The returned outputs are TRL's, of a clean no-grad pass, with
        ``log_probs`` shifted by ``L_clean - C`` on each target (``L_clean = -sum(log_probs) / M``), so that
        ``-sum(log_probs) = M * C``: SFTTrainer's loss is then ``M * C / num_items_in_batch``, in value and
        gradient (the model path's ``sum / num_items_in_batch`` for the losses linear in the per-token losses).

        A micro-batch without targets (every shifted label -100) is returned as TRL's own fused pass, with
        gradient: its loss is TRL's differentiable zero, so it adds nothing to the step (as without adversarial
        training) instead of a 0 / 0 mean that would skip the whole optimizer step as non-finite.
        """
        if self.loss_type != "nll":
            raise ValueError(
                "adversarial training through TRL's fused LM head supports SFTTrainer's default loss "
                f"(SFTConfig(loss_type='nll')), got loss_type={self.loss_type!r}: the other losses weight or "
                "combine the per-token log-probabilities, which carry the combined loss here"
            )
        labels = kwargs.get("shift_labels")
        labels = kwargs["labels"][..., 1:] if labels is None else labels
        if not bool(labels.ne(-100).any()):
            return self.original(*args, **kwargs)
        with torch.no_grad():
            fused = self.original(*args, **kwargs)
        plain = {k: v for k, v in kwargs.items() if k != "fused_lm_head"}
        outputs, common = self._first_pass(args, plain)
        if outputs.get("loss") is None:
            raise ValueError(
                f"{type(self.model).__name__} returned no loss without fused_lm_head: adversarial training under "
                "SFTTrainer needs a causal LM that computes its loss from labels"
            )
        targets = fused["label_mask"]
        loss = self._with_loss(outputs, common, args, plain, items=targets.sum())["loss"]
        log_probs = fused["log_probs"]
        weights = targets.to(log_probs.dtype)
        clean = -log_probs.sum() / weights.sum()
        fused["log_probs"] = log_probs + weights * (clean - loss.to(log_probs.dtype))
        fused["loss"] = loss
        return fused
