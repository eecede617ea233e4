"""Run under torchrun by test_adversarial_fsdp.py: 5 steps of five methods under FSDP2 full_shard on 2 CPU ranks.

Accelerate 1.15 turns the Trainer's FSDP plugin on only for accelerator devices (``AcceleratorState`` switches to
``DistributedType.FSDP`` for MULTI_GPU/XPU/NPU/..., never for MULTI_CPU), so ``Trainer(fsdp=True, use_cpu=True)``
silently trains with DDP. ``CPUFSDPTrainer`` sets the state that gate skips, right after the Trainer builds its
Accelerator; everything after that (``fully_shard`` wrapping, sharded optimizer, reduce-scatter) is the stock
Accelerate/PyTorch FSDP2 path over gloo. Each rank saves the gathered full parameters and its own shard sizes."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _adversarial_helpers import make_data, make_model, run_trainer
from accelerate import FullyShardedDataParallelPlugin
from accelerate.state import AcceleratorState
from accelerate.utils import DistributedType
from hfplug_adversarial import FGM, PGD, SMART, FreeLB, GradientPenalty
from torch.distributed.tensor import DTensor
from transformers import Trainer

from hfplug.testing import finish_distributed


class CPUFSDPTrainer(Trainer):
    def create_accelerator_and_postprocess(self) -> None:
        super().create_accelerator_and_postprocess()
        state = AcceleratorState()
        assert state.distributed_type == DistributedType.MULTI_CPU  # the gate this script works around
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
        self.is_fsdp_enabled = True


out = Path(sys.argv[1])
# FSDP2, full_shard (reshard after forward); every BertLayer its own unit, the input embedding another (Accelerate),
# the rest in the root. The default wrap (BERT's _no_split_modules) wraps BertEmbeddings, and Accelerate's extra
# fully_shard(word_embeddings) then fails on the already-sharded weight (DeviceMesh._concatenate TypeError).
fsdp = dict(
    fsdp=True,
    fsdp_config={"version": 2, "reshard_after_forward": True, "transformer_layer_cls_to_wrap": ["BertLayer"]},
)
runs = {
    "fgm_model": (lambda: FGM(epsilon=0.5, norm="per_example"), "model", dict(batch_size=4)),
    "gp_loss_func": (
        lambda: GradientPenalty(epsilon=1.0),
        "loss_func",
        dict(batch_size=2, accumulation=2, max_grad_norm=0.3),
    ),
    "freelb_model": (lambda: FreeLB(init_magnitude=0), "model", dict(batch_size=2, accumulation=2)),
    "pgd_loss_func": (lambda: PGD(norm="per_example"), "loss_func", dict(batch_size=4)),
    "smart_model": (lambda: SMART(seed=0), "model", dict(batch_size=4)),  # noise generator seeded 0 + rank
}
for name, (make_callback, path, shape) in runs.items():
    trainer = run_trainer(
        make_model("seq"), make_data("seq"), [make_callback()], task="seq", path=path, epochs=5,
        trainer_class=CPUFSDPTrainer, **fsdp, **shape,
    )  # fmt: skip
    assert trainer.state.global_step == 5 and trainer.args.world_size == 2
    params = list(trainer.model.parameters())
    assert all(isinstance(p, DTensor) for p in params)
    full = torch.cat([p.full_tensor().detach().reshape(-1) for p in params])  # all-gather of every shard
    local = sum(p.to_local().numel() for p in params)
    torch.save({"full": full, "local": local}, out / f"{name}_rank{trainer.args.process_index}.pt")
finish_distributed()
