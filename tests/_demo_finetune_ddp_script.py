"""Demo stages 2-3 on two ranks (run by tests/test_demo.py under torchrun, gloo on CPU).

Fine-tunes the pretrained base with FGM + logit-adjusted loss at smoke size and writes, per
rank, the fine-tuned parameters and the test metrics to ``argv[1]``.
"""

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from demo import base, finetune, vocabulary
from demo.settings import preset
from hfplug.data import long_tailed_reviews
from hfplug.testing import finish_distributed

out = Path(sys.argv[1])
settings = preset("smoke", finetune_epochs=2)
tokenizer = vocabulary.word_tokenizer()
base_dir, _ = base.pretrained_base()
train_pairs, test_pairs = long_tailed_reviews(0, settings.n_head, settings.imbalance, settings.n_test // 2)
train = finetune.review_dataset(train_pairs, tokenizer, settings.max_length)
test = finetune.review_dataset(test_pairs, tokenizer, settings.max_length)
model, metrics = finetune.finetune(
    "fgm_logit_adjusted",
    base_dir,
    tokenizer,
    train,
    test,
    settings,
    0,
    out / "ft",
    progress=False,
)
rank = dist.get_rank()
torch.save({name: p.detach().clone() for name, p in model.named_parameters()}, out / f"params{rank}.pt")
metrics.pop("train_seconds")
(out / f"metrics{rank}.json").write_text(json.dumps({**metrics, "world_size": dist.get_world_size()}))
finish_distributed()
