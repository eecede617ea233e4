"""Exceptions raised by the hfplug core. All derive from :class:`HfplugError`."""

from __future__ import annotations


class HfplugError(Exception):
    """Base class of every error the hfplug core raises."""


class PluginLoadError(HfplugError, ImportError):
    """A plugin's entry point failed to import, to register, or implements a hook that does not exist."""


class DuplicateComponentError(HfplugError, ValueError):
    """Two distributions registered the same name for the same kind of component."""


class InvalidComponentError(HfplugError, TypeError):
    """A plugin registered something that is not the kind of object the hook accepts."""


class UnknownComponentError(HfplugError, KeyError):
    """No installed plugin registered the requested name."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
