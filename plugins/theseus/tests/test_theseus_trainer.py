"""TheseusCallback inside transformers.Trainer: schedule per optimizer step under GA=2, logging, resume."""

from __future__ import annotations

import json

import pytest
import torch
from hfplug_theseus import (
    ConstantReplacementScheduler,
    LinearReplacementScheduler,
    TheseusCallback,
    theseus_wrap,
)
from transformers import Trainer, TrainingArguments

import hfplug
import hfplug.plugins
from hfplug.testing import tiny_model


class Reviews(torch.utils.data.Dataset):
    def __init__(self, size: int = 48) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(3, 1000, (size, 10), generator=generator)
        self.labels = (self.ids[:, 0] % 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def wrapped_model():
    model = tiny_model(
        "bert",
        "sequence-classification",
        seed=0,
        num_hidden_layers=4,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model.accepts_loss_kwargs = False  # DESIGN fact 2: BERT ignores num_items_in_batch
    theseus_wrap(model, 2, seed=11)
    records = []  # (step, rate, gates) seen by every training micro-batch

    def record(module, args, kwargs):
        if module.training:
            records.append((module.theseus.step, module.theseus.rate, module.theseus.gates.tolist()))

    model.register_forward_pre_hook(record, with_kwargs=True)
    return model, records


def make_trainer(tmp_path, model, callback, **overrides):
    settings = dict(
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        max_steps=6,
        learning_rate=1e-3,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    args = TrainingArguments(output_dir=str(tmp_path), **{**settings, **overrides})
    return Trainer(model=model, args=args, train_dataset=Reviews(), callbacks=[callback])


def test_registry_name_and_dict_spec(monkeypatch):
    monkeypatch.setenv("HFPLUG_PLUGINS", "theseus")  # other installed plugins are not under test here
    hfplug.plugins.reset()
    callback = hfplug.get_callback(
        "theseus", scheduler={"type": "constant", "rate": 0.4, "replacing_steps": 10}
    )
    assert isinstance(callback, TheseusCallback)
    assert callback.scheduler == ConstantReplacementScheduler(0.4, replacing_steps=10)
    with pytest.raises(TypeError, match="scheduler must be"):
        TheseusCallback(0.5)
    with pytest.raises(ValueError, match="'type'"):
        TheseusCallback({"type": "cosine"})
    with pytest.raises(ValueError, match="not prepared with"):
        TheseusCallback(ConstantReplacementScheduler()).on_train_begin(
            None, None, None, model=tiny_model("bert", "sequence-classification")
        )


def rate(t: int) -> float:
    return min(1.0, 0.15 * t + 0.3)


def test_schedule_steps_on_optimizer_steps_under_ga2_and_resume_reproduces_it(tmp_path):
    scheduler = LinearReplacementScheduler(k=0.15, b=0.3)
    model, records = wrapped_model()
    trainer = make_trainer(
        tmp_path / "full", model, TheseusCallback(scheduler), save_strategy="steps", save_steps=3
    )
    trainer.train()
    assert len(records) == 12  # 6 optimizer steps x 2 micro-batches
    for t in range(6):
        first, second = records[2 * t], records[2 * t + 1]
        assert first == second, "both micro-batches of one optimizer step share the rate and the draw"
        assert first[0] == t and first[1] == pytest.approx(rate(t))
    logged = [entry["theseus_replacing_rate"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged == pytest.approx([rate(t) for t in range(6)])
    final = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint = tmp_path / "full" / "checkpoint-3"
    saved = json.loads((checkpoint / "trainer_state.json").read_text())["stateful_callbacks"][
        "TheseusCallback"
    ]
    assert saved["args"]["scheduler"] == scheduler.to_dict() and saved["attributes"]["step"] == 3

    # resume in a fresh process-like setting; the callback passed here has a different schedule and is
    # replaced by the one stored in the checkpoint
    resumed, resumed_records = wrapped_model()
    trainer = make_trainer(
        tmp_path / "resumed",
        resumed,
        TheseusCallback(ConstantReplacementScheduler(0.9)),
        restore_callback_states_from_checkpoint=True,
    )
    trainer.train(resume_from_checkpoint=str(checkpoint))
    assert resumed_records == records[6:]
    assert [r[1] for r in resumed_records] == pytest.approx([rate(t) for t in (3, 3, 4, 4, 5, 5)])
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, final[key], rtol=1e-5, atol=1e-6, msg=key)
    assert any(
        ".successor." in k and not torch.equal(v, wrapped_model()[0].state_dict()[k])
        for k, v in final.items()
    )
