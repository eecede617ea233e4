"""FAVOR+ with feature redraw under DeepSpeed ZeRO-2/3 on 2 CPU ranks == a hand-written single-process loop
on the same global batches: both ranks hold the reference's features (drawn from seed, layer and redraw
count), the same trained parameters and losses, and a run resumed from a DeepSpeed checkpoint equals the
uninterrupted one. One torchrun launch runs every selected stage."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("deepspeed", reason="DeepSpeed tests need deepspeed (the core's dev or deepspeed extra)")

from hfplug_favor import gaussian_projection, get_favor_config, set_favor_config
from hfplug_favor.feature_maps import derive_seed

from hfplug.testing import (
    assert_deepspeed_record,
    assert_ranks_match,
    import_script,
    run_deepspeed_script,
    selected_parameters,
    tiny_model,
)

SCRIPT = Path(__file__).with_name("_favor_deepspeed_script.py")
ds = import_script(SCRIPT)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("favor-checkpoint")
    model = tiny_model(
        "bert", "sequence-classification", seed=0, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def reference(checkpoint):
    """SGD by hand on global batches of 2 ranks x PER_DEVICE; step t uses the features of redraw count t."""
    model = ds.load(checkpoint)
    model.train()
    data, size = ds.examples(), 2 * ds.PER_DEVICE
    losses = {}
    for step in range(ds.STEPS):
        set_favor_config(model, get_favor_config(model).replace(redraw_count=step))
        batch = data[step * size : (step + 1) * size]
        loss = model(**{k: torch.stack([e[k] for e in batch]) for k in ("input_ids", "labels")}).loss
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= ds.LEARNING_RATE * p.grad
        losses[step + 1] = loss.item()
    return losses, {k: v.detach() for k, v in model.named_parameters()}


@pytest.fixture(scope="module")
def launched(request, tmp_path_factory, checkpoint) -> Path:
    """One torchrun launch for every stage of this module that this session selected."""
    out = tmp_path_factory.mktemp("favor-deepspeed")
    run_deepspeed_script(SCRIPT, checkpoint, str(out), *selected_parameters(request, "stage"))
    return out


@pytest.mark.distributed
@pytest.mark.parametrize("stage", [3, pytest.param(2, marks=pytest.mark.slow)])
def test_deepspeed_equals_single_process_reference_and_resumes(stage, launched, reference):
    losses, expected = reference
    # the last step (index STEPS - 1) ran with the features of redraw count STEPS - 1; the count is now STEPS
    features = [
        gaussian_projection(ds.FAVOR.nb_features, 16, seed=derive_seed(ds.FAVOR.seed, layer, ds.STEPS - 1))
        for layer in range(2)
    ]
    for run in ("full", "resumed"):
        ranks = [torch.load(launched / f"z{stage}-{run}-rank{r}.pt") for r in (0, 1)]
        for rank in ranks:
            assert_deepspeed_record(rank, stage)  # ZeRO-3 really partitioned every parameter
            assert rank["redraw_count"] == ds.STEPS
            assert rank["favor_state"] == [ds.FAVOR.seed, ds.STEPS]
            for got, want in zip(rank["projections"], features, strict=True):
                assert torch.equal(got, want)
            first = 1 if run == "full" else ds.SAVE_EVERY + 1  # the resumed run logs its own steps only
            want_losses = [losses[s] for s in range(first, ds.STEPS + 1)]
            got_losses = [rank["losses"][s] for s in range(first, ds.STEPS + 1)]
            # float32 summation order only: seen 8.5e-8 relative on the losses, 1.1e-8 absolute on the parameters
            torch.testing.assert_close(got_losses, want_losses, rtol=1e-6, atol=0)
        assert_ranks_match([rank["params"] for rank in ranks], expected, rtol=1e-5, atol=1e-7)
