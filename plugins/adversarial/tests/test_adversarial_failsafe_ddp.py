"""Non-finite steps under DDP (torchrun, 2 ranks, gloo): FGM, step 1 of 3 poisoned on one rank only. Both ranks
skip the same step and end equal to the run on the data minus that step's global batch: NaN in rank 0's forward,
NaN in rank 1's backward, and a non-finite direction seen by rank 0 alone while every loss and the all-reduced
(clipped) gradients stay finite, so only the all-reduced skip flag keeps rank 1 from stepping (AdamW's weight
decay and step count would move it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from _adversarial_failsafe import assert_ranks_skipped_like_reference

from hfplug.testing import run_torchrun


@pytest.mark.distributed
def test_ranks_skip_the_same_step(tmp_path: Path):
    run_torchrun(Path(__file__).with_name("_adversarial_failsafe_ddp_script.py"), str(tmp_path))
    assert_ranks_skipped_like_reference(tmp_path, "", ("forward_rank0", "backward_rank1", "rank0_only"))
