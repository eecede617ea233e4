"""Run under torchrun by test_adversarial_deepspeed.py: the six methods (and FGM with objective="sum") under DeepSpeed ZeRO-2 and ZeRO-3 on 2 CPU
ranks (3 steps of 4 examples per rank, plain SGD; the gradient penalty under ZeRO-3 also as 2 micro-batches of 2), then FGM's non-finite-step skip under ZeRO-3 (AdamW). Each run
saves its ``deepspeed_record`` (engine, gathered parameters, logged losses) and the size of this rank's partition; a
run that raises ValueError saves its message (the test fails naming it). One launch pays DeepSpeed's start-up once."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch
from _adversarial_failsafe import Inject, data_for, train, without_step
from _adversarial_helpers import make_data, make_model, run_trainer
from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_optimizer_state
from hfplug_adversarial import FGM, FGSM, PGD, SMART, FreeLB, GradientPenalty
from transformers import TrainerCallback
from transformers.integrations.deepspeed import unset_hf_deepspeed_config

from hfplug.testing import (
    deepspeed_record,
    finish_distributed,
    partitioned_deepspeed_config,
    start_deepspeed_ranks,
)


def fresh_model():
    # a model built while an earlier run's TrainingArguments(deepspeed=ZeRO-3) lives is built under
    # deepspeed.zero.Init (partitioned at construction, other initial values): forget that config first
    unset_hf_deepspeed_config()
    return make_model("seq")


def local_size(model) -> int:
    """How many parameter elements this rank holds (its ZeRO-3 partitions; every element otherwise)."""
    return sum(p.ds_tensor.numel() if hasattr(p, "ds_tensor") else p.numel() for p in model.parameters())


start_deepspeed_ranks()
out = Path(sys.argv[1])
methods = {  # name: (callback, loss path)
    "fgm": (lambda: FGM(epsilon=0.05, norm="per_example"), "model"),
    "fgm_sum": (lambda: FGM(epsilon=0.05, norm="per_example", objective="sum"), "model"),
    "fgsm": (lambda: FGSM(epsilon=0.01), "model"),
    "pgd": (lambda: PGD(norm="per_example"), "loss_func"),
    "freelb": (lambda: FreeLB(init_magnitude=0), "model"),
    "gradient_penalty": (lambda: GradientPenalty(epsilon=1.0), "loss_func"),
    "smart": (lambda: SMART(seed=0), "model"),  # noise generator seeded 0 + rank + 2 t
}


class GatheredAfterSubsteps(TrainerCallback):
    """How many parameter elements this rank holds in full after each micro-batch that ends without an optimizer
    step (0: ZeRO-3 partitioned every parameter again)."""

    def __init__(self) -> None:
        self.numels: list[int] = []

    def on_substep_end(self, args, state, control, model=None, **kwargs):
        self.numels.append(sum(p.numel() for p in model.parameters()))


# (tag, method, ZeRO stage, per-device batch, accumulation): every optimizer step sees the 8 examples
runs = [(f"{name}_zero{stage}", name, stage, 4, 1) for stage in (2, 3) for name in methods]
runs.append(("gradient_penalty_ga2_zero3", "gradient_penalty", 3, 2, 2))
for tag, name, stage, batch_size, accumulation in runs:
    make_callback, path = methods[name]
    probe = GatheredAfterSubsteps()
    try:
        trainer = run_trainer(
            fresh_model(), make_data("seq"), [make_callback(), probe], task="seq", path=path, epochs=3,
            batch_size=batch_size, accumulation=accumulation, deepspeed=partitioned_deepspeed_config(stage),
        )  # fmt: skip
    except ValueError as error:
        result = {"error": str(error)}
    else:
        assert trainer.state.global_step == 3 and trainer.args.world_size == 2
        result = {**deepspeed_record(trainer), "local": local_size(trainer.model), "substeps": probe.numels}
    torch.save(result, out / f"{tag}_rank{int(torch.distributed.get_rank())}.pt")


class HugeLogits(Inject):
    """Logits x 1e30 on one rank: every loss stays finite, only that rank's perturbation direction is not."""

    def _forward(self, module, args, output):
        return output * 1e30 if self.active else None


def state(trainer) -> dict:
    """Parameters and AdamW moments, gathered from the ZeRO-3 partitions (a collective: every rank calls it)."""
    params = list(trainer.model.parameters())
    flat = {"params": torch.cat([safe_get_full_fp32_param(p).reshape(-1) for p in params])}
    for key in ("exp_avg", "exp_avg_sq"):
        flat[key] = torch.cat([safe_get_full_optimizer_state(p, key).reshape(-1) for p in params])
    flat["skipped"] = torch.tensor(trainer.state.log_history[-2]["adv_skipped_steps"])
    return flat


data = data_for(3, world=2)
skips = {
    "reference": dict(data=without_step(data, 1, world=2)),
    "forward_rank0": dict(data=data, where="forward", rank=0),
    "backward_rank1": dict(data=data, where="backward", rank=1),
    "direction_rank0": dict(data=data, where="forward", rank=0, inject_class=HugeLogits),
}
for name, kwargs in skips.items():
    trainer = train(
        "fgm", model=fresh_model(), max_grad_norm=1.0, deepspeed=partitioned_deepspeed_config(3), **kwargs
    )
    torch.save(state(trainer), out / f"skip_{name}_rank{trainer.args.process_index}.pt")
finish_distributed()
