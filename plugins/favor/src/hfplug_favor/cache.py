"""``FavorCache``: a transformers ``Cache`` that keeps FAVOR+'s recurrent state instead of keys and values.

Per layer it stores the causal prefix sums S = sum_j phi(k_j) v_j^T (B, Hkv, m, Dv), z = sum_j phi(k_j)
(B, Hkv, m) (one tensor [S, z]) and the running key stabiliser r (B, Hkv), plus the token count. A decode step hands only the
new keys/values to the attention function, which reads and advances the state: the work and memory of a step
are O(m·Dv) per head, independent of the context length. Masks are built for the new tokens only
(``get_mask_sizes`` returns (query_length, seen_tokens)); padded tokens of earlier steps are already inside
the sums with phi = 0.

:func:`install_generate_default` makes ``FavorCache`` the default cache of plain ``generate()`` for models
whose attention is ``"favor"`` (installed by ``hfplug.use_attention("favor")``).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache, DynamicLayer
from transformers.generation.utils import GenerationMixin, GenerationMode

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
    to ``generate`` or to a forward with ``use_cache=True``. Layers are created lazily. It cannot be cropped
    (no assisted decoding) and works only with the ``"favor"`` backend (other backends raise on the second
    forward). Plain ``generate()`` on a favor decoder creates one by itself (see :func:`install_generate_default`)."""

    def __init__(self) -> None:
        super().__init__(layer_class_to_replicate=FavorCacheLayer)


# generation modes whose cache is only appended to, reordered (beams) or repeated, never cropped
_FAVOR_CACHE_MODES = (
    GenerationMode.GREEDY_SEARCH,
    GenerationMode.SAMPLE,
    GenerationMode.BEAM_SEARCH,
    GenerationMode.BEAM_SAMPLE,
)


def _plain_full_attention_cache(cache: Any) -> bool:
    """True for the default DynamicCache of a model with full attention only (no sliding, linear or shared
    layers, no offloading): the cache a FavorCache can stand in for."""
    if type(cache) is not DynamicCache or cache.offloading:
        return False
    if not cache.layers:
        return cache.layer_class_to_replicate is DynamicLayer
    return all(type(layer) is DynamicLayer for layer in cache.layers)


def _uses_favor_cache(model: Any, generation_config: Any, generation_mode: Any, cache: Any) -> bool:
    text_config = model.config.get_text_config(decoder=True)
    return (
        getattr(text_config, "_attn_implementation", None) == "favor"
        and not model.config.is_encoder_decoder
        and generation_config.cache_implementation is None
        and generation_config.use_cache is not False
        and not generation_config.is_assistant
        and generation_mode in _FAVOR_CACHE_MODES
        and _plain_full_attention_cache(cache)
    )


def install_generate_default() -> None:
    """Make plain ``generate()`` use a :class:`FavorCache` on decoder-only models whose attention is ``"favor"``.

    Wraps ``GenerationMixin._prepare_cache_for_generation`` once (idempotent): transformers prepares its cache
    as usual, and the wrapper swaps the DynamicCache it created for a ``FavorCache`` only when the user passed
    no cache, ``cache_implementation`` is unset, ``use_cache`` is not False, the model is not an
    encoder-decoder nor an assistant, its layers are all full attention, and the mode is greedy, sampling or
    beam search/sampling (assisted, contrastive, DoLa, ... crop or inspect the cache and keep the
    DynamicCache). ``generate(..., cache_implementation="dynamic")`` opts out.
    """
    original = GenerationMixin._prepare_cache_for_generation
    if getattr(original, "_hfplug_favor", False):
        return

    @functools.wraps(original)
    def _prepare_cache_for_generation(
        self, generation_config, model_kwargs, generation_mode, batch_size, max_cache_length
    ):
        user_cache = model_kwargs.get("past_key_values")
        result = original(
            self, generation_config, model_kwargs, generation_mode, batch_size, max_cache_length
        )
        if user_cache is None and _uses_favor_cache(
            self, generation_config, generation_mode, model_kwargs.get("past_key_values")
        ):
            model_kwargs["past_key_values"] = FavorCache()
        return result

    _prepare_cache_for_generation._hfplug_favor = True
    GenerationMixin._prepare_cache_for_generation = _prepare_cache_for_generation
