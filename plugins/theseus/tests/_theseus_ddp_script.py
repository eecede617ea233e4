"""Run under torchrun (2 ranks, gloo): Theseus training with ddp_find_unused_parameters=False.

Writes, per rank, the gate draws of every micro-batch and the final parameters to ``<out>/rank<r>.pt``.
"""

import sys

import torch
from hfplug_theseus import ConstantReplacementScheduler, TheseusCallback, theseus_wrap
from transformers import Trainer, TrainingArguments

from hfplug.testing import finish_distributed, tiny_model


class Data(torch.utils.data.Dataset):
    def __init__(self):
        self.ids = torch.randint(3, 1000, (64, 8), generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i, 0] % 2}


def main(out: str) -> None:
    model = tiny_model("bert", "sequence-classification", seed=0, num_hidden_layers=4)
    model.accepts_loss_kwargs = False
    theseus_wrap(model, 2, seed=5)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    draws = []
    model.register_forward_pre_hook(
        lambda module, args: (
            draws.append((module.theseus.step, module.theseus.gates.tolist())) if module.training else None
        )
    )
    args = TrainingArguments(
        output_dir=f"{out}/trainer",
        per_device_train_batch_size=4,
        max_steps=6,
        learning_rate=1e-3,
        report_to="none",
        use_cpu=True,
        save_strategy="no",
        ddp_find_unused_parameters=False,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Data(),
        callbacks=[TheseusCallback(ConstantReplacementScheduler(0.5))],
    )
    trainer.train()
    record = {
        "world_size": trainer.args.world_size,
        "ddp": type(trainer.model_wrapped).__name__,
        "draws": draws,
        "initial": initial,
        "final": {k: v.detach().clone() for k, v in model.state_dict().items()},
    }
    torch.save(record, f"{out}/rank{trainer.args.process_index}.pt")


if __name__ == "__main__":
    main(sys.argv[1])
    finish_distributed()
