"""FAVOR+ settings, stored in ``model.config.favor`` so ``save_pretrained``/``from_pretrained`` round-trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from hfplug.validation import check_bool, check_choice, check_int

KERNELS = ("softmax", "relu")
RADII = ("chi", "quasi_uniform", "fixed")
CONFIG_ATTRIBUTE = "favor"
# Largest number of random features and head dim accepted: W alone is m x d float32 and every token gets m
# features per head; the orthogonal draw makes a d x d QR per block of d rows.
MAX_FEATURES = 1 << 20
MAX_HEAD_DIM = 1 << 12
# Fields that configs saved by earlier versions may hold and that no longer mean anything: dropped on load
# (recurrent_decode chose a per-module decode state, replaced by FavorCache).
RETIRED_FIELDS = frozenset({"recurrent_decode"})


@dataclass(frozen=True)
class FavorConfig:
    """Settings of the FAVOR+ attention backend.

    Args:
        nb_features: number of random features m (default 256). With ``hyperbolic=True`` it must be even:
            m/2 projections are used with both signs.
        kernel: ``"softmax"`` (positive random features, unbiased for exp(q·k·scaling)) or ``"relu"``
            (the paper's "generalized" FAVOR+ ReLU kernel, phi(x) = relu(x W^T) + 1e-3).
        orthogonal: block-orthogonal projection rows (blocks of head_dim), else iid Gaussian rows.
        chunk_size: chunk length C of the causal path (quadratic inside a chunk, carried prefix state between
            chunks); memory O(L·C + (L/C)·m·d) per head.
        seed: base seed; the features of a layer are a pure function of (seed, layer index, redraw_count).
        redraw_interval: optimizer steps between feature redraws for :class:`FeatureRedrawCallback` (None: the
            callback must be given ``every_n_steps``; features never change otherwise).
        redraw_count: how many redraws happened (written by the callback; part of the feature seed).
        radii: row norms of the projection: ``"chi"`` (iid chi_d, matching Gaussian rows), ``"quasi_uniform"``
            (the chi_d quantiles at i/(n+1), randomly assigned: lower variance) or ``"fixed"`` (all sqrt(d)).
        hyperbolic: the paper's hyperbolic features (each projection used with + and - sign; lower variance).
        ignore_dropout: attention dropout cannot be applied (no attention matrix exists); by default a
            non-zero dropout in training raises, with this flag it is skipped.
        shift_keys: softmax kernel, non-causal attention: subtract c = mean(k) + mean(q) from every key before
            the feature map. Exact (softmax is invariant to a common key shift) and it minimises the mean
            |q + k - c|², which drives the estimator's variance.

    Decoding: ``generate(..., past_key_values=FavorCache())`` keeps the prefix sums (O(1) work per token);
    with transformers' default cache every step recomputes them from the cached keys and values.
    """

    nb_features: int = 256
    kernel: str = "softmax"
    orthogonal: bool = True
    chunk_size: int = 128
    seed: int = 0
    redraw_interval: int | None = None
    redraw_count: int = 0
    radii: str = "chi"
    hyperbolic: bool = False
    ignore_dropout: bool = False
    shift_keys: bool = True

    def __post_init__(self) -> None:
        check_int("nb_features", self.nb_features, minimum=1, maximum=MAX_FEATURES)
        check_choice("kernel", self.kernel, KERNELS)
        check_bool("orthogonal", self.orthogonal)
        check_int("chunk_size", self.chunk_size, minimum=1)
        check_int("seed", self.seed, minimum=0)
        if self.redraw_interval is not None:
            check_int("redraw_interval", self.redraw_interval, minimum=1)
        check_int("redraw_count", self.redraw_count, minimum=0)
        check_choice("radii", self.radii, RADII)
        check_bool("hyperbolic", self.hyperbolic)
        if self.hyperbolic and self.nb_features % 2:
            raise ValueError(f"nb_features must be even when hyperbolic=True, got {self.nb_features}")
        if self.hyperbolic and self.kernel != "softmax":
            raise ValueError(f"hyperbolic=True only applies to kernel='softmax', got kernel={self.kernel!r}")
        check_bool("ignore_dropout", self.ignore_dropout)
        check_bool("shift_keys", self.shift_keys)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FavorConfig:
        if not isinstance(values, dict):
            raise TypeError(f"values must be a dict of FavorConfig fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in values.items() if k not in RETIRED_FIELDS}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown FavorConfig field(s) {unknown}; accepted: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> FavorConfig:
        return dataclasses.replace(self, **changes)


def favor_config_from(config: Any) -> FavorConfig:
    """The :class:`FavorConfig` stored on a transformers config (defaults when none is stored)."""
    values = getattr(config, CONFIG_ATTRIBUTE, None)
    if values is None:
        return FavorConfig()
    if isinstance(values, FavorConfig):
        return values
    if not isinstance(values, dict):
        raise TypeError(f"config.{CONFIG_ATTRIBUTE} must be a dict of FavorConfig fields, got {values!r}")
    return FavorConfig.from_dict(values)


def check_favor_support(model: Any) -> None:
    """Raise ``ValueError`` when ``model`` does not dispatch attention through ``AttentionInterface``.

    Such models (RoFormer, DeBERTa-v2, ...) keep their own attention code, so ``attn_implementation="favor"``
    would silently run exact attention.
    """
    classes = {type(m) for m in model.modules() if hasattr(m, "_can_set_attn_implementation")}
    unsupported = sorted(c.__name__ for c in classes if not c._can_set_attn_implementation())
    if unsupported or not classes:
        names = ", ".join(unsupported) or type(model).__name__
        raise ValueError(
            f"{names} does not call transformers' AttentionInterface (it keeps its own attention code, like "
            "RoFormer and DeBERTa-v2), so the 'favor' backend would never run; use a model family that "
            "dispatches through the interface (BERT, RoBERTa, Llama, Qwen2, GPT-2, ...)"
        )


def _configs(model: Any) -> list[Any]:
    """The distinct config objects of ``model`` and of every submodule that holds one."""
    seen: dict[int, Any] = {}
    for module in (model, *model.modules()):
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            seen.setdefault(id(config), config)
    return list(seen.values())


LAYER_INDEX = "_favor_layer_idx"  # attribute: the layer index of an attention module without ``layer_idx``


def number_attention_layers(model: Any) -> None:
    """Give every attention module of ``model`` that has no integer ``layer_idx`` (DistilBERT's, ...) the index
    FAVOR+ draws its features with: its position among such modules in ``model.modules()`` order, which is
    the order of the layers. Attention modules are recognised by ``is_causal``, which transformers' attention
    functions read."""
    unnumbered = [
        module
        for module in model.modules()
        if hasattr(module, "is_causal") and not isinstance(getattr(module, "layer_idx", None), int)
    ]
    for index, module in enumerate(unnumbered):
        setattr(module, LAYER_INDEX, index)


STATE_BUFFER = (
    "favor_state"  # int64 [seed, redraw_count], a persistent buffer of the model: in every checkpoint
)
ATTACHED = "_favor_state_attached"  # attribute of every submodule of a model that carries the buffer
REDRAWS = "_favor_redraws"  # attribute of a model whose features a FeatureRedrawCallback drives
LOADED = "_favor_loaded_redraw"  # attribute: the redraw count of the last state dict loaded into the model


def attach_favor_state(model: Any, config: FavorConfig | None = None) -> None:
    """Give ``model`` the persistent buffer ``favor_state`` = [seed, redraw_count] (from ``config``, default the
    model's :class:`FavorConfig`) and a load hook that checks it against the config.

    The buffer is saved with the weights, so Trainer checkpoints carry the FAVOR+ seed and redraw count. When
    a state dict holding it is loaded (``Trainer(resume_from_checkpoint=...)``, ``load_best_model_at_end``,
    ``model.load_state_dict``), a different seed raises ``ValueError`` with both values; a different redraw
    count is adopted when a :class:`~hfplug_favor.FeatureRedrawCallback` drives the model (it then checks
    the count against the resumed global step) and raises otherwise. A state dict without the buffer loads
    as before (the key is not reported missing).
    """
    import torch

    config = get_favor_config(model) if config is None else config
    values = torch.tensor([config.seed, config.redraw_count], dtype=torch.int64)
    if STATE_BUFFER in dict(model.named_buffers(recurse=False)):
        getattr(model, STATE_BUFFER).copy_(values)
        return
    model.register_buffer(STATE_BUFFER, values, persistent=True)
    model.register_load_state_dict_post_hook(_check_loaded_state)
    for module in model.modules():
        setattr(module, ATTACHED, True)


def _check_loaded_state(model: Any, incompatible_keys: Any) -> None:
    missing = [k for k in incompatible_keys.missing_keys if k.rsplit(".", 1)[-1] == STATE_BUFFER]
    for key in missing:  # a checkpoint from before favor (or from sdpa): nothing to check
        incompatible_keys.missing_keys.remove(key)
    if missing:
        return
    seed, count = (int(v) for v in getattr(model, STATE_BUFFER).tolist())
    config = get_favor_config(model)
    if seed != config.seed:
        raise ValueError(
            f"the loaded state dict was trained with FAVOR+ seed={seed}, but this model's FavorConfig has "
            f"seed={config.seed}: its features would differ from the ones the weights were trained with; call "
            f"set_favor_config(model, get_favor_config(model).replace(seed={seed})) before loading or resuming"
        )
    if count != config.redraw_count:
        if not getattr(model, REDRAWS, False):
            raise ValueError(
                f"the loaded state dict was trained with FAVOR+ features at redraw_count={count}, but this model's "
                f"are at redraw_count={config.redraw_count} and no FeatureRedrawCallback drives them (resumed "
                "without the callback?): pass the same FeatureRedrawCallback to the Trainer, or "
                f"set_favor_config(model, get_favor_config(model).replace(redraw_count={count})) to keep that draw"
            )
        set_favor_config(model, config.replace(redraw_count=count))
    setattr(model, LOADED, count)


def set_favor_config(model: Any, config: FavorConfig | dict[str, Any] | None = None) -> FavorConfig:
    """Store ``config`` (default ``FavorConfig()``) in ``model.config.favor`` (and every sub-config), and in
    the model's ``favor_state`` buffer (see :func:`attach_favor_state`), so checkpoints carry seed and redraw
    count.

    Attention modules without ``layer_idx`` are numbered (see :func:`number_attention_layers`). Features are
    regenerated lazily from the new settings. Raises ``ValueError`` for models whose attention
    does not go through the interface. Returns the stored :class:`FavorConfig`.
    """
    if config is None:
        config = FavorConfig()
    elif isinstance(config, dict):
        config = FavorConfig.from_dict(config)
    elif not isinstance(config, FavorConfig):
        raise TypeError(f"config must be a FavorConfig, a dict of its fields or None, got {config!r}")
    check_favor_support(model)
    number_attention_layers(model)
    for sub_config in _configs(model):
        setattr(sub_config, CONFIG_ATTRIBUTE, config.to_dict())
    attach_favor_state(model, config)
    return config


def get_favor_config(model: Any) -> FavorConfig:
    """The :class:`FavorConfig` of ``model`` (``model.config.favor``, defaults when unset)."""
    return favor_config_from(model.config)
