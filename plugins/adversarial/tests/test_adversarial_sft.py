"""TRL's SFTTrainer (trl 1.16) on a tiny Llama with a character tokenizer.

SFTTrainer builds its default loss itself, ``-sum(log_probs) / num_items_in_batch``, from the per-token outputs of
TRL's fused LM head, and its metrics (``entropy``, ``mean_token_accuracy``) from the same call. One step of each
method equals the hand-written reference step on the batch SFTTrainer collates (cross-entropy over the target
tokens, perturbed ``inputs_embeds``, plain SGD), with the default loss, with prompt-completion data
(``completion_only_loss``), under gradient accumulation and with a ``compute_loss_func``; the logged loss is the
reference objective and the metrics are those of the clean pass.
"""

from __future__ import annotations

import math

import pytest
import torch
from _adversarial_helpers import (
    CASES,
    Reference,
    assert_same_update,
    fgm_objective,
    flat_params,
    relative_error,
    user_loss,
)
from hfplug_adversarial import FGM

from hfplug.losses import trainer_loss
from hfplug.testing import char_tokenizer, tiny_model

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

CHARS = "abcdefghijklmnopqrstuvwxyz "
TEXT = {"text": ["hello world", "the cat sat on the mat", "abc def ghi", "loop loop loop"] * 2}
PROMPTS = {
    "prompt": ["hello ", "the cat ", "abc ", "loop "] * 2,
    "completion": ["world", "sat on the mat", "def ghi", "loop loop"] * 2,
}
METHODS = ["fgm", "fgsm", "pgd_random_sum", "freelb", "gradient_penalty", "smart"]


def tokenizer():
    return char_tokenizer(CHARS)


def causal_lm():
    """The same tiny Llama on every call (seeded). SFTTrainer patches the forward of the instance it trains (TRL's
    fused LM head calls that instance's original forward), so references use a fresh one, never a copy."""
    return tiny_model(
        "llama", "causal-lm", vocab_size=len(CHARS) + 3, pad_token_id=0, bos_token_id=1, eos_token_id=2
    )


def sft_trainer(
    model, data, callbacks, batch_size=4, accumulation=1, compute_loss_func=None, peft_config=None, **config
):
    args = trl.SFTConfig(
        output_dir="/tmp/hfplug_adversarial_tests", max_steps=1, per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation, learning_rate=0.5, optim="sgd", lr_scheduler_type="constant",
        max_grad_norm=0.0, use_cpu=True, report_to=[], logging_steps=1, save_strategy="no",
        train_sampling_strategy="sequential", seed=0, disable_tqdm=True,
        **{"bf16": False, "gradient_checkpointing": False, "max_length": 32, **config},
    )  # fmt: skip
    return trl.SFTTrainer(
        model=model, args=args, train_dataset=datasets.Dataset.from_dict(data), processing_class=tokenizer(),
        callbacks=callbacks, compute_loss_func=compute_loss_func, peft_config=peft_config,
    )  # fmt: skip


def first_batch(trainer, examples: int = 4, start: int = 0) -> dict[str, torch.Tensor]:
    """Examples ``start .. start + examples - 1`` in SFTTrainer's own order and collation: padded to one length
    (``attention_mask``), or padding-free (one row, ``position_ids`` restarting per document)."""
    collate = trainer.get_train_dataloader().collate_fn
    dataset = trainer.train_dataset
    batch = collate([dataset[i] for i in range(start, min(start + examples, len(dataset)))])
    return {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids", "labels") if k in batch}


def clean_metrics(model, batch) -> tuple[float, float]:
    """Token accuracy and mean entropy of the next-token distributions at the target positions."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits
    logits, labels = logits[:, :-1], batch["labels"][:, 1:]
    valid = labels != -100
    log_p = logits.log_softmax(-1)
    accuracy = (logits.argmax(-1) == labels)[valid].float().mean()
    entropy = -(log_p.exp() * log_p).sum(-1)[valid].mean()
    return float(accuracy), float(entropy)


def check_step(trainer, batch, objective_of, path="loss_func", fresh=causal_lm, metric_scale=1.0):
    """One SFTTrainer step equals the reference step on ``batch``, from the weights ``fresh()`` returns; TRL's
    metrics are the clean pass's times ``metric_scale`` (TRL logs their mean over the micro-batches)."""
    start = flat_params(fresh())
    accuracy, entropy = clean_metrics(fresh(), batch)
    ref = Reference(fresh(), batch, "lm", path)
    objective = objective_of(ref)
    expected = ref.step(objective)
    trainer.train()
    assert_same_update(trainer.model, expected, start)
    log = trainer.state.log_history[0]
    assert log["adv_skipped_steps"] == 0
    assert math.isclose(log["loss"], float(objective), rel_tol=1e-4)  # SFTTrainer's loss is the combined loss
    assert math.isclose(log["mean_token_accuracy"], accuracy * metric_scale, rel_tol=1e-6)
    assert math.isclose(log["entropy"], entropy * metric_scale, rel_tol=1e-4)
    plain_ref = Reference(fresh(), batch, "lm", path)
    plain = flat_params(plain_ref.step(plain_ref.loss(plain_ref.embed())))
    assert relative_error(flat_params(expected) - start, plain - start) > 1e-3  # the adversarial term counts


@pytest.mark.parametrize("name", METHODS)
def test_one_sft_step_matches_reference(name):
    make_callback, objective_of = CASES[name]
    trainer = sft_trainer(causal_lm(), TEXT, [make_callback()])
    check_step(trainer, first_batch(trainer), objective_of)


@pytest.mark.parametrize("name", ["fgm", "smart"])
def test_completion_only_loss(name):
    make_callback, objective_of = CASES[name]
    trainer = sft_trainer(causal_lm(), PROMPTS, [make_callback()])
    assert trainer.args.completion_only_loss in (None, True)
    batch = first_batch(trainer)
    prompt_targets = (batch["labels"] == -100) & (batch["attention_mask"] == 1)
    assert prompt_targets[:, 1:].any()  # prompt tokens are in the input but not trained on
    check_step(trainer, batch, objective_of)


def test_gradient_accumulation_equals_full_batch():
    """GA 2 x 2 examples: SFTTrainer divides each micro-batch's sum by the step's target count, so per-example FGM
    gives the update of the full batch of 4."""
    trainer = sft_trainer(
        causal_lm(), TEXT, [FGM(epsilon=0.5, norm="per_example")], batch_size=2, accumulation=2
    )
    batch = first_batch(trainer)
    start = flat_params(causal_lm())
    ref = Reference(causal_lm(), batch, "lm", "loss_func")
    expected = ref.step(fgm_objective(ref, 0.5, per_example=True))
    trainer.train()
    assert trainer.state.global_step == 1
    assert_same_update(trainer.model, expected, start)


def test_compute_loss_func():
    """SFTTrainer(compute_loss_func=...) calls it on the model's logits: the loss-finisher path."""
    trainer = sft_trainer(
        causal_lm(), TEXT, [FGM(epsilon=0.5)], compute_loss_func=trainer_loss(user_loss("lm"))
    )
    check_step(trainer, first_batch(trainer), CASES["fgm"][1])


def test_other_sft_losses_are_refused():
    trainer = sft_trainer(causal_lm(), TEXT, [FGM(epsilon=0.5)], loss_type="dft")
    with pytest.raises(ValueError, match="loss_type='dft'"):
        trainer.train()


@pytest.mark.parametrize("name", [m for m in METHODS if m != "gradient_penalty"])
def test_sft_defaults_bf16_and_gradient_checkpointing(name):
    """SFTConfig's own defaults (bf16 autocast, gradient checkpointing): training runs, TRL's metrics are finite."""
    trainer = sft_trainer(causal_lm(), TEXT, [CASES[name][0]()], bf16=True, gradient_checkpointing=True)
    trainer.train()
    log = trainer.state.log_history[0]
    assert all(math.isfinite(log[k]) for k in ("loss", "entropy", "mean_token_accuracy", "adv_loss"))
    assert log["adv_skipped_steps"] == 0


def test_gradient_penalty_and_gradient_checkpointing():
    """Refused with SDPA attention (recomputed under another kernel: torch's CheckpointError before); trains with
    eager attention."""
    trainer = sft_trainer(causal_lm(), TEXT, [CASES["gradient_penalty"][0]()], gradient_checkpointing=True)
    with pytest.raises(ValueError, match="attn_implementation='sdpa': set gradient_checkpointing=False"):
        trainer.train()
    model = causal_lm()
    model.set_attn_implementation("eager")
    trainer = sft_trainer(model, TEXT, [CASES["gradient_penalty"][0]()], gradient_checkpointing=True)
    trainer.train()
    assert math.isfinite(trainer.state.log_history[0]["loss"])
