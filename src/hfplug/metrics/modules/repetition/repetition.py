"""Repetition and termination of generated text as an evaluate module (token ids in, no references).

rep-n (pooled), seq-rep-n, distinct-n and, given ``eos_token_id`` and ``max_length``, the non-termination
ratio at that cap; the formulas are in ``hfplug.metrics.ngrams``.
Load offline with ``evaluate.load(hfplug.metrics.path("repetition"))``.
"""

from __future__ import annotations

import datasets
import evaluate

from hfplug.metrics import ngrams

_DESCRIPTION = "rep-n, seq-rep-n, distinct-n and non-termination ratio of generated token sequences."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): generated token ids only (prompt stripped).
    n (int, default 4): n-gram size of rep-n and seq-rep-n.
    distinct (int, default 2): n-gram size of distinct-n.
    eos_token_id (int or list of int, optional) and max_length (int, optional): both or neither; with them
        the result holds non_termination (share of rows with no eos in their first max_length tokens).
    pad_token_id (int, optional): trailing padding that is not counted as generated.
    truncate_at_eos (bool, default True when eos_token_id is given): repetition is measured on the text
        before the first eos.
Returns:
    rep_{n}, seq_rep_{n}, distinct_{distinct} and optionally non_termination.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Repetition(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64"))}),
        )

    def _compute(
        self,
        predictions: list[list[int]],
        n: int = 4,
        distinct: int = 2,
        eos_token_id: int | list[int] | None = None,
        max_length: int | None = None,
        pad_token_id: int | None = None,
        truncate_at_eos: bool | None = None,
    ) -> dict[str, float]:
        if (eos_token_id is None) != (max_length is None):
            raise ValueError("eos_token_id and max_length must be given together")
        result = {}
        if eos_token_id is not None:
            result["non_termination"] = ngrams.non_termination_ratio(
                predictions, eos_token_id, max_length, pad_token_id
            )
        texts = predictions
        if truncate_at_eos or (truncate_at_eos is None and eos_token_id is not None):
            if eos_token_id is None:
                raise ValueError("truncate_at_eos=True needs eos_token_id")
            texts = ngrams.truncate_at_eos(predictions, eos_token_id, pad_token_id)
        result[f"rep_{n}"] = ngrams.rep_n(texts, n)
        result[f"seq_rep_{n}"] = ngrams.seq_rep_n(texts, n)
        result[f"distinct_{distinct}"] = ngrams.distinct_n(texts, distinct)
        return result
