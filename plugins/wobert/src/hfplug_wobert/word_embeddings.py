"""Move a character-level BERT to the WoBERT vocabulary: new word = mean of its characters (bert4keras recipe).

For each token t of the word vocabulary, with E the char model's input embedding and b its MLM output bias:

    E'[t] = E[t]                                   if t is in the char vocabulary (same row, new id)
    E'[t] = mean_{c in char_tokenizer(t)} E[c]     otherwise (b' likewise)

The mean is taken as sum_c E[c] / n, so finite rows give finite means even near the float range's end; a
model whose embeddings already hold NaN or inf is refused before anything changes.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F


@torch.no_grad()
def init_word_embeddings(model: Any, char_tokenizer: Any, word_tokenizer: Any) -> dict[str, int]:
    """Resize ``model`` (a char-level BERT, indexed by ``char_tokenizer``) to ``word_tokenizer``'s vocabulary.

    Tokens present in both vocabularies keep their input embedding row (and MLM output bias / untied output
    row); every other token gets the mean over the ids ``char_tokenizer`` gives it (its characters, WordPiece
    pieces or [UNK]). Tokens the char tokenizer maps to nothing keep the fresh rows of
    ``resize_token_embeddings``. Returns counts ``{"copied", "averaged", "untouched"}``; ``model`` is changed
    in place. TypeError for a non-model or non-tokenizer argument; ValueError, with nothing changed, when the
    char tokenizer has ids beyond the model's embeddings or the embeddings (or MLM bias) hold NaN or inf.
    """
    from transformers import PreTrainedTokenizerBase

    if not hasattr(model, "get_input_embeddings") or not hasattr(model, "resize_token_embeddings"):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    for name, tokenizer in (("char_tokenizer", char_tokenizer), ("word_tokenizer", word_tokenizer)):
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(f"{name} must be a transformers tokenizer, got {type(tokenizer).__name__}")
    old_in = model.get_input_embeddings().weight.detach().clone()
    char_vocab = char_tokenizer.get_vocab()
    if len(old_in) < max(char_vocab.values()) + 1:
        raise ValueError(
            f"model has {len(old_in)} input embeddings but char_tokenizer has ids up to {max(char_vocab.values())}: "
            "char_tokenizer must be the tokenizer the model was trained with"
        )
    old_out = model.get_output_embeddings()
    tied = old_out is not None and old_out.weight is model.get_input_embeddings().weight
    old_out_weight = None if old_out is None or tied else old_out.weight.detach().clone()
    old_bias = (
        None if old_out is None or getattr(old_out, "bias", None) is None else old_out.bias.detach().clone()
    )

    for name, tensor in (
        ("input embeddings", old_in),
        ("output embeddings", old_out_weight),
        ("MLM bias", old_bias),
    ):
        if tensor is not None and not torch.isfinite(tensor).all():
            rows = torch.nonzero(~torch.isfinite(tensor.reshape(len(tensor), -1)).all(dim=1)).flatten()
            raise ValueError(
                f"model's {name} hold NaN or inf in rows {rows[:10].tolist()}"
                f"{' ...' if len(rows) > 10 else ''}; init_word_embeddings would spread them into new rows"
            )

    word_vocab = word_tokenizer.get_vocab()
    new_tokens = [token for token in word_vocab if token not in char_vocab]
    new_token_ids = char_tokenizer(new_tokens, add_special_tokens=False)["input_ids"] if new_tokens else []
    sources = {token: [char_vocab[token]] for token in word_vocab if token in char_vocab}
    sources.update((token, ids) for token, ids in zip(new_tokens, new_token_ids, strict=True) if ids)
    counts = {
        "copied": len(word_vocab) - len(new_tokens),
        "averaged": len(sources) - (len(word_vocab) - len(new_tokens)),
        "untouched": len(word_vocab) - len(sources),
    }

    model.resize_token_embeddings(len(word_tokenizer), mean_resizing=False)
    new_out = model.get_output_embeddings()
    targets = [(model.get_input_embeddings().weight, old_in)]
    if old_out_weight is not None:
        targets.append((new_out.weight, old_out_weight))
    if old_bias is not None:
        targets.append((new_out.bias, old_bias))
    rows = torch.tensor([word_vocab[token] for token in sources])
    flat = torch.tensor([i for ids in sources.values() for i in ids])
    offsets = torch.tensor([0, *itertools.accumulate(len(ids) for ids in sources.values())][:-1])
    # sum of E[c] / n rather than (sum of E[c]) / n: no overflow to inf for finite rows near the float maximum
    shares = torch.tensor([1 / len(ids) for ids in sources.values() for _ in ids])
    for new, old in targets:
        matrix = old if old.dim() == 2 else old.unsqueeze(1)
        means = F.embedding_bag(flat, matrix, offsets, mode="sum", per_sample_weights=shares.to(matrix.dtype))
        new[rows] = means if old.dim() == 2 else means.squeeze(1)
    return counts
