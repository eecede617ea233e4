"""The user-facing lookups: by name, through the registry the plugins filled."""

from __future__ import annotations

from typing import Any

from .plugins import get_system


def _component(label: str, name: str):
    return get_system().lookup(label, name)


def get_callback(name: str, **kwargs: Any):
    """``TrainerCallback`` instance registered as ``name``, built with ``kwargs``: ``Trainer(callbacks=[...])``."""
    return _component("callback", name).obj(**kwargs)


def get_loss(name: str, **kwargs: Any):
    """Loss registered as ``name``, built with ``kwargs``: pass it as ``Trainer(compute_loss_func=...)``."""
    return _component("loss", name).obj(**kwargs)


def get_logits_processor(name: str, **kwargs: Any):
    """``LogitsProcessor`` or ``StoppingCriteria`` registered as ``name``, built with ``kwargs``."""
    return _component("logits processor", name).obj(**kwargs)


def get_tokenizer_class(name: str) -> type:
    """Tokenizer class registered as ``name``."""
    return _component("tokenizer", name).obj


def use_attention(name: str) -> str:
    """Register attention backend ``name`` and its mask function with transformers, run the backend's
    ``on_use`` hook if it has one, and return ``name``.

    Pass the result as ``attn_implementation``: ``from_pretrained(path, attn_implementation=use_attention("favor"))``.
    Idempotent; nothing is registered with transformers before this call.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    component = _component("attention backend", name)
    AttentionInterface.register(name, component.obj)
    AttentionMaskInterface.register(name, component.extra["mask_fn"])
    on_use = component.extra.get("on_use")
    if on_use is not None:
        on_use()
    return name


def list_plugins() -> list[dict[str, Any]]:
    """Installed plugins: distribution, version, hooks implemented, names registered, load error (or None)."""
    return get_system().describe()


def load_plugins() -> None:
    """Load every selected plugin now (normally done on first lookup); raise if one fails."""
    get_system().load()
