"""hfplug hook implementations: the adversarial-training callbacks by name."""

from __future__ import annotations

from hfplug import hookimpl


@hookimpl
def register_callbacks(register) -> None:
    from .callbacks import FGM, FGSM, PGD, SMART, FreeLB, GradientPenalty

    register("fgm", FGM)
    register("fgsm", FGSM)
    register("pgd", PGD)
    register("freelb", FreeLB)
    register("gradient_penalty", GradientPenalty)
    register("smart", SMART)
