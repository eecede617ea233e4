"""Random projections and feature maps of FAVOR+.

Softmax kernel (positive random features, Choromanski et al. 2020): for rows w_i of W (m x d),

    exp(q·k) = E_w[ exp(w·q - |q|²/2) exp(w·k - |k|²/2) ],   phi(x)_i = exp(w_i·x - |x|²/2)

ReLU kernel ("generalized" FAVOR+): phi(x)_i = relu(w_i·x) + 1e-3. Both are returned here in log space,
``log phi = projected - offset`` (up to the 1/sqrt(m) factor, which cancels between numerator and
denominator), so that the attention code can subtract stabilisers before exponentiating.

Projections are a pure function of ``(seed, layer, redraw_count)``: every process draws the same W with no
communication, and a reloaded model redraws exactly the features it was saved with.
"""

from __future__ import annotations

import hashlib
import math

import torch

from hfplug.validation import check_bool, check_choice, check_int

from .configuration_favor import KERNELS, MAX_FEATURES, MAX_HEAD_DIM, RADII

RELU_EPSILON = 1e-3


def derive_seed(seed: int, layer: int, redraw_count: int) -> int:
    """A 63-bit generator seed from (seed, layer, redraw_count), stable across processes and platforms."""
    digest = hashlib.sha256(f"hfplug-favor:{seed}:{layer}:{redraw_count}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def chi_quantiles(dim: int, count: int) -> torch.Tensor:
    """Quantiles r_i of the chi distribution with ``dim`` degrees of freedom at i/(count+1), i = 1..count.

    Solves P(chi_d <= r) = gammainc(d/2, r²/2) = i/(count+1) by bisection (float64).
    """
    target = torch.arange(1, count + 1, dtype=torch.float64) / (count + 1)
    low = torch.zeros(count, dtype=torch.float64)
    high = torch.full((count,), math.sqrt(dim) + 12.0, dtype=torch.float64)
    half_dim = torch.tensor(dim / 2.0, dtype=torch.float64)
    for _ in range(60):
        mid = (low + high) / 2
        below = torch.special.gammainc(half_dim, mid * mid / 2) < target
        low = torch.where(below, mid, low)
        high = torch.where(below, high, mid)
    return (low + high) / 2


def _orthogonal_directions(rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """``rows`` unit vectors in blocks of ``dim`` mutually orthogonal ones (Haar-random per block)."""
    blocks = []
    for _ in range(math.ceil(rows / dim)):
        gaussian = torch.randn(dim, dim, generator=generator, dtype=torch.float64)
        q, r = torch.linalg.qr(gaussian)
        blocks.append((q * torch.sign(torch.diagonal(r))).T)  # sign fix makes q Haar-distributed
    return torch.cat(blocks)[:rows]


def gaussian_projection(
    nb_features: int,
    dim: int,
    *,
    orthogonal: bool = True,
    radii: str = "chi",
    hyperbolic: bool = False,
    seed: int = 0,
) -> torch.Tensor:
    """The (nb_features, dim) float32 projection W whose rows are the random features' w_i.

    Directions: block-orthogonal (``orthogonal``) or iid uniform on the sphere. Norms: iid chi_d (``"chi"``;
    with iid directions this is exactly W ~ N(0, I)), chi_d quantiles in random order (``"quasi_uniform"``)
    or sqrt(d) (``"fixed"``). ``hyperbolic`` draws nb_features/2 rows and stacks W with -W (nb_features
    even). Bounds: 1 <= nb_features <= 2**20, 1 <= dim <= 4096, 0 <= seed < 2**64.
    """
    check_int("nb_features", nb_features, minimum=1, maximum=MAX_FEATURES)
    check_int("dim", dim, minimum=1, maximum=MAX_HEAD_DIM)
    check_bool("orthogonal", orthogonal)
    check_choice("radii", radii, RADII)
    check_bool("hyperbolic", hyperbolic)
    check_int("seed", seed, minimum=0, maximum=(1 << 64) - 1)
    if hyperbolic and nb_features % 2:
        raise ValueError(
            f"nb_features must be even when hyperbolic=True (m/2 rows with both signs), got {nb_features}"
        )
    generator = torch.Generator().manual_seed(seed)
    rows = nb_features // 2 if hyperbolic else nb_features
    if orthogonal:
        directions = _orthogonal_directions(rows, dim, generator)
    else:
        gaussian = torch.randn(rows, dim, generator=generator, dtype=torch.float64)
        directions = gaussian / gaussian.norm(dim=1, keepdim=True)
    if radii == "chi":
        norms = torch.randn(rows, dim, generator=generator, dtype=torch.float64).norm(dim=1)
    elif radii == "quasi_uniform":
        norms = chi_quantiles(dim, rows)[torch.randperm(rows, generator=generator)]
    else:  # "fixed"
        norms = torch.full((rows,), math.sqrt(dim), dtype=torch.float64)
    projection = directions * norms[:, None]
    if hyperbolic:
        projection = torch.cat([projection, -projection])
    return projection.float()


def feature_logits(
    x: torch.Tensor,
    projection: torch.Tensor,
    scaling: float,
    kernel: str = "softmax",
    *,
    offset: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log phi(x·sqrt(scaling)) = projected - offset for x (..., d), W (m, d): ((..., m), (..., 1)).

    Softmax: projected = w·x, offset = |x|²/2. ReLU: projected = log(relu(w·x) + 1e-3), offset = 0.
    ``scaling`` is the attention's logit scale (1/sqrt(d) for most models, 1.0 for T5), split evenly between
    queries and keys (folded into W, so the (..., d) input is not rescaled). Kept apart so stabilisers can be
    folded into the per-row offset. ``offset=False`` skips the offset (returns None): queries do not need it,
    their per-row constant cancels with the row stabiliser.
    """
    check_choice("kernel", kernel, KERNELS)
    projected = x @ (projection * math.sqrt(scaling)).T
    if kernel == "softmax":
        return projected, (0.5 * scaling) * x.pow(2).sum(-1, keepdim=True) if offset else None
    zeros = projected.new_zeros((*projected.shape[:-1], 1)) if offset else None
    return torch.log(torch.relu(projected) + RELU_EPSILON), zeros
