import gc
import sys
from pathlib import Path

import torch
import transformers  # noqa: F401  (imported before gc.freeze below)

sys.path.insert(0, str(Path(__file__).parent))  # the shared helpers module of these tests

# Tiny models: one thread avoids oversubscription on a shared 2-core machine. Trainer.train() ends with
# gc.collect(); freezing the objects of the imports above keeps that from costing ~0.5 s per run.
torch.set_num_threads(1)
gc.freeze()
