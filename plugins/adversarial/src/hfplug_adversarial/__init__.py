"""Adversarial training on token-embedding outputs as ``transformers.Trainer`` callbacks."""

from .callbacks import FGM, FGSM, PGD, SMART, AdversarialCallback, FreeLB, GradientPenalty

__all__ = ["FGM", "FGSM", "PGD", "SMART", "AdversarialCallback", "FreeLB", "GradientPenalty"]
