"""References shared by the FAVOR+ tests: random inputs and the quadratic masked FAVOR+ form in float64."""

from __future__ import annotations

import math

import torch


def quadratic_favor(q, k, v, W, valid=None, causal=False, scaling=None):
    """phi(x)_i = exp(w_i·x' - |x'|²/2), x' = x·scaling^(1/2); A = phi(Q) phi(K)^T masked; out = A V / A 1."""
    G = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(G, 1).double(), v.repeat_interleave(G, 1).double()
    s = math.sqrt(scaling or q.shape[-1] ** -0.5)
    W = W.double()

    def phi(x):
        x = x.double() * s
        return torch.exp(x @ W.T - (x * x).sum(-1, keepdim=True) / 2)

    A = phi(q) @ phi(k).transpose(-1, -2)
    if causal:
        A = A.tril(k.shape[-2] - q.shape[-2])
    if valid is not None:
        A = A * valid[:, None, None, :]
    return (A @ v) / A.sum(-1, keepdim=True).clamp_min(1e-300)  # rows without keys: 0


def inputs(B=2, H=4, Hkv=2, L=37, D=16, scale=0.6, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, L, D, generator=g) * scale
    k = torch.randn(B, Hkv, L, D, generator=g) * scale
    v = torch.randn(B, Hkv, L, D, generator=g)
    return q, k, v
