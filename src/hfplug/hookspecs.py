"""Hook specifications for hfplug plugins.

Every hook receives a ``register`` callable from the core and returns nothing. A plugin calls
``register`` once per component it provides; the core validates the component, records which
distribution provided it and refuses a name that another distribution already claimed. All hooks are
collect-all (no ``firstresult``): two plugins claiming one name is an error, never a silent override.

Implementations live in a plugin's ``_hooks`` module, decorated with :data:`hfplug.hookimpl`, and must
import nothing heavy at module level: import the component inside the hook body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    from transformers import PreTrainedTokenizerBase, TrainerCallback

PROJECT_NAME = "hfplug"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


class RegisterCallback(Protocol):
    def __call__(self, name: str, callback_cls: type[TrainerCallback]) -> None: ...


class RegisterLoss(Protocol):
    def __call__(self, name: str, factory: Callable[..., Any]) -> None: ...


class RegisterAttentionBackend(Protocol):
    def __call__(
        self,
        name: str,
        attention_fn: Callable[..., Any],
        mask_fn: Callable[..., Any],
        on_use: Callable[[], None] | None = None,
    ) -> None: ...


class RegisterLogitsProcessor(Protocol):
    def __call__(self, name: str, processor_cls: type) -> None: ...


class RegisterTokenizer(Protocol):
    def __call__(self, name: str, tokenizer_cls: type[PreTrainedTokenizerBase] | str) -> None: ...


@hookspec
def register_callbacks(register: RegisterCallback) -> None:
    """Register training callbacks: ``register(name, callback_cls)``.

    ``callback_cls`` must be a subclass of ``transformers.TrainerCallback``. ``hfplug.get_callback(name,
    **kwargs)`` returns ``callback_cls(**kwargs)``, ready for ``Trainer(callbacks=[...])``.
    """


@hookspec
def register_losses(register: RegisterLoss) -> None:
    """Register loss factories: ``register(name, factory)``.

    ``factory(**kwargs)`` (a class or a function) must return a callable usable as
    ``Trainer(compute_loss_func=...)``: ``loss(outputs, labels, num_items_in_batch=None) -> Tensor``,
    returning ``sum / num_items_in_batch`` when the Trainer passes ``num_items_in_batch``.
    """


@hookspec
def register_attention_backends(register: RegisterAttentionBackend) -> None:
    """Register attention backends: ``register(name, attention_fn, mask_fn, on_use=None)``.

    ``attention_fn(module, query, key, value, attention_mask, **kwargs) -> (attn_output, attn_weights)``
    follows ``transformers.AttentionInterface``; ``mask_fn`` follows ``AttentionMaskInterface`` (for example
    ``transformers.masking_utils.sdpa_mask``). Both are required: without a mask function transformers
    silently passes ``attention_mask=None``. Nothing touches transformers until ``hfplug.use_attention(name)``,
    which registers both and then calls ``on_use()`` (optional, idempotent: every call runs it), the place
    for anything else the backend needs to set up.
    """


@hookspec
def register_logits_processors(register: RegisterLogitsProcessor) -> None:
    """Register generation components: ``register(name, processor_cls)``.

    ``processor_cls`` must subclass ``transformers.LogitsProcessor`` or ``transformers.StoppingCriteria``.
    ``hfplug.get_logits_processor(name, **kwargs)`` returns ``processor_cls(**kwargs)``.
    """


@hookspec
def register_tokenizers(register: RegisterTokenizer) -> None:
    """Register tokenizer classes: ``register(name, tokenizer_cls)``.

    ``tokenizer_cls`` must subclass ``transformers.PreTrainedTokenizerBase``, or be a lazy
    ``"package.module:ClassName"`` string that ``hfplug.get_tokenizer_class(name)`` imports on first lookup
    (so registering the class with ``AutoTokenizer`` happens when asked, not when plugins load);
    ``hfplug.get_tokenizer_class(name)`` returns the class.
    """
