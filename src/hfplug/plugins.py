"""Plugin discovery and loading: the ``hfplug`` entry-point group, loaded lazily, one entry point at a time.

``HFPLUG_PLUGINS`` narrows what loads: unset loads every installed plugin, an empty string loads none, a
comma-separated list loads only those distributions (``hfplug-imbalance,hfplug-noloop``; the short
entry-point names ``imbalance,noloop`` are accepted too).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import pluggy

from . import hookspecs
from .errors import HfplugError, PluginLoadError
from .registry import KINDS, Registry

ENTRY_POINT_GROUP = "hfplug"
SELECT_ENV_VAR = "HFPLUG_PLUGINS"


@dataclass
class PluginInfo:
    """What is known about one installed plugin entry point, loaded or not."""

    distribution: str
    version: str
    entry_point: str
    module: str
    hooks: list[str] = field(default_factory=list)
    error: HfplugError | None = None

    @property
    def label(self) -> str:
        return (
            f"{self.distribution} {self.version} (entry point {self.entry_point!r} -> module {self.module!r})"
        )


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def selected_names() -> set[str] | None:
    """The names in ``HFPLUG_PLUGINS``: ``None`` when unset (load all), an empty set when empty (load none)."""
    raw = os.environ.get(SELECT_ENV_VAR)
    if raw is None:
        return None
    return {_normalise(part) for part in raw.split(",") if part.strip()}


class PluginSystem:
    """A pluggy manager plus the registry its plugins fill; loads on first use."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.plugins: list[PluginInfo] = []
        self.loaded = False

    # -- loading -----------------------------------------------------------------------------------------
    def load(self, strict: bool = True) -> None:
        """Import every selected entry point and collect its registrations (once).

        With ``strict`` the first plugin that failed raises its :class:`PluginLoadError`; otherwise the
        failure is only recorded on its :class:`PluginInfo` (what ``hfplug plugins`` shows).
        """
        if not self.loaded:
            self.loaded = True
            self._load_entry_points()
            self._collect_registrations()
        if strict:
            failed = [p for p in self.plugins if p.error is not None]
            if failed:
                raise failed[0].error

    def _entry_points(self) -> list[tuple[metadata.EntryPoint, metadata.Distribution]]:
        wanted = selected_names()
        found = []
        seen: set[tuple[str, str]] = set()
        for dist in metadata.distributions():
            dist_name = dist.metadata["Name"] or "?"
            for ep in dist.entry_points:
                key = (_normalise(dist_name), ep.name)
                if ep.group != ENTRY_POINT_GROUP or key in seen:  # a dist can appear twice on sys.path
                    continue
                seen.add(key)
                if wanted is None or {_normalise(dist_name), _normalise(ep.name)} & wanted:
                    found.append((ep, dist))
        if wanted:
            known = {_normalise(d.metadata["Name"] or "") for _, d in found} | {
                _normalise(e.name) for e, _ in found
            }
            missing = sorted(wanted - known)
            if missing:
                self.plugins.append(
                    PluginInfo(
                        distribution=", ".join(missing),
                        version="-",
                        entry_point="-",
                        module="-",
                        error=PluginLoadError(
                            f"{SELECT_ENV_VAR} names {', '.join(missing)}, which is not an installed hfplug "
                            f"plugin; installed: {', '.join(self.installed_distributions()) or 'none'}"
                        ),
                    )
                )
        return sorted(found, key=lambda pair: (_normalise(pair[1].metadata["Name"] or ""), pair[0].name))

    @staticmethod
    def installed_distributions() -> list[str]:
        return sorted(
            {
                d.metadata["Name"]
                for d in metadata.distributions()
                if any(ep.group == ENTRY_POINT_GROUP for ep in d.entry_points)
            }
        )

    def _load_entry_points(self) -> None:
        for ep, dist in self._entry_points():
            info = PluginInfo(dist.metadata["Name"], dist.version, ep.name, ep.value)
            self.plugins.append(info)
            try:
                module = ep.load()
            except Exception as exc:
                info.error = PluginLoadError(f"{info.label} failed to import: {type(exc).__name__}: {exc}")
                info.error.__cause__ = exc
                continue
            try:
                self.pm.register(module, name=info.label)
                self.pm.check_pending()
            except pluggy.PluginValidationError as exc:
                if self.pm.is_registered(module):
                    self.pm.unregister(module)
                info.error = PluginLoadError(
                    f"{info.label} implements an unknown or invalid hook: {exc}. "
                    f"Valid hooks: {', '.join(sorted(KINDS))}"
                )
                info.error.__cause__ = exc
                continue
            info.hooks = sorted(impl.name for impl in self.pm.get_hookcallers(module) or [])

    def _collect_registrations(self) -> None:
        for info in self.plugins:
            if info.error is not None:
                continue
            plugin = self.pm.get_plugin(info.label)
            others = [p for p in self.pm.get_plugins() if p is not plugin]
            for hook_name, kind in KINDS.items():
                register = functools.partial(self._register, kind, info.distribution)
                try:
                    self.pm.subset_hook_caller(hook_name, remove_plugins=others)(register=register)
                except HfplugError as exc:
                    info.error = exc
                    break
                except Exception as exc:
                    info.error = PluginLoadError(
                        f"{info.label} raised in {hook_name}: {type(exc).__name__}: {exc}"
                    )
                    info.error.__cause__ = exc
                    break

    def _register(self, kind: Any, distribution: str, name: str, obj: Any, *args: Any, **kwargs: Any) -> None:
        if kind.hook == "register_attention_backends":
            extra = dict(zip(("mask_fn", "on_use"), args, strict=False))
            if len(args) > 2 or set(kwargs) - {"mask_fn", "on_use"} or set(extra) & set(kwargs):
                raise PluginLoadError(
                    f"{distribution}: {kind.hook} takes register(name, attention_fn, mask_fn, on_use=None), "
                    f"got extra {args!r} {kwargs!r}"
                )
            self.registry.add(kind, name, obj, distribution, **{"mask_fn": None, **extra, **kwargs})
        else:
            if args or kwargs:
                raise PluginLoadError(
                    f"{distribution}: {kind.hook} takes register(name, obj), got extra {args!r} {kwargs!r}"
                )
            self.registry.add(kind, name, obj, distribution)

    # -- listing -----------------------------------------------------------------------------------------
    def describe(self) -> list[dict[str, Any]]:
        """One dict per plugin entry point: distribution, version, hooks, registered names, error."""
        self.load(strict=False)
        return [
            {
                "name": info.distribution,
                "version": info.version,
                "entry_point": info.entry_point,
                "module": info.module,
                "hooks": info.hooks,
                "registered": self.registry.by_distribution(info.distribution) if info.error is None else {},
                "error": None if info.error is None else str(info.error),
            }
            for info in self.plugins
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
