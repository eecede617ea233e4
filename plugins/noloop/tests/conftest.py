import sys
from pathlib import Path

import pytest
import torch

from hfplug.testing import tiny_model

sys.path.insert(0, str(Path(__file__).parent))  # the shared helpers module of these tests

EOS = 2


@pytest.fixture
def looping_model():
    """Factory: a random tiny causal LM with a peaked output layer and eos made unlikely; greedy, beam and
    sampling decoding then repeat tokens until the length cap."""

    def make(family: str = "gpt2", seed: int = 0):
        model = tiny_model(family, "causal-lm", seed=seed).eval()
        with torch.no_grad():
            weight = model.get_output_embeddings().weight
            weight.mul_(8.0)
            weight[EOS].zero_()
        return model

    return make


@pytest.fixture
def prompt():
    """(input_ids, attention_mask): 3 rows of 6 tokens, the first row left-padded by 3."""
    ids = torch.randint(3, 1000, (3, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    ids[0, :3] = 0
    mask[0, :3] = 0
    return ids, mask
