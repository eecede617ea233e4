"""Plugin discovery and loading: the ``hfplug`` entry-point group, loaded lazily, one entry point at a time.

``HFPLUG_PLUGINS`` narrows what loads: unset loads every installed plugin, an empty string loads none, a
comma-separated list loads only those distributions. Items are distribution names, compared as pip compares
them (case, ``-``, ``_`` and ``.`` do not matter); ``imbalance`` is short for ``hfplug-imbalance`` unless a
distribution is itself named ``imbalance`` (then it is ambiguous and an error). Entry-point names are never
matched: any distribution may name its entry point ``imbalance``.

A plugin that fails in any way (its import or a hook raises anything but ``KeyboardInterrupt``, it registers
something invalid) is recorded with its error and keeps nothing registered; the other plugins are unaffected.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import (
    DuplicateComponentError,
    HfplugError,
    InvalidComponentError,
    PluginLoadError,
    UnknownComponentError,
)
from .registry import KINDS, KNOWN_PROVIDERS, Component, Kind, Registry

ENTRY_POINT_GROUP = "hfplug"
SELECT_ENV_VAR = "HFPLUG_PLUGINS"
SHORT_NAME_PREFIX = "hfplug-"


@dataclass
class PluginInfo:
    """What is known about one installed plugin entry point, loaded or not."""

    distribution: str
    version: str
    entry_point: str
    module: str
    hooks: list[str] = field(default_factory=list)
    error: HfplugError | None = None
    claimed: list[Component] = field(default_factory=list)
    """What its hooks registered; in the registry only if the plugin loaded without error."""
    running_hook: str | None = None
    """The hook being run: ``register`` works only inside it."""

    @property
    def label(self) -> str:
        return (
            f"{self.distribution} {self.version} (entry point {self.entry_point!r} -> module {self.module!r})"
        )

    def provides(self, label: str, name: str) -> bool:
        """Whether the plugin registered ``name`` (kept or not), or is the first-party provider of it."""
        known = KNOWN_PROVIDERS.get(label, {}).get(name)
        return (known is not None and _normalise(known) == _normalise(self.distribution)) or any(
            (c.kind, c.name) == (label, name) for c in self.claimed
        )


def _normalise(name: str) -> str:
    """A distribution name as pip compares it (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def selected_names() -> set[str] | None:
    """The names in ``HFPLUG_PLUGINS``: ``None`` when unset (load all), an empty set when empty (load none)."""
    raw = os.environ.get(SELECT_ENV_VAR)
    if raw is None:
        return None
    return {_normalise(part) for part in raw.split(",") if part.strip()}


@contextlib.contextmanager
def _blamed_on(info: PluginInfo, what: str) -> Iterator[None]:
    """Re-raise whatever the block raises, ``SystemExit`` included, as a :class:`PluginLoadError` naming the
    plugin; ``KeyboardInterrupt`` and the core's own errors pass unchanged."""
    try:
        yield
    except (KeyboardInterrupt, HfplugError):
        raise
    except BaseException as exc:
        raise PluginLoadError(f"{info.label} {what}: {type(exc).__name__}: {exc}") from exc


class PluginSystem:
    """A pluggy manager plus the registry its plugins fill; loads on first use."""

    def __init__(self) -> None:
        self.loaded = False
        self._clear()

    def _clear(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.plugins: list[PluginInfo] = []
        self.unselected: set[str] = set()
        """Installed plugin distributions ``HFPLUG_PLUGINS`` leaves out (normalised names)."""

    # -- loading -----------------------------------------------------------------------------------------
    def load(self, strict: bool = True) -> None:
        """Import every selected entry point and collect its registrations (once).

        With ``strict`` the first plugin that failed raises its error, then the first name two plugins
        registered raises :class:`DuplicateComponentError`; otherwise failures are only recorded (what
        ``hfplug plugins`` shows and what a failed lookup names).
        """
        if not self.loaded:
            self.loaded = True  # first: a lookup from inside a hook must not start loading again
            try:
                self._load_all()
            except KeyboardInterrupt:  # the next call starts again instead of using a half-loaded state
                self.loaded = False
                self._clear()
                raise
        if strict:
            for info in self.plugins:
                if info.error is not None:
                    raise info.error.with_traceback(None)  # stored and raised again: keep its traceback short
            self.registry.check()

    def _load_all(self) -> None:
        for ep, dist in self._entry_points():
            info = PluginInfo(dist.metadata["Name"] or "?", dist.version, ep.name, ep.value)
            self.plugins.append(info)
            self._load_plugin(info, ep)
        for info in self.plugins:
            if info.error is None:
                for component in info.claimed:
                    self.registry.add(component)

    def _entry_points(self) -> list[tuple[metadata.EntryPoint, metadata.Distribution]]:
        """The selected entry points, sorted by distribution name, then entry-point name."""
        installed: dict[str, list[tuple[metadata.EntryPoint, metadata.Distribution]]] = {}
        for dist in metadata.distributions():
            for ep in dist.entry_points.select(group=ENTRY_POINT_GROUP):
                found = installed.setdefault(_normalise(dist.metadata["Name"] or "?"), [])
                # a distribution can appear twice on sys.path: the first one wins, as for imports
                if ep.name not in {e.name for e, _ in found}:
                    found.append((ep, dist))
        chosen = self._select(installed)
        self.unselected = set(installed) - chosen
        return [pair for name in sorted(chosen) for pair in sorted(installed[name], key=lambda p: p[0].name)]

    def _select(self, installed: dict[str, Any]) -> set[str]:
        """The installed distributions ``HFPLUG_PLUGINS`` selects; what it names but cannot select is recorded
        as an error."""
        wanted = selected_names()
        if wanted is None:
            return set(installed)
        chosen: set[str] = set()
        missing = []
        for item in sorted(wanted):
            short = SHORT_NAME_PREFIX + item
            if item in installed and short in installed:
                self._selection_error(
                    item,
                    f"{item}, which is both the distribution {item} and short for {short}; write the full name",
                )
            elif item in installed or short in installed:
                chosen.add(item if item in installed else short)
            else:
                missing.append(item)
        if missing:
            self._selection_error(
                ", ".join(missing),
                f"{', '.join(missing)}, which is not an installed hfplug plugin; "
                f"installed: {', '.join(sorted(installed)) or 'none'}",
            )
        return chosen

    def _selection_error(self, names: str, problem: str) -> None:
        error = PluginLoadError(f"{SELECT_ENV_VAR} names {problem}")
        self.plugins.append(
            PluginInfo(distribution=names, version="-", entry_point="-", module="-", error=error)
        )

    def _load_plugin(self, info: PluginInfo, ep: metadata.EntryPoint) -> None:
        """Import one entry point and run its hooks. On failure the error goes to ``info`` and the module is
        unregistered; what the hooks registered stays on ``info.claimed`` only (all or nothing)."""
        try:
            if not ep.pattern.match(ep.value):
                raise PluginLoadError(
                    f"{info.label}: the entry point's value is not 'module' or 'module:attribute'"
                )
            with _blamed_on(info, "failed to import"):
                module = ep.load()
            self._register_module(info, module)
            for kind in KINDS.values():
                self._run_hook(info, module, kind)
        except HfplugError as exc:
            info.error = exc
            if self.pm.has_plugin(info.label):
                self.pm.unregister(name=info.label)

    def _register_module(self, info: PluginInfo, module: object) -> None:
        if self.pm.is_registered(module):
            raise PluginLoadError(
                f"{info.label}: this module is already loaded by {self.pm.get_name(module)}"
            )
        with _blamed_on(info, "could not be registered with pluggy"):
            try:
                self.pm.register(module, name=info.label)
                self.pm.check_pending()
            except pluggy.PluginValidationError as exc:
                raise PluginLoadError(
                    f"{info.label} implements an unknown or invalid hook: {exc}. "
                    f"Valid hooks: {', '.join(sorted(KINDS))}"
                ) from exc
        info.hooks = sorted(impl.name for impl in self.pm.get_hookcallers(module) or [])
        if not info.hooks:
            raise PluginLoadError(
                f"{info.label} implements no hfplug hook (is each hook decorated with @hfplug.hookimpl?)"
            )

    def _run_hook(self, info: PluginInfo, module: object, kind: Kind) -> None:
        others = [p for p in self.pm.get_plugins() if p is not module]
        register = functools.partial(self._register, info, kind)
        info.running_hook = kind.hook
        try:
            with _blamed_on(info, f"raised in {kind.hook}"):
                results = self.pm.subset_hook_caller(kind.hook, remove_plugins=others)(register=register)
        finally:
            info.running_hook = None
        if info.error is not None:  # a register(...) call failed and the hook caught the error
            raise info.error
        if results:  # pluggy leaves out None
            raise PluginLoadError(
                f"{info.label}: {kind.hook} returned {results[0]!r}: hooks call register(...) and return None"
            )

    @staticmethod
    def _register(info: PluginInfo, kind: Kind, *args: Any, **kwargs: Any) -> None:
        """The ``register`` callable a hook receives: checks one call and keeps it on ``info.claimed``.

        A failed call marks the plugin broken even if its hook catches the error; a call after the hook
        returned (a saved ``register``) raises instead of registering nothing.
        """
        if info.running_hook != kind.hook:
            what = args[0] if args else kwargs.get("name")
            raise PluginLoadError(
                f"{info.label}: register(...) of {kind.hook} was called for {what!r} after "
                f"{kind.hook} has returned; call register inside the hook"
            )
        try:
            name, obj, extra = kind.bind(*args, **kwargs)
        except TypeError as exc:
            info.error = InvalidComponentError(f"{info.label}: {exc}")
            raise info.error from None
        if any((c.kind, c.name) == (kind.label, name) for c in info.claimed):
            info.error = DuplicateComponentError(f"{info.label} registers {kind.label} {name!r} twice")
            raise info.error
        info.claimed.append(Component(kind.label, name, obj, info.distribution, info.version, extra))

    # -- lookup and listing ------------------------------------------------------------------------------
    def lookup(self, label: str, name: str) -> Component:
        """The component of kind ``label`` registered as ``name``, loading plugins first if needed.

        Plugins that failed to load never stop the lookup of a healthy plugin's name. When ``name`` is not
        registered they are named in the error: as the cause (:class:`PluginLoadError`) when one of them
        registered or is known to provide ``name``, as a possible cause otherwise.
        """
        self.load(strict=False)
        try:
            return self.registry.get(label, name)
        except UnknownComponentError as exc:
            broken = [info for info in self.plugins if info.error is not None]
            for info in broken:
                if info.provides(label, name):
                    raise PluginLoadError(
                        f"{label} {name!r} is provided by {info.distribution} {info.version}, which failed to "
                        f"load: {info.error}"
                    ) from info.error
            message = f"{exc}{self._provider_hint(label, name)}"
            if broken:
                causes = "; ".join(str(info.error) for info in broken)
                message += f" It may come from a plugin that failed to load: {causes}"
            raise UnknownComponentError(message) from None

    def _provider_hint(self, label: str, name: str) -> str:
        """Where a first-party ``name`` comes from: install it, or select it in ``HFPLUG_PLUGINS``."""
        provider = KNOWN_PROVIDERS.get(label, {}).get(name)
        if provider is None:
            return ""
        if _normalise(provider) in self.unselected:
            return (
                f" {name!r} is provided by {provider}, which is installed but "
                f"{SELECT_ENV_VAR}={os.environ.get(SELECT_ENV_VAR)!r} does not select it."
            )
        return f" {name!r} is provided by {provider}: pip install {provider}"

    def describe(self) -> list[dict[str, Any]]:
        """One dict per plugin entry point: distribution, version, hooks, registered names, conflicts (names
        another plugin registers too, so neither's is used) and error."""
        self.load(strict=False)
        return [
            {
                "name": info.distribution,
                "version": info.version,
                "entry_point": info.entry_point,
                "module": info.module,
                "hooks": info.hooks,
                "registered": self._registered(info),
                "conflicts": self._conflicts(info),
                "error": None if info.error is None else str(info.error),
            }
            for info in self.plugins
        ]

    def _registered(self, info: PluginInfo) -> dict[str, list[str]]:
        """The names ``info`` provides, by kind label (without conflicts; none if the plugin failed)."""
        out: dict[str, list[str]] = {}
        if info.error is None:
            for component in sorted(info.claimed, key=lambda c: (c.kind, c.name)):
                if not self.registry.rivals(component):
                    out.setdefault(component.kind, []).append(component.name)
        return out

    def _conflicts(self, info: PluginInfo) -> list[str]:
        if info.error is not None:
            return []
        return [
            f"{c.kind} {c.name!r} is also registered by {' and '.join(r.provider for r in rivals)}"
            for c in info.claimed
            if (rivals := self.registry.rivals(c))
        ]


_system: PluginSystem | None = None


def get_system() -> PluginSystem:
    """The process-wide plugin system (created on first use)."""
    global _system
    if _system is None:
        _system = PluginSystem()
    return _system


def reset() -> None:
    """Forget every loaded plugin; the next lookup discovers entry points again (used by tests)."""
    global _system
    _system = None
