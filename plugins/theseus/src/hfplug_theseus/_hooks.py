"""hfplug hook implementations: registers ``TheseusCallback`` as ``"theseus"`` (a lazy reference: loading
plugins imports nothing)."""

from __future__ import annotations

import hfplug
from hfplug.hookspecs import RegisterCallback


@hfplug.hookimpl
def register_callbacks(register: RegisterCallback) -> None:
    register("theseus", "hfplug_theseus:TheseusCallback")
