"""SFTTrainer (trl 1.16) with a PEFT LoRA model, with packed (padding-free) batches, and with micro-batches that
have no target token.

LoRA: the base weights, the embedding table included, are frozen (``requires_grad=False``); the perturbation is
still taken from the gradient with respect to the embedding *output*. One step of each method equals the
hand-written reference step on a fresh LoRA model with the same starting weights, only LoRA weights change, and
TRL's metrics equal the clean pass's. Packed: ``SFTConfig(packing=True)`` (best-fit-decreasing, padding-free:
one row, ``position_ids`` restarting per document, no attention mask); per-example norms are per document.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from _adversarial_helpers import (
    CASES,
    Reference,
    assert_same_update,
    documents,
    flat_params,
    gp_objective,
)
from hfplug_adversarial import FGM
from test_adversarial_sft import METHODS, PROMPTS, TEXT, causal_lm, check_step, first_batch, sft_trainer

peft = pytest.importorskip("peft")
pytest.importorskip("trl")

LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
DOCS = Path(__file__).parents[3] / "docs" / "plugins" / "adversarial.md"


def lora_model():
    """A LoRA model on the tiny Llama (random A and B: ``init_lora_weights=False``, so both move in one step)."""
    torch.manual_seed(1)
    return peft.get_peft_model(causal_lm(), peft.LoraConfig(**LORA))


def same_weights(trainer):
    """A factory of fresh LoRA models holding the weights ``trainer`` starts from."""
    initial = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def fresh():
        model = lora_model()
        model.load_state_dict(initial)
        return model

    return fresh, initial


@pytest.mark.parametrize("route", ["get_peft_model", "peft_config"])
@pytest.mark.parametrize("name", METHODS)
def test_lora_step_matches_reference(name, route):
    make_callback, objective_of = CASES[name]
    if route == "get_peft_model":
        trainer = sft_trainer(lora_model(), TEXT, [make_callback()])
    else:  # SFTTrainer wraps the model itself
        trainer = sft_trainer(causal_lm(), TEXT, [make_callback()], peft_config=peft.LoraConfig(**LORA))
    assert isinstance(trainer.model, peft.PeftModel)
    assert not trainer.model.get_input_embeddings().weight.requires_grad
    fresh, initial = same_weights(trainer)
    check_step(trainer, first_batch(trainer), objective_of, fresh=fresh)
    after = trainer.model.state_dict()
    moved = {k for k in initial if not torch.equal(initial[k], after[k])}
    assert moved and all("lora_" in k for k in moved)  # only LoRA weights change
    assert any("lora_A" in k for k in moved) and any("lora_B" in k for k in moved)


@pytest.mark.parametrize("name", [m for m in METHODS if m != "gradient_penalty"])
def test_lora_under_sft_defaults(name):
    """SFTConfig's defaults with PEFT: gradient checkpointing makes TRL call ``enable_input_require_grads`` (the
    frozen embedding's output then requires grad), bf16 autocast; metrics finite, nothing skipped."""
    trainer = sft_trainer(
        causal_lm(), TEXT, [CASES[name][0]()], peft_config=peft.LoraConfig(**LORA), bf16=True,
        gradient_checkpointing=True,
    )  # fmt: skip
    trainer.train()
    log = trainer.state.log_history[0]
    assert all(math.isfinite(log[k]) for k in ("loss", "entropy", "mean_token_accuracy", "adv_loss"))
    assert log["adv_skipped_steps"] == 0


def packed_trainer(callback, data=TEXT, **config):
    trainer = sft_trainer(causal_lm(), data, [callback], **{"packing": True, **config})
    batch = first_batch(trainer)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1  # padding-free: one row
    lengths = [end - start for _, start, end in documents(batch["position_ids"])]
    assert len(set(lengths)) > 1  # documents of different lengths: per document differs from per row
    return trainer, batch


@pytest.mark.parametrize("name", [*METHODS, "fgm_sum_per_example"])
def test_packed_step_matches_reference(name):
    """``packing=True``: the reference runs ``inputs_embeds`` with the collated ``position_ids`` and no mask
    (documents do not attend to each other) and takes per-example norms per document (FreeLB's default, FGM's
    ``norm="per_example"``): FreeLB's start ``U(-1,1) * init / sqrt(doc_tokens * hidden)``, its ascent and
    projection per document."""
    make_callback, objective_of = CASES[name]
    trainer, batch = packed_trainer(make_callback())
    check_step(trainer, batch, objective_of)


@pytest.mark.parametrize("name", ["freelb", "fgm_sum_per_example"])
def test_padding_free_without_packing_matches_reference(name):
    """``padding_free=True`` alone (trl 1.16 needs ``max_length=None`` then): the batch's examples flattened into
    one row, each its own document."""
    make_callback, objective_of = CASES[name]
    trainer, batch = packed_trainer(make_callback(), packing=False, padding_free=True, max_length=None)
    assert len(documents(batch["position_ids"])) == 4
    check_step(trainer, batch, objective_of)


def test_packed_prompt_completion():
    """Packed prompt-completion data: only completion tokens are targets (and no token predicts across a
    document boundary: the collator masks each document's first label)."""
    make_callback, objective_of = CASES["fgm_sum_per_example"]
    trainer, batch = packed_trainer(make_callback(), PROMPTS)
    assert (batch["labels"] == -100).sum() > len((batch["position_ids"][0] == 0).nonzero())
    check_step(trainer, batch, objective_of)


NO_TARGETS = {  # pre-tokenized: examples 0 and 1 (the step's first micro-batch) have no target token
    "input_ids": [[1, 5, 6, 7, 8, 9], [1, 9, 10, 11], [1, 5, 6, 7, 8], [1, 12, 13, 14, 15, 16, 17]],
    "labels": [[-100] * 6, [-100] * 4, [1, 5, 6, 7, 8], [1, 12, 13, 14, 15, 16, 17]],
}


def no_targets_trainer(callbacks, data=NO_TARGETS):
    return sft_trainer(
        causal_lm(),
        data,
        callbacks,
        batch_size=2,
        accumulation=2,
        dataset_kwargs={"skip_prepare_dataset": True},
    )


@pytest.mark.parametrize("name", METHODS)
def test_micro_batch_without_targets_contributes_nothing(name):
    """As plain SFTTrainer (``-sum(log_probs) / num_items_in_batch`` = 0 there): a micro-batch whose labels are all
    -100 adds zero loss and gradient, and the step trains on its other micro-batch: the update equals the
    reference step on that micro-batch alone (its targets are all of the step's ``num_items_in_batch``)."""
    make_callback, objective_of = CASES[name]
    if name == "gradient_penalty":  # weighted 1 / GA per micro-batch under SFTTrainer (docs: Known limits)
        objective_of = lambda ref: gp_objective(ref, 0.5)
    trainer = no_targets_trainer([make_callback()])
    empty = first_batch(trainer, examples=2)
    assert (empty["labels"] == -100).all()
    # TRL's metrics: the mean over the two micro-batches, the empty one logging 0 (as without a callback)
    check_step(trainer, first_batch(trainer, examples=2, start=2), objective_of, metric_scale=0.5)
    assert trainer.state.global_step == 1


def test_plain_sft_trains_on_a_step_with_an_empty_micro_batch():
    """What the adversarial step matches: without a callback, SFTTrainer's step is the plain step on the other
    micro-batch."""
    trainer = no_targets_trainer([])
    batch = first_batch(trainer, examples=2, start=2)
    start = flat_params(causal_lm())
    ref = Reference(causal_lm(), batch, "lm", "loss_func")
    expected = ref.step(ref.loss(ref.embed()))
    trainer.train()
    assert_same_update(trainer.model, expected, start)
    assert trainer.state.log_history[0]["mean_token_accuracy"] == pytest.approx(0.05)  # (0 + 0.1) / 2


def test_real_nan_still_skips_the_step():
    """A NaN in a micro-batch with targets is still non-finite: the step is skipped and nothing changes."""
    model = causal_lm()
    with torch.no_grad():
        model.get_input_embeddings().weight[12] = float("nan")  # token 12 is only in the second micro-batch
    trainer = sft_trainer(
        model, NO_TARGETS, [FGM(epsilon=0.5)], batch_size=2, accumulation=2,
        dataset_kwargs={"skip_prepare_dataset": True},
    )  # fmt: skip
    start = flat_params(trainer.model).clone()
    trainer.train()
    assert trainer.state.log_history[0]["adv_skipped_steps"] == 1
    torch.testing.assert_close(flat_params(trainer.model), start, equal_nan=True)


def test_docs_snippet_runs():
    """The snippet of the docs section "PEFT and packed batches under SFTTrainer", run as written."""
    if not DOCS.exists():
        pytest.skip("run from the repository: the docs are not shipped with the plugin's tests")
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("### PEFT and packed batches under SFTTrainer", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section.split("\n## ", 1)[0], flags=re.S)
    namespace: dict = {}
    exec(compile(code, str(DOCS), "exec"), namespace)
    log = namespace["trainer"].state.log_history[0]
    assert math.isfinite(log["loss"]) and log["adv_skipped_steps"] == 0
