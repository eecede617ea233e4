"""hfplug hook implementations: the adversarial-training callbacks by name, as lazy references (loading
plugins imports nothing; the first ``hfplug.get_callback`` of one of them imports ``callbacks``)."""

from __future__ import annotations

from hfplug import hookimpl
from hfplug.hookspecs import RegisterCallback

_CALLBACKS = {
    "fgm": "FGM",
    "fgsm": "FGSM",
    "pgd": "PGD",
    "freelb": "FreeLB",
    "gradient_penalty": "GradientPenalty",
    "smart": "SMART",
}


@hookimpl
def register_callbacks(register: RegisterCallback) -> None:
    for name, cls in _CALLBACKS.items():
        register(name, f"hfplug_adversarial:{cls}")
