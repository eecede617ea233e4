"""theseus_wrap against hand-written forwards of the chosen mix of predecessor groups and successor blocks."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hfplug_theseus import (
    ConstantReplacementScheduler,
    LinearReplacementScheduler,
    TheseusController,
    export_successor,
    get_controller,
    theseus_wrap,
)
from torch import nn

from hfplug.testing import tiny_model

NO_DROPOUT = {
    "bert": dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "llama": dict(attention_dropout=0.0),
    "gpt2": dict(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0),
}
TASKS = {"bert": "sequence-classification", "llama": "causal-lm", "gpt2": "causal-lm"}


def predecessor(family: str, layers: int, seed: int = 0) -> nn.Module:
    depth = {"n_layer": layers} if family == "gpt2" else {"num_hidden_layers": layers}
    return tiny_model(family, TASKS[family], seed=seed, **depth, **NO_DROPOUT[family])


def blocks_of(model: nn.Module, family: str) -> nn.ModuleList:
    return {
        "bert": lambda: model.bert.encoder.layer,
        "llama": lambda: model.model.layers,
        "gpt2": lambda: model.transformer.h,
    }[family]()


def reference_logits(ref: nn.Module, family: str, chain: list[nn.Module], ids: torch.Tensor) -> torch.Tensor:
    """The original model's embeddings, the given blocks one after another, the original head (no padding)."""
    positions = torch.arange(ids.shape[1])[None]
    if family == "bert":
        h = ref.bert.embeddings(input_ids=ids)
        for block in chain:
            h = block(h)
        return ref.classifier(ref.bert.pooler(h))
    if family == "llama":
        h = ref.model.embed_tokens(ids)
        rotary = ref.model.rotary_emb(h, positions)
        for block in chain:
            h = block(h, attention_mask=None, position_embeddings=rotary, position_ids=positions)
        return ref.lm_head(ref.model.norm(h))
    h = ref.transformer.wte(ids) + ref.transformer.wpe(positions)
    for block in chain:
        h = block(h)
    return ref.lm_head(ref.transformer.ln_f(h))


CASES = [  # family, N, n, wrap kwargs, expected groups, successor source block per module
    ("bert", 6, 3, {}, [[0, 1], [2, 3], [4, 5]], [0, 1, 2]),
    ("llama", 5, 2, {"successor_init": "group"}, [[0, 1, 2], [3, 4]], [0, 3]),
    ("gpt2", 4, 2, {"partition": [[0], [1, 2, 3]], "successor_init": [1, 3]}, [[0], [1, 2, 3]], [1, 3]),
]


@pytest.mark.parametrize(("family", "N", "n", "kwargs", "groups", "sources"), CASES)
def test_training_forward_equals_hand_run_mix(family, N, n, kwargs, groups, sources):
    model = predecessor(family, N)
    ref = copy.deepcopy(model)
    theseus_wrap(model, n, seed=3, **kwargs)
    assert model.theseus.groups == groups
    ref_blocks = blocks_of(ref, family)
    ids = torch.randint(3, 1000, (2, 9), generator=torch.Generator().manual_seed(1))
    model.train()
    seen = set()
    for step in range(6):
        model.theseus.set_step(step, 0.5)
        gates = model.theseus.gates.tolist()
        seen.add(tuple(gates))
        chain = []
        for use_successor, group, source in zip(gates, groups, sources, strict=True):
            chain += [ref_blocks[source]] if use_successor else [ref_blocks[j] for j in group]
        expected = reference_logits(ref, family, chain, ids)
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    assert len(seen) > 1, "the mix should change across optimizer steps"

    model.eval()  # eval: successor blocks only
    with torch.no_grad():
        expected = reference_logits(ref, family, [ref_blocks[s] for s in sources], ids)
        torch.testing.assert_close(model(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)


def test_draws_follow_bernoulli_rate_and_depend_only_on_seed_and_step():
    a = theseus_wrap(predecessor("bert", 6), 3, seed=7).theseus
    b = theseus_wrap(predecessor("bert", 6, seed=1), 3, seed=7).theseus
    c = theseus_wrap(predecessor("bert", 6), 3, seed=8).theseus
    for rate in (0.2, 0.7):
        draws = []
        for step in range(600):
            a.set_step(step, rate)
            b.set_step(step, rate)
            draws.append(a.gates.clone())
            assert torch.equal(a.gates, b.gates)  # same (seed, step): same draw, whatever the weights
        frequency = torch.stack(draws).float().mean().item()
        assert abs(frequency - rate) < 4 * math.sqrt(rate * (1 - rate) / 1800)
    a.set_step(5, 1.0)
    assert a.gates.all()  # p = 1: successor only
    mismatches = 0
    for step in range(50):
        a.set_step(step, 0.5)
        c.set_step(step, 0.5)
        mismatches += int(not torch.equal(a.gates, c.gates))
    assert mismatches > 10


def test_per_example_gate_mixes_each_example_independently():
    model = predecessor("bert", 4)
    ref = copy.deepcopy(model)
    theseus_wrap(model, 2, gate="example", seed=2)
    ref_blocks = blocks_of(ref, "bert")
    ids = torch.randint(3, 1000, (6, 8), generator=torch.Generator().manual_seed(0))
    model.train()
    model.theseus.set_step(4, 0.5)
    logits = model(input_ids=ids).logits
    gates = model.theseus.example_gates  # (modules, batch)
    assert gates.shape == (2, 6) and 0 < gates.sum() < 12
    for b in range(6):
        chain = []
        for i, group in enumerate([[0, 1], [2, 3]]):
            chain += [ref_blocks[i]] if gates[i, b] else [ref_blocks[j] for j in group]
        expected = reference_logits(ref, "bert", chain, ids[b : b + 1])
        torch.testing.assert_close(logits[b : b + 1], expected, rtol=1e-5, atol=1e-5)
    model(input_ids=ids)  # a second micro-batch of the same step draws new per-example gates
    assert not torch.equal(model.theseus.example_gates, gates)


def test_gradients_reach_only_successor_blocks_and_match_hand_written_backward():
    model = predecessor("bert", 4)
    ref = copy.deepcopy(model)
    theseus_wrap(model, 2, seed=0)
    model.train()
    step = next(
        s
        for s in range(100)
        if model.theseus.set_step(s, 0.5) or model.theseus.gates.tolist() == [True, False]
    )
    ids = torch.randint(3, 1000, (4, 8), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 1, 0])
    model(input_ids=ids, labels=labels).loss.backward()

    # hand-written: successor 0 (a trainable copy of block 0), then predecessor blocks 2, 3
    ref.requires_grad_(False)
    ref_blocks = blocks_of(ref, "bert")
    trainable = copy.deepcopy(ref_blocks[0]).requires_grad_(True)
    logits = reference_logits(ref, "bert", [trainable, ref_blocks[2], ref_blocks[3]], ids)
    nn.functional.cross_entropy(logits, labels).backward()

    successors = [module.successor for module in model.bert.encoder.layer]
    for (name, p), q in zip(successors[0].named_parameters(), trainable.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=name)
    assert all(
        p.grad is not None and torch.all(p.grad == 0) for p in successors[1].parameters()
    )  # unused: exact 0
    successor_ids = {id(p) for s in successors for p in s.parameters()}
    for name, p in model.named_parameters():
        if id(p) not in successor_ids:
            assert not p.requires_grad and p.grad is None, name

    # a few optimizer steps: predecessor, embeddings and head unchanged, successor blocks moved
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for s in range(step + 1, step + 5):
        model.theseus.set_step(s, 0.5)
        optimizer.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
    after = model.state_dict()
    for key, value in before.items():
        if ".successor." in key:
            continue
        assert torch.equal(after[key], value), key
    assert any(not torch.equal(after[k], v) for k, v in before.items() if ".successor." in k)


def test_unfrozen_head_and_embeddings_train_and_uneven_default_partition():
    model = theseus_wrap(predecessor("bert", 12), 5, freeze_head=False, freeze_embeddings=False)
    assert model.theseus.groups == [[0, 1, 2], [3, 4, 5], [6, 7], [8, 9], [10, 11]]
    assert (
        model.classifier.weight.requires_grad and model.bert.embeddings.word_embeddings.weight.requires_grad
    )
    assert model.bert.embeddings.LayerNorm.weight.requires_grad
    assert not model.bert.encoder.layer[0].predecessor[0].attention.self.query.weight.requires_grad


def test_successor_from_another_checkpoint():
    source = predecessor("bert", 3, seed=5)  # e.g. the pre-trained model, as in the post
    model = predecessor("bert", 6)
    theseus_wrap(model, 2, successor_init=source)
    for i in range(2):
        got = model.bert.encoder.layer[i].successor.state_dict()
        for key, value in source.bert.encoder.layer[i].state_dict().items():
            assert torch.equal(got[key], value)
    with pytest.raises(ValueError, match="does not match"):
        theseus_wrap(predecessor("bert", 6), 2, successor_init=predecessor("llama", 3))
    wide = tiny_model("bert", TASKS["bert"], num_hidden_layers=3, hidden_size=32, intermediate_size=64)
    with pytest.raises(ValueError, match="does not match"):
        theseus_wrap(predecessor("bert", 6), 2, successor_init=wide)


def test_bad_input_errors():
    with pytest.raises(ValueError, match=r"num_successor_layers must be an integer in \[1, 3\], got 4"):
        theseus_wrap(predecessor("bert", 4), 4)
    with pytest.raises(ValueError, match="num_successor_layers"):
        theseus_wrap(predecessor("bert", 4), 0)
    with pytest.raises(TypeError, match="num_successor_layers must be an integer"):
        theseus_wrap(predecessor("bert", 4), 2.0)
    with pytest.raises(ValueError, match="could not find the block list"):
        theseus_wrap(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), 1)
    with pytest.raises(ValueError, match="block_path"):
        theseus_wrap(predecessor("bert", 4), 2, block_path="bert.encoder")
    with pytest.raises(ValueError, match="partition must list 2"):
        theseus_wrap(predecessor("bert", 4), 2, partition=[[0, 2], [1, 3]])
    with pytest.raises(ValueError, match="successor_init"):
        theseus_wrap(predecessor("bert", 4), 2, successor_init="last")
    with pytest.raises(ValueError, match="successor_init"):
        theseus_wrap(predecessor("bert", 4), 2, successor_init=[0, 9])
    with pytest.raises(ValueError, match="gate must be one of"):
        theseus_wrap(predecessor("bert", 4), 2, gate="batch")
    with pytest.raises(ValueError, match=r"replacing_rate must be a finite number in \(0, 1\]"):
        theseus_wrap(predecessor("bert", 4), 2, replacing_rate=0.0)
    for bad in (0.0, 1.5, float("nan"), -0.1):
        with pytest.raises(ValueError, match=r"rate must be a finite number in \(0, 1\]"):
            ConstantReplacementScheduler(bad)
        with pytest.raises(ValueError, match=r"b must be a finite number in \(0, 1\]"):
            LinearReplacementScheduler(0.01, bad)
    with pytest.raises(ValueError, match="k must be"):
        LinearReplacementScheduler(float("inf"), 0.3)
    with pytest.raises(ValueError, match="replacing_steps"):
        ConstantReplacementScheduler(0.5, replacing_steps=-1)
    wrapped = theseus_wrap(predecessor("bert", 4), 2)
    with pytest.raises(ValueError, match="already wrapped"):
        theseus_wrap(wrapped, 1)
    with pytest.raises(ValueError, match="rate"):
        wrapped.theseus.set_step(0, 2.0)
    wrapped.train()
    with pytest.raises(RuntimeError, match="TheseusCallback"):
        wrapped(input_ids=torch.tensor([[5, 6, 7]]))
    with pytest.raises(ValueError, match="not prepared with"):
        export_successor(predecessor("bert", 4))
    with pytest.raises(ValueError, match="not prepared with"):
        get_controller(predecessor("bert", 4))


def test_controller_successor_sources_use_the_shared_checks():
    """A wrong type is a TypeError naming the entry (hfplug.validation.check_int); a wrong count a ValueError."""

    def build(sources):
        return TheseusController(2, [[0, 1], [2, 3]], sources, "model.layers", 0, "module", 0.5)

    assert build([0, None]).successor_sources == [0, None]
    with pytest.raises(TypeError, match=r"successor_sources\[1\].*'1'"):
        build([0, "1"])
    with pytest.raises(TypeError, match=r"successor_sources\[0\]"):
        build([True, 1])
    with pytest.raises(ValueError, match=r"successor_sources\[1\].*-1"):
        build([0, -1])
    with pytest.raises(ValueError, match="successor_sources must give 2 block indices"):
        build([0])


def test_schedulers():
    constant = ConstantReplacementScheduler(0.5, replacing_steps=3)
    assert [constant.get_rate(t) for t in range(5)] == [0.5, 0.5, 0.5, 1.0, 1.0]
    assert ConstantReplacementScheduler(0.3).get_rate(10**6) == 0.3
    linear = LinearReplacementScheduler(k=0.25, b=0.3)
    assert [linear.get_rate(t) for t in range(5)] == pytest.approx([0.3, 0.55, 0.8, 1.0, 1.0])
    for scheduler in (constant, linear):
        assert type(scheduler).from_dict(scheduler.to_dict()) == scheduler


def test_optional_distillation_term_against_hand_computed_kl():
    model = predecessor("bert", 4)
    ref = copy.deepcopy(model)
    theseus_wrap(model, 2, seed=1, distill_alpha=0.3, distill_temperature=2.0)
    ref_blocks = blocks_of(ref, "bert")
    ids = torch.randint(3, 1000, (5, 8), generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 1, 0, 1])
    model.train()
    model.theseus.set_step(2, 0.5)
    loss = model(input_ids=ids, labels=labels).loss
    assert model.training and all(m.training for m in model.modules())  # teacher pass restored train mode

    gates = model.theseus.gates.tolist()
    chain = []
    for i, group in enumerate([[0, 1], [2, 3]]):
        chain += [ref_blocks[i]] if gates[i] else [ref_blocks[j] for j in group]
    with torch.no_grad():
        student = reference_logits(ref, "bert", chain, ids)
        teacher = reference_logits(ref, "bert", list(ref_blocks), ids)
    p = torch.softmax(teacher / 2.0, -1)
    kl = (p * (p.log() - torch.log_softmax(student / 2.0, -1))).sum(-1).mean() * 4.0
    expected = 0.7 * nn.functional.cross_entropy(student, labels) + 0.3 * kl
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    assert kl > 0
    with pytest.raises(ValueError, match="needs the model to compute its loss"):
        model(input_ids=ids)
    with pytest.raises(ValueError, match="distill_alpha"):
        theseus_wrap(predecessor("bert", 4), 2, distill_alpha=1.5)
    with pytest.raises(ValueError, match="distill_temperature"):
        theseus_wrap(predecessor("bert", 4), 2, distill_temperature=0.0)
