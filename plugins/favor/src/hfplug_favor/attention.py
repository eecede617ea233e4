"""FAVOR+ attention: the math, and the function transformers calls for ``attn_implementation="favor"``.

With query/key features phi (see :mod:`hfplug_favor.feature_maps`), attention becomes linear in L:

    non-causal: out_i = phi(q_i)·(sum_j phi(k_j) v_j^T) / phi(q_i)·(sum_j phi(k_j))
    causal:     the same sums over j <= i, computed in chunks of C rows: quadratic inside a chunk and a
                carried prefix state (S = sum phi(k) v^T, z = sum phi(k)) between chunks.

Stabilisers cancel between numerator and denominator: each query row subtracts its own max log-feature,
keys subtract one max per (batch, head) over the non-padded keys (non-causal) or the running max over
positions <= i (causal, rescaled like online softmax), so nothing depends on future tokens. Padded keys
get phi = 0 exactly (masked after the feature map). Features and accumulators are float32 under autocast.
Grouped-query attention featurizes each key/value head once and groups the query heads onto it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from transformers.utils import logging

from hfplug.validation import check_bool, check_choice, check_float, check_int

from .configuration_favor import ATTACHED, KERNELS, LAYER_INDEX, FavorConfig, favor_config_from
from .feature_maps import derive_seed, feature_logits, gaussian_projection

logger = logging.get_logger(__name__)
CACHE_HANDOFF = "_favor_cache_layer"  # attribute of keys returned by a FavorCacheLayer: the layer itself


@dataclass
class FavorState:
    """Causal prefix state of one attention layer, in units of exp(-r): Sz (B, Hkv, m, Dv + 1) holds
    S = sum phi(k) v^T in its first Dv columns and z = sum phi(k) in the last; r (B, Hkv) is the running key
    stabiliser (-inf while no key was seen)."""

    Sz: torch.Tensor
    r: torch.Tensor

    @property
    def S(self) -> torch.Tensor:
        return self.Sz[..., :-1]

    @property
    def z(self) -> torch.Tensor:
        return self.Sz[..., -1]


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)


def _with_ones(value: torch.Tensor) -> torch.Tensor:
    # [v, 1]: one product then gives the numerator (first Dv columns) and the denominator (last column)
    return torch.cat([value, value.new_ones(*value.shape[:-1], 1)], -1)


def _normalise(numerator_and_denominator: torch.Tensor) -> torch.Tensor:
    numerator, denominator = numerator_and_denominator[..., :-1], numerator_and_denominator[..., -1:]
    # Rows that see no key at all (left padding) have denominator 0; rows whose denominator underflowed below
    # tiny/eps (~1e-31 in float32, where numerator entries lose precision) cannot be normalised reliably. Both
    # output 0, divided by 1 so that gradients stay finite.
    dtype = torch.finfo(denominator.dtype)
    unseen = denominator <= dtype.tiny / dtype.eps
    return (numerator / denominator.masked_fill(unseen, 1.0)).masked_fill_(unseen, 0.0)


def _query_features(projected: torch.Tensor) -> torch.Tensor:
    # u - max(u) = projected - max(projected): the per-row offset |x|²/2 cancels with the row stabiliser.
    # In place: ``projected`` is a fresh product whose backward does not need it.
    return projected.sub_(projected.detach().amax(-1, keepdim=True)).exp_()


def _block_rows(length: int, entries_per_row: int, device: torch.device) -> int:
    """Rows per block of about ``_BLOCK_FEATURES`` feature entries (at least ``_MIN_BLOCK_ROWS``): the features
    are made, stabilised, exponentiated and multiplied while they are in cache. Accelerators: one block.
    Callers split with ``Tensor.split`` (one backward node for all blocks: slicing would give every block's
    gradient a zero tensor of the full length)."""
    if device.type != "cpu":
        return max(1, length)
    return max(_MIN_BLOCK_ROWS, _BLOCK_FEATURES // max(1, entries_per_row))


def _prefix_state(
    key: torch.Tensor,
    value: torch.Tensor,
    valid: torch.Tensor | None,
    features: tuple[torch.Tensor, float, str],
) -> FavorState:
    """Sums over all keys (B, Hkv, Lk, D), log-features u = projected - offset, in row blocks: block b is
    stabilised by its own r_b = max u and the sums so far are rescaled to r = max(r, r_b) (as in online
    softmax); the result is in units of the max over all keys."""
    projection, scaling, kernel = features
    B, Hkv, Lk, _ = key.shape
    rows = _block_rows(Lk, B * Hkv * projection.shape[0], key.device)
    valids = [None] * math.ceil(Lk / rows) if valid is None else valid.split(rows, 1)
    Sz = r = None
    for key_block, value_block, valid_block in zip(
        key.split(rows, 2), value.split(rows, 2), valids, strict=True
    ):
        projected, offset = feature_logits(key_block, projection, scaling, kernel)
        if valid_block is not None:
            offset = offset.masked_fill(~valid_block[:, None, :, None], float("inf"))
        r_block = (projected.detach().amax(-1, keepdim=True) - offset.detach()).amax(dim=(-2, -1))
        phi_k = projected.sub_(
            offset + _finite(r_block)[..., None, None]
        ).exp_()  # padded keys: exp(-inf) = 0
        sums = phi_k.transpose(-2, -1) @ _with_ones(value_block)
        if Sz is None:
            Sz, r = sums, r_block
            continue
        grown = torch.maximum(r, r_block)  # both -inf while only padded keys were seen: factors 0
        Sz = (
            Sz * _finite(torch.exp(r - grown))[..., None, None]
            + sums * _finite(torch.exp(r_block - grown))[..., None, None]
        )
        r = grown
    return FavorState(Sz, r)


def _query_outputs(
    query: torch.Tensor, Sz: torch.Tensor, features: tuple[torch.Tensor, float, str]
) -> torch.Tensor:
    """Non-causal output (B, Hkv, G, Lq, Dv) of queries (B, Hkv, G, Lq, D) against the key sums Sz, in row
    blocks like :func:`_prefix_state`."""
    projection, scaling, kernel = features
    B, Hkv, G, Lq, _ = query.shape
    outs = []
    for block in query.split(_block_rows(Lq, B * Hkv * G * projection.shape[0], query.device), -2):
        phi_q = _query_features(feature_logits(block, projection, scaling, kernel, offset=False)[0])
        outs.append(_normalise(phi_q.flatten(2, 3) @ Sz).view(*phi_q.shape[:-1], -1))
    return torch.cat(outs, -2)


def _key_shift(query: torch.Tensor, key: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """c = mean(k) + mean(q) per (batch, kv head) over non-padded positions: the constant minimising the mean
    of |q_i + k_j - c|² over all pairs. query (B, Hkv, G, Lq, D), key (B, Hkv, Lk, D) -> (B, Hkv, 1, D)."""
    if valid is None:
        key_mean = key.mean(-2, keepdim=True)
    else:
        weights = valid[:, None, :, None].to(key.dtype)
        key_mean = (key * weights).sum(-2, keepdim=True) / weights.sum(-2, keepdim=True).clamp_min(1.0)
    if valid is None or query.shape[-2] != key.shape[-2]:
        return key_mean + query.mean(dim=(2, 3)).unsqueeze(2)
    weights = valid[:, None, None, :, None].to(query.dtype)
    query_mean = (query * weights).sum(dim=(2, 3)) / weights.sum(dim=(2, 3)).clamp_min(1.0)
    return key_mean + query_mean.unsqueeze(2)


# Largest spread (in log units) of the running key stabiliser over one call for which every key is expressed
# relative to one reference: weights up to e^40 (~2e17) keep sums of 10^9 terms far below float32's 3e38.
_ONE_REFERENCE_RANGE = 40.0


# Feature entries (G·L·m per (batch, kv head) row) processed together by the causal path: slices of about
# 512 KiB of float32 features keep the feature maps, chunk products and prefix sums in a core's L2 cache.
_SLICE_FEATURES = 1 << 17

# Non-causal: feature entries per row block of keys or queries (1 MiB of float32, half a core's L2), and the
# fewest rows per block (short sequences of many heads stay one block: per-block overhead over cache misses).
_BLOCK_FEATURES = 1 << 18
_MIN_BLOCK_ROWS = 128


def _causal(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    valid: torch.Tensor | None,
    documents: torch.Tensor | None,
    features: tuple[torch.Tensor, float, str],
    chunk_size: int,
    state: FavorState | None,
) -> tuple[torch.Tensor, FavorState]:
    """Chunked causal FAVOR+: query (B, Hkv, G, L, D), key (B, Hkv, L, D), value (B, Hkv, L, Dv), valid (B, L),
    documents (B, L) (run ids, see :func:`_document_runs`: queries see keys of their own document only),
    ``features`` = (W, scaling, kernel). ``state`` holds the keys before these L positions (seen by every query).
    Returns the output (B, Hkv, G, L, Dv) and the state after the L positions (of the last document).

    The B·Hkv (batch, kv head) rows are independent: they are processed in slices of about
    ``_SLICE_FEATURES`` feature entries (one row at a time for long sequences), features included, so the
    working set stays in cache instead of streaming (B, Hkv, L, m) tensors through memory several times.
    """
    B, Hkv, G, L, _ = query.shape
    rows = B * Hkv
    per_slice = max(1, _SLICE_FEATURES // max(1, G * L * features[0].shape[0]))
    if per_slice >= rows or query.device.type != "cpu":  # accelerators: one launch for all rows
        return _causal_slice(query, key, value, valid, documents, features, chunk_size, state)

    def flat(tensor: torch.Tensor) -> torch.Tensor:  # (B, Hkv, ...) -> (B·Hkv, 1, ...)
        return tensor.reshape(rows, 1, *tensor.shape[2:])

    def per_row(mask: torch.Tensor | None) -> torch.Tensor | None:  # (B, L) -> (B·Hkv, L)
        return None if mask is None else mask.repeat_interleave(Hkv, 0)

    query, key, value = flat(query), flat(key), flat(value)
    valid, documents = per_row(valid), per_row(documents)
    outs, sums, stabilisers = [], [], []
    for start in range(0, rows, per_slice):
        part = slice(start, start + per_slice)
        out, new_state = _causal_slice(
            query[part],
            key[part],
            value[part],
            None if valid is None else valid[part],
            None if documents is None else documents[part],
            features,
            chunk_size,
            None if state is None else FavorState(flat(state.Sz)[part], state.r.reshape(rows, 1)[part]),
        )
        outs.append(out)
        sums.append(new_state.Sz)
        stabilisers.append(new_state.r)
    out = torch.cat(outs).view(B, Hkv, *outs[0].shape[2:])
    return out, FavorState(
        torch.cat(sums).view(B, Hkv, *sums[0].shape[2:]), torch.cat(stabilisers).view(B, Hkv)
    )


def _causal_slice(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    valid: torch.Tensor | None,
    documents: torch.Tensor | None,
    features: tuple[torch.Tensor, float, str],
    chunk_size: int,
    state: FavorState | None,
) -> tuple[torch.Tensor, FavorState]:
    """Causal FAVOR+ of some (batch, kv head) rows (shapes as in :func:`_causal`), on log-features
    u = projected - offset.

    Inside a chunk of C rows the masked quadratic form costs O(C·(m + Dv)) per row; between chunks the
    carried state costs O(m·Dv) per row. Key j's features are phi(k_j) = exp(projected_j - max projected_j) ·
    exp(a_j), a_j = max u_j. The running stabiliser s_t = max(a_j, j <= t) never looks ahead. When it spans
    at most ``_ONE_REFERENCE_RANGE`` over the call, every key is weighted by exp(a_j - s_0) against the first
    position's s_0 (one reference: the in-chunk mask is a plain triangle and the prefix states a cumulative
    sum); otherwise every query row t uses its own s_t (an exp(s_j - s_t) decay matrix per chunk). Both are
    the same exact formula; they differ by float rounding only. Packed ``documents`` restart s_t at every
    document start and always take the per-row path.
    """
    projection, scaling, kernel = features
    projected_q, _ = feature_logits(query, projection, scaling, kernel, offset=False)
    projected_k, offset_k = feature_logits(key, projection, scaling, kernel)
    if valid is not None:
        offset_k = offset_k.masked_fill(~valid[:, None, :, None], float("inf"))  # padded keys: phi = 0
    row_max = projected_k.detach().amax(-1, keepdim=True)
    log_scale = row_max - offset_k  # a_j (B, Hkv, L, 1), -inf for padded keys
    if documents is not None:  # (``favor_attention`` allows no incoming state with documents)
        running = _document_cummax(log_scale.detach().squeeze(-1), documents[:, None])
        return _causal_per_row(
            projected_q, projected_k, offset_k, value, chunk_size, state, running, documents
        )
    running = log_scale.detach().squeeze(-1).cummax(-1).values
    if state is not None:
        running = torch.maximum(running, state.r[..., None])
    # the first finite s_t (rows before it see no key and output 0): never ahead of a row that sees a key
    reference = _finite(torch.nan_to_num(running, neginf=float("inf")).amin(-1))
    # one position (a decode step) spans nothing: no host sync
    if running.shape[-1] == 1 or float((_finite(running[..., -1]) - reference).max()) <= _ONE_REFERENCE_RANGE:
        return _causal_one_reference(
            projected_q, projected_k, row_max, log_scale, value, chunk_size, state, running, reference
        )
    return _causal_per_row(projected_q, projected_k, offset_k, value, chunk_size, state, running, None)


def _document_runs(document_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) ids -> (B, L) run indices 0, 1, ...: a new document starts wherever the id changes."""
    starts = document_ids[:, 1:] != document_ids[:, :-1]
    return torch.cat([starts.new_zeros(starts.shape[0], 1, dtype=torch.long), starts.long().cumsum(-1)], -1)


def _document_cummax(values: torch.Tensor, documents: torch.Tensor) -> torch.Tensor:
    """Running max of ``values`` (..., L) restarted at every document start (``documents`` run indices,
    broadcastable): log2(L) doubling steps, each taking the max with the value ``shift`` positions back when
    that position is in the same document (runs are contiguous, so everything between is too)."""
    running, shift, L = values, 1, values.shape[-1]
    while shift < L:
        same = documents[..., shift:] == documents[..., :-shift]
        back = running[..., :-shift].masked_fill(~same, float("-inf"))
        running = torch.cat([running[..., :shift], torch.maximum(running[..., shift:], back)], -1)
        shift *= 2
    return running


def _chunked(tensor: torch.Tensor, dim: int, chunk_size: int, fill: float = 0.0) -> torch.Tensor:
    """Pad ``dim`` (counted from the end) of ``tensor`` to a multiple of C with ``fill`` and split it as (n, C)."""
    length = tensor.shape[dim]
    pad = -length % chunk_size
    if pad:
        tensor = torch.nn.functional.pad(tensor, (0, 0) * (-dim - 1) + (0, pad), value=fill)
    return tensor.unflatten(dim, (-1, chunk_size))


def _causal_one_reference(
    projected_q: torch.Tensor,
    projected_k: torch.Tensor,
    row_max: torch.Tensor,
    log_scale: torch.Tensor,
    value: torch.Tensor,
    chunk_size: int,
    state: FavorState | None,
    running: torch.Tensor,
    reference: torch.Tensor,
) -> tuple[torch.Tensor, FavorState]:
    """All keys in units of exp(reference) (B, Hkv): scores phi(q_t)·phi(k_j) exp(a_j - reference)."""
    L = projected_q.shape[-2]
    C = min(chunk_size, L)
    phi_q = _chunked(_query_features(projected_q), -2, C)  # (B, Hkv, G, n, C, m)
    phi_k = _chunked(projected_k.sub_(row_max).exp_(), -2, C)  # (B, Hkv, n, C, m)
    weight = torch.exp(log_scale - reference[..., None, None])  # <= exp(_ONE_REFERENCE_RANGE); 0 if padded
    weighted = _chunked(
        _with_ones(value).mul_(weight), -2, C
    )  # [v, 1] exp(a_j - reference): (B, Hkv, n, C, Dv + 1)

    scores = (phi_q @ phi_k.unsqueeze(2).transpose(-2, -1)).tril_()  # causal inside each chunk
    out = scores @ weighted.unsqueeze(2)  # numerator | denominator
    # inclusive sums over chunks 0..i (B, Hkv, n, m, Dv + 1); chunk i's queries see those of chunks < i
    totals = phi_k.transpose(-2, -1) @ weighted
    if totals.shape[2] > 1:  # (a one-chunk cumsum_ is a no-op that still costs ~0.15 ms per decode step)
        totals = totals.cumsum_(2)
    if state is None:
        before = totals.new_zeros(totals[:, :, :1].shape)
    else:
        before = (state.Sz * torch.exp(_finite(state.r) - reference)[..., None, None]).unsqueeze(
            2
        )  # factor <= 1
        totals = totals + before
    out = out.add_(phi_q @ torch.cat([before, totals[:, :, :-1]], 2).unsqueeze(2))
    Sz = totals[:, :, -1]
    out = _normalise(out).flatten(-3, -2)[..., :L, :]
    last = running[..., L - 1]
    return out, FavorState(Sz * torch.exp(reference - _finite(last))[..., None, None], last)


def _causal_per_row(
    projected_q: torch.Tensor,
    projected_k: torch.Tensor,
    offset_k: torch.Tensor,
    value: torch.Tensor,
    chunk_size: int,
    state: FavorState | None,
    running: torch.Tensor,
    documents: torch.Tensor | None,
) -> tuple[torch.Tensor, FavorState]:
    """Every query row t in units of its own running stabiliser s_t (any spread of the key scales).

    ``documents`` (B, L) run indices (packed sequences; ``running`` then restarts per document and ``state``
    is None): key j reaches query t only in the same document. Inside a chunk that is one more mask; a chunk's
    carried sum keeps only its last document's keys, it reaches a later chunk only while that document lasts,
    and there only the rows of that document."""
    B, Hkv, G, L, m = projected_q.shape
    Dv = value.shape[-1]
    C = min(chunk_size, L)
    n = math.ceil(L / C)
    pad = n * C - L
    value = _with_ones(value)
    stab = _finite(running)
    if pad:
        projected_q = torch.nn.functional.pad(projected_q, (0, 0, 0, pad))
        projected_k = torch.nn.functional.pad(projected_k, (0, 0, 0, pad))
        offset_k = torch.nn.functional.pad(offset_k, (0, 0, 0, pad), value=float("inf"))
        value = torch.nn.functional.pad(value, (0, 0, 0, pad))
        stab = torch.cat([stab, stab[..., -1:].expand(-1, -1, pad)], -1)  # the running max stays put
        if documents is not None:
            documents = torch.cat([documents, documents[:, -1:].expand(-1, pad)], -1)
    phi_k = projected_k.sub_(offset_k + stab[..., None]).exp_()
    phi_q = _query_features(projected_q)

    phi_q = phi_q.view(B, Hkv, G, n, C, m)
    phi_k = phi_k.view(B, Hkv, n, C, m)
    value = value.view(B, Hkv, n, C, Dv + 1)
    stab = stab.view(B, Hkv, n, C)

    # inside each chunk: masked quadratic form, key j rescaled from units s_j to units s_t (factor <= 1)
    causal_mask = torch.ones(C, C, dtype=torch.bool, device=value.device).tril()
    decay = (stab[..., None, :] - stab[..., :, None]).clamp_(max=0).exp_().masked_fill_(~causal_mask, 0.0)
    if documents is not None:
        documents = documents.view(B, 1, n, C)
        decay.masked_fill_(documents[..., :, None] != documents[..., None, :], 0.0)
        last_doc = documents[..., -1]  # (B, 1, n): the document a chunk's carried sum belongs to
        prefix_doc = torch.cat([documents[..., :1, 0], last_doc[..., :-1]], -1)  # ... that reaches chunk i
    scores = (phi_q @ phi_k.unsqueeze(2).transpose(-2, -1)).mul_(decay.unsqueeze(2))
    out = scores @ value.unsqueeze(2)  # numerator | denominator

    # per-chunk sums in units of the chunk's last stabiliser r_c, then all exclusive prefix states in one
    # product (no loop over chunks): before chunk i, P_i = sum_{c<i} exp(r_c - r_{i-1}) kv_c (+ the incoming
    # state), in units of r_{i-1}. r is non-decreasing wherever kv is non-zero, so the clamps are exact.
    chunk_stab = stab[..., -1]
    weight = torch.exp((stab - chunk_stab[..., None]).clamp(max=0)).unsqueeze(-1)  # (B, Hkv, n, C, 1)
    if documents is not None:
        weight = weight * (documents == last_doc[..., None]).unsqueeze(-1)
    chunk_kv = (phi_k.transpose(-2, -1) @ (value * weight)).flatten(-2)  # (B, Hkv, n, m (Dv + 1))
    r_in = value.new_zeros(B, Hkv, 1) if state is None else _finite(state.r)[..., None]
    prefix_r = torch.cat([r_in, chunk_stab[..., :-1]], -1)  # r_{i-1}, r_{-1} = the state's
    mixing = (chunk_stab[..., None, :] - prefix_r[..., :, None]).clamp_(max=0).exp_().tril_(-1)
    if documents is not None:
        mixing.mul_(last_doc[..., None, :] == prefix_doc[..., :, None])
    prefix_Sz = mixing @ chunk_kv  # (B, Hkv, n, m (Dv + 1))
    if state is not None:
        scale = torch.exp((r_in - prefix_r).clamp(max=0))[..., None]
        prefix_Sz = prefix_Sz.addcmul_(scale, state.Sz.flatten(-2)[..., None, :])
    last = torch.exp((prefix_r[..., -1:] - chunk_stab[..., -1:]).clamp(max=0))
    carry = torch.exp((prefix_r[..., None] - stab).clamp(max=0)).unsqueeze(-1)  # (B, Hkv, n, C, 1)
    if documents is not None:
        last = last * (prefix_doc[..., -1:] == last_doc[..., -1:])
        carry = carry * (documents == prefix_doc[..., None]).unsqueeze(-1)
    Sz = (chunk_kv[:, :, -1] + prefix_Sz[:, :, -1] * last).view(B, Hkv, m, Dv + 1)
    out = out.addcmul_(phi_q @ prefix_Sz.view(B, Hkv, 1, n, m, Dv + 1), carry.unsqueeze(2))
    out = _normalise(out).reshape(B, Hkv, G, n * C, Dv)[..., :L, :]
    return out, FavorState(Sz, running[..., L - 1])


def _check_tensor(name: str, tensor: Any, dims: int, shape: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor {shape}, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor {shape}, got dtype {tensor.dtype}")
    if tensor.dim() != dims:
        raise ValueError(f"{name} must be a {dims}-D tensor {shape}, got shape {tuple(tensor.shape)}")


def _check_qkv(query: Any, key: Any, value: Any) -> None:
    """Types and shapes: query (B, H, Lq, D), key (B, Hkv, Lk, D), value (B, Hkv, Lk, Dv), D >= 1, Hkv | H."""
    _check_tensor("query", query, 4, "(batch, heads, length, head_dim)")
    _check_tensor("key", key, 4, "(batch, kv_heads, length, head_dim)")
    _check_tensor("value", value, 4, "(batch, kv_heads, length, value_dim)")
    B, H, _, D = query.shape
    if H == 0 or D == 0:
        raise ValueError(f"query must have >= 1 head and a head dim >= 1, got shape {tuple(query.shape)}")
    if key.shape[0] != B or key.shape[3] != D:
        raise ValueError(
            f"key must have shape ({B}, kv_heads, length, {D}) to match query {tuple(query.shape)}, "
            f"got {tuple(key.shape)}"
        )
    Hkv = key.shape[1]
    if Hkv == 0 or H % Hkv:
        raise ValueError(f"key heads ({Hkv}) must divide the query heads ({H}) (grouped-query attention)")
    if value.shape[:3] != key.shape[:3]:
        raise ValueError(
            f"value must have shape {(*key.shape[:3], 'value_dim')} like key, got {tuple(value.shape)}"
        )


def _check_arguments(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    projection: Any,
    key_padding_mask: Any,
    causal: bool,
    state: Any,
) -> None:
    _check_tensor("projection", projection, 2, "(nb_features, head_dim)")
    if projection.shape[0] == 0 or projection.shape[1] != query.shape[-1]:
        raise ValueError(
            f"projection must have shape (nb_features >= 1, {query.shape[-1]}) for head dim {query.shape[-1]}, "
            f"got {tuple(projection.shape)}"
        )
    B, Hkv, Lk = key.shape[:3]
    if key_padding_mask is not None and (
        not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool
    ):
        raise TypeError(
            f"key_padding_mask must be a bool tensor ({B}, {Lk}) (True = attend) or None, got "
            f"{getattr(key_padding_mask, 'dtype', type(key_padding_mask).__name__)}"
        )
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (B, Lk):
        raise ValueError(
            f"key_padding_mask must have shape (batch, key length) = ({B}, {Lk}), got {tuple(key_padding_mask.shape)}"
        )
    if causal and Lk < query.shape[2]:
        raise ValueError(
            f"causal attention needs at least as many keys as queries: key length {Lk} < query length {query.shape[2]}"
        )
    if state is None:
        return
    if not causal:
        raise ValueError("state (a causal prefix state) only applies with causal=True, got causal=False")
    if not isinstance(state, FavorState):
        raise TypeError(f"state must be a FavorState or None, got {type(state).__name__}")
    expected = (B, Hkv, projection.shape[0], value.shape[-1] + 1)
    if tuple(state.Sz.shape) != expected or tuple(state.r.shape) != expected[:2]:
        raise ValueError(
            f"state must hold Sz {expected} and r {expected[:2]} for these keys/values and projection, got "
            f"Sz {tuple(state.Sz.shape)} and r {tuple(state.r.shape)}"
        )


def _check_documents(
    document_ids: Any, query: torch.Tensor, key: torch.Tensor, causal: bool, state: FavorState | None
) -> None:
    if document_ids is None:
        return
    B, Lk = key.shape[0], key.shape[2]
    if (
        not isinstance(document_ids, torch.Tensor)
        or document_ids.is_floating_point()
        or document_ids.dtype == torch.bool
    ):
        raise TypeError(
            f"document_ids must be an integer tensor ({B}, {Lk}) (one id per position, packed documents) or None, "
            f"got {getattr(document_ids, 'dtype', type(document_ids).__name__)}"
        )
    if tuple(document_ids.shape) != (B, Lk):
        raise ValueError(
            f"document_ids must have shape (batch, key length) = ({B}, {Lk}), got {tuple(document_ids.shape)}"
        )
    if not causal:
        raise ValueError("document_ids (packed documents) apply to causal attention only: pass causal=True")
    if state is not None:
        raise ValueError(
            "document_ids cannot be combined with state: packed documents start from an empty state, "
            "pass state=None"
        )
    if query.shape[2] != Lk:
        raise ValueError(
            f"document_ids need as many keys as queries (packed self-attention without a cache): key length {Lk}, "
            f"query length {query.shape[2]}"
        )


# |x|²·scaling/2 (the softmax features' offset, over all head dims) must stay far below float32's 3.4e38
_FEATURE_LIMIT = 1e36


def _largest(tensor: torch.Tensor) -> torch.Tensor:
    """max |tensor| (NaN if any entry is NaN), 0 for an empty tensor; no host sync. One read pass
    (``aminmax``), no temporary of the tensor's size."""
    if tensor.numel() == 0:
        return tensor.new_zeros((), dtype=torch.float32)
    low, high = torch.aminmax(tensor.detach())
    return torch.maximum(high, -low).float()


def _check_numbers(out: torch.Tensor, scaling: float, named: dict[str, torch.Tensor]) -> None:
    """One host sync: raise if an input holds NaN/inf, or if finite inputs made the float32 features or sums
    overflow (the output is then non-finite); the message names the argument and its largest magnitude."""
    largest = dict(
        zip(
            [*named, "output"],
            torch.stack([*map(_largest, named.values()), _largest(out)]).tolist(),
            strict=True,
        )
    )
    for name, size in largest.items():
        if name != "output" and not math.isfinite(size):
            raise ValueError(
                f"{name} holds NaN or infinite values; FAVOR+ (like exact attention) has no finite result for "
                "them, so it stops here instead of passing NaN on to the output and the gradients"
            )
    head_dim = named["query"].shape[-1]
    for name in ("query", "key"):
        if 0.5 * scaling * head_dim * largest[name] ** 2 > _FEATURE_LIMIT:
            raise ValueError(
                f"{name} is too large for FAVOR+'s float32 features: largest |{name}| = {largest[name]:.3g} with "
                f"head dim {head_dim} and scaling {scaling:g} gives |x|²·scaling/2 up to "
                f"{0.5 * scaling * head_dim * largest[name] ** 2:.3g} > {_FEATURE_LIMIT:g}"
            )
    if not math.isfinite(largest["output"]):
        shown = ", ".join(f"|{name}| <= {size:.3g}" for name, size in largest.items() if name != "output")
        raise ValueError(
            f"FAVOR+ overflowed float32 on these finite inputs ({shown}, scaling {scaling:g}): the value or "
            "projection entries are too large for its sums; rescale value or projection"
        )


def _empty_state(reference: torch.Tensor, B: int, Hkv: int, m: int, Dv: int) -> FavorState:
    """The causal state before any key: zero sums and r = -inf."""
    return FavorState(reference.new_zeros(B, Hkv, m, Dv + 1), reference.new_full((B, Hkv), float("-inf")))


def favor_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    projection: torch.Tensor,
    *,
    scaling: float | None = None,
    causal: bool = False,
    key_padding_mask: torch.Tensor | None = None,
    kernel: str = "softmax",
    chunk_size: int = 128,
    state: FavorState | None = None,
    shift_keys: bool = False,
    document_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, FavorState | None]:
    """FAVOR+ attention on (B, H, Lq, D) queries and (B, Hkv, Lk, D) keys/values, H a multiple of Hkv.

    ``projection`` is W (m, D); ``scaling`` the logit scale (default D**-0.5, any finite value >= 0);
    ``key_padding_mask`` (B, Lk) bool, True = attend. Causal: query i sits at absolute position Lk - Lq + i
    and sees keys <= it; the first Lk - Lq keys (or ``state``, which then stands for them) are seen by all
    queries. Returns the output (B, H, Lq, Dv) in float32 and, when causal, the prefix state after the last
    key.

    ``shift_keys`` (non-causal only) subtracts c = mean(k) + mean(q) (non-padded positions, per batch and kv
    head) from every key: exact for softmax attention (q·(k_j - c) shifts all logits of a query equally) and
    it minimises the mean |q + k - c|² that drives the variance of the positive-feature estimator.

    ``document_ids`` (causal only, keys = queries, no ``state``): a (B, L) integer tensor for packed
    sequences; each maximal run of equal ids is one document, and a query sees the keys <= it of its own
    document only (the prefix sums and the key stabiliser restart at every document start). The returned
    state is the last document's.

    Failure semantics: wrong types or shapes raise TypeError/ValueError naming the argument; NaN or inf in
    query, key, value or projection raises ValueError naming it (one host sync per call), as do finite
    inputs so large that the float32 features would overflow. Empty batch, heads or query length give an
    empty output, like exact attention; a query that sees no key (all keys padded, or no keys) outputs 0.
    """
    _check_qkv(query, key, value)
    causal = check_bool("causal", causal)
    shift_keys = check_bool("shift_keys", shift_keys)
    kernel = check_choice("kernel", kernel, KERNELS)
    chunk_size = check_int("chunk_size", chunk_size, minimum=1)
    _check_arguments(query, key, value, projection, key_padding_mask, causal, state)
    _check_documents(document_ids, query, key, causal, state)
    B, H, Lq, D = query.shape
    Hkv, Dv = key.shape[1], value.shape[-1]
    scaling = D**-0.5 if scaling is None else check_float("scaling", scaling, minimum=0.0)
    if B == 0:  # nothing to attend from (exact attention returns the same empty output)
        out = query.new_zeros(B, H, Lq, Dv, dtype=torch.float32)
        return out, (
            _empty_state(out, B, Hkv, projection.shape[0], Dv) if causal and state is None else state
        )
    named = {"query": query, "key": key, "value": value, "projection": projection}
    if state is not None:
        named["state"] = state.Sz
    out, state = _favor_attention(
        query,
        key,
        value,
        projection,
        scaling,
        causal,
        key_padding_mask,
        kernel,
        chunk_size,
        state,
        shift_keys,
        None if document_ids is None else _document_runs(document_ids.to(query.device)),
    )
    _check_numbers(out, scaling, named)
    return out, state


def _favor_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    projection: torch.Tensor,
    scaling: float,
    causal: bool,
    key_padding_mask: torch.Tensor | None,
    kernel: str,
    chunk_size: int,
    state: FavorState | None,
    shift_keys: bool,
    documents: torch.Tensor | None,
) -> tuple[torch.Tensor, FavorState | None]:
    """:func:`favor_attention` on checked arguments and a batch of at least one."""
    B, H, Lq, D = query.shape
    Hkv, Lk, Dv = key.shape[1], key.shape[2], value.shape[-1]
    G = H // Hkv
    projection = projection.to(device=query.device, dtype=torch.float32)
    with torch.autocast(query.device.type, enabled=False):
        query, key, value = query.float(), key.float(), value.float()
        if not causal and (Lq == 0 or Lk == 0):  # no query, or no key to see (such rows output 0)
            return query.new_zeros(B, H, Lq, Dv), None
        if Lk == 0:  # causal: then Lq == 0 too
            return query.new_zeros(B, H, 0, Dv), state or _empty_state(query, B, Hkv, projection.shape[0], Dv)
        if shift_keys and not causal:
            key = key - _key_shift(query.view(B, Hkv, G, Lq, D), key, key_padding_mask)
        offset = Lk - Lq if causal else Lk
        features = (projection, scaling, kernel)
        if state is None and offset > 0:
            valid = None if key_padding_mask is None else key_padding_mask[:, :offset]
            state = _prefix_state(key[:, :, :offset], value[:, :, :offset], valid, features)
        if Lq == 0:  # causal: the state after all the keys
            return query.new_zeros(B, H, 0, Dv), state
        if not causal:
            return _query_outputs(query.view(B, Hkv, G, Lq, D), state.Sz, features).view(B, H, Lq, -1), None
        valid = None if key_padding_mask is None else key_padding_mask[:, offset:]
        out, state = _causal(
            query.view(B, Hkv, G, Lq, D),
            key[:, :, offset:],
            value[:, :, offset:],
            valid,
            documents,
            features,
            chunk_size,
            state,
        )
        return out.reshape(B, H, Lq, -1), state


# ---- the transformers AttentionInterface function ---------------------------------------------------------


def _parse_mask(
    attention_mask: torch.Tensor | None, module_causal: bool, Lq: int, Lk: int
) -> tuple[torch.Tensor | None, bool, torch.Tensor | None]:
    """(key_padding_mask (B, Lk) or None, causal, documents (B, Lk) or None) from a 4D boolean (or additive
    float) mask.

    Causal modules also take the block-diagonal causal mask transformers 5.23 builds for packed sequences
    (``position_ids`` restarting inside a row, no attention mask, no cache; ``find_packed_sequence_indices``):
    row i starts a new document when it does not see key i - 1, and the mask must then be exactly "same
    document, causal, key padding". Raises ``ValueError`` for any other pattern: FAVOR+ has no attention
    matrix, so sliding-window, chunked or arbitrary 2D masks cannot be applied.
    """
    if attention_mask is None:  # causal masks are aligned bottom-right: query i sits at Lk - Lq + i
        return None, module_causal, None
    mask = attention_mask[..., :Lk]
    if mask.dtype != torch.bool:
        mask = mask > torch.finfo(mask.dtype).min / 2
    if mask.dim() != 4 or mask.shape[-2] != Lq:
        raise ValueError(
            f"favor expects a (batch, 1, {Lq}, {Lk}) attention mask, got shape {tuple(mask.shape)}"
        )
    if mask.shape[1] != 1 and not bool((mask == mask[:, :1]).all()):
        raise ValueError("favor supports one mask for all heads, got a different mask per head")
    mask = mask[:, 0]
    key_valid = mask.any(dim=-2)
    expected = key_valid[:, None, :].expand(-1, Lq, -1)
    if module_causal:
        positions = torch.arange(Lk, device=mask.device)
        band = positions[None, :] <= positions[Lk - Lq :, None]
        expected = expected & band
    mask = mask.expand_as(expected)
    documents = None
    if not torch.equal(mask, expected):
        documents = _mask_documents(mask, expected) if module_causal and Lq == Lk else None
        if documents is None:
            raise ValueError(
                "favor can only apply key-padding masks, causal masking for decoders and packed documents in "
                "causal attention (the block-diagonal causal mask of restarting position_ids), but this attention "
                "mask has another pattern (sliding window, chunked or prefix-LM attention, packed documents in "
                "non-causal attention, ...). FAVOR+ never forms the attention matrix; disable that pattern (e.g. "
                "config.sliding_window=None), put one document per row with an attention_mask, or use sdpa"
            )
    return (None if bool(key_valid.all()) else key_valid), module_causal, documents


def _mask_documents(mask: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor | None:
    """Run indices (B, L) of the packed documents of a causal (B, L, L) mask, or None when the mask is not
    ``allowed`` (causal and key padding) restricted to same-document pairs."""
    starts = ~mask.diagonal(-1, -2, -1)  # row i does not see key i - 1
    documents = torch.cat([starts.new_zeros(starts.shape[0], 1), starts], -1).long().cumsum(-1)
    same = documents[:, :, None] == documents[:, None, :]
    return documents if torch.equal(mask, allowed & same) else None


def _varlen_documents(kwargs: dict[str, Any], B: int, Lq: int, Lk: int) -> torch.Tensor | None:
    """Document indices (B, L) from FlashAttention-style ``cu_seq_lens_q``/``cu_seq_lens_k`` (cumulative document
    lengths over the flattened batch, as TRL's padding-free collator passes them), None without them. Raises
    ``TypeError``/``ValueError`` naming them when they cannot describe packed self-attention over this batch."""
    given = {name: kwargs.get(name) for name in ("cu_seq_lens_q", "cu_seq_lens_k")}
    if all(cu is None for cu in given.values()):
        return None
    for name, cu in given.items():
        if cu is not None and (
            not isinstance(cu, torch.Tensor) or cu.is_floating_point() or cu.dtype == torch.bool
        ):
            raise TypeError(
                f"{name} must be an integer tensor of cumulative document lengths (0, ..., batch × length), got "
                f"{getattr(cu, 'dtype', type(cu).__name__)}"
            )
        if cu is not None and cu.dim() != 1:
            raise ValueError(f"{name} must be 1-D (cumulative document lengths), got shape {tuple(cu.shape)}")
    cu_q, cu_k = given.values()
    if cu_q is None or cu_k is None or Lq != Lk or not torch.equal(cu_q, cu_k):
        raise ValueError(
            "cu_seq_lens_q and cu_seq_lens_k differ (or the key length differs from the query length): favor keeps "
            "packed documents apart only in self-attention without a cache, where both are the same; got "
            f"cu_seq_lens_q={cu_q}, cu_seq_lens_k={cu_k}, query length {Lq}, key length {Lk}"
        )
    total, cu = B * Lq, cu_q.long()
    if cu.numel() < 2 or int(cu[0]) != 0 or int(cu[-1]) != total or bool((cu.diff() < 0).any()):
        raise ValueError(
            f"cu_seq_lens_q must be non-decreasing, start at 0 and end at batch × length = {total}, got {cu_q.tolist()}"
        )
    if not bool(torch.isin(torch.arange(0, total, Lq, device=cu.device), cu).all()):
        raise ValueError(
            f"cu_seq_lens_q={cu_q.tolist()} has documents that cross a row boundary (rows of {Lq} tokens); favor "
            "attends within a row only: start every row with a new document"
        )
    return (torch.searchsorted(cu, torch.arange(total, device=cu.device), right=True) - 1).view(B, Lq)


def _layer_index(module: Any) -> int:
    """``module.layer_idx``, else the index :func:`~hfplug_favor.set_favor_config` gave the module (modules
    without ``layer_idx``, e.g. DistilBERT's, are numbered in model order)."""
    layer = getattr(module, "layer_idx", None)
    if not isinstance(layer, int):
        layer = getattr(module, LAYER_INDEX, None)
    if layer is None:
        raise ValueError(
            f"{type(module).__name__} has no layer_idx, and FAVOR+ draws its features per layer: call "
            "hfplug_favor.set_favor_config(model, get_favor_config(model)) once after creating or loading the "
            "model, so its attention modules are numbered in model order"
        )
    return layer


def projection_for(module: Any, config: FavorConfig, head_dim: int, device: torch.device) -> torch.Tensor:
    """The projection of ``module``'s layer, drawn from (seed, layer, redraw_count) and cached on the module."""
    layer = _layer_index(module)
    cache_key = (
        config.nb_features,
        config.orthogonal,
        config.radii,
        config.hyperbolic,
        config.seed,
        layer,
        config.redraw_count,
        head_dim,
        str(device),
    )
    cached = getattr(module, "_favor_projection", None)
    if cached is None or cached[0] != cache_key:
        projection = gaussian_projection(
            config.nb_features,
            head_dim,
            orthogonal=config.orthogonal,
            radii=config.radii,
            hyperbolic=config.hyperbolic,
            seed=derive_seed(config.seed, layer, config.redraw_count),
        ).to(device)
        cached = (cache_key, projection)
        module._favor_projection = cached
    return cached[1]


def favor_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """``AttentionInterface`` function for ``attn_implementation="favor"``; returns ((B, Lq, H, Dv), None).

    Settings come from ``module.config.favor`` (see :class:`FavorConfig`). Causality comes from
    ``module.is_causal``; the mask (from ``sdpa_mask``) may only encode key padding and causality.
    """
    if kwargs.get("output_attentions"):
        raise ValueError(
            "output_attentions=True is not supported by attn_implementation='favor': FAVOR+ never forms the "
            "attention matrix; call the model with output_attentions=False (or switch to 'eager' to inspect it)"
        )
    if kwargs.get("position_bias") is not None:
        raise ValueError(
            "attn_implementation='favor' cannot add a position_bias to the attention logits (T5-style relative "
            "attention): FAVOR+ never forms the logits; use sdpa for this model"
        )
    _check_qkv(query, key, value)
    dropout = check_float("dropout", dropout, minimum=0.0, maximum=1.0)
    config = favor_config_from(getattr(module, "config", None))
    if dropout > 0 and not config.ignore_dropout:
        raise ValueError(
            f"attention dropout p={dropout} cannot be applied by FAVOR+ (there is no attention matrix): load the "
            "model with attention dropout 0 (from_pretrained(..., attention_probs_dropout_prob=0.0) for BERT-likes, "
            "attention_dropout=0.0 for Llama-likes) or use FavorConfig(ignore_dropout=True)"
        )
    if module.training and torch.is_grad_enabled() and not getattr(module, ATTACHED, False):
        raise ValueError(
            "training with attn_implementation='favor' needs set_favor_config(model, ...) (or a "
            "FeatureRedrawCallback in the Trainer) first: it gives the model the favor_state buffer that carries "
            "the FAVOR+ seed and redraw count in checkpoints, so a resumed run is checked against them; after "
            "from_pretrained, call set_favor_config(model, get_favor_config(model))"
        )
    Lq, Lk = query.shape[-2], key.shape[-2]
    key_valid, causal, documents = _parse_mask(
        attention_mask, bool(getattr(module, "is_causal", False)), Lq, Lk
    )
    varlen = _varlen_documents(kwargs, query.shape[0], Lq, Lk)
    if varlen is not None:
        if not causal:
            raise ValueError(
                "attn_implementation='favor' cannot keep packed documents apart in non-causal (bidirectional) "
                "attention, and got cu_seq_lens_q/cu_seq_lens_k for one (transformers' sdpa and eager ignore them "
                "and attend across the documents): put one document per row with an attention_mask instead"
            )
        varlen = varlen.to(query.device)
        if documents is not None and not torch.equal(documents, _document_runs(varlen)):
            raise ValueError(
                "cu_seq_lens_q/cu_seq_lens_k disagree with the packed documents of the attention mask (built by "
                "transformers from position_ids restarting at 0): pass position_ids and cu_seq_lens that mark "
                "the same document starts"
            )
        documents = varlen
    projection = projection_for(module, config, query.shape[-1], query.device)
    cache_layer = getattr(key, CACHE_HANDOFF, None)
    if cache_layer is not None:  # FavorCache: key/value hold the new tokens only, the state all earlier ones
        if not causal:
            raise ValueError(
                "FavorCache holds causal prefix sums; it cannot serve a non-causal attention module"
            )
        out, cache_layer.state = favor_attention(
            query,
            key,
            value,
            projection,
            scaling=scaling,
            causal=True,
            key_padding_mask=key_valid,
            kernel=config.kernel,
            chunk_size=config.chunk_size,
            state=cache_layer.consume((module._favor_projection[0], config.kernel, scaling)),
            document_ids=documents,
        )
        return out.transpose(1, 2).to(query.dtype).contiguous(), None
    if causal and Lk > Lq:
        logger.warning_once(
            "favor decoding with a key/value cache recomputes the FAVOR+ prefix sums over all cached tokens at "
            "every step (O(context) per token); pass past_key_values=hfplug_favor.FavorCache() to generate() "
            "for O(1) work per token"
        )
    out, _ = favor_attention(
        query,
        key,
        value,
        projection,
        scaling=scaling,
        causal=causal,
        key_padding_mask=key_valid,
        kernel=config.kernel,
        chunk_size=config.chunk_size,
        shift_keys=config.shift_keys and config.kernel == "softmax",
        document_ids=documents,
    )
    return out.transpose(1, 2).to(query.dtype).contiguous(), None
