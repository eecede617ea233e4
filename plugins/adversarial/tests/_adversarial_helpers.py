"""Shared pieces of the adversarial tests: tiny data, a Trainer run, and the hand-written reference step.

The reference never touches hfplug_adversarial: it perturbs ``inputs_embeds`` directly, takes gradients with
``torch.autograd.grad`` and applies plain SGD, exactly as the methods are written in their papers/posts.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from hfplug_adversarial import FGM, FGSM, PGD, SMART, FreeLB, GradientPenalty
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import Trainer

from hfplug.losses import trainer_loss
from hfplug.testing import sgd_arguments, tiny_model

TASKS = {
    "seq": ("bert", "sequence-classification"),
    "tok": ("bert", "token-classification"),
    "lm": ("llama", "causal-lm"),
}
NO_DROPOUT = {"bert": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0), "llama": {}}


def make_model(task: str, seed: int = 0, dtype=torch.float32):
    family, head = TASKS[task]
    return tiny_model(family, head, seed=seed, **NO_DROPOUT[family]).to(dtype)


def make_data(task: str, n: int = 8, length: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (n, length), generator=g)
    mask = torch.ones(n, length, dtype=torch.long)
    for i in range(0, n, 2):  # every other example right-padded by i % 4 + 1 tokens
        mask[i, length - (i % 4 + 1) :] = 0
    ids = ids.masked_fill(mask == 0, 0)
    if task == "seq":
        labels = torch.randint(0, 2, (n,), generator=g)
    elif task == "tok":
        labels = torch.randint(0, 2, (n, length), generator=g).masked_fill(mask == 0, -100)
        labels[:, 0] = -100
    else:
        labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class DictDataset(torch.utils.data.Dataset):
    def __init__(self, data: dict[str, torch.Tensor]) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data["input_ids"])

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.data.items()}


def _targets(task: str, logits: torch.Tensor, labels: torch.Tensor):
    if task == "lm":
        return logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1)
    return logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)


def user_loss(task: str):
    """A user's own compute_loss_func (sum / num_items_in_batch), written here, not imported."""

    def loss(outputs, labels, num_items_in_batch=None):
        logits, targets = _targets(task, outputs["logits"], labels)
        total = F.cross_entropy(logits.float(), targets, ignore_index=-100, reduction="sum")
        count = num_items_in_batch if num_items_in_batch is not None else targets.ne(-100).sum()
        return total / count

    return loss


def run_trainer(
    model,
    data,
    callbacks,
    *,
    task: str,
    path: str,
    batch_size: int = 8,
    accumulation: int = 1,
    epochs: int = 1,
    lr: float = 0.5,
    max_grad_norm: float = 0.0,
    trainer_class: type[Trainer] = Trainer,
    **extra,
):
    args = sgd_arguments(
        "/tmp/hfplug_adversarial_tests",
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=accumulation,
        num_train_epochs=epochs,
        learning_rate=lr,
        max_grad_norm=max_grad_norm,
        seed=0,
        **extra,
    )
    loss = trainer_loss(user_loss(task)) if path == "loss_func" else None
    trainer = trainer_class(
        model, args, train_dataset=DictDataset(data), callbacks=callbacks, compute_loss_func=loss
    )
    trainer.train()
    return trainer


def flat_params(model) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def documents(position_ids: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(row, start, end)`` of each document of a padding-free batch: a document starts where the position
    restarts at 0."""
    spans = []
    for row, positions in enumerate(position_ids.tolist()):
        starts = [i for i, p in enumerate(positions) if p == 0 or i == 0]
        spans += [(row, s, e) for s, e in zip(starts, [*starts[1:], len(positions)], strict=True)]
    return spans


class Reference:
    """Hand-written adversarial step on ``inputs_embeds``, for one task and loss path. A batch without
    ``attention_mask`` is padding-free (TRL's packing): its ``position_ids`` restart per document, and the
    examples of per-example norms are its documents (``self.docs``; None: the rows). The FGM, gradient-penalty
    and FreeLB objectives below leave their (last) perturbation of the whole batch in ``self.delta``, the
    gradient-penalty objective also its penalty in ``self.penalty``."""

    def __init__(self, model, data, task: str, path: str) -> None:
        self.model = copy.deepcopy(model)
        self.data, self.task, self.path = data, task, path
        self.packed = "attention_mask" not in data
        mask = torch.ones_like(data["input_ids"]) if self.packed else data["attention_mask"]
        self.mask = mask.unsqueeze(-1).float()
        self.docs = documents(data["position_ids"]) if self.packed else None
        self.count = _targets(task, torch.zeros(*data["labels"].shape, 2), data["labels"])[1].ne(-100).sum()

    def embed(self) -> torch.Tensor:
        e = self.model.get_input_embeddings()(self.data["input_ids"])
        return e if e.requires_grad else e.detach().requires_grad_()

    def outputs(self, e: torch.Tensor):
        if self.packed:  # without a cache (as SFTTrainer): with one, transformers ignores the packing (5.23)
            inputs = dict(position_ids=self.data["position_ids"], use_cache=False)
        else:
            inputs = dict(attention_mask=self.data["attention_mask"])
        return self.model(inputs_embeds=e, labels=self.data["labels"], **inputs)

    def loss(self, e: torch.Tensor) -> torch.Tensor:
        out = self.outputs(e)
        if self.path == "model":
            return out.loss
        logits, targets = _targets(self.task, out.logits, self.data["labels"])
        return F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum") / self.count

    def step(self, objective: torch.Tensor, lr: float = 0.5, max_grad_norm: float = 0.0):
        params = [p for p in self.model.parameters() if p.requires_grad]
        for p in params:
            p.grad = None
        objective.backward()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        with torch.no_grad():
            for p in params:
                p -= lr * p.grad
        return self.model


def l2(t: torch.Tensor, per_example: bool, docs: list[tuple[int, int, int]] | None = None) -> torch.Tensor:
    """L2 norm of ``t``, per example (a row, or each of ``docs``) when ``per_example``."""
    if not per_example:
        return t.norm()
    if docs is None:
        return t.flatten(1).norm(dim=1).view(-1, *[1] * (t.dim() - 1))
    out = t.new_zeros(*t.shape[:2], 1)
    for row, start, end in docs:
        out[row, start:end] = t[row, start:end].norm()
    return out


def project(d: torch.Tensor, eps: float, per_example: bool, docs=None) -> torch.Tensor:
    return d * torch.clamp(eps / (l2(d, per_example, docs) + 1e-8), max=1.0)


def fgm_objective(ref: Reference, eps: float, objective: str = "adversarial", per_example: bool = False):
    e = ref.embed()
    clean = ref.loss(e)
    (g,) = torch.autograd.grad(clean, e, retain_graph=True)
    delta = ref.delta = eps * g / (l2(g, per_example, ref.docs) + 1e-8)
    adv = ref.loss(ref.embed() + delta)
    return clean + adv if objective == "sum" else adv


def gp_objective(ref: Reference, eps: float):
    e = ref.embed()
    with sdpa_kernel(SDPBackend.MATH):  # the fused CPU attention kernel has no double backward
        loss = ref.loss(e)
    (g,) = torch.autograd.grad(loss, e, create_graph=True)
    ref.delta = eps * g.detach()  # the unnormalised fast gradient the penalty stands for
    penalty = 0.5 * eps * g.pow(2).sum()
    ref.penalty = float(penalty.detach())
    return loss + penalty


def freelb_objective(ref: Reference, eps=1.0, alpha=0.1, steps=3, init_magnitude=None):
    """FreeLB as the official code: random start (generator seeded 0), per-example ascent, mean of the losses."""
    e = ref.embed().detach()
    gen = torch.Generator().manual_seed(0)
    init = eps if init_magnitude is None else init_magnitude
    delta = (2 * torch.rand(e.shape, generator=gen) - 1) * ref.mask * init / sqrt_len(ref, e.shape[-1])
    total = 0.0
    for t in range(steps):
        d = delta.clone().requires_grad_()
        loss = ref.loss(ref.embed() + d)
        total = total + loss / steps
        if t < steps - 1:
            (g,) = torch.autograd.grad(loss, d, retain_graph=True)
            delta = project(delta + alpha * g / (l2(g, True, ref.docs) + 1e-8), eps, True, ref.docs)
    ref.delta = delta
    return total


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def assert_same_update(trained, ref_model, start: torch.Tensor, rtol: float = 1e-5) -> None:
    """Parameters equal to ``rtol`` relative, and the update itself equal to 1e-3 relative."""
    after, expected = flat_params(trained), flat_params(ref_model)
    torch.testing.assert_close(after, expected, rtol=rtol, atol=1e-7)
    assert relative_error(after - start, expected - start) < 1e-3


def sqrt_len(ref: Reference, hidden: int) -> torch.Tensor:
    """``sqrt(n_tokens * hidden)`` of each example (its non-padding tokens), broadcast over its tokens."""
    if ref.docs is None:
        return (ref.mask.flatten(1).sum(1) * hidden).sqrt().view(-1, 1, 1)
    out = torch.zeros_like(ref.mask)
    for row, start, end in ref.docs:
        out[row, start:end] = (ref.mask[row, start:end].sum() * hidden).sqrt()
    return out


def fgsm_ref(ref, eps=0.01):
    e = ref.embed()
    (g,) = torch.autograd.grad(ref.loss(e), e)
    return ref.loss(ref.embed() + eps * g.sign())


def pgd_ref(ref, eps=1.0, alpha=0.3, steps=3, objective="adversarial", random_start=False):
    e = ref.embed()
    clean = ref.loss(e)
    if random_start:
        gen = torch.Generator().manual_seed(0)
        delta = project((2 * torch.rand(e.shape, generator=gen) - 1) * eps * ref.mask, eps, False)
        d = delta.clone().requires_grad_()
        (g,) = torch.autograd.grad(ref.loss(ref.embed() + d), d)
    else:
        delta = torch.zeros_like(e)
        (g,) = torch.autograd.grad(clean, e, retain_graph=True)
    for k in range(steps):
        delta = project(delta + alpha * g / (g.norm() + 1e-8), eps, False)
        if k < steps - 1:
            d = delta.clone().requires_grad_()
            (g,) = torch.autograd.grad(ref.loss(ref.embed() + d), d)
    adv = ref.loss(ref.embed() + delta)
    return clean + adv if objective == "sum" else adv


def smart_ref(ref, weight=1.0, eps=1.0, step_size=1e-3, noise_std=1e-5, draw=None):
    """``draw`` gives the standard-normal draw of the initial noise (default: generator seeded 0, full batch)."""
    e = ref.embed()
    out = ref.outputs(e)
    clean_loss = ref.loss(e)
    clean = out.logits
    z = torch.randn(e.shape, generator=torch.Generator().manual_seed(0)) if draw is None else draw(e.shape)
    noise = (noise_std * z * ref.mask).requires_grad_()
    adv = ref.outputs(ref.embed() + noise).logits
    rows = ref.mask.squeeze(-1) if clean.dim() == 3 else torch.ones(clean.shape[0])
    kl = F.kl_div(adv.log_softmax(-1), clean.detach().log_softmax(-1), log_target=True, reduction="none")
    (g,) = torch.autograd.grad((kl.sum(-1) * rows).sum(), noise)
    step = noise.detach() + step_size * g
    delta = eps * step / (step.abs().amax(-1, keepdim=True) + 1e-8)
    adv = ref.outputs(ref.embed() + delta).logits
    p, q = clean.log_softmax(-1), adv.log_softmax(-1)
    sym = F.kl_div(q, p.detach(), log_target=True, reduction="none").sum(-1)
    sym = sym + F.kl_div(p, q.detach(), log_target=True, reduction="none").sum(-1)
    count = ref.count  # num_items_in_batch: the Trainer passes it to these models and to the loss
    return clean_loss + weight * (sym * rows).sum() / count


CASES = {
    "fgm": (lambda: FGM(epsilon=0.5), lambda ref: fgm_objective(ref, 0.5)),
    "fgm_sum_per_example": (
        lambda: FGM(epsilon=0.5, objective="sum", norm="per_example"),
        lambda ref: fgm_objective(ref, 0.5, "sum", per_example=True),
    ),
    "fgsm": (lambda: FGSM(), fgsm_ref),
    "pgd": (lambda: PGD(), pgd_ref),
    "pgd_random_sum": (
        lambda: PGD(random_start=True, objective="sum", seed=0),
        lambda ref: pgd_ref(ref, objective="sum", random_start=True),
    ),
    "freelb": (lambda: FreeLB(seed=0), freelb_objective),
    "gradient_penalty": (lambda: GradientPenalty(epsilon=1.0), lambda ref: gp_objective(ref, 1.0)),
    "smart": (lambda: SMART(seed=0), smart_ref),
}
