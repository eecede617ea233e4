"""Packed sequences: several documents in one row, as TRL's padding-free / packing collators produce them
(``position_ids`` restarting at 0 inside the row, no attention mask, ``cu_seq_lens_q/k``).

Reference: every document alone through the same FAVOR+ features (the quadratic float64 form, or the model
run on the document by itself). Packed output that leaks across documents differs from it.
"""

from __future__ import annotations

import pytest
import torch
from _favor_helpers import inputs, quadratic_favor
from hfplug_favor import FavorConfig, favor_attention, gaussian_projection, set_favor_config

import hfplug
from hfplug.testing import tiny_model

LENGTHS = [5, 9, 1, 3, 7]  # 25 tokens: documents inside one chunk, across chunks, of length 1


def document_ids(lengths, batch=1):
    ids = torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))
    return ids.expand(batch, -1)


def per_document(q, k, v, W, lengths, valid=None):
    """Quadratic float64 causal FAVOR+ of each document alone, concatenated along the sequence."""
    outs, start = [], 0
    for length in lengths:
        part = slice(start, start + length)
        doc_valid = None if valid is None else valid[:, part]
        outs.append(quadratic_favor(q[:, :, part], k[:, :, part], v[:, :, part], W, doc_valid, causal=True))
        start += length
    return torch.cat(outs, 2)


@pytest.mark.parametrize("row_slices", [False, True])
@pytest.mark.parametrize("chunk_size", [1, 3, 4, 8, 128])
def test_packed_causal_equals_each_document_alone(chunk_size, row_slices, monkeypatch):
    from hfplug_favor import attention

    if row_slices:  # one (batch, kv head) row per slice, as for long sequences
        monkeypatch.setattr(attention, "_SLICE_FEATURES", 1)
    q, k, v = inputs(L=sum(LENGTHS))
    W = gaussian_projection(64, 16, seed=4)
    out, state = favor_attention(
        q, k, v, W, causal=True, chunk_size=chunk_size, document_ids=document_ids(LENGTHS, 2)
    )
    torch.testing.assert_close(out.double(), per_document(q, k, v, W, LENGTHS), rtol=1e-5, atol=1e-5)
    # the state after the call is the last document's: continuing it equals that document extended by a token
    q2, k2, v2 = inputs(L=sum(LENGTHS) + 1, seed=1)
    step, _ = favor_attention(q2[:, :, -1:], k2[:, :, -1:], v2[:, :, -1:], W, causal=True, state=state)
    tail = slice(sum(LENGTHS) - LENGTHS[-1], None)
    longer = [torch.cat([t[:, :, tail], t2[:, :, -1:]], 2) for t, t2 in ((q, q2), (k, k2), (v, v2))]
    ref = quadratic_favor(*longer, W, causal=True)[:, :, -1:]
    torch.testing.assert_close(step.double(), ref, rtol=1e-5, atol=1e-5)


def test_packed_documents_with_key_padding():
    q, k, v = inputs(L=sum(LENGTHS))
    valid = torch.ones(2, sum(LENGTHS), dtype=torch.bool)
    valid[0, 5:7] = False  # the first keys of the second document
    valid[1, -2:] = False  # the end of the last
    W = gaussian_projection(64, 16, seed=5)
    out, _ = favor_attention(
        q, k, v, W, causal=True, chunk_size=4, key_padding_mask=valid, document_ids=document_ids(LENGTHS, 2)
    )
    torch.testing.assert_close(out.double(), per_document(q, k, v, W, LENGTHS, valid), rtol=1e-5, atol=1e-5)


def test_key_stabiliser_restarts_with_each_document():
    """A document of large-norm keys (log-features near -70) after one of ordinary keys: measured against the
    first document's keys, the second's features underflow float32; each document's own running max keeps
    them exact."""
    lengths = [6, 6]
    q, k, v = inputs(B=1, L=12, seed=2)
    k[:, :, 6:] *= 12.0
    W = gaussian_projection(64, 16, seed=6)
    out, _ = favor_attention(q, k, v, W, causal=True, chunk_size=4, document_ids=document_ids(lengths))
    ref = per_document(q, k, v, W, lengths)
    assert ref[:, :, 6:].abs().amax() > 0.1  # the second document's rows are not zero
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)


def test_packed_gradients_equal_each_document_alone():
    q, k, v = (t.double().requires_grad_() for t in inputs(L=sum(LENGTHS), seed=3))
    W = gaussian_projection(32, 16, seed=7)
    upstream = torch.randn(2, 4, sum(LENGTHS), 16, dtype=torch.float64)
    out, _ = favor_attention(q, k, v, W, causal=True, chunk_size=4, document_ids=document_ids(LENGTHS, 2))
    grads = torch.autograd.grad((out.double() * upstream).sum(), (q, k, v))
    ref_grads = torch.autograd.grad((per_document(q, k, v, W, LENGTHS) * upstream).sum(), (q, k, v))
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(document_ids=[[0, 0, 1]]), "document_ids must be"),
        (dict(document_ids=torch.zeros(2, 5)), "document_ids must be"),
        (
            dict(document_ids=torch.zeros(2, 4, dtype=torch.long)),
            r"document_ids must have shape .* = \(2, 5\)",
        ),
        (dict(document_ids=torch.zeros(2, 5, dtype=torch.long), causal=False), "causal=True"),
    ],
)
def test_bad_document_ids_get_an_error_naming_them(kwargs, message):
    q = torch.randn(2, 4, 5, 8)
    with pytest.raises((TypeError, ValueError), match=message):
        favor_attention(q, q, q, gaussian_projection(16, 8), **{"causal": True, **kwargs})


def test_document_ids_need_keys_equal_to_queries_and_no_state():
    q = torch.randn(1, 2, 5, 8)
    W = gaussian_projection(16, 8)
    docs = torch.zeros(1, 5, dtype=torch.long)
    _, state = favor_attention(q, q, q, W, causal=True)
    with pytest.raises(ValueError, match=r"document_ids .* state"):
        favor_attention(q, q, q, W, causal=True, state=state, document_ids=docs)
    with pytest.raises(ValueError, match=r"document_ids .* as many keys as queries"):
        favor_attention(q[:, :, :3], q, q, W, causal=True, document_ids=docs)


# ---- inside a model: what transformers 5.23 passes on packed batches -----------------------------------------


@pytest.fixture(scope="module", autouse=True)
def favor_backend():
    hfplug.use_attention("favor")


def favor_llama(**config):
    model = tiny_model("llama", "causal-lm")
    model.set_attn_implementation("favor")
    set_favor_config(model, FavorConfig(nb_features=64, chunk_size=4, **config))
    return model.eval()


def packed_batch(lengths=LENGTHS, rows=1, seed=0):
    """``rows`` rows, each the documents of ``lengths`` back to back, with restarting position_ids and the
    cu_seq_lens of the flattened batch (as TRL's padding-free collator computes them)."""
    ids = torch.randint(5, 1000, (rows, sum(lengths)), generator=torch.Generator().manual_seed(seed))
    positions = torch.cat([torch.arange(n) for n in lengths]).expand(rows, -1)
    starts = torch.tensor([0, *lengths]).cumsum(0)[:-1]
    cu = torch.cat([starts + r * sum(lengths) for r in range(rows)] + [torch.tensor([rows * sum(lengths)])])
    return ids, positions, cu.to(torch.int32)


def each_document_alone(model, ids, lengths=LENGTHS):
    with torch.no_grad():
        return torch.cat([model(input_ids=part).logits for part in ids.split(lengths, -1)], 1)


@pytest.mark.parametrize("rows", [1, 2])
def test_packed_row_equals_each_document_alone(rows):
    """No cache: transformers turns the restarting position_ids into a block-diagonal causal mask."""
    model = favor_llama()
    ids, positions, _ = packed_batch(rows=rows)
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits
    torch.testing.assert_close(packed, each_document_alone(model, ids), rtol=1e-4, atol=1e-5)


def test_varlen_kwargs_keep_documents_apart_without_a_block_mask():
    """With a cache transformers builds no packed mask (plain causal, mask None); the FlashAttention-style
    cu_seq_lens_q/k that TRL's collator adds still mark the documents."""
    model = favor_llama()
    ids, positions, cu = packed_batch()
    varlen = dict(cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=9, max_length_k=9)
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=positions, use_cache=True, **varlen).logits
        both = model(input_ids=ids, position_ids=positions, use_cache=False, **varlen).logits
    alone = each_document_alone(model, ids)
    torch.testing.assert_close(packed, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(both, alone, rtol=1e-4, atol=1e-5)


def test_varlen_kwargs_that_disagree_with_the_mask_raise():
    model = favor_llama()
    ids, positions, _ = packed_batch()
    other = torch.tensor([0, 5, 25], dtype=torch.int32)
    with pytest.raises(ValueError, match="cu_seq_lens_q/cu_seq_lens_k disagree"):
        model(
            input_ids=ids, position_ids=positions, use_cache=False, cu_seq_lens_q=other, cu_seq_lens_k=other
        )


@pytest.mark.parametrize(
    "cu, error, message",
    [
        (torch.tensor([0, 5, 26], dtype=torch.int32), ValueError, "end at batch × length = 25"),
        (torch.tensor([0, 7, 5, 25], dtype=torch.int32), ValueError, "non-decreasing"),
        (torch.tensor([[0, 25]], dtype=torch.int32), ValueError, "cu_seq_lens_q must be 1-D"),
        (torch.tensor([0.0, 25.0]), TypeError, "cu_seq_lens_q must be an integer tensor"),
    ],
)
def test_bad_cu_seq_lens_raise(cu, error, message):
    model = favor_llama()
    ids, positions, _ = packed_batch()
    with pytest.raises(error, match=message):
        model(input_ids=ids, position_ids=positions, use_cache=True, cu_seq_lens_q=cu, cu_seq_lens_k=cu)


def test_documents_crossing_rows_and_cross_attention_lengths_raise():
    model = favor_llama()
    ids, positions, _ = packed_batch(rows=2)
    crossing = torch.tensor([0, 20, 50], dtype=torch.int32)  # the second document spans both rows
    with pytest.raises(ValueError, match="cross a row boundary"):
        model(
            input_ids=ids,
            position_ids=positions,
            use_cache=True,
            cu_seq_lens_q=crossing,
            cu_seq_lens_k=crossing,
        )
    first, _, cu = packed_batch()
    with pytest.raises(ValueError, match="cu_seq_lens_q and cu_seq_lens_k differ"):
        model(input_ids=first, use_cache=True, cu_seq_lens_q=cu, cu_seq_lens_k=cu[[0, -1]])


def test_restarting_positions_with_an_attention_mask_or_a_cache_are_not_packing():
    """Left padding gives position_ids that restart after the pads, and decoding with a cache sees queries
    after the cached keys: neither is packing, and both give the unpadded sequence's outputs."""
    model = favor_llama()
    ids = torch.randint(5, 1000, (1, 8), generator=torch.Generator().manual_seed(3))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), ids], 1)
    mask = torch.cat([torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 8, dtype=torch.long)], 1)
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # generate()'s rule: 1 1 1 0 1 2 ...
    with torch.no_grad():
        left = model(input_ids=padded, attention_mask=mask, position_ids=positions).logits[:, 3:]
        alone = model(input_ids=ids).logits
        prefix = model(input_ids=ids[:, :5], use_cache=True)
        rest = model(input_ids=ids[:, 5:], past_key_values=prefix.past_key_values, use_cache=True).logits
    torch.testing.assert_close(left, alone, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(rest, alone[:, 5:], rtol=1e-4, atol=1e-5)


def test_non_causal_packed_batches_are_refused():
    """Bidirectional attention: transformers 5.23 builds no per-document mask for encoders (sdpa and eager
    attend across documents); favor refuses the varlen kwargs and block-diagonal masks instead of ignoring them."""
    model = tiny_model("bert").eval()
    model.set_attn_implementation("favor")
    set_favor_config(model, FavorConfig(nb_features=64))
    ids, _, cu = packed_batch()
    with pytest.raises(ValueError, match=r"non-causal .* cu_seq_lens_q"):
        model(input_ids=ids, cu_seq_lens_q=cu, cu_seq_lens_k=cu)
    docs = document_ids(LENGTHS)[0]
    block = (docs[:, None] == docs[None, :])[None, None]
    with pytest.raises(ValueError, match=r"packed documents .* causal"):
        model(input_ids=ids, attention_mask=block)
