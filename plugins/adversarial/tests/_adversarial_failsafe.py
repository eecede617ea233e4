"""Shared pieces of the non-finite-step tests (single process and torchrun): NaN injection and the runs.

``Inject`` puts NaN into the classifier output ("forward") or into the gradient flowing back through the
embedding LayerNorm ("backward") during one optimizer step, on every micro-batch of it or only on its last
(``last_micro=True``, under gradient accumulation), on every rank or only on ``rank``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from _adversarial_helpers import DictDataset, flat_params, make_data, make_model
from hfplug_adversarial import FGM, FGSM, PGD, SMART, FreeLB, GradientPenalty
from transformers import Trainer, TrainerCallback, TrainingArguments

METHODS = {
    "fgm": lambda: FGM(epsilon=0.5),
    "fgsm": lambda: FGSM(epsilon=0.01),
    "pgd": lambda: PGD(steps=2),
    "freelb": lambda: FreeLB(steps=2, seed=0),
    "gradient_penalty": lambda: GradientPenalty(epsilon=1.0),
    "smart": lambda: SMART(seed=0),
}
BATCH = 4  # examples per micro-batch (per rank)


class Inject(TrainerCallback):
    def __init__(self, model, where: str, bad_step: int, last_micro: bool = False, rank: int | None = None):
        self.where, self.bad_step, self.last_micro, self.rank = where, bad_step, last_micro, rank
        self.active = False
        if where == "forward":
            model.classifier.register_forward_hook(self._forward)
        elif where == "backward":
            model.bert.embeddings.LayerNorm.register_forward_hook(self._backward)
        else:
            raise ValueError(where)

    def _forward(self, module, args, output):
        return output * math.nan if self.active else None

    def _backward(self, module, args, output):
        if self.active and output.requires_grad:
            output.register_hook(lambda grad: torch.full_like(grad, math.nan))

    def _mine(self, args) -> bool:
        return self.rank is None or args.process_index == self.rank

    def on_step_begin(self, args, state, control, **kwargs):
        self.active = state.global_step == self.bad_step and not self.last_micro and self._mine(args)

    def on_substep_end(self, args, state, control, **kwargs):
        self.active = state.global_step == self.bad_step and self.last_micro and self._mine(args)

    def on_step_end(self, args, state, control, **kwargs):
        self.active = False


def train(
    method: str,
    data: dict[str, torch.Tensor],
    *,
    where: str | None = None,
    bad_step: int = 1,
    accumulation: int = 1,
    max_grad_norm: float = 0.0,
    rank: int | None = None,
    scheduler: str = "constant",
    callback=None,
    inject_class: type[Inject] = Inject,
    model=None,
    output_dir: str = "/tmp/hfplug_adversarial_tests",
    save_steps: int | None = None,
    resume_from_checkpoint: str | None = None,
    **extra,
) -> Trainer:
    """Train ``model`` (default: a fresh tiny BERT) with AdamW (weight decay 0.1, so a skipped step that still decays
    shows); with ``save_steps``, checkpoints go to ``output_dir``."""
    model = make_model("seq") if model is None else model
    model.accepts_loss_kwargs = False  # a micro-batch mean loss, divided by GA by the Trainer
    callbacks = [METHODS[method]() if callback is None else callback]
    if where is not None:
        callbacks.append(inject_class(model, where, bad_step, last_micro=accumulation > 1, rank=rank))
    args = TrainingArguments(
        output_dir, per_device_train_batch_size=BATCH // accumulation,
        gradient_accumulation_steps=accumulation, num_train_epochs=1, learning_rate=1e-2, optim="adamw_torch",
        weight_decay=0.1, lr_scheduler_type=scheduler, max_grad_norm=max_grad_norm, use_cpu=True, report_to="none",
        save_strategy="no" if save_steps is None else "steps", save_steps=save_steps or 500, logging_steps=1,
        disable_tqdm=True, train_sampling_strategy="sequential", seed=0,
        **extra,
    )  # fmt: skip
    trainer = Trainer(model, args, train_dataset=DictDataset(data), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return trainer


def data_for(steps: int, world: int = 1) -> dict[str, torch.Tensor]:
    return make_data("seq", n=BATCH * world * steps)


def without_step(data: dict[str, torch.Tensor], step: int, world: int = 1) -> dict[str, torch.Tensor]:
    """The data minus the examples of optimizer step ``step`` (sequential order; ranks take consecutive blocks)."""
    size = BATCH * world
    keep = torch.ones(len(data["input_ids"]), dtype=torch.bool)
    keep[step * size : (step + 1) * size] = False
    return {k: v[keep] for k, v in data.items()}


def optimizer_state(trainer: Trainer) -> dict[str, torch.Tensor]:
    """Every AdamW state tensor (step, exp_avg, exp_avg_sq), flattened and keyed, plus the parameters."""
    flat = {"params": flat_params(trainer.model)}
    state = trainer.optimizer.state_dict()["state"]
    for key in ("step", "exp_avg", "exp_avg_sq"):
        flat[key] = torch.cat([state[i][key].reshape(-1).float() for i in sorted(state)])
    return flat


def assert_ranks_skipped_like_reference(folder: Path, prefix: str, names) -> None:
    """Each poisoned run of a torchrun script (``{prefix}{name}_rank{r}.pt``) skipped one step on both ranks and
    ended equal to ``{prefix}reference_rank0.pt`` (the run without that step's batch), ranks bit-identical."""
    reference = torch.load(folder / f"{prefix}reference_rank0.pt")
    assert reference["skipped"] == 0
    for name in names:
        rank0, rank1 = (torch.load(folder / f"{prefix}{name}_rank{r}.pt") for r in (0, 1))
        for key, expected in reference.items():
            if key == "skipped":
                assert rank0[key] == rank1[key] == 1, name
                continue
            assert torch.equal(rank0[key], rank1[key]), (name, key)
            torch.testing.assert_close(rank0[key], expected, rtol=1e-6, atol=1e-7, msg=f"{name} {key}")
