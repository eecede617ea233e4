"""FAVOR+ settings, stored in ``model.config.favor`` so ``save_pretrained``/``from_pretrained`` round-trip."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

KERNELS = ("softmax", "relu")
RADII = ("chi", "quasi_uniform", "fixed")
CONFIG_ATTRIBUTE = "favor"


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
        recurrent_decode: with a key/value cache (DynamicCache), keep the causal prefix state (sum phi(k) v^T,
            sum phi(k)) on each attention module during no-grad inference, so a decode step featurizes only the
            new token; an exact fingerprint of the cached keys (O(L·d) integer sums) checks that the state still
            stands for the cache. :class:`~hfplug_favor.FavorCache` needs no check and is O(1) per token.
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
    recurrent_decode: bool = True

    def __post_init__(self) -> None:
        _check_int("nb_features", self.nb_features, minimum=1)
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        _check_bool("orthogonal", self.orthogonal)
        _check_int("chunk_size", self.chunk_size, minimum=1)
        _check_int("seed", self.seed, minimum=0)
        if self.redraw_interval is not None:
            _check_int("redraw_interval", self.redraw_interval, minimum=1)
        _check_int("redraw_count", self.redraw_count, minimum=0)
        if self.radii not in RADII:
            raise ValueError(f"radii must be one of {RADII}, got {self.radii!r}")
        _check_bool("hyperbolic", self.hyperbolic)
        if self.hyperbolic and self.nb_features % 2:
            raise ValueError(f"nb_features must be even when hyperbolic=True, got {self.nb_features}")
        if self.hyperbolic and self.kernel != "softmax":
            raise ValueError("hyperbolic=True only applies to kernel='softmax'")
        _check_bool("ignore_dropout", self.ignore_dropout)
        _check_bool("shift_keys", self.shift_keys)
        _check_bool("recurrent_decode", self.recurrent_decode)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FavorConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown FavorConfig field(s) {unknown}; accepted: {sorted(known)}")
        return cls(**values)

    def replace(self, **changes: Any) -> FavorConfig:
        return dataclasses.replace(self, **changes)


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")


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


def set_favor_config(model: Any, config: FavorConfig | dict[str, Any] | None = None) -> FavorConfig:
    """Store ``config`` (default ``FavorConfig()``) in ``model.config.favor`` (and every sub-config).

    Features are regenerated lazily from the new settings. Raises ``ValueError`` for models whose attention
    does not go through the interface. Returns the stored :class:`FavorConfig`.
    """
    if config is None:
        config = FavorConfig()
    elif isinstance(config, dict):
        config = FavorConfig.from_dict(config)
    elif not isinstance(config, FavorConfig):
        raise TypeError(f"config must be a FavorConfig, a dict of its fields or None, got {config!r}")
    check_favor_support(model)
    for sub_config in _configs(model):
        setattr(sub_config, CONFIG_ATTRIBUTE, config.to_dict())
    return config


def get_favor_config(model: Any) -> FavorConfig:
    """The :class:`FavorConfig` of ``model`` (``model.config.favor``, defaults when unset)."""
    return favor_config_from(model.config)
