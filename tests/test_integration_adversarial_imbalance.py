"""Cross-plugin: adversarial callbacks (hfplug-adversarial) with imbalance losses (hfplug-imbalance), by name.

One Trainer step equals a hand-written step:

- FGM: clean logit-adjusted loss, its gradient on the token-embedding output, delta = epsilon * g / ||g||, SGD
  on the logit-adjusted loss at the perturbed embeddings;
- GradientPenalty: SGD on L + 0.5 * epsilon * ||dL/de||^2, a double backward through the imbalance loss (its
  hand-written kernel cannot be differentiated twice, so the loss differentiates its formula there).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import hfplug
from hfplug.testing import tiny_model

pytest.importorskip("hfplug_adversarial")
pytest.importorskip("hfplug_imbalance")

EPSILON, TAU, LR = 0.5, 1.0, 0.5
PRIORS = [0.8, 0.2]
DICE_ALPHA, DICE_SMOOTH = 0.5, 1.0


def make_batch():
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(5, 1000, (8, 12), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[:3, 9:] = 0
    labels = torch.tensor([0, 0, 1, 0, 0, 0, 1, 0])
    return input_ids, attention_mask, labels


def logit_adjusted(logits, labels):
    """Written out: cross-entropy of logits + tau log(prior), summed over the batch, / batch size."""
    log_prior = torch.log(torch.tensor(PRIORS))
    return F.cross_entropy(logits + TAU * log_prior, labels, reduction="sum") / len(labels)


def dice(logits, labels):
    """Written out: sum over classes of 1 - (2 p~ q + s) / (p~ + q + s), p~ = p (1 - p)**alpha, batch mean."""
    p = torch.softmax(logits, -1)
    adjusted = p * (1 - p) ** DICE_ALPHA
    q = F.one_hot(labels, logits.shape[-1]).to(p.dtype)
    return (1 - (2 * adjusted * q + DICE_SMOOTH) / (adjusted + q + DICE_SMOOTH)).sum(-1).mean()


def fgm_step(model, loss_fn, input_ids, attention_mask, labels):
    def loss_at(embeddings):
        return loss_fn(model(inputs_embeds=embeddings, attention_mask=attention_mask).logits, labels)

    embeddings = model.get_input_embeddings()(input_ids)
    (grad,) = torch.autograd.grad(loss_at(embeddings), embeddings)
    delta = EPSILON * grad / grad.norm()
    return loss_at(embeddings + delta)


def gradient_penalty_step(model, loss_fn, input_ids, attention_mask, labels):
    embeddings = model.get_input_embeddings()(input_ids)
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernel has no double backward
        loss = loss_fn(model(inputs_embeds=embeddings, attention_mask=attention_mask).logits, labels)
    (grad,) = torch.autograd.grad(loss, embeddings, create_graph=True)
    return loss + 0.5 * EPSILON * grad.pow(2).sum()


CASES = {
    "fgm+logit_adjusted": (
        ("fgm", {}),
        ("logit_adjusted", {"priors": PRIORS, "tau": TAU}),
        fgm_step,
        logit_adjusted,
    ),
    "gradient_penalty+logit_adjusted": (
        ("gradient_penalty", {}),
        ("logit_adjusted", {"priors": PRIORS, "tau": TAU}),
        gradient_penalty_step,
        logit_adjusted,
    ),
    "gradient_penalty+dice": (
        ("gradient_penalty", {}),
        ("dice", {"alpha": DICE_ALPHA, "smooth": DICE_SMOOTH}),
        gradient_penalty_step,
        dice,
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_adversarial_callback_with_imbalance_loss_by_name_matches_hand_written_step(case, tmp_path):
    from transformers import Trainer, TrainingArguments

    (callback, callback_kwargs), (loss, loss_kwargs), objective, loss_fn = CASES[case]
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
        callbacks=[hfplug.get_callback(callback, epsilon=EPSILON, **callback_kwargs)],
        compute_loss_func=hfplug.get_loss(loss, **loss_kwargs),
    )
    start = copy.deepcopy(reference.state_dict())
    trainer.train()
    objective(reference, loss_fn, input_ids, attention_mask, labels).backward()
    with torch.no_grad():
        for param in reference.parameters():
            if param.grad is not None:
                param -= LR * param.grad

    moved = 0.0
    for name, expected in reference.state_dict().items():
        got = model.state_dict()[name]
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6, msg=name)
        moved = max(moved, float((expected - start[name]).abs().max()))
    assert moved > 1e-4  # the step really changed the parameters
    assert any("adv_loss" in entry for entry in trainer.state.log_history)
