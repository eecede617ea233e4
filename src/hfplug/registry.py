"""Name -> component tables filled by the plugins' ``register_*`` hooks."""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from . import hookspecs
from .errors import DuplicateComponentError, InvalidComponentError, UnknownComponentError

# Names provided by the first-party plugins, so an unknown-name error can say what to install (plugins.py).
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
    version: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def provider(self) -> str:
        """``"distribution version"``: who registered the component."""
        return f"{self.distribution} {self.version}"


_REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*")


def _is_reference(obj: Any) -> bool:
    """Whether ``obj`` is a lazy ``"package.module:name"`` reference, imported and validated on first lookup
    (a string of another shape is rejected at registration like any other wrong object)."""
    return isinstance(obj, str) and _REFERENCE.fullmatch(obj) is not None


def _check_subclass(obj: Any, *bases: str) -> None:
    """``obj`` must be a lazy reference or a subclass of one of the transformers classes named ``bases``."""
    if _is_reference(obj):
        return
    import transformers

    if not (isinstance(obj, type) and issubclass(obj, tuple(getattr(transformers, b) for b in bases))):
        expected = " or ".join(f"transformers.{b}" for b in bases)
        raise TypeError(
            f"expected a subclass of {expected} or a 'package.module:ClassName' string, got {obj!r}"
        )


def _check_callable(obj: Any, must: str, after: str = "") -> None:
    """``TypeError("<must> (or a 'package.module:function' string), got <obj><after>")`` unless ``obj`` is
    callable or a lazy reference."""
    if not (_is_reference(obj) or callable(obj)):
        raise TypeError(f"{must} (or a 'package.module:function' string), got {obj!r}{after}")


def _validate_callback(obj: Any) -> None:
    _check_subclass(obj, "TrainerCallback")


def _validate_loss(obj: Any) -> None:
    _check_callable(obj, "expected a callable loss factory (a class or a function)")


def _validate_attention(obj: Any, mask_fn: Any = None, on_use: Any = None) -> None:
    _check_callable(obj, "attention_fn must be callable")
    _check_callable(
        mask_fn,
        "mask_fn must be callable",
        ": without a mask function transformers silently passes attention_mask=None "
        "(use transformers.masking_utils.sdpa_mask for a boolean mask)",
    )
    if on_use is not None:
        _check_callable(on_use, "on_use must be a callable taking no arguments, or None")


def _validate_logits_processor(obj: Any) -> None:
    _check_subclass(obj, "LogitsProcessor", "StoppingCriteria")


def _validate_tokenizer(obj: Any) -> None:
    _check_subclass(obj, "PreTrainedTokenizerBase")


@dataclass(frozen=True)
class Kind:
    """A kind of component: its labels, the hook that fills it, the signature of that hook's ``register``
    callable (a protocol from :mod:`hfplug.hookspecs`) and how a registration is validated."""

    label: str
    plural: str
    hook: str
    protocol: type
    validate: Callable[..., None]

    def bind(self, *args: Any, **kwargs: Any) -> tuple[str, Any, dict[str, Any]]:
        """Check one ``register(*args, **kwargs)`` call: ``(name, obj, the other arguments)``.

        Raises ``TypeError`` saying what is wrong: arguments that do not fit the signature, a name that is
        not a non-empty string, an object the kind does not accept.
        """
        signature = inspect.signature(self.protocol.__call__)
        try:
            bound = signature.bind(None, *args, **kwargs)  # None for the protocol's ``self``
        except TypeError as exc:
            params = list(signature.parameters.values())[1:]
            shape = ", ".join(p.name if p.default is p.empty else f"{p.name}={p.default!r}" for p in params)
            raise TypeError(f"{self.hook} takes register({shape}): {exc}") from None
        bound.apply_defaults()
        (_, name), (_, obj), *rest = list(bound.arguments.items())[1:]
        extra = dict(rest)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{self.hook} registered a {self.label} with an invalid name {name!r}")
        try:
            self.validate(obj, **extra)
        except TypeError as exc:
            raise TypeError(f"{self.hook} registered {self.label} {name!r}: {exc}") from None
        return name, obj, extra


KINDS: dict[str, Kind] = {
    kind.hook: kind
    for kind in (
        Kind("callback", "callbacks", "register_callbacks", hookspecs.RegisterCallback, _validate_callback),
        Kind("loss", "losses", "register_losses", hookspecs.RegisterLoss, _validate_loss),
        Kind(
            "attention backend",
            "attention backends",
            "register_attention_backends",
            hookspecs.RegisterAttentionBackend,
            _validate_attention,
        ),
        Kind(
            "logits processor",
            "logits processors",
            "register_logits_processors",
            hookspecs.RegisterLogitsProcessor,
            _validate_logits_processor,
        ),
        Kind(
            "tokenizer", "tokenizers", "register_tokenizers", hookspecs.RegisterTokenizer, _validate_tokenizer
        ),
    )
}
KINDS_BY_LABEL: dict[str, Kind] = {kind.label: kind for kind in KINDS.values()}


class Registry:
    """Every registered component by kind and name. A name registered more than once is a conflict that
    no load order settles: looking it up raises :class:`DuplicateComponentError` naming every provider."""

    def __init__(self) -> None:
        self._claims: dict[str, dict[str, list[Component]]] = {label: {} for label in KINDS_BY_LABEL}

    def add(self, component: Component) -> None:
        self._claims[component.kind].setdefault(component.name, []).append(component)

    def rivals(self, component: Component) -> list[Component]:
        """The other components registered under ``component``'s kind and name (none: no conflict)."""
        claims = self._claims[component.kind][component.name]
        # identity is safe: only a name without rivals is ever resolved and replaced (see get)
        return [c for c in claims if c is not component] if len(claims) > 1 else []

    def check(self) -> None:
        """Raise :class:`DuplicateComponentError` for the first name registered more than once."""
        for table in self._claims.values():
            for claims in table.values():
                if len(claims) > 1:
                    raise _duplicate(claims)

    def get(self, label: str, name: str) -> Component:
        claims = self._claims[label].get(name, [])
        if len(claims) > 1:
            raise _duplicate(claims)
        if claims:
            if any(isinstance(v, str) for v in (claims[0].obj, *claims[0].extra.values())):
                claims[0] = self._resolve(claims[0])
            return claims[0]
        message = f"no {label} named {name!r}."
        close = difflib.get_close_matches(name, self.names(label), n=3)
        if close:
            message += f" Did you mean {', '.join(map(repr, close))}?"
        table = self._claims[label]
        installed = ", ".join(f"{n} ({table[n][0].distribution})" for n in self.names(label)) or "none"
        message += f" Installed {KINDS_BY_LABEL[label].plural}: {installed}."
        raise UnknownComponentError(message)

    @staticmethod
    def _resolve(component: Component) -> Component:
        """Import the lazy ``"module:attr"`` references of a registration (the object and any of the other
        ``register`` arguments) and validate what they name."""
        where = f"{component.provider} registered {component.kind} {component.name!r}"

        def load(value: Any) -> Any:
            if not isinstance(value, str):
                return value
            module_name, attr = value.split(":")
            try:
                return getattr(importlib.import_module(module_name), attr)
            except (ImportError, AttributeError) as exc:
                raise InvalidComponentError(f"{where} as {value!r}, which cannot be imported: {exc}") from exc

        obj, extra = load(component.obj), {key: load(value) for key, value in component.extra.items()}
        try:
            KINDS_BY_LABEL[component.kind].validate(obj, **extra)
        except TypeError as exc:
            raise InvalidComponentError(f"{where} as {component.obj!r}: {exc}") from None
        return replace(component, obj=obj, extra=extra)

    def names(self, label: str) -> list[str]:
        """The names of ``label`` that resolve to one component (conflicting names are left out)."""
        return sorted(name for name, claims in self._claims[label].items() if len(claims) == 1)


def _duplicate(claims: list[Component]) -> DuplicateComponentError:
    first = claims[0]
    return DuplicateComponentError(
        f"{first.kind} {first.name!r} is registered by {' and '.join(c.provider for c in claims)}; "
        "neither is used: uninstall one of them or narrow the loaded plugins with HFPLUG_PLUGINS"
    )
