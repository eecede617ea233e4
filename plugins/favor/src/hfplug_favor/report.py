"""Accuracy report: the same inputs through exact (sdpa) and FAVOR+ attention."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from .attention import _layer_index, favor_attention_forward
from .configuration_favor import check_favor_support, number_attention_layers

_REPORT_BACKEND = "favor_report"


def _relative_error(approx: torch.Tensor, exact: torch.Tensor, rows: torch.Tensor | None) -> float:
    # outputs (B, L, H, D); rows (B, L) bool: query rows that attend to at least one key
    if rows is not None:
        approx, exact = approx[rows], exact[rows]
    return float((approx.float() - exact.float()).norm() / exact.float().norm().clamp_min(1e-30))


def _recording_attention(records: list[dict[str, Any]]):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
        out, _ = favor_attention_forward(
            module, query, key, value, attention_mask, scaling, dropout, **kwargs
        )
        exact, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask, scaling=scaling, **kwargs
        )
        uniform, _ = sdpa_attention_forward(
            module, torch.zeros_like(query), key, value, attention_mask, scaling=scaling, **kwargs
        )
        rows = None if attention_mask is None else attention_mask[:, 0, :, : key.shape[-2]].any(-1)
        records.append(
            {
                "layer": _layer_index(module),
                "relative_error": _relative_error(out, exact, rows),
                "uniform_relative_error": _relative_error(uniform, exact, rows),
            }
        )
        return out, None

    return attention


def _token_mask(inputs: Mapping[str, Any], shape: torch.Size) -> torch.Tensor:
    mask = inputs.get("attention_mask")
    if mask is None or tuple(mask.shape) != tuple(shape):
        return torch.ones(shape, dtype=torch.bool)
    return mask.bool()


@torch.no_grad()
def favor_report(model: Any, inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Run ``model(**inputs)`` with sdpa and with favor (current ``model.config.favor``) and compare.

    Returns a JSON-ready dict:

    - ``layers``: per attention call, the relative Frobenius error ||favor - exact|| / ||exact|| of the
      attention output on that layer's own inputs (during the favor pass), beside the error of uniform
      attention (all allowed keys weighted equally), the trivial output FAVOR+ must beat;
    - ``hidden_cosine``: mean cosine of the final hidden states over non-padded tokens;
    - ``logits_kl``: mean KL(exact || favor) of the softmax over the logits (None without logits).

    The model runs in eval mode; its attention implementation and training flag are restored afterwards.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    check_favor_support(model)
    number_attention_layers(model)
    records: list[dict[str, Any]] = []
    AttentionInterface.register(_REPORT_BACKEND, _recording_attention(records))
    AttentionMaskInterface.register(_REPORT_BACKEND, sdpa_mask)
    original, was_training = model.config._attn_implementation, model.training
    model.eval()
    try:
        model.set_attn_implementation("sdpa")
        exact = model(**inputs, output_hidden_states=True)
        model.set_attn_implementation(_REPORT_BACKEND)
        approx = model(**inputs, output_hidden_states=True)
    finally:
        model.set_attn_implementation(original)
        model.train(was_training)

    hidden_exact, hidden_approx = exact.hidden_states[-1], approx.hidden_states[-1]
    tokens = _token_mask(inputs, hidden_exact.shape[:2]).to(hidden_exact.device)
    cosine = torch.nn.functional.cosine_similarity(hidden_exact.float(), hidden_approx.float(), dim=-1)
    report: dict[str, Any] = {
        "layers": records,
        "hidden_cosine": float(cosine[tokens].mean()),
        "logits_kl": None,
    }
    logits_exact, logits_approx = getattr(exact, "logits", None), getattr(approx, "logits", None)
    if logits_exact is not None and logits_approx is not None:
        log_p = torch.log_softmax(logits_exact.float(), -1)
        log_q = torch.log_softmax(logits_approx.float(), -1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        if kl.dim() == 2:
            kl = kl[_token_mask(inputs, kl.shape).to(kl.device)]
        report["logits_kl"] = float(kl.mean())
    return report
