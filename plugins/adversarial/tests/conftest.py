import gc
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # the shared helpers module of these tests


@pytest.fixture(autouse=True, scope="module")
def _small_model_settings():
    """Tiny models: one thread avoids oversubscription on a shared 2-core machine, and Trainer.train() ends with
    gc.collect(), which costs ~0.5 s per run unless the objects of the imports are frozen. Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    gc.freeze()
    yield
    gc.unfreeze()
    torch.set_num_threads(threads)
