"""BERT-of-Theseus: replace groups of predecessor blocks by single successor blocks, module by module.

The predecessor's ``N`` blocks are split into ``n`` contiguous groups ``G_1..G_n``. In training, module ``i``
computes ``y_{i+1} = r_i * scc_i(y_i) + (1 - r_i) * prd_i(y_i)`` with ``r_i ~ Bernoulli(p)`` drawn once per
module per optimizer step (``p`` = replacing rate); in eval only the successor blocks run. Draws come from a
``torch.Generator`` seeded with ``(seed, optimizer step)``, so every DDP rank draws the same gates without
communicating and a resumed run draws what the uninterrupted one drew.

DeepSpeed ZeRO-3: a predecessor loaded under a ZeRO-3 ``TrainingArguments`` has partitioned parameters.
``theseus_wrap`` and ``export_successor`` gather them (``deepspeed.zero.GatheredParameters``, a collective:
call them on every rank); the successor copies are ordinary parameters that the engine partitions when the
Trainer starts, so they are in its optimizer.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import sys
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from hfplug.validation import check_bool, check_choice, check_float, check_int, check_int_list

from .schedulers import check_rate

GATES = ("module", "example")
INITS = ("first", "group")
# Distillation temperature bounds: logits / T and T**2 stay within float32 for ordinary logits.
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-2, 1e4


class TheseusController:
    """Shared state of one wrapped model (``model.theseus``): replacing rate, optimizer step and gate draws.

    ``TheseusCallback`` calls :meth:`set_step` on optimizer steps; in a hand-written loop, call
    ``model.theseus.set_step(step, rate)`` before the forward passes of optimizer step ``step``.
    Built by :func:`theseus_wrap`, which documents the arguments; every one is checked here too.
    """

    def __init__(
        self,
        num_modules: int,
        groups: list[list[int]],
        successor_sources: list[int | None],
        block_path: str,
        seed: int,
        gate: str,
        rate: float,
        distill_alpha: float = 0.0,
        distill_temperature: float = 1.0,
    ) -> None:
        self.num_modules = check_int("num_modules", num_modules, minimum=1)
        self.groups = _check_partition(groups, sum(map(len, groups)), self.num_modules)
        if not isinstance(successor_sources, (list, tuple)) or len(successor_sources) != self.num_modules:
            raise ValueError(
                f"successor_sources must give {self.num_modules} block indices or None, got {successor_sources!r}"
            )
        self.successor_sources = [
            None if source is None else check_int(f"successor_sources[{i}]", source, minimum=0)
            for i, source in enumerate(successor_sources)
        ]
        if not isinstance(block_path, str):
            raise TypeError(f"block_path must be a str, got {block_path!r} ({type(block_path).__name__})")
        self.block_path = block_path
        self.seed = check_int("seed", seed, minimum=0)
        self.gate = check_choice("gate", gate, GATES)
        self.rate = check_rate("replacing_rate", rate)
        self.distill_alpha = check_float("distill_alpha", distill_alpha, minimum=0.0, maximum=1.0)
        self.distill_temperature = check_float(
            "distill_temperature", distill_temperature, minimum=MIN_TEMPERATURE, maximum=MAX_TEMPERATURE
        )
        self.teacher = False  # True while the distillation hook runs the all-predecessor pass
        self.step: int | None = None
        self._forward_index = 0
        self.example_gates: torch.Tensor | None = None  # last per-example draw, (num_modules, batch)
        self._module_gates: tuple[int, float, torch.Tensor] | None = None

    def settings(self) -> dict[str, Any]:
        """What decides the draws and the training signal besides the step and rate (JSON-serialisable):
        ``TheseusCallback`` writes it to every checkpoint and compares it when a run resumes."""
        return {
            "seed": self.seed,
            "partition": [list(group) for group in self.groups],
            "gate": self.gate,
            "block_path": self.block_path,
            "distill_alpha": self.distill_alpha,
            "distill_temperature": self.distill_temperature,
        }

    def set_step(self, step: int, rate: float | None = None) -> None:
        """Draw the gates of optimizer step ``step`` (0-based), optionally with a new replacing ``rate``."""
        step = check_int("step", step, minimum=0)
        if rate is not None:
            self.rate = check_rate("rate", rate)
        if step != self.step:
            self._forward_index = 0
        self.step = step

    def _generator(self, *keys: int) -> torch.Generator:
        mixed = self.seed
        for key in keys:
            mixed = (mixed * 1_000_003 + key) % (2**63 - 1)
        return torch.Generator().manual_seed(mixed)

    def _require_step(self) -> int:
        if self.step is None:
            raise RuntimeError(
                "the Theseus model is training but no optimizer step was set: add TheseusCallback(scheduler) "
                "to the Trainer, or call model.theseus.set_step(step, rate) before each optimizer step"
            )
        return self.step

    @property
    def gates(self) -> torch.Tensor:
        """Module gates of the current step: bool ``(num_modules,)``, True = the successor block runs."""
        step = self._require_step()
        cached = self._module_gates
        if cached is None or cached[:2] != (step, self.rate):
            draw = torch.rand(self.num_modules, generator=self._generator(step)) < self.rate
            self._module_gates = cached = (step, self.rate, draw)
        return cached[2]

    def module_gate(self, index: int, batch_size: int) -> bool | torch.Tensor:
        """Gate of module ``index`` for the current forward; module 0 opens a new forward."""
        if self.gate == "module":
            return bool(self.gates[index])
        if index == 0:  # per-example draws, keyed by (seed, step, forward within the step)
            self._forward_index += 1
            generator = self._generator(self._require_step(), self._forward_index)
            self.example_gates = torch.rand(self.num_modules, batch_size, generator=generator) < self.rate
        return self.example_gates[index]


def _is_cache(value: Any) -> bool:
    from transformers.cache_utils import Cache

    return isinstance(value, Cache)


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output: Any, hidden: torch.Tensor) -> Any:
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class TheseusModule(nn.Module):
    """One replaceable module: a group of predecessor blocks and the successor block that stands in for it."""

    def __init__(
        self,
        predecessor: Sequence[nn.Module],
        successor: nn.Module,
        index: int,
        controller: TheseusController,
    ) -> None:
        super().__init__()
        self.predecessor = nn.ModuleList(predecessor)
        self.successor = successor
        self.index = index
        self.controller = controller

    def _run_predecessor(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        output = None
        for block in self.predecessor:
            output = block(hidden_states, *args, **kwargs)
            hidden_states = _first(output)
        return output

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if self.controller.teacher:
            return self._run_predecessor(hidden_states, *args, **kwargs)
        if not self.training:
            return self.successor(hidden_states, *args, **kwargs)
        # A KV cache would mix the layer indices of the two branches: blocks never see one in training.
        args = tuple(None if _is_cache(a) else a for a in args)
        kwargs = {k: None if _is_cache(v) else v for k, v in kwargs.items()}
        gate = self.controller.module_gate(self.index, hidden_states.shape[0])
        if isinstance(gate, torch.Tensor):  # per-example gate: both branches run
            succ = self.successor(hidden_states, *args, **kwargs)
            pred = self._run_predecessor(hidden_states, *args, **kwargs)
            mask = gate.to(hidden_states.device).view(-1, *([1] * (hidden_states.dim() - 1)))
            return _replace_first(succ, torch.where(mask, _first(succ), _first(pred)))
        if gate:
            return _keep_in_graph(
                self.successor(hidden_states, *args, **kwargs),
                self.predecessor,
                lambda: self._run_predecessor(hidden_states, *args, **kwargs),
            )
        return _keep_in_graph(
            self._run_predecessor(hidden_states, *args, **kwargs),
            self.successor,
            lambda: self.successor(hidden_states, *args, **kwargs),
        )

    def extra_repr(self) -> str:
        return f"index={self.index}, predecessor_blocks={len(self.predecessor)}"


def _keep_in_graph(output: Any, unused: nn.Module, run_unused: Callable[[], Any]) -> Any:
    """Add an exact zero that depends on the trainable parameters of the branch that did not run, so they get
    an exact zero gradient in every step.

    Ordinary parameters: ``0 * sum(params)``, so DDP with ``find_unused_parameters=False`` sees every parameter.
    ZeRO-3-partitioned parameters: ``0 * sum(run_unused())``. The branch runs, so DeepSpeed gathers its
    parameters for the forward and the backward; without a gradient, DeepSpeed 0.19.8 would apply again the
    gradient the parameter had in the last step it was used (ZeRO-3 keeps it in its gradient partition).
    """
    params = [p for p in unused.parameters() if p.requires_grad]
    if not params or not torch.is_grad_enabled():
        return output
    hidden = _first(output)
    if any(_is_partitioned(p) for p in params):
        zero = _first(run_unused()).sum() * 0.0
    else:
        zero = torch.stack([p.sum().to(hidden.dtype) for p in params]).sum() * 0.0
    return _replace_first(output, hidden + zero.to(device=hidden.device, dtype=hidden.dtype))


def _num_layers(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    if config is None:
        return None
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    value = getattr(config, "num_hidden_layers", None)
    return value if isinstance(value, int) else None


def find_block_list(model: nn.Module, block_path: str | None = None) -> tuple[str, nn.ModuleList]:
    """The ``nn.ModuleList`` holding the transformer blocks and its dotted path.

    With ``block_path`` (e.g. ``"bert.encoder.layer"``, ``"model.layers"``, ``"transformer.h"``) that module is
    used; otherwise the unique ``ModuleList`` of ``config.num_hidden_layers`` same-class blocks.
    """
    if block_path is not None:
        try:
            blocks = model.get_submodule(block_path)
        except AttributeError as exc:
            raise ValueError(
                f"block_path {block_path!r} does not name a submodule of {type(model).__name__}"
            ) from exc
        if not isinstance(blocks, nn.ModuleList):
            raise ValueError(
                f"block_path {block_path!r} is a {type(blocks).__name__}, expected an nn.ModuleList"
            )
        return block_path, blocks
    expected = _num_layers(model)
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList)
        and len(module) >= 2
        and (expected is None or len(module) == expected)
        and len({type(block) for block in module}) == 1
    ]
    if expected is None and candidates:  # no config: the longest homogeneous list
        longest = max(len(module) for _, module in candidates)
        candidates = [(name, module) for name, module in candidates if len(module) == longest]
    if len(candidates) != 1:
        found = "none" if not candidates else ", ".join(name for name, _ in candidates)
        raise ValueError(
            f"could not find the block list of {type(model).__name__}: expected one nn.ModuleList of "
            f"{expected if expected is not None else 'same-class'} blocks, found {found}; pass block_path= "
            "(e.g. 'bert.encoder.layer', 'model.layers', 'transformer.h')"
        )
    return candidates[0]


def _even_groups(num_blocks: int, num_modules: int) -> list[list[int]]:
    """Contiguous groups whose sizes differ by at most one, larger groups first (12 -> 5: 3,3,2,2,2)."""
    base, extra = divmod(num_blocks, num_modules)
    groups, start = [], 0
    for i in range(num_modules):
        size = base + (1 if i < extra else 0)
        groups.append(list(range(start, start + size)))
        start += size
    return groups


def _check_partition(
    partition: Sequence[Sequence[int]], num_blocks: int, num_modules: int
) -> list[list[int]]:
    if isinstance(partition, (str, bytes)) or not isinstance(partition, Sequence):
        raise TypeError(
            f"partition must be a list of {num_modules} lists of block indices, got {partition!r} "
            f"({type(partition).__name__})"
        )
    groups = [
        check_int_list(f"partition[{i}]", group, minimum=0, maximum=max(num_blocks - 1, 0))
        for i, group in enumerate(partition)
    ]
    flat = [index for group in groups for index in group]
    if len(groups) != num_modules or any(not group for group in groups) or flat != list(range(num_blocks)):
        raise ValueError(
            f"partition must list {num_modules} non-empty contiguous groups covering blocks 0..{num_blocks - 1} "
            f"in order, got {partition!r}"
        )
    return groups


def _is_partitioned(param: torch.Tensor) -> bool:
    """True for a parameter DeepSpeed ZeRO-3 partitioned (its full value lives on no single rank)."""
    return hasattr(param, "ds_id")


def _gathered(params: list[nn.Parameter]) -> contextlib.AbstractContextManager:
    """Gather ZeRO-3-partitioned ``params`` for the duration of the block (collective: every rank must enter);
    a no-op for ordinary parameters."""
    if not any(_is_partitioned(p) for p in params):
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params)


def _copy_block(block: nn.Module) -> nn.Module:
    """A deep copy of ``block``; its ZeRO-3-partitioned parameters become new ordinary parameters holding the
    full (gathered) values (a plain deep copy would copy the empty local placeholders)."""
    partitioned = [p for p in block.parameters() if _is_partitioned(p)]
    with _gathered(partitioned):
        memo = {id(p): nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad) for p in partitioned}
        return copy.deepcopy(block, memo)


def _successor_blocks(
    init: Any, blocks: nn.ModuleList, groups: list[list[int]], block_path: str | None
) -> tuple[list[nn.Module], list[int | None]]:
    n, num_blocks = len(groups), len(blocks)
    if isinstance(init, nn.Module):
        _, source = find_block_list(init, block_path)
        if len(source) < n:
            raise ValueError(
                f"successor_init model has {len(source)} blocks, fewer than num_successor_layers={n}"
            )
        reference = blocks[0].state_dict()
        for i in range(n):
            shapes = {k: v.shape for k, v in source[i].state_dict().items()}
            if type(source[i]) is not type(blocks[0]) or shapes != {k: v.shape for k, v in reference.items()}:
                raise ValueError(
                    f"successor_init block {i} ({type(source[i]).__name__}) does not match the predecessor's "
                    f"blocks ({type(blocks[0]).__name__}): same architecture and sizes are required"
                )
        return [_copy_block(source[i]) for i in range(n)], [None] * n
    if init == "first":
        indices = list(range(n))
    elif init == "group":
        indices = [group[0] for group in groups]
    elif isinstance(init, Sequence) and not isinstance(init, str):
        indices = check_int_list("successor_init", init, minimum=0, maximum=num_blocks - 1)
        if len(indices) != n:
            raise ValueError(
                f"successor_init as indices must give {n} predecessor block indices in [0, {num_blocks}), got {init!r}"
            )
    else:
        raise ValueError(
            f"successor_init must be one of {INITS}, a list of {n} block indices or a model of the same "
            f"architecture, got {init!r}"
        )
    return [_copy_block(blocks[i]) for i in indices], indices


def _set_layer_index(block: nn.Module, index: int) -> None:
    for module in block.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            module.layer_idx = index


def _is_embedding(name: str, module: nn.Module) -> bool:
    return isinstance(module, nn.Embedding) or any("embed" in part.lower() for part in name.split("."))


def theseus_wrap(
    model: nn.Module,
    num_successor_layers: int,
    *,
    partition: Sequence[Sequence[int]] | None = None,
    successor_init: Literal["first", "group"] | Sequence[int] | nn.Module = "first",
    gate: Literal["module", "example"] = "module",
    seed: int = 0,
    replacing_rate: float = 0.5,
    freeze_predecessor: bool = True,
    freeze_embeddings: bool = True,
    freeze_head: bool = True,
    block_path: str | None = None,
    distill_alpha: float = 0.0,
    distill_temperature: float = 1.0,
) -> nn.Module:
    """Prepare a fine-tuned predecessor for Theseus training, in place; returns ``model``.

    Args:
        num_successor_layers: ``n``, the successor depth, ``1 <= n < N`` (predecessor depth).
        partition: groups of predecessor block indices, contiguous and in order (default: even split,
            larger groups first).
        successor_init: ``"first"`` copies predecessor blocks ``0..n-1`` (official code, default); ``"group"``
            copies the first block of each group; a list gives one predecessor block index per successor block;
            a model of the same architecture (e.g. the pre-trained checkpoint, as in the post) gives its first
            ``n`` blocks.
        gate: ``"module"`` (one Bernoulli draw per module per optimizer step, the paper's granularity) or
            ``"example"`` (one draw per module per example; both branches then run).
        seed: seeds the draws; with the optimizer step it fully determines them on every rank.
        replacing_rate: initial ``p``; ``TheseusCallback`` overrides it from its scheduler.
        freeze_predecessor: set ``requires_grad=False`` on the predecessor blocks. Successor blocks always train.
        freeze_embeddings: the same on the embeddings (``nn.Embedding`` modules and modules named ``*embed*``).
        freeze_head: the same on everything else outside the blocks (pooler, classifier, final norm, LM head).
        block_path: dotted path of the block ``nn.ModuleList`` when it cannot be found from the config.
        distill_alpha: ``a``, with distill_temperature ``T``: distillation against the frozen predecessor (off by
            default, as in the post): in training, ``loss = (1 - a) * task_loss + a * T^2 * KL(p_T || s_T)``,
            with ``p_T``, ``s_T`` the temperature-``T`` softmax of the all-predecessor logits (eval mode, no
            grad; one extra forward per micro-batch) and of the Theseus logits, KL summed over classes and
            averaged over logit rows. Needs the model to compute its own loss (``labels`` reach the forward).
            ``0 <= a <= 1``, ``0.01 <= T <= 1e4`` (so ``logits / T`` and ``T^2`` stay within float32).

    Every argument is checked before the model is changed (``hfplug.validation``: TypeError for a wrong
    type, ValueError for a value out of range, each naming the argument and the value).
    """
    _check_unwrapped(model, block_path)
    flags = {
        "freeze_predecessor": freeze_predecessor,
        "freeze_embeddings": freeze_embeddings,
        "freeze_head": freeze_head,
    }
    for name, value in flags.items():
        check_bool(name, value)
    path, blocks = find_block_list(model, block_path)
    num_blocks = len(blocks)
    n = check_int("num_successor_layers", num_successor_layers, minimum=1, maximum=num_blocks - 1)
    groups = _even_groups(num_blocks, n) if partition is None else _check_partition(partition, num_blocks, n)
    successors, sources = _successor_blocks(successor_init, blocks, groups, block_path)
    # every remaining argument is checked here, before the model is changed
    controller = TheseusController(
        n, groups, sources, path, seed, gate, replacing_rate, distill_alpha, distill_temperature
    )
    _freeze(model, blocks, **flags)
    _replace_blocks(model, path, blocks, successors, controller)
    if controller.distill_alpha > 0:
        model.register_forward_hook(_distillation_hook, with_kwargs=True)
    return model


def _check_unwrapped(model: Any, block_path: Any) -> None:
    """``theseus_wrap``'s first checks: a module not wrapped yet, and ``block_path`` a str or None."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a transformers model), got {type(model).__name__}")
    if any(isinstance(module, TheseusModule) for module in model.modules()):
        raise ValueError("model is already wrapped by theseus_wrap")
    if block_path is not None and not isinstance(block_path, str):
        raise TypeError(f"block_path must be a str or None, got {block_path!r} ({type(block_path).__name__})")


def _freeze(
    model: nn.Module,
    blocks: nn.ModuleList,
    freeze_predecessor: bool,
    freeze_embeddings: bool,
    freeze_head: bool,
) -> None:
    """Set ``requires_grad`` of every parameter by where it lives: predecessor blocks, embeddings or the rest
    (a parameter shared by several places trains if any of them trains)."""
    block_params = {id(p) for p in blocks.parameters()}
    trainable: dict[int, bool] = {}
    for name, module in model.named_modules():
        for p in module.parameters(recurse=False):
            if id(p) in block_params:
                wanted = not freeze_predecessor
            elif _is_embedding(name, module):
                wanted = not freeze_embeddings
            else:
                wanted = not freeze_head
            trainable[id(p)] = trainable.get(id(p), False) or wanted
    for p in model.parameters():
        p.requires_grad_(trainable[id(p)])


def _replace_blocks(
    model: nn.Module,
    path: str,
    blocks: nn.ModuleList,
    successors: list[nn.Module],
    controller: TheseusController,
) -> None:
    """Put one trainable :class:`TheseusModule` per group (its predecessor blocks and successor block) where
    the block list ``path`` was, and attach ``controller`` as ``model.theseus``."""
    modules = []
    for i, (group, successor) in enumerate(zip(controller.groups, successors, strict=True)):
        _set_layer_index(successor, i)
        successor.requires_grad_(True)
        successor.train(model.training)
        modules.append(TheseusModule([blocks[j] for j in group], successor, i, controller))
    parent_path, _, attribute = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, attribute, nn.ModuleList(modules))
    model.theseus = controller


def _distillation_hook(model: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
    """Mix the task loss with ``T^2 * KL`` to the all-predecessor logits (``theseus_wrap(distill_alpha=...)``)."""
    controller = model.theseus
    if not model.training or controller.teacher:
        return None
    if getattr(output, "loss", None) is None:
        raise ValueError(
            "theseus_wrap(distill_alpha > 0) needs the model to compute its loss: pass labels to the model "
            "(do not use Trainer(compute_loss_func=...) with distillation)"
        )
    if getattr(output, "logits", None) is None:
        raise ValueError(
            _no_logits(
                controller.distill_alpha, f"its forward returned a {type(output).__name__} without logits"
            )
        )
    modes = [(module, module.training) for module in model.modules()]
    controller.teacher = True
    try:
        model.eval()
        with torch.no_grad():
            teacher = model.forward(*args, **kwargs).logits
    finally:
        controller.teacher = False
        for module, training in modes:
            module.training = training
    t = controller.distill_temperature
    student = output.logits.float() / t
    kl = nn.functional.kl_div(
        torch.log_softmax(student, -1),
        torch.log_softmax(teacher.float() / t, -1),
        log_target=True,
        reduction="none",
    )
    distill = kl.sum(-1).mean() * t * t
    output.loss = (1 - controller.distill_alpha) * output.loss + controller.distill_alpha * distill.to(
        output.loss.dtype
    )
    return output


def _no_logits(alpha: float, what: str) -> str:
    return (
        f"theseus_wrap(distill_alpha={alpha}) needs the model's logits, but {what}: TRL's fused LM "
        "head (model(..., fused_lm_head=True), SFTTrainer's loss path) scores only the target tokens. Wrap the "
        "model with distill_alpha=0.0 under SFTTrainer, or distil with transformers.Trainer"
    )


def _adapter_layers(module: nn.Module) -> list[str]:
    """Names of the PEFT adapter layers (``BaseTunerLayer``) inside ``module``; none while peft is not imported."""
    if "peft" not in sys.modules:
        return []
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [name for name, layer in module.named_modules() if isinstance(layer, BaseTunerLayer)]


def check_trainer_model(model: nn.Module) -> TheseusController:
    """The controller of the model a Trainer will train, after checking what trainers may have done to it.

    Raises ``ValueError`` when ``model`` was not prepared with :func:`theseus_wrap` (e.g. ``SFTTrainer(model="path")``
    loaded it), when PEFT put adapters into predecessor blocks (they would train the frozen predecessor, and PEFT
    freezes the successor blocks' own weights), or when distillation meets TRL's fused LM head (no logits).
    """
    try:
        controller = get_controller(model)
    except ValueError as exc:
        raise ValueError(
            f"{exc}: pass the model object prepared with theseus_wrap(model, n) (TRL's SFTTrainer(model='path'), "
            "with SFTConfig(model_init_kwargs=...), loads an unwrapped one)"
        ) from None
    in_predecessors = [
        f"{name}.predecessor.{layer}"
        for name, module in model.named_modules()
        if isinstance(module, TheseusModule)
        for layer in _adapter_layers(module.predecessor)
    ]
    if in_predecessors:
        raise ValueError(
            f"PEFT adapters in predecessor blocks: {', '.join(in_predecessors[:3])} ({len(in_predecessors)} in all). "
            "Theseus keeps the predecessor frozen and trains the successor blocks; adapters there would train the "
            "predecessor. Target the successor blocks only, e.g. LoraConfig(target_modules="
            r"r'.*\.successor\..*\.(q_proj|v_proj)'), or train without PEFT"
        )
    fused = any(
        "fused_lm_head" in inspect.signature(module.forward, follow_wrapped=False).parameters
        for module in model.modules()
        if "forward" in vars(module)  # TRL's add_fused_lm_head replaces the instance's forward
    )
    if fused and controller.distill_alpha > 0:
        raise ValueError(
            _no_logits(controller.distill_alpha, "the trainer replaced its forward by a fused_lm_head one")
        )
    return controller


def get_controller(model: nn.Module) -> TheseusController:
    """The :class:`TheseusController` of a model prepared by :func:`theseus_wrap` (also inside DDP/PEFT wrappers)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for module in model.modules():
        if isinstance(module, TheseusModule):
            return module.controller
    raise ValueError(f"{type(model).__name__} was not prepared with hfplug_theseus.theseus_wrap")


def export_successor(model: nn.Module) -> nn.Module:
    """A standard transformers model of the wrapped model's class with ``num_hidden_layers = n``.

    It holds the successor blocks and the (shared) embeddings and head; ``save_pretrained`` writes a checkpoint
    that ``AutoModelFor...from_pretrained`` loads without hfplug. The result is in eval mode and gives the same
    outputs as the wrapped model in eval.
    """
    controller = get_controller(model)
    if not hasattr(model, "config"):
        raise TypeError("export_successor needs a transformers PreTrainedModel (with .config)")
    if _adapter_layers(model):
        raise TypeError(
            f"export_successor got a {type(model).__name__} with PEFT adapter layers: merge the adapters first: "
            "export_successor(model.merge_and_unload())"
        )
    n, prefix = controller.num_modules, controller.block_path + "."
    config = copy.deepcopy(model.config)
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == _num_layers(model):
        config.layer_types = [
            layer_types[s if s is not None else i] for i, s in enumerate(controller.successor_sources)
        ]
    config.num_hidden_layers = n
    reference = next(p for p in model.parameters() if p.is_floating_point())
    successor = type(model)(config)
    with _gathered(list(model.parameters())):  # ZeRO-3: the full weights, on every rank
        state = {}
        for key, value in model.state_dict().items():
            if not key.startswith(prefix):
                state[key] = value
                continue
            index, branch, rest = key[len(prefix) :].split(".", 2)
            if branch == "successor":
                state[f"{prefix}{index}.{rest}"] = value
        # Buffers a plugin registered on the model itself (FAVOR+'s ``favor_state``) are not in a fresh model
        # of the class: carry them over as buffers of the successor so its checkpoints hold them too.
        extra = {
            name: buffer
            for name, buffer in model.named_buffers(recurse=False)
            if name not in successor._buffers
        }
        for name, buffer in extra.items():
            successor.register_buffer(name, buffer.clone(), persistent=name in state)
        successor.load_state_dict(state, strict=True)
    if getattr(model, "generation_config", None) is not None:
        successor.generation_config = copy.deepcopy(model.generation_config)
    return successor.to(device=reference.device, dtype=reference.dtype).eval()
