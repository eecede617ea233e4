"""transformers 5.23's loss scaling under DeepSpeed ZeRO-3 (torchrun, 2 CPU ranks), without any hfplug plugin.

BertForSequenceClassification accepts ``**kwargs`` but ignores ``num_items_in_batch``: the Trainer then takes its
micro-batch mean for ``sum / num_items_in_batch`` and multiplies it by the number of processes
(``average_tokens_across_devices``, trainer.py ``compute_loss``) and does not divide it by the accumulation steps
(``training_step``). Pinned here against a hand-written SGD loop on the mean loss of the global batch (8 examples):
by default the logged losses are exactly 2x the reference's and the parameters differ; ``model.accepts_loss_kwargs =
False`` corrects both, with and without gradient accumulation; ``average_tokens_across_devices=False`` corrects it
only without accumulation (with GA=2 the loss is still 2x). When transformers changes this, the test says so."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

pytest.importorskip(
    "deepspeed", reason="DeepSpeed is an optional dependency: pip install 'hfplug[deepspeed]'"
)

import torch
import torch.nn.functional as F

from hfplug.testing import assert_ranks_match, run_deepspeed_script, tiny_model


def _reference(steps: int = 3, lr: float = 0.5) -> tuple[dict[str, torch.Tensor], dict[int, float]]:
    """Plain SGD on the mean cross-entropy of all 8 examples (the global batch of every step)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (8, 10), generator=generator)
    labels = torch.randint(0, 2, (8,), generator=generator)
    model = copy.deepcopy(
        tiny_model(
            "bert", "sequence-classification", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
        )
    )
    losses = {}
    for step in range(1, steps + 1):
        loss = F.cross_entropy(model(input_ids=ids).logits, labels)
        losses[step] = float(loss)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    return {k: v.detach() for k, v in model.named_parameters()}, losses


@pytest.mark.distributed
def test_plain_trainer_loss_scaling_under_deepspeed_zero3(tmp_path: Path):
    run_deepspeed_script(Path(__file__).with_name("_deepspeed_plain_trainer_script.py"), str(tmp_path))
    reference, losses = _reference()
    flat = lambda params: torch.cat([v.reshape(-1) for v in params.values()])
    for name in ("accepts_loss_kwargs_false", "accepts_loss_kwargs_false_ga2", "average_tokens_false"):
        ranks = [torch.load(tmp_path / f"{name}_rank{r}.pt") for r in (0, 1)]
        assert (ranks[0]["world_size"], ranks[0]["stage"]) == (2, 3), name
        assert_ranks_match([rank["params"] for rank in ranks], reference, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(ranks[0]["losses"], losses, rtol=1e-5, atol=0, msg=name)
    for name in ("default", "average_tokens_false_ga2"):  # the world-size / accumulation multiple
        rank0, rank1 = (torch.load(tmp_path / f"{name}_rank{r}.pt") for r in (0, 1))
        assert (rank0["world_size"], rank0["stage"]) == (2, 3), name
        assert torch.equal(flat(rank0["params"]), flat(rank1["params"])), name
        torch.testing.assert_close(rank0["losses"][1], 2 * losses[1], rtol=1e-5, atol=0, msg=name)
        assert not torch.allclose(flat(rank0["params"]), flat(reference), rtol=1e-3, atol=1e-4), name
