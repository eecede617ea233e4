"""Perturbation math on lists of embedding outputs (one tensor per call of the input-embedding module).

Norms: ``"global"`` is one L2 norm over the whole micro-batch (the post's Frobenius norm), ``"per_example"``
one L2 norm per example (batch dimension 0, over all calls; with ``documents``, the packed documents of a
padding-free batch), ``"per_token_inf"`` the L-infinity norm of each token vector (SMART's default). Norms and
KL divergences are computed in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensors = list[torch.Tensor]

NORMS = ("global", "per_example", "per_token_inf")
TINY = 1e-8  # added to norms before dividing, as in the post's reference code


def norms(tensors: Tensors, norm: str, documents: torch.Tensor | None = None) -> Tensors:
    """The chosen norm of ``tensors``, shaped to broadcast against each tensor (float32). ``documents`` (the
    ``(batch, tokens)`` document index of each token, see :func:`hfplug_adversarial._forward.packed_documents`)
    makes ``"per_example"`` one norm per document: ``||t_d|| = sqrt(sum over the tokens of d of ||t_i||^2)``."""
    values = [t.float() for t in tensors]
    if norm == "global":
        total = torch.sqrt(sum(v.pow(2).sum() for v in values))
        return [total] * len(values)
    if norm == "per_example" and documents is not None:
        index = documents.reshape(-1)
        squares = [v.pow(2).sum(-1).reshape(-1) for v in values]
        total = torch.sqrt(
            sum(squares[0].new_zeros(int(index.max()) + 1).index_add_(0, index, q) for q in squares)
        )
        return [total[documents].unsqueeze(-1) for _ in values]
    if norm == "per_example":
        total = torch.sqrt(sum(v.pow(2).flatten(1).sum(1) for v in values))
        return [total.view(-1, *[1] * (v.dim() - 1)) for v in values]
    if norm == "per_token_inf":
        return [v.abs().amax(-1, keepdim=True) for v in values]
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def all_finite(tensors: Tensors) -> bool:
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def normalize(tensors: Tensors, norm: str, documents: torch.Tensor | None = None) -> tuple[Tensors, bool]:
    """``t / (||t|| + 1e-8)`` for each tensor and whether every norm was finite."""
    ns = norms(tensors, norm, documents)
    return [t.float() / (n + TINY) for t, n in zip(tensors, ns, strict=True)], all_finite(ns)


def project(tensors: Tensors, radius: float, norm: str, documents: torch.Tensor | None = None) -> Tensors:
    """Project onto the ball ``||t|| <= radius`` of the chosen norm."""
    ns = norms(tensors, norm, documents)
    return [t * torch.clamp(radius / (n + TINY), max=1.0) for t, n in zip(tensors, ns, strict=True)]


def ascend(
    deltas: Tensors, grads: Tensors, alpha: float, radius: float, norm: str, documents: torch.Tensor | None
) -> tuple[Tensors, bool]:
    """One projected ascent step ``Proj_radius(delta + alpha * g / (||g|| + 1e-8))`` (PGD, FreeLB) and whether
    every ``||g||`` was finite."""
    direction, finite = normalize(grads, norm, documents)
    moved = [d + alpha * u for d, u in zip(deltas, direction, strict=True)]
    return project(moved, radius, norm, documents), finite


def share_by_token(grads: Tensors, ids: list[torch.Tensor | None]) -> tuple[Tensors, bool]:
    """The post's matrix direction ``G / (||G|| + 1e-8)`` on activations, and whether ``||G||`` is finite.

    ``G`` is the gradient of the embedding *matrix*: row ``v`` is the sum of the gradients of all occurrences of
    token id ``v``. Every occurrence gets its token's row of the direction, and the norm is the matrix norm
    ``||G||`` (each id counted once), not the norm of the per-occurrence tensor, which counts a repeated id
    (``[CLS]`` in every row) once per occurrence and shrinks the step."""
    if any(i is None for i in ids):
        raise ValueError(
            "share_by_token=True needs token ids reaching the input embeddings (not inputs_embeds)"
        )
    flat_ids = torch.cat([i.reshape(-1) for i in ids])
    flat_grads = torch.cat([g.reshape(-1, g.shape[-1]).float() for g in grads])
    unique, inverse = torch.unique(flat_ids, return_inverse=True)
    rows = flat_grads.new_zeros(len(unique), flat_grads.shape[-1]).index_add_(0, inverse, flat_grads)
    (norm,) = norms([rows], "global")
    shared = (rows / (norm + TINY))[inverse].split([i.numel() for i in ids])
    return [s.view(g.shape) for s, g in zip(shared, grads, strict=True)], all_finite([norm])


def total_norm(tensors: Tensors) -> float:
    """Global L2 norm for the logs (``torch.linalg.vector_norm``: no squared copy of the tensors)."""
    return float(
        torch.linalg.vector_norm(
            torch.stack(
                [
                    torch.linalg.vector_norm(t, dtype=torch.promote_types(t.dtype, torch.float32))
                    for t in tensors
                ]
            )
        )
    )


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-row ``KL(sg(p) || q) + KL(sg(q) || p)`` in float32 (mt-dnn's SymKlCriterion, unreduced)."""
    p_log = F.log_softmax(p_logits.float(), dim=-1)
    q_log = F.log_softmax(q_logits.float(), dim=-1)
    return kl_rows(p_log.detach(), q_log) + kl_rows(q_log.detach(), p_log)


def kl_rows(target_log: torch.Tensor, input_log: torch.Tensor) -> torch.Tensor:
    """Per-row ``KL(target || input)`` from log-probabilities."""
    return (target_log.exp() * (target_log - input_log)).sum(-1)
