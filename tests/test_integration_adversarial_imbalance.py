"""Cross-plugin: FGM (hfplug-adversarial) with a logit-adjusted loss (hfplug-imbalance), both by name.

One Trainer step equals a hand-written step: clean logit-adjusted loss, its gradient on the token-embedding
output, delta = epsilon * g / ||g||, SGD on the logit-adjusted loss at the perturbed embeddings.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import hfplug
from hfplug.testing import tiny_model

pytest.importorskip("hfplug_adversarial")
pytest.importorskip("hfplug_imbalance")

EPSILON, TAU, LR = 0.5, 1.0, 0.5
PRIORS = [0.8, 0.2]


def make_batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 1000, (8, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:3, 9:] = 0
    labels = torch.tensor([0, 0, 1, 0, 0, 0, 1, 0])
    return input_ids, attention_mask, labels


def reference_step(model, input_ids, attention_mask, labels):
    log_prior = torch.log(torch.tensor(PRIORS))

    def loss_at(embeddings):
        logits = model(inputs_embeds=embeddings, attention_mask=attention_mask).logits
        return F.cross_entropy(logits + TAU * log_prior, labels, reduction="sum") / len(labels)

    embeddings = model.get_input_embeddings()(input_ids)
    (grad,) = torch.autograd.grad(loss_at(embeddings), embeddings)
    delta = EPSILON * grad / grad.norm()
    model.zero_grad()
    loss_at(embeddings + delta).backward()
    with torch.no_grad():
        for param in model.parameters():
            if param.grad is not None:
                param -= LR * param.grad


def test_fgm_with_logit_adjusted_loss_by_name_matches_hand_written_step(tmp_path):
    from transformers import Trainer, TrainingArguments

    model = tiny_model(
        "bert",
        "sequence-classification",
        num_labels=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    reference = copy.deepcopy(model)
    input_ids, attention_mask, labels = make_batch()
    dataset = [
        {"input_ids": i, "attention_mask": m, "labels": y}
        for i, m, y in zip(input_ids, attention_mask, labels, strict=True)
    ]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=8,
        max_steps=1,
        logging_steps=1,
        learning_rate=LR,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=1e9,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        callbacks=[hfplug.get_callback("fgm", epsilon=EPSILON)],
        compute_loss_func=hfplug.get_loss("logit_adjusted", priors=PRIORS, tau=TAU),
    )
    start = copy.deepcopy(reference.state_dict())
    trainer.train()
    reference_step(reference, input_ids, attention_mask, labels)

    moved = 0.0
    for name, expected in reference.state_dict().items():
        got = model.state_dict()[name]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, float((expected - start[name]).abs().max()))
    assert moved > 1e-4  # the step really changed the parameters
    assert any("adv_loss" in entry for entry in trainer.state.log_history)
