"""Name -> component tables filled by the plugins' ``register_*`` hooks."""

from __future__ import annotations

import difflib
import importlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import DuplicateComponentError, InvalidComponentError, UnknownComponentError

# Names provided by the first-party plugins, so an unknown-name error can say what to install.
KNOWN_PROVIDERS: dict[str, dict[str, str]] = {
    "callback": {
        **dict.fromkeys(["fgm", "fgsm", "pgd", "freelb", "gradient_penalty", "smart"], "hfplug-adversarial"),
        "theseus": "hfplug-theseus",
        "feature_redraw": "hfplug-favor",
        "ldam_drw": "hfplug-imbalance",
    },
    "loss": dict.fromkeys(
        [
            "weighted_ce",
            "focal",
            "logit_adjusted",
            "balanced_softmax",
            "ldam",
            "dice",
            "f1_weighted_ce",
            "multilabel_ce",
        ],
        "hfplug-imbalance",
    ),
    "attention backend": {"favor": "hfplug-favor"},
    "logits processor": dict.fromkeys(
        [
            "consistent_top_k",
            "consistent_top_p",
            "consistent_min_p",
            "self_terminating",
            "dry",
            "loop_stop",
            "loop_eos",
        ],
        "hfplug-noloop",
    ),
    "tokenizer": {"wobert": "hfplug-wobert"},
}


@dataclass(frozen=True)
class Component:
    """One registered component: what it is, its name, the object(s) and who registered it."""

    kind: str
    name: str
    obj: Any
    distribution: str
    extra: dict[str, Any] = field(default_factory=dict)


def _is_subclass(obj: Any, bases: tuple[type, ...]) -> bool:
    return isinstance(obj, type) and issubclass(obj, bases)


def _validate_callback(obj: Any) -> None:
    from transformers import TrainerCallback

    if not _is_subclass(obj, (TrainerCallback,)):
        raise TypeError(f"expected a subclass of transformers.TrainerCallback, got {obj!r}")


def _validate_loss(obj: Any) -> None:
    if not callable(obj):
        raise TypeError(f"expected a callable loss factory (a class or a function), got {obj!r}")


def _validate_attention(obj: Any, mask_fn: Any = None, on_use: Any = None) -> None:
    if not callable(obj):
        raise TypeError(f"attention_fn must be callable, got {obj!r}")
    if not callable(mask_fn):
        raise TypeError(
            f"mask_fn must be callable, got {mask_fn!r}: without a mask function transformers silently "
            "passes attention_mask=None (use transformers.masking_utils.sdpa_mask for a boolean mask)"
        )
    if on_use is not None and not callable(on_use):
        raise TypeError(f"on_use must be a callable taking no arguments, or None; got {on_use!r}")


def _validate_logits_processor(obj: Any) -> None:
    from transformers import LogitsProcessor, StoppingCriteria

    if not _is_subclass(obj, (LogitsProcessor, StoppingCriteria)):
        raise TypeError(
            f"expected a subclass of transformers.LogitsProcessor or transformers.StoppingCriteria, got {obj!r}"
        )


def _validate_tokenizer(obj: Any) -> None:
    from transformers import PreTrainedTokenizerBase

    if isinstance(obj, str):  # a lazy "package.module:ClassName" reference, imported on first lookup
        if not _REFERENCE.fullmatch(obj):
            raise TypeError(f"a lazy reference must look like 'package.module:ClassName', got {obj!r}")
        return
    if not _is_subclass(obj, (PreTrainedTokenizerBase,)):
        raise TypeError(
            f"expected a subclass of transformers.PreTrainedTokenizerBase or a 'package.module:ClassName' "
            f"string, got {obj!r}"
        )


_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class Kind:
    """A kind of component: its label, the hook that fills it and how a registration is validated."""

    label: str
    hook: str
    validate: Callable[..., None]


KINDS: dict[str, Kind] = {
    kind.hook: kind
    for kind in (
        Kind("callback", "register_callbacks", _validate_callback),
        Kind("loss", "register_losses", _validate_loss),
        Kind("attention backend", "register_attention_backends", _validate_attention),
        Kind("logits processor", "register_logits_processors", _validate_logits_processor),
        Kind("tokenizer", "register_tokenizers", _validate_tokenizer),
    )
}


class Registry:
    """All registered components, one table per kind."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, Component]] = {kind.label: {} for kind in KINDS.values()}

    def add(self, kind: Kind, name: str, obj: Any, distribution: str, **extra: Any) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidComponentError(
                f"{distribution} registered a {kind.label} with an invalid name {name!r}"
            )
        try:
            kind.validate(obj, **extra)
        except TypeError as exc:
            raise InvalidComponentError(
                f"{distribution} registered {kind.label} {name!r} through {kind.hook}: {exc}"
            ) from None
        table = self._tables[kind.label]
        if name in table:
            raise DuplicateComponentError(
                f"{kind.label} {name!r} is registered by both {table[name].distribution} and {distribution}; "
                "uninstall one of them or narrow the loaded plugins with HFPLUG_PLUGINS"
            )
        table[name] = Component(kind.label, name, obj, distribution, extra)

    def get(self, label: str, name: str) -> Component:
        table = self._tables[label]
        if name in table:
            if isinstance(table[name].obj, str):
                table[name] = self._resolve(table[name])
            return table[name]
        message = f"no {label} named {name!r}."
        close = difflib.get_close_matches(name, list(table), n=3)
        if close:
            message += f" Did you mean {', '.join(map(repr, close))}?"
        installed = ", ".join(f"{c.name} ({c.distribution})" for c in table.values()) or "none"
        message += f" Installed {label}s: {installed}."
        provider = KNOWN_PROVIDERS.get(label, {}).get(name)
        if provider:
            message += f" {name!r} is provided by {provider}: pip install {provider}"
        raise UnknownComponentError(message)

    @staticmethod
    def _resolve(component: Component) -> Component:
        """Import a lazy ``"module:attr"`` registration and validate what it names."""
        module_name, attr = component.obj.split(":")
        where = (
            f"{component.distribution} registered {component.kind} {component.name!r} as {component.obj!r}"
        )
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise InvalidComponentError(f"{where}, which cannot be imported: {exc}") from exc
        kind = next(kind for kind in KINDS.values() if kind.label == component.kind)
        try:
            kind.validate(obj, **component.extra)
        except TypeError as exc:
            raise InvalidComponentError(f"{where}: {exc}") from None
        return Component(component.kind, component.name, obj, component.distribution, component.extra)

    def names(self, label: str) -> list[str]:
        return sorted(self._tables[label])

    def by_distribution(self, distribution: str) -> dict[str, list[str]]:
        """Names registered by ``distribution``, keyed by kind label (kinds with no names are omitted)."""
        out: dict[str, list[str]] = {}
        for label, table in self._tables.items():
            names = sorted(n for n, c in table.items() if c.distribution == distribution)
            if names:
                out[label] = names
        return out
