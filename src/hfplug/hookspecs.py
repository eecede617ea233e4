"""Hook specifications for hfplug plugins.

Every hook receives a ``register`` callable from the core and returns nothing. A plugin calls
``register`` once per component it provides; the core validates the component, records which
distribution provided it and refuses a name that another distribution already claimed. All hooks are
collect-all (no ``firstresult``): two plugins claiming one name is an error, never a silent override.

Implementations live in a plugin's ``_hooks`` module, decorated with :data:`hfplug.hookimpl`. Every
installed plugin's hook module is imported whenever plugins load, so it imports nothing heavy, and every
argument of ``register`` after the name may be a lazy ``"package.module:name"`` string instead of the object:
the first lookup of that name imports and validates it, so loading plugins imports neither torch nor
transformers. (Importing a component inside the hook body instead also works, but loading then pays for it.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import pluggy

if TYPE_CHECKING:
    from collections.abc import Callable

    from transformers import LogitsProcessor, PreTrainedTokenizerBase, StoppingCriteria, TrainerCallback

PROJECT_NAME = "hfplug"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


class RegisterCallback(Protocol):
    def __call__(self, name: str, callback_cls: type[TrainerCallback] | str) -> None: ...


class RegisterLoss(Protocol):
    def __call__(self, name: str, factory: Callable[..., Any] | str) -> None: ...


class RegisterAttentionBackend(Protocol):
    def __call__(
        self,
        name: str,
        attention_fn: Callable[..., Any] | str,
        mask_fn: Callable[..., Any] | str,
        on_use: Callable[[], None] | str | None = None,
    ) -> None: ...


class RegisterLogitsProcessor(Protocol):
    def __call__(
        self, name: str, processor_cls: type[LogitsProcessor] | type[StoppingCriteria] | str
    ) -> None: ...


class RegisterTokenizer(Protocol):
    def __call__(self, name: str, tokenizer_cls: type[PreTrainedTokenizerBase] | str) -> None: ...


@hookspec
def register_callbacks(register: RegisterCallback) -> None:
    """Register training callbacks: ``register(name, callback_cls)``.

    ``callback_cls`` must be a subclass of ``transformers.TrainerCallback`` (or a lazy reference to one).
    ``hfplug.get_callback(name, **kwargs)`` returns ``callback_cls(**kwargs)``, ready for
    ``Trainer(callbacks=[...])``.
    """


@hookspec
def register_losses(register: RegisterLoss) -> None:
    """Register loss factories: ``register(name, factory)``.

    ``factory(**kwargs)`` (a class or a function, or a lazy reference to one) must return a callable usable
    as ``Trainer(compute_loss_func=...)``: ``loss(outputs, labels, num_items_in_batch=None) -> Tensor``,
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
    for anything else the backend needs to set up. Each of the three may be a lazy reference.
    """


@hookspec
def register_logits_processors(register: RegisterLogitsProcessor) -> None:
    """Register generation components, logits processors AND stopping criteria: ``register(name, processor_cls)``.

    ``processor_cls`` must subclass ``transformers.LogitsProcessor`` or ``transformers.StoppingCriteria`` (or
    be a lazy reference to one): both are what ``generate()`` takes to steer or end decoding, and they share
    one table of names. ``hfplug.get_logits_processor(name, **kwargs)`` returns ``processor_cls(**kwargs)``,
    for ``generate(logits_processor=[...])`` or ``generate(stopping_criteria=[...])`` by its type.
    """


@hookspec
def register_tokenizers(register: RegisterTokenizer) -> None:
    """Register tokenizer classes: ``register(name, tokenizer_cls)``.

    ``tokenizer_cls`` must subclass ``transformers.PreTrainedTokenizerBase``, or be a lazy reference to one
    (so that registering the class with ``AutoTokenizer``, which its module does on import, happens at the
    first ``hfplug.get_tokenizer_class(name)``, not when plugins load); ``hfplug.get_tokenizer_class(name)``
    returns the class.
    """
