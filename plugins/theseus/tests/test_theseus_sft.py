"""BERT-of-Theseus under TRL's SFTTrainer (trl 1.16) on tiny causal LMs with a character tokenizer.

SFTTrainer computes its loss, ``-sum(log_probs) / num_items_in_batch``, from the per-token outputs of TRL's fused LM
head (``model(..., fused_lm_head=True)`` runs the backbone, hence the Theseus modules, and scores the targets in
chunks). One SFTTrainer step equals a hand-written step: the stock model with the blocks that ran (successor block or
predecessor group, as observed by forward hooks), cross-entropy over the target tokens, plain SGD on the successor
blocks; everything else stays as it was.
"""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path

import pytest
import torch
from hfplug_theseus import (
    ConstantReplacementScheduler,
    LinearReplacementScheduler,
    TheseusCallback,
    TheseusModule,
    export_successor,
    theseus_wrap,
)
from torch import nn
from transformers import AutoModelForCausalLM

from hfplug.testing import char_tokenizer, tiny_model

trl, datasets = pytest.importorskip("trl"), pytest.importorskip("datasets")

# A character vocabulary (3 special tokens, then a-z and space), the texts, the grouping and SGD's step size.
VOCAB_SIZE = 30  # hfplug.testing.char_tokenizer(): 3 special tokens, then a-z and space
TEXT = {"text": ["hello world", "the cat sat on the mat", "abc def ghi", "a theseus ship"] * 2}
GROUPS, LR = [[0, 1], [2, 3]], 0.5  # 4 predecessor blocks -> 2 successor blocks (successor_init="first")


def predecessor(family: str) -> nn.Module:
    """The same 4-block causal LM on every call (seeded, dropout off). SFTTrainer patches the forward of the
    instance it trains, so references are built from a fresh instance, never from a copy."""
    special = dict(vocab_size=VOCAB_SIZE, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "gpt2":
        return tiny_model(
            "gpt2", "causal-lm", n_layer=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **special
        )
    return tiny_model("llama", "causal-lm", num_hidden_layers=4, **special)


def blocks_of(model: nn.Module) -> nn.ModuleList:
    return model.transformer.h if hasattr(model, "transformer") else model.model.layers


def wrapped(family: str, seed: int = 0, **options) -> nn.Module:
    return theseus_wrap(predecessor(family), 2, seed=seed, **options)


def sft_config(**overrides) -> trl.SFTConfig:
    settings = dict(
        output_dir="/tmp/hfplug_theseus_sft", max_steps=1, per_device_train_batch_size=4, learning_rate=LR,
        optim="sgd", lr_scheduler_type="constant", max_grad_norm=0.0, use_cpu=True, report_to=[], logging_steps=1,
        max_length=32, save_strategy="no", train_sampling_strategy="sequential", seed=0, disable_tqdm=True,
        bf16=False, gradient_checkpointing=False,
    )  # fmt: skip
    return trl.SFTConfig(**{**settings, **overrides})


def sft_trainer(model, scheduler=None, peft_config=None, **config) -> trl.SFTTrainer:
    return trl.SFTTrainer(
        model=model, args=sft_config(**config), train_dataset=datasets.Dataset.from_dict(TEXT),
        processing_class=char_tokenizer(), peft_config=peft_config,
        callbacks=[TheseusCallback(scheduler or ConstantReplacementScheduler(0.5))],
    )  # fmt: skip


def first_batch(trainer) -> dict[str, torch.Tensor]:
    """The first micro-batch in SFTTrainer's own order and collation."""
    dataset = trainer.train_dataset
    batch = trainer.get_train_dataloader().collate_fn([dataset[i] for i in range(4)])
    return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}


def record_branches(model: nn.Module) -> list[list[bool]]:
    """Per training forward, which modules ran their successor block (seen by hooks on the blocks themselves)."""
    modules = [m for m in model.modules() if isinstance(m, TheseusModule)]
    forwards: list[list[bool]] = []

    def opened(module, args):
        if module.training:
            forwards.append([False] * len(modules))

    def ran(index):
        return lambda module, args, output: forwards[-1].__setitem__(index, True)

    modules[0].register_forward_pre_hook(opened)
    for i, module in enumerate(modules):
        module.successor.register_forward_hook(ran(i))
    return forwards


def reference_step(family: str, gates: list[bool], batch: dict, bf16: bool = False):
    """A fresh predecessor whose block list is the chain that ran; SGD on copies of blocks 0 and 1."""
    model = predecessor(family).train()
    blocks = list(blocks_of(model))
    successors = [copy.deepcopy(blocks[i]) for i in range(len(GROUPS))]
    chain = [
        b
        for g, s, group in zip(gates, successors, GROUPS, strict=True)
        for b in ([s] if g else [blocks[j] for j in group])
    ]
    if family == "gpt2":
        model.transformer.h = nn.ModuleList(chain)
    else:
        model.model.layers = nn.ModuleList(chain)
        model.config.num_hidden_layers = len(chain)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        logits = model(**inputs, use_cache=False).logits.float()
    logits, targets = logits[:, :-1], batch["labels"][:, 1:]
    valid = targets != -100
    nll = nn.functional.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), ignore_index=-100, reduction="sum"
    )
    # SFTTrainer divides by the Trainer's num_items_in_batch. transformers 5.23 counts labels[:, 1:] only for models
    # whose loss_type is ForCausalLM; GPT2LMHeadModel has loss_type None, so its count includes each row's first
    # label (the same without Theseus: a plain GPT-2 logs the mean NLL times targets / (targets + rows)).
    loss = nll / (batch["labels"] != -100).sum() if family == "gpt2" else nll / valid.sum()
    params = [p for s in successors for p in s.parameters()]
    with torch.no_grad():
        for p, g in zip(
            params, torch.autograd.grad(loss, params, allow_unused=True, materialize_grads=True), strict=True
        ):
            p -= LR * g
        log_p = logits.log_softmax(-1)
        metrics = {
            "loss": float(loss),
            "mean_token_accuracy": float((logits.argmax(-1) == targets)[valid].float().mean()),
            "entropy": float(-(log_p.exp() * log_p).sum(-1)[valid].mean()),
        }
    return successors, metrics


def trained_successors(model: nn.Module) -> list[nn.Module]:
    return [m.successor for m in model.modules() if isinstance(m, TheseusModule)]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def flat(modules) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for m in modules for p in m.parameters()])


STEP_CASES = {
    "llama": ("llama", 0, {}),
    "llama-other-draw-gc": ("llama", 2, {"gradient_checkpointing": True}),
    "llama-gc-reentrant": (
        "llama", 0, {"gradient_checkpointing": True, "gradient_checkpointing_kwargs": {"use_reentrant": True}},
    ),
    "gpt2": ("gpt2", 2, {}),
    "gpt2-gc": ("gpt2", 0, {"gradient_checkpointing": True}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(STEP_CASES))
def test_one_sft_step_equals_the_hand_written_step(case):
    family, seed, config = STEP_CASES[case]
    model = wrapped(family, seed=seed)
    forwards = record_branches(model)
    trainer = sft_trainer(model, **config)
    batch = first_batch(trainer)
    trainer.train()
    assert len(forwards) == 1
    gates = forwards[0]
    assert sorted(gates) == [False, True], "the seed gives one successor and one predecessor group"
    model.theseus.set_step(0)
    assert gates == model.theseus.gates.tolist()  # the seeded draw of step 0 is what ran
    expected, metrics = reference_step(family, gates, batch)
    start = trained_successors(wrapped(family, seed=seed))
    got = trained_successors(model)
    torch.testing.assert_close(flat(got), flat(expected), rtol=1e-5, atol=1e-6)
    assert relative_error(flat(got) - flat(start), flat(expected) - flat(start)) < 1e-4
    selected = gates.index(True)
    assert not torch.equal(flat([got[selected]]), flat([start[selected]]))
    assert torch.equal(flat([got[1 - selected]]), flat([start[1 - selected]]))  # exact zero gradient
    fresh = wrapped(family, seed=seed).state_dict()
    for key, value in model.state_dict().items():  # predecessor, embeddings, head: untouched
        if ".successor." not in key:
            assert torch.equal(value, fresh[key]), key
    log = trainer.state.log_history[0]
    for name, value in metrics.items():
        assert math.isclose(log[name], value, rel_tol=1e-4), (name, log[name], value)
    assert log["theseus_replacing_rate"] == 0.5


def test_sft_defaults_bf16_and_gradient_checkpointing_match_the_autocast_step():
    """SFTConfig's own defaults (bf16 autocast on CPU, gradient checkpointing): the step of a bf16-autocast reference,
    to bf16 accuracy; TRL's metrics are finite."""
    config = trl.SFTConfig(output_dir="/tmp/hfplug_theseus_sft", use_cpu=True)
    assert config.bf16 and config.gradient_checkpointing  # what a user gets without asking
    model = wrapped("llama")
    forwards = record_branches(model)
    trainer = sft_trainer(model, bf16=True, gradient_checkpointing=True)
    batch = first_batch(trainer)
    trainer.train()
    start = flat(trained_successors(wrapped("llama")))
    expected, metrics = reference_step("llama", forwards[0], batch, bf16=True)
    fp32, _ = reference_step("llama", forwards[0], batch)
    update = flat(trained_successors(model)) - start
    assert relative_error(update, flat(expected) - start) < 1e-2  # measured 4e-3
    # the trainer did run under bf16 autocast: its update is not the float32 one (measured 6e-3 apart)
    assert relative_error(update, flat(fp32) - start) > 1e-3
    log = trainer.state.log_history[0]
    assert all(math.isfinite(log[k]) for k in ("loss", "entropy", "mean_token_accuracy", "grad_norm"))
    assert math.isclose(log["loss"], metrics["loss"], rel_tol=2e-2)


def test_schedule_advances_with_the_trainer_steps_under_accumulation():
    """GA 2 x 2 examples, 3 optimizer steps: both micro-batches of step t run at p_t = 0.2 t + 0.3 with one draw,
    the logged rate follows, TRL's metrics stay finite and only successor blocks change."""
    model = wrapped("llama", seed=3)
    seen = []

    def record(module, args, kwargs):
        if module.training:
            seen.append((module.theseus.step, module.theseus.rate, module.theseus.gates.tolist()))

    model.register_forward_pre_hook(record, with_kwargs=True)
    trainer = sft_trainer(
        model, LinearReplacementScheduler(k=0.2, b=0.3), max_steps=3, per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
    )  # fmt: skip
    trainer.train()
    assert [(s, round(r, 6)) for s, r, _ in seen] == [
        (0, 0.3),
        (0, 0.3),
        (1, 0.5),
        (1, 0.5),
        (2, 0.7),
        (2, 0.7),
    ]
    assert all(seen[2 * t][2] == seen[2 * t + 1][2] for t in range(3))
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert [round(e["theseus_replacing_rate"], 6) for e in logs] == [0.3, 0.5, 0.7]
    for entry in logs:
        assert all(math.isfinite(entry[k]) for k in ("loss", "entropy", "mean_token_accuracy", "grad_norm"))
    fresh = wrapped("llama", seed=3).state_dict()
    changed = {
        k.split(".successor.")[0] for k, v in model.state_dict().items() if not torch.equal(v, fresh[k])
    }
    assert changed == {
        "model.layers.0",
        "model.layers.1",
    }  # the successor blocks of both modules, nothing else


def greedy(model: nn.Module, ids: torch.Tensor, new_tokens: int) -> torch.Tensor:
    """Greedy decoding by hand: full forward on the prefix, argmax of the last position."""
    with torch.no_grad():
        for _ in range(new_tokens):
            ids = torch.cat([ids, model(input_ids=ids).logits[:, -1:].argmax(-1)], dim=1)
    return ids


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_export_after_sft_reloads_with_the_successor_depth_logits_and_generate(family, tmp_path):
    model = wrapped(family)
    trainer = sft_trainer(model, max_steps=3, per_device_train_batch_size=2)
    trainer.train()
    model.eval()
    exported = export_successor(trainer.model)
    exported.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.num_hidden_layers == 2 and len(blocks_of(reloaded)) == 2
    assert type(reloaded).__name__ == {"llama": "LlamaForCausalLM", "gpt2": "GPT2LMHeadModel"}[family]
    batch = first_batch(trainer)
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    # the trained successor path, by hand: a fresh predecessor whose blocks are the trained successor blocks
    chain = predecessor(family).eval()
    successors = [copy.deepcopy(s) for s in trained_successors(model)]
    if family == "gpt2":
        chain.transformer.h = nn.ModuleList(successors)
    else:
        chain.model.layers = nn.ModuleList(successors)
        chain.config.num_hidden_layers = 2
    with torch.no_grad():
        expected = chain(**inputs).logits
        torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
    prompt = batch["input_ids"][:1, :5]
    generated = reloaded.generate(prompt, max_new_tokens=6, do_sample=False, min_new_tokens=6, pad_token_id=0)
    assert torch.equal(generated, greedy(chain, prompt, 6))


def test_model_loaded_by_sft_trainer_is_refused_at_construction(tmp_path):
    """SFTTrainer(model="path", SFTConfig(model_init_kwargs=...)) loads a plain model that Theseus cannot drive."""
    predecessor("llama").save_pretrained(tmp_path)
    with pytest.raises(
        ValueError,
        match=r"TheseusCallback: LlamaForCausalLM was not prepared with .*theseus_wrap.*model_init_kwargs",
    ):
        sft_trainer(str(tmp_path), model_init_kwargs={"dtype": "float32"})


def test_distillation_is_refused_before_the_first_step():
    """SFTTrainer's fused LM head returns per-token log-probabilities, no logits to distil from."""
    model = wrapped("llama", distill_alpha=0.5)
    forwards = record_branches(model)
    trainer = sft_trainer(model)
    with pytest.raises(ValueError, match=r"distill_alpha=0\.5\) needs the model's logits.*fused_lm_head"):
        trainer.train()
    assert forwards == []


def test_distillation_hook_refuses_a_fused_lm_head_call():
    from trl.trainer.utils import add_fused_lm_head

    model = wrapped("llama", distill_alpha=0.5).train()
    add_fused_lm_head(model)
    model.theseus.set_step(0)
    ids = torch.randint(3, VOCAB_SIZE, (2, 6), generator=torch.Generator().manual_seed(0))
    with pytest.raises(
        ValueError, match=r"distill_alpha=0\.5\) needs the model's logits.*FusedCausalLMOutput"
    ):
        model(input_ids=ids, labels=ids, fused_lm_head=True)


def test_peft_adapters_on_predecessor_blocks_are_refused_at_construction():
    """LoRA's default targets hit the frozen predecessor blocks (they would train) and freeze the successor's own
    weights: SFTTrainer(peft_config=...) raises before training."""
    peft = pytest.importorskip("peft")
    with pytest.raises(
        ValueError,
        match=r"PEFT adapters in predecessor blocks: \S*model\.layers\.0\.predecessor\.0\.self_attn\.q_proj",
    ):
        sft_trainer(wrapped("llama"), peft_config=peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))


def test_peft_adapters_on_successor_blocks_train_and_export_after_merging(tmp_path):
    peft = pytest.importorskip("peft")
    lora = peft.LoraConfig(r=4, lora_alpha=8, target_modules=r".*\.successor\.self_attn\.(q_proj|v_proj)")
    model = wrapped("llama")
    trainer = sft_trainer(model, peft_config=lora, max_steps=2)
    trainer.train()
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert trainable and all(".successor." in n and "lora_" in n for n in trainable)
    assert any(p.abs().sum() > 0 for n, p in trainer.model.named_parameters() if "lora_B" in n)  # trained
    with pytest.raises(
        TypeError, match=r"merge the adapters first: export_successor\(model\.merge_and_unload\(\)\)"
    ):
        export_successor(trainer.model)
    trainer.model.eval()
    ids = torch.randint(3, VOCAB_SIZE, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = trainer.model(input_ids=ids).logits
    exported = export_successor(trainer.model.merge_and_unload())
    exported.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.num_hidden_layers == 2
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=1e-4, atol=1e-5)
    fresh = wrapped("llama").state_dict()
    merged = {k: v for k, v in model.state_dict().items() if ".predecessor." in k}
    assert merged and all(
        torch.equal(v, fresh[k]) for k, v in merged.items()
    )  # the predecessor never changed


DOCS = Path(__file__).resolve().parents[3] / "docs" / "plugins" / "theseus.md"
SNIPPET = """\
import datasets
import trl
from transformers import AutoModelForCausalLM

from hfplug.testing import char_tokenizer, tiny_model
from hfplug_theseus import LinearReplacementScheduler, TheseusCallback, export_successor, theseus_wrap

tok = char_tokenizer()                              # one token per character: your tokenizer in real use
model = tiny_model("llama", "causal-lm", num_hidden_layers=4, vocab_size=len(tok))  # your fine-tuned causal LM
theseus_wrap(model, 2)                              # 4 blocks -> 2: groups [0, 1], [2, 3]
ds = datasets.Dataset.from_dict({"text": ["the cat sat on the mat", "hello world"] * 8})
args = trl.SFTConfig("theseus-sft", max_steps=8, per_device_train_batch_size=4, logging_steps=2,
                     use_cpu=True, report_to=[])
trainer = trl.SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         callbacks=[TheseusCallback(LinearReplacementScheduler(k=0.1, b=0.3))])
trainer.train()                                     # bf16 autocast and gradient checkpointing: SFTConfig's defaults

export_successor(trainer.model).save_pretrained("theseus-sft-2")
small = AutoModelForCausalLM.from_pretrained("theseus-sft-2")   # LlamaForCausalLM, 2 layers, no hfplug needed
print(tok.decode(small.generate(**tok("the cat", return_tensors="pt"), max_new_tokens=8)[0]))
"""


def test_docs_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(SNIPPET, "theseus-sft-snippet", "exec"), namespace)
    small, trainer = namespace["small"], namespace["trainer"]
    assert small.config.num_hidden_layers == 2 and len(small.model.layers) == 2
    rates = [e["theseus_replacing_rate"] for e in trainer.state.log_history if "loss" in e]
    assert rates and rates[-1] > rates[0]
    assert all(math.isfinite(e["loss"]) for e in trainer.state.log_history if "loss" in e)


def test_docs_snippet_is_the_one_on_the_plugin_page():
    if not DOCS.exists():
        pytest.skip("run from the repository: the docs are not shipped with the tests")
    section = DOCS.read_text(encoding="utf-8").split("## Under SFTTrainer", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert block == SNIPPET
