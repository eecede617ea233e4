"""hfplug hook implementations: registers ``TheseusCallback`` as ``"theseus"``."""

from __future__ import annotations

import hfplug


@hfplug.hookimpl
def register_callbacks(register):
    from .callbacks import TheseusCallback

    register("theseus", TheseusCallback)
