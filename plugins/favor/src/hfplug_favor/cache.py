"""``FavorCache``: a transformers ``Cache`` that keeps FAVOR+'s recurrent state instead of keys and values.

Per layer it stores the causal prefix sums S = sum_j phi(k_j) v_j^T (B, Hkv, m, Dv), z = sum_j phi(k_j)
(B, Hkv, m) (one tensor [S, z]) and the running key stabiliser r (B, Hkv), plus the token count. A decode step hands only the
new keys/values to the attention function, which reads and advances the state: the work and memory of a step
are O(m·Dv) per head, independent of the context length. Masks are built for the new tokens only
(``get_mask_sizes`` returns (query_length, seen_tokens)); padded tokens of earlier steps are already inside
the sums with phi = 0.

``generate()`` uses it only when asked: ``model.generate(**inputs, past_key_values=FavorCache())``. Without it
transformers keeps its own cache (a ``DynamicCache``) and every decode step recomputes the prefix sums from
the cached keys and values (O(L) per token, the same outputs up to float rounding).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from hfplug.validation import check_int

from .attention import CACHE_HANDOFF, FavorState


class FavorCacheLayer(CacheLayerMixin):
    """The FAVOR+ state of one attention layer (no keys or values are kept)."""

    is_sliding = False
    is_croppable = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.state: FavorState | None = None
        self.tag: tuple | None = None
        self.length = 0
        self.pending = False

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Count the new tokens and return the new keys/values only, the key tagged with this layer so the
        ``"favor"`` attention function can fold them into the state."""
        if self.pending:
            raise RuntimeError(
                "FavorCache: the keys of the previous forward were never folded into the FAVOR+ state, so this "
                "model's attention is not attn_implementation='favor'; use FavorCache only with the 'favor' backend "
                "(or a DynamicCache with any backend)"
            )
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.length += key_states.shape[-2]
        self.pending = True
        keys = key_states.view_as(key_states)
        setattr(keys, CACHE_HANDOFF, self)
        return keys, value_states

    def consume(self, tag: tuple) -> FavorState | None:
        """The state before the pending tokens; ``tag`` identifies features, kernel and scaling."""
        if self.state is not None and tag != self.tag:
            raise RuntimeError(
                "FavorCache: the FAVOR+ features changed during generation (set_favor_config or a feature redraw "
                "between steps); start a new FavorCache"
            )
        self.tag = tag
        self.pending = False
        return self.state

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return query_length, self.length

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return -1

    def offload(self) -> None:  # the state is O(m·d): it stays on its device
        pass

    def prefetch(self) -> None:
        pass

    def reset(self) -> None:
        self.state, self.tag, self.length, self.pending = None, None, 0, False

    def crop(self, tokens_to_remove: int) -> None:
        if check_int("tokens_to_remove", tokens_to_remove):
            raise ValueError(
                "FavorCache cannot crop: its running sums cannot drop tokens (assisted/speculative decoding needs a "
                "DynamicCache)"
            )

    def _map_state(self, function: Any) -> None:
        if self.state is not None:
            self.state = FavorState(function(self.state.Sz), function(self.state.r))

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self._map_state(lambda t: t.index_select(0, beam_idx.to(t.device)))

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._map_state(lambda t: t.repeat_interleave(repeats, dim=0))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._map_state(lambda t: t[indices, ...])


class FavorCache(Cache):
    """O(1)-per-token decode cache for ``attn_implementation="favor"``: pass ``past_key_values=FavorCache()``
    (a new one per call) to ``generate`` or to a forward with ``use_cache=True``. Greedy, sampling and beam
    search work; it cannot be cropped (assisted, prompt-lookup and contrastive decoding raise: they need the
    default cache) and works only with the ``"favor"`` backend (other backends raise on the second forward)."""

    def __init__(self) -> None:
        super().__init__(layer_class_to_replicate=FavorCacheLayer)
