"""Two gloo ranks hold identical features after redraws, with no communication about them."""

from pathlib import Path

import pytest
import torch
from hfplug_favor import gaussian_projection
from hfplug_favor.feature_maps import derive_seed

from hfplug.testing import run_torchrun


@pytest.mark.distributed
def test_two_ranks_hold_identical_features_after_redraw(tmp_path):
    pytest.importorskip("accelerate")  # the Trainer needs it
    run_torchrun(Path(__file__).with_name("_favor_ddp_script.py"), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["redraw_count"] for r in ranks] == [3, 3]
    for layer, (a, b) in enumerate(zip(ranks[0]["projections"], ranks[1]["projections"], strict=True)):
        assert torch.equal(a, b)
        assert not torch.equal(a, gaussian_projection(16, 8, seed=derive_seed(3, layer, 0)))  # really redrawn
