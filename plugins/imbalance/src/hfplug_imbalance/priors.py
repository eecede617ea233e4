"""Class counts, priors and class weights computed from data, not typed by hand.

``class_counts`` reads a ``datasets.Dataset`` column, any iterable of labels (ints, tensors, arrays, nested
lists for token-level labels) or a ``{class: count}`` mapping, and sums the counts over ranks when
``torch.distributed`` is initialised. ``class_priors`` and ``class_weights`` turn counts into the vectors
the losses need:

- priors ``pi_c = n_c / sum(n)``;
- weights ``w_c ∝ 1/n_c`` (``"inverse"``), ``1/sqrt(n_c)`` (``"sqrt_inverse"``) or
  ``(1 - beta) / (1 - beta**n_c)`` (``"effective_number"``, Cui et al. 2019), normalised to ``sum(w) = C``
  so that uniform counts give weights of exactly 1.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch

from hfplug.validation import check_bool, check_choice, check_float, check_int

WEIGHTINGS = ("inverse", "sqrt_inverse", "effective_number")
# Largest number of classes: a label or num_classes beyond it would allocate a count vector out of
# proportion to the data (2**24 is above any tokenizer vocabulary).
MAX_CLASSES = 2**24

CountsLike = torch.Tensor | Sequence[float] | Mapping[int, float]


def _flatten(values: Any) -> Iterator[Any]:
    if isinstance(values, torch.Tensor) or (
        hasattr(values, "__array__") and not isinstance(values, (str, bytes))
    ):
        yield from torch.as_tensor(values).reshape(-1).tolist()
    elif isinstance(values, (list, tuple)) or (
        isinstance(values, Iterable) and not isinstance(values, (str, bytes, Mapping))
    ):
        for value in values:
            yield from _flatten(value)
    else:
        yield values


def _rows(values: Iterable[Any]) -> torch.Tensor:
    rows = [torch.as_tensor(value, dtype=torch.float64).reshape(-1) for value in values]
    if not rows:
        raise ValueError("multi_label=True needs at least one label row")
    width = {row.numel() for row in rows}
    if len(width) != 1:
        raise ValueError(
            f"multi_label=True needs label rows of one length (multi-hot), got lengths {sorted(width)}"
        )
    return torch.stack(rows)


def _label_of(item: Any, label_column: str) -> Any:
    if not isinstance(item, Mapping):
        return item
    if label_column not in item:
        raise ValueError(f"label_column {label_column!r} is not a key of the examples; keys: {sorted(item)}")
    return item[label_column]


def _label_values(source: Any, label_column: str) -> tuple[Iterable[Any], int | None]:
    """The labels of ``source`` and, for a ``datasets`` ClassLabel column, its number of classes."""
    column_names = getattr(source, "column_names", None)
    if column_names is None:  # an iterable of labels, or of examples (dicts; a streaming IterableDataset)
        if isinstance(source, (str, bytes)) or not isinstance(source, Iterable):
            raise TypeError(
                "source must be a datasets.Dataset, an iterable of labels or a {class: count} mapping, "
                f"got {type(source).__name__}"
            )
        return (_label_of(item, label_column) for item in source), None
    if isinstance(column_names, Mapping):  # DatasetDict: {split: columns}
        raise TypeError(
            f"pass one split of the DatasetDict (one of {sorted(column_names)}), not the DatasetDict"
        )
    if label_column not in column_names:
        raise ValueError(
            f"label_column {label_column!r} is not a column of the dataset; columns: {column_names}"
        )
    feature = source.features[label_column]
    while not hasattr(feature, "num_classes") and hasattr(feature, "feature"):  # Sequence/List(ClassLabel)
        feature = feature.feature
    return source[label_column], getattr(feature, "num_classes", None)


def _all_reduce_counts(counts: torch.Tensor) -> torch.Tensor:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return counts
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    size = torch.tensor([counts.numel()], device=device)
    dist.all_reduce(size, op=dist.ReduceOp.MAX)
    padded = torch.zeros(int(size.item()), dtype=torch.float64, device=device)
    padded[: counts.numel()] = counts.to(device)
    dist.all_reduce(padded, op=dist.ReduceOp.SUM)
    return padded.cpu()


def class_counts(
    source: Any,
    label_column: str = "label",
    *,
    num_classes: int | None = None,
    ignore_index: int = -100,
    multi_label: bool = False,
    all_reduce: bool = True,
) -> torch.Tensor:
    """Per-class counts (float64 tensor of length C) from data.

    ``source``: a ``datasets.Dataset`` (its ``label_column``; a ClassLabel feature gives C), an iterable of
    integer labels (nested sequences of token labels are flattened, ``ignore_index`` entries skipped), a
    ``{class: count}`` mapping, or with ``multi_label=True`` an iterable of multi-hot rows (summed).
    ``num_classes`` pads the result (classes never seen count 0) and rejects larger labels. When
    ``torch.distributed`` is initialised and ``all_reduce`` is True the counts are summed over ranks: use it
    when each rank reads its own shard; pass ``all_reduce=False`` when every rank holds the whole dataset
    (priors and inverse weights are unchanged by the factor, effective-number weights are not).
    """
    if num_classes is not None:
        num_classes = check_int("num_classes", num_classes, minimum=1, maximum=MAX_CLASSES)
    if not isinstance(label_column, str):
        raise TypeError(f"label_column must be a str, got {label_column!r} ({type(label_column).__name__})")
    ignore_index = check_int("ignore_index", ignore_index)
    multi_label = check_bool("multi_label", multi_label)
    all_reduce = check_bool("all_reduce", all_reduce)
    if isinstance(source, Mapping):
        counts = _counts_from_mapping(source)
    else:
        values, dataset_classes = _label_values(source, label_column)
        num_classes = num_classes or dataset_classes
        if multi_label:
            rows = _rows(values)
            counts = torch.where(rows == ignore_index, 0.0, rows).sum(0)
        else:
            counts = _counts_from_labels(list(_flatten(values)), ignore_index)
    if num_classes is not None:
        if counts.numel() > num_classes:
            raise ValueError(f"found label {counts.numel() - 1}, but num_classes={num_classes}")
        counts = torch.cat([counts, counts.new_zeros(num_classes - counts.numel())])
    if all_reduce:
        counts = _all_reduce_counts(counts)
    if counts.numel() == 0:
        raise ValueError("no labels found (every label was ignore_index or the source was empty)")
    return counts


def _counts_from_mapping(mapping: Mapping[Any, Any], name: str = "counts") -> torch.Tensor:
    keys = [check_int(f"{name} key", key, minimum=0, maximum=MAX_CLASSES - 1) for key in mapping]
    counts = torch.zeros(max(keys, default=-1) + 1, dtype=torch.float64)
    for key, value in zip(keys, mapping.values(), strict=True):
        counts[key] = check_float(f"{name}[{key}]", value, minimum=0.0)
    return as_counts(counts, name)


def _counts_from_labels(labels: list[Any], ignore_index: int) -> torch.Tensor:
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, numbers.Real) or not float(label).is_integer():
            raise TypeError(
                f"labels must be integers (class indices), got {label!r} ({type(label).__name__})"
            )
    tensor = torch.tensor([int(v) for v in labels if int(v) != ignore_index], dtype=torch.long)
    negative = tensor[tensor < 0]
    if negative.numel():
        raise ValueError(f"labels must be >= 0 or ignore_index={ignore_index}, got {int(negative[0])}")
    if tensor.numel() and int(tensor.max()) >= MAX_CLASSES:
        raise ValueError(f"labels must be < {MAX_CLASSES} (class indices), got {int(tensor.max())}")
    return torch.bincount(tensor).to(torch.float64)


def as_counts(values: CountsLike, name: str = "class_counts") -> torch.Tensor:
    """``values`` as a 1-D float64 tensor of finite, non-negative counts with a positive sum."""
    if isinstance(values, Mapping):
        return _counts_from_mapping(values, name)
    try:
        counts = torch.as_tensor(values, dtype=torch.float64).detach().cpu().clone()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(
            f"{name} must be a 1-D sequence or tensor of numbers, got {type(values).__name__}"
        ) from exc
    if counts.dim() != 1 or counts.numel() == 0:
        raise ValueError(
            f"{name} must be a non-empty 1-D vector (one entry per class), got shape {tuple(counts.shape)}"
        )
    bad = (~torch.isfinite(counts)).nonzero()
    if bad.numel():
        raise ValueError(f"{name}[{int(bad[0])}] is {counts[bad[0]].item()}; counts must be finite")
    negative = (counts < 0).nonzero()
    if negative.numel():
        c = int(negative[0])
        raise ValueError(f"{name}[{c}] = {counts[c].item():g} is negative; class {c} needs a count >= 0")
    total = float(counts.sum())
    if total <= 0:
        raise ValueError(f"{name} sum to 0; at least one class needs a positive count")
    if not math.isfinite(total):
        raise ValueError(f"{name} sum to {total} (float64 overflow); scale the counts down")
    return counts


def _positive_counts(values: CountsLike, name: str, smoothing: float, why: str) -> torch.Tensor:
    smoothing = check_float("smoothing", smoothing, minimum=0.0)
    counts = as_counts(values, name) + smoothing
    if not math.isfinite(float(counts.sum())):
        raise ValueError(f"smoothing={smoothing:g} added to every count of {name} overflows float64")
    zero = (counts == 0).nonzero()
    if zero.numel():
        c = int(zero[0])
        raise ValueError(
            f"class {c} has count 0 in {name}, but {why}; drop the class, or pass smoothing > 0 "
            "(added to every count)"
        )
    return counts


def class_priors(counts: CountsLike, *, smoothing: float = 0.0) -> torch.Tensor:
    """Class priors ``pi_c = (n_c + smoothing) / sum(n + smoothing)`` (float64); a zero count is an error."""
    return _class_priors(counts, "counts", smoothing)


def _class_priors(values: CountsLike, name: str, smoothing: float) -> torch.Tensor:
    """:func:`class_priors` with errors naming the caller's argument ``name``."""
    counts = _positive_counts(values, name, smoothing, "its log-prior would be -inf")
    return counts / counts.sum()


def class_weights(
    counts: CountsLike, weighting: str = "inverse", *, beta: float = 0.999, smoothing: float = 0.0
) -> torch.Tensor:
    """Class weights from counts, normalised to ``sum(w) = C`` (float64).

    ``"inverse"``: ``w ∝ 1/n``; ``"sqrt_inverse"``: ``w ∝ 1/sqrt(n)``; ``"effective_number"``:
    ``w ∝ (1 - beta) / (1 - beta**n)`` with ``0 <= beta < 1`` (beta = 0 gives uniform weights).
    """
    return _class_weights(counts, "counts", weighting, beta, smoothing)


def _class_weights(
    values: CountsLike, name: str, weighting: str, beta: float, smoothing: float, beta_name: str = "beta"
) -> torch.Tensor:
    """:func:`class_weights` with errors naming the caller's arguments ``name`` and ``beta_name``."""
    weighting = check_choice("weighting", weighting, WEIGHTINGS)
    beta = check_float(beta_name, beta, minimum=0.0, maximum=1.0, max_open=True)
    counts = _positive_counts(values, name, smoothing, f"{weighting!r} weighting divides by the count")
    if weighting == "inverse":
        raw = 1.0 / counts
    elif weighting == "sqrt_inverse":
        raw = counts.rsqrt()
    else:
        raw = (1.0 - beta) / -torch.expm1(counts * math.log(beta)) if beta > 0 else torch.ones_like(counts)
    return raw * (counts.numel() / raw.sum())
