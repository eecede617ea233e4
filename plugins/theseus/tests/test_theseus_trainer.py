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
    model.accepts_loss_kwargs = False  # BERT ignores num_items_in_batch: else the Trainer's loss is x GA
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


@pytest.fixture
def only_theseus(monkeypatch):
    monkeypatch.setenv("HFPLUG_PLUGINS", "theseus")  # other installed plugins are not under test here
    hfplug.plugins.reset()
    yield
    monkeypatch.undo()
    hfplug.plugins.reset()  # later tests (other plugins' in the same session) load every plugin again


def test_registry_name_and_dict_spec(only_theseus):
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


def example_gated_model(seed: int = 11, partition=None, gate: str = "example"):
    """A 4-block tiny BERT wrapped into 2 modules; records every training forward's gates, drawn after it."""
    model = tiny_model(
        "bert",
        "sequence-classification",
        seed=0,
        num_hidden_layers=4,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    model.accepts_loss_kwargs = False
    theseus_wrap(model, 2, seed=seed, gate=gate, partition=partition)
    records = []

    def record(module, args, kwargs, output):
        if module.training:
            controller = module.theseus
            gates = controller.example_gates if controller.gate == "example" else controller.gates
            records.append((controller.step, controller.rate, gates.tolist()))

    model.register_forward_hook(record, with_kwargs=True)
    return model, records


@pytest.mark.parametrize("gate", ["example", "module"])
def test_resume_draws_the_gates_of_the_uninterrupted_run_and_ends_with_its_parameters(tmp_path, gate):
    scheduler = LinearReplacementScheduler(k=0.1, b=0.4)
    model, records = example_gated_model(gate=gate)
    trainer = make_trainer(
        tmp_path / "full", model, TheseusCallback(scheduler), save_strategy="steps", save_steps=2
    )
    trainer.train()
    assert len(records) == 12
    final = {k: v.clone() for k, v in model.state_dict().items()}
    saved = json.loads((tmp_path / "full" / "checkpoint-2" / "trainer_state.json").read_text())
    settings = saved["stateful_callbacks"]["TheseusCallback"]["attributes"]["settings"]
    assert settings["seed"] == 11 and settings["partition"] == [[0, 1], [2, 3]] and settings["gate"] == gate

    # no restore_callback_states_from_checkpoint: the user passes the same scheduler again
    resumed, resumed_records = example_gated_model(gate=gate)
    trainer = make_trainer(tmp_path / "resumed", resumed, TheseusCallback(scheduler))
    trainer.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert resumed_records == records[4:]  # steps 2..5, two micro-batches each, same draws
    for key, value in resumed.state_dict().items():
        torch.testing.assert_close(value, final[key], rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"seed": 12}, r"seed: the checkpoint has 11, this run has 12"),
        (
            {"partition": [[0], [1, 2, 3]]},
            r"partition: the checkpoint has \[\[0, 1\], \[2, 3\]\], this run has \[\[0\], \[1, 2, 3\]\]",
        ),
        ({"gate": "module"}, r"gate: the checkpoint has 'example', this run has 'module'"),
        (
            {"scheduler": ConstantReplacementScheduler(0.5)},
            r"scheduler: the checkpoint has \{'b': 0.4, 'k': 0.1, 'type': 'linear'\}, this run has \{'type': 'constant'",
        ),
    ],
)
def test_resume_with_other_settings_is_an_error_naming_both_values(tmp_path, change, match):
    scheduler = LinearReplacementScheduler(k=0.1, b=0.4)
    model, _ = example_gated_model()
    trainer = make_trainer(
        tmp_path / "full", model, TheseusCallback(scheduler), max_steps=2, save_strategy="steps", save_steps=2
    )
    trainer.train()
    wrap = {key: value for key, value in change.items() if key != "scheduler"}
    resumed, records = example_gated_model(**wrap)
    trainer = make_trainer(tmp_path / "resumed", resumed, TheseusCallback(change.get("scheduler", scheduler)))
    with pytest.raises(ValueError, match=match):
        trainer.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    assert records == []  # raised before any training step
