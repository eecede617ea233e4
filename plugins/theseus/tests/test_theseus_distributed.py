"""Two ranks under torchrun: same draws, identical parameters, no unused-parameter error without
``find_unused_parameters``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from hfplug.testing import run_torchrun

SCRIPT = Path(__file__).with_name("_theseus_ddp_script.py")


@pytest.mark.distributed
def test_two_ranks_share_draws_and_parameters(tmp_path):
    run_torchrun(SCRIPT, str(tmp_path), nproc=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["ddp"] == "DistributedDataParallel"
    assert ranks[0]["draws"] == ranks[1]["draws"]
    assert [step for step, _ in ranks[0]["draws"]] == list(range(6))
    # some step left a successor block unused: the case that breaks DDP without find_unused_parameters
    assert any(not all(gates) for _, gates in ranks[0]["draws"])
    initial, final = ranks[0]["initial"], ranks[0]["final"]
    for key, value in final.items():
        torch.testing.assert_close(ranks[1]["final"][key], value, rtol=0, atol=0, msg=key)
        if ".successor." not in key:
            assert torch.equal(value, initial[key]), key
    assert any(not torch.equal(v, initial[k]) for k, v in final.items() if ".successor." in k)
