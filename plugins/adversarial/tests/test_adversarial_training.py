"""Integration: gradient accumulation, PEFT LoRA, the gradient-penalty equivalence, logging, errors."""

from __future__ import annotations

import math

import pytest
import torch
from _adversarial_helpers import (
    Reference,
    assert_same_update,
    fgm_objective,
    flat_params,
    freelb_objective,
    gp_objective,
    make_data,
    make_model,
    relative_error,
    run_trainer,
    user_loss,
)
from hfplug_adversarial import FGM, FGSM, PGD, SMART, FreeLB, GradientPenalty
from transformers import TrainerControl, TrainerState, TrainingArguments

import hfplug
from hfplug.testing import tiny_model


@pytest.mark.parametrize("path", ["model", "loss_func"])
def test_gradient_accumulation_per_example_equals_full_batch(path):
    """GA=2 x batch 4 gives the update of one batch of 8 (reference): FGM per-example, gradient penalty and
    FreeLB (per-example, zero start).

    In the model path this also needs the BertForSequenceClassification loss rescaling (its loss ignores the
    Trainer's ``num_items_in_batch``, so under GA=2 the Trainer's loss would be twice the mean)."""
    data = make_data("seq")
    for callback, objective in (
        (FGM(epsilon=0.5, norm="per_example"), lambda ref: fgm_objective(ref, 0.5, per_example=True)),
        (GradientPenalty(epsilon=1.0), lambda ref: gp_objective(ref, 1.0)),
        (FreeLB(init_magnitude=0), lambda ref: freelb_objective(ref, init_magnitude=0)),
    ):
        model = make_model("seq")
        start = flat_params(model)
        ref = Reference(model, data, "seq", path)
        expected = ref.step(objective(ref))
        trainer = run_trainer(model, data, [callback], task="seq", path=path, batch_size=4, accumulation=2)
        assert trainer.state.global_step == 1
        assert_same_update(trainer.model, expected, start)


def test_llama_classifier_loss_rescaled_under_accumulation():
    """LlamaForSequenceClassification calls ``self.loss_function`` without ``num_items_in_batch`` (a micro-batch
    mean, like BERT's head): GA=2 x batch 4 must still give the update of one batch of 8 (reference). A check of
    the forward's source for ``loss_function`` took it for a head that normalises by ``num_items_in_batch``."""
    data = make_data("seq")
    data["input_ids"] = torch.randint(
        5, 1000, data["input_ids"].shape, generator=torch.Generator().manual_seed(1)
    )
    data["attention_mask"] = torch.ones_like(data["attention_mask"])  # inputs_embeds: no pad detection
    model = tiny_model("llama", "sequence-classification")
    start = flat_params(model)
    ref = Reference(model, data, "seq", "model")
    expected = ref.step(fgm_objective(ref, 0.5, per_example=True))
    callback = FGM(epsilon=0.5, norm="per_example")
    trainer = run_trainer(model, data, [callback], task="seq", path="model", batch_size=4, accumulation=2)
    assert_same_update(trainer.model, expected, start)


def test_num_items_check_waits_for_a_finite_loss():
    """The first micro-batch has no target (BERT's mean loss is NaN: that step is skipped) and cannot tell whether the
    loss ignores ``num_items_in_batch``; the next one decides, so step 2 (GA=2 x batch 2) is the full-batch update."""
    data = make_data("tok")
    data["labels"][:2] = -100
    model = make_model("tok")
    ref = Reference(model, {k: v[4:] for k, v in data.items()}, "tok", "model")
    expected = ref.step(fgm_objective(ref, 0.5, per_example=True))
    start = flat_params(model)
    callback = FGM(epsilon=0.5, norm="per_example")
    trainer = run_trainer(model, data, [callback], task="tok", path="model", batch_size=2, accumulation=2)
    assert (trainer.state.global_step, callback.skipped_steps) == (2, 1)
    assert_same_update(trainer.model, expected, start)


def test_gradient_penalty_mean_loss_under_accumulation():
    """A model loss that is a micro-batch mean (accepts_loss_kwargs=False): the Trainer divides by GA, and the
    penalty is still the full batch's."""
    data = make_data("seq")
    model = make_model("seq")
    model.accepts_loss_kwargs = False
    start = flat_params(model)
    ref = Reference(model, data, "seq", "model")
    expected = ref.step(gp_objective(ref, 2.0))
    trainer = run_trainer(
        model, data, [GradientPenalty(2.0)], task="seq", path="model", batch_size=4, accumulation=2
    )
    assert_same_update(trainer.model, expected, start)


def test_peft_lora_frozen_embeddings_still_perturbed():
    peft = pytest.importorskip("peft")
    LoraConfig, get_peft_model = peft.LoraConfig, peft.get_peft_model

    data = make_data("seq")
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"], task_type="SEQ_CLS")
    model = get_peft_model(make_model("seq"), config)
    embedding = model.get_input_embeddings().weight
    assert not embedding.requires_grad
    start, embedding_start = flat_params(model), embedding.detach().clone()
    ref = Reference(model, data, "seq", "model")
    expected = ref.step(fgm_objective(ref, 0.5))
    plain_ref = Reference(model, data, "seq", "model")
    plain = flat_params(plain_ref.step(plain_ref.loss(plain_ref.embed())))

    trainer = run_trainer(model, data, [FGM(epsilon=0.5)], task="seq", path="model")
    assert_same_update(trainer.model, expected, start)
    assert torch.equal(model.get_input_embeddings().weight, embedding_start)
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and all(p.abs().sum() > 0 for p in lora)  # lora_B starts at zero: it moved
    assert relative_error(flat_params(model) - start, plain - start) > 1e-2  # the adversarial gradient


def test_gradient_penalty_matches_unnormalised_fast_gradient_to_second_order():
    """The post's equivalence: grad of L + eps/2 ||dL/de||^2 = grad of L(e + eps dL/de) + O(eps^2)."""
    data = make_data("seq")

    def fast_gradient(ref, eps):
        e = ref.embed()
        (g,) = torch.autograd.grad(ref.loss(e), e)
        return ref.loss(ref.embed() + eps * g)

    gaps, first_order = [], []
    for eps in (0.5, 0.25):
        model = make_model("seq", dtype=torch.float64)
        start = flat_params(model)
        trainer = run_trainer(model, data, [GradientPenalty(epsilon=eps)], task="seq", path="model", lr=1.0)
        penalty_step = flat_params(trainer.model) - start
        ref = Reference(make_model("seq", dtype=torch.float64), data, "seq", "model")
        fg_step = flat_params(ref.step(fast_gradient(ref, eps), lr=1.0)) - start
        ref = Reference(make_model("seq", dtype=torch.float64), data, "seq", "model")
        plain_step = flat_params(ref.step(ref.loss(ref.embed()), lr=1.0)) - start
        gaps.append(float((penalty_step - fg_step).norm()))
        first_order.append(float((penalty_step - plain_step).norm()))
    assert 3.2 < gaps[0] / gaps[1] < 4.8  # halving epsilon quarters the gap: O(eps^2)
    assert 1.6 < first_order[0] / first_order[1] < 2.4  # while the penalty's own effect is O(eps)
    assert gaps[0] < 0.1 * first_order[0]


def test_logs_adversarial_loss_and_perturbation_norm():
    trainer = run_trainer(make_model("seq"), make_data("seq"), [FGM(epsilon=0.5)], task="seq", path="model")
    log = trainer.state.log_history[0]
    assert log["adv_skipped_steps"] == 0
    assert math.isclose(log["adv_delta_norm"], 0.5, rel_tol=1e-5)  # global norm: exactly epsilon
    assert math.isclose(log["adv_loss"], log["loss"], rel_tol=1e-5)  # objective "adversarial"


@pytest.mark.parametrize("accumulation", [1, 2])
@pytest.mark.parametrize("path", ["model", "loss_func", "mean_loss"])
def test_logged_adv_loss_is_the_full_batch_adversarial_loss(path, accumulation):
    """One optimizer step on 8 examples (one batch, or GA 2 x 4): ``adv_loss`` is the FGM loss at the perturbed
    embeddings computed by hand on all 8 (a mean over the 8, the units of the Trainer's logged ``loss``), not
    the mean of the micro-batches' shares of it. ``mean_loss``: a micro-batch-mean model loss
    (``accepts_loss_kwargs=False``), which the Trainer divides by GA itself."""
    data, model = make_data("seq"), make_model("seq")
    if path == "mean_loss":
        model.accepts_loss_kwargs = False
    ref = Reference(model, data, "seq", "loss_func" if path == "loss_func" else "model")
    expected = float(fgm_objective(ref, 0.5, per_example=True))
    callback = FGM(epsilon=0.5, norm="per_example")
    trainer = run_trainer(
        model, data, [callback], task="seq", path="loss_func" if path == "loss_func" else "model",
        batch_size=8 // accumulation, accumulation=accumulation,
    )  # fmt: skip
    log = trainer.state.log_history[0]
    assert math.isclose(log["adv_loss"], expected, rel_tol=1e-5)
    assert math.isclose(
        log["loss"], expected, rel_tol=1e-5
    )  # objective "adversarial": the Trainer's own loss
    # per example epsilon: a micro-batch of n examples has global norm epsilon * sqrt(n)
    assert math.isclose(log["adv_delta_norm"], 0.5 * math.sqrt(8 / accumulation), rel_tol=1e-5)


@pytest.mark.parametrize("make_callback", [lambda: FGM(0.5), lambda: FreeLB(seed=0)], ids=["fgm", "freelb"])
def test_non_finite_perturbation_skips_the_step(make_callback):
    def huge(outputs, labels, num_items_in_batch=None):  # gradients overflow float32 in the squared norm
        return user_loss("seq")(outputs, labels, num_items_in_batch) * 1e30

    from hfplug.losses import trainer_loss

    model = make_model("seq")
    args = TrainingArguments(
        "/tmp/hfplug_adversarial_tests", per_device_train_batch_size=8, max_steps=2, use_cpu=True,
        report_to="none", save_strategy="no", logging_steps=1, max_grad_norm=1.0, optim="sgd", learning_rate=1e-3,
    )  # fmt: skip
    from _adversarial_helpers import DictDataset
    from transformers import Trainer

    trainer = Trainer(
        model, args, train_dataset=DictDataset(make_data("seq")), callbacks=[make_callback()],
        compute_loss_func=trainer_loss(huge),
    )  # fmt: skip
    start = flat_params(model)
    trainer.train()
    assert trainer.state.log_history[-2]["adv_skipped_steps"] == 2  # whole optimizer steps
    assert torch.equal(flat_params(model), start)  # a skipped step changes nothing


def test_bf16_autocast_and_forward_restored():
    model = make_model("tok")
    callback = PGD(steps=2)
    trainer = run_trainer(model, make_data("tok"), [callback], task="tok", path="loss_func", bf16=True)
    log = trainer.state.log_history[0]
    assert math.isfinite(log["loss"]) and math.isfinite(log["adv_loss"]) and log["adv_skipped_steps"] == 0
    assert type(model.forward).__name__ != "ForwardWrapper"  # the wrapper is gone after training
    assert not model.get_input_embeddings()._forward_hooks


def test_registry_names():
    for name, cls in {
        "fgm": FGM, "fgsm": FGSM, "pgd": PGD, "freelb": FreeLB, "gradient_penalty": GradientPenalty, "smart": SMART,
    }.items():  # fmt: skip
        assert type(hfplug.get_callback(name, epsilon=0.5)) is cls


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: FGM(epsilon=0), "epsilon"),
        (lambda: FGM(epsilon=-1.0), "epsilon"),
        (lambda: FGM(epsilon=float("nan")), "epsilon"),
        (lambda: FGM(objective="both"), "objective"),
        (lambda: FGM(norm="l1"), "norm"),
        (lambda: FGM(norm="per_example", share_by_token=True), "share_by_token"),
        (lambda: PGD(steps=0), "steps"),
        (lambda: FreeLB(steps=0), "steps"),
        (lambda: SMART(steps=0), "steps"),
        (lambda: PGD(alpha=0), "alpha"),
        (lambda: GradientPenalty(epsilon=0), "epsilon"),
        (lambda: SMART(weight=-1), "weight"),
    ],
)
def test_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda: FreeLB(init_magnitude=float("nan")),
            ValueError,
            "init_magnitude must be a finite number >= 0",
        ),
        (
            lambda: FreeLB(init_magnitude=float("inf")),
            ValueError,
            "init_magnitude must be a finite number >= 0",
        ),
        (lambda: FreeLB(init_magnitude=True), TypeError, "init_magnitude must be a finite number >= 0"),
        (lambda: PGD(random_start="no"), TypeError, "random_start must be True or False, got 'no' \\(str\\)"),
        (lambda: FGM(share_by_token=1), TypeError, "share_by_token must be True or False"),
        (lambda: FGM(epsilon="0.5"), TypeError, "epsilon must be a finite number > 0"),
        (lambda: FGM(epsilon=float("inf")), ValueError, "epsilon must be a finite number > 0"),
        (lambda: PGD(steps=2.0), TypeError, "steps must be an integer >= 1"),
        (lambda: SMART(noise_std=True), TypeError, "noise_std must be a finite number > 0"),
        (lambda: FGSM(seed=2**64), ValueError, "seed must be an integer in \\[0, "),
        (lambda: GradientPenalty(seed="0"), TypeError, "seed must be an integer"),
        (lambda: FGM(objective=None), ValueError, "objective must be one of"),
    ],
)
def test_bad_argument_types_and_values(make, error, message):
    """Each was accepted and silently misread before (nan/inf/True magnitudes, a truthy "no", 2.0 steps, a seed
    torch cannot take) or raised ValueError for a wrong type."""
    with pytest.raises(error, match=message):
        make()


def test_model_without_input_embeddings():
    args = TrainingArguments("/tmp/hfplug_adversarial_tests", use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match="no input embeddings"):
        FGM().on_train_begin(args, TrainerState(), TrainerControl(), model=torch.nn.Linear(4, 2))


def test_model_without_loss_and_no_loss_function():
    from hfplug.testing import tiny_model

    with pytest.raises(ValueError, match="did not return a loss"):  # raised by the Trainer at the first step
        run_trainer(tiny_model("bert", "base"), make_data("seq"), [FGM()], task="seq", path="model")


def test_unwrapped_loss_function_is_detected():
    from _adversarial_helpers import DictDataset
    from transformers import Trainer

    args = TrainingArguments(
        "/tmp/hfplug_adversarial_tests", per_device_train_batch_size=8, max_steps=1, use_cpu=True,
        report_to="none", save_strategy="no",
    )  # fmt: skip
    trainer = Trainer(
        make_model("seq"), args, train_dataset=DictDataset(make_data("seq")), callbacks=[FGM()],
        compute_loss_func=user_loss("seq"),
    )  # fmt: skip
    with pytest.raises(ValueError, match="trainer_loss"):
        trainer.train()


def test_hfplug_trainer_loss_needs_no_wrapping():
    """A TrainerLoss subclass (as every hfplug loss) honours the finisher by itself."""
    import torch.nn.functional as F
    from _adversarial_helpers import DictDataset
    from transformers import Trainer

    from hfplug.losses import TrainerLoss, reduce_loss

    class CrossEntropy(TrainerLoss):
        def loss(self, logits, labels, num_items_in_batch=None):
            per_item = F.cross_entropy(logits, labels, reduction="none")
            return reduce_loss(per_item, torch.ones_like(per_item, dtype=torch.bool), num_items_in_batch)

    model, data = make_model("seq"), make_data("seq")
    start = flat_params(model)
    ref = Reference(model, data, "seq", "loss_func")
    expected = ref.step(fgm_objective(ref, 0.5))
    args = TrainingArguments(
        "/tmp/hfplug_adversarial_tests", per_device_train_batch_size=8, num_train_epochs=1, learning_rate=0.5,
        optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0, use_cpu=True, report_to="none",
        save_strategy="no",
    )  # fmt: skip
    Trainer(
        model, args, train_dataset=DictDataset(data), callbacks=[FGM(0.5)], compute_loss_func=CrossEntropy()
    ).train()
    assert_same_update(model, expected, start)


def test_partitioned_weights_are_detected(monkeypatch):
    """FreeLB's per-pass parameter gradients need ordinary parameters: FSDP/DeepSpeed are recognised."""
    from types import SimpleNamespace

    from hfplug_adversarial._forward import weights_sharded

    model = make_model("seq")
    plain = SimpleNamespace(fsdp=[], deepspeed_plugin=None)
    assert not weights_sharded(model, plain)
    assert weights_sharded(model, SimpleNamespace(fsdp=["full_shard"], deepspeed_plugin=None))
    assert weights_sharded(model, SimpleNamespace(fsdp=[], deepspeed_plugin=object()))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert weights_sharded(model, plain)
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    next(model.parameters()).ds_id = 0  # how DeepSpeed ZeRO-3 tags its partitioned parameters
    assert weights_sharded(model, plain)
