"""FAVOR+ as the attention of a causal LM trained by TRL's SFTTrainer (trl 1.16): padded batches, padding-free
batches and packed batches (several documents in one row, ``position_ids`` restarting at 0, no attention mask).

SFTTrainer's default loss is ``-sum(log_probs) / num_items_in_batch`` over the target tokens, from TRL's fused LM
head. The reference step is a plain loop on the batch SFTTrainer collates: a fresh model (same seed, same FAVOR+
features), cross-entropy summed over the targets and divided by their count, one SGD step. For packed batches
the reference runs every document alone, so a step that let documents attend to each other would differ.
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path

import pytest
import torch
from hfplug_favor import FavorConfig, set_favor_config

import hfplug
from hfplug.testing import char_tokenizer, tiny_model

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

CHARS = "abcdefghijklmnopqrstuvwxyz "
TEXT = {
    "text": ["hello world", "the cat sat on the mat", "abc def ghi", "loop loop loop", "a b c", "one two"]
}
LR = 0.5
MODES = {  # SFTConfig fields: one padded batch, one row of six documents, or bfd-packed rows of <= 32 tokens
    "padded": {},
    "padding_free": {"padding_free": True, "max_length": None},
    "packing": {"packing": True, "max_length": 32},
}


def favor_lm():
    """The same tiny Llama with FAVOR+ (m = 64, chunks of 4) on every call: same weights, same features.
    SFTTrainer patches the forward of the instance it trains, so references use a fresh one."""
    model = tiny_model("llama", "causal-lm", vocab_size=len(CHARS) + 3)
    model.set_attn_implementation(hfplug.use_attention("favor"))
    set_favor_config(model, FavorConfig(nb_features=64, chunk_size=4))
    return model


def sft_trainer(output_dir, max_steps=1, **config):
    """SFTConfig's defaults (gradient checkpointing; bf16 autocast, also on CPU) except plain SGD, one batch
    holding the whole training set, and ``config``."""
    args = trl.SFTConfig(
        output_dir=str(output_dir), max_steps=max_steps, per_device_train_batch_size=8, use_cpu=True, report_to=[],
        logging_steps=1, save_strategy="no", seed=0, disable_tqdm=True,
        **{"optim": "sgd", "learning_rate": LR, "lr_scheduler_type": "constant", "max_grad_norm": 0.0,
           "max_length": 64, **config},
    )  # fmt: skip
    return trl.SFTTrainer(
        model=favor_lm(),
        args=args,
        train_dataset=datasets.Dataset.from_dict(TEXT),
        processing_class=char_tokenizer(CHARS),
    )


def the_batch(trainer) -> dict[str, torch.Tensor]:
    """The whole (one-batch) training set as SFTTrainer collates it."""
    batch = next(iter(trainer.get_train_dataloader()))
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


def target_nll(logits, labels):
    """Sum of the next-token cross-entropies over the targets (labels != -100), and their count."""
    targets = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="sum"
    )
    return nll, int((targets != -100).sum())


def reference_step(batch):
    """One plain SGD step of a fresh model on ``batch``; packed rows are split into their documents."""
    model = favor_lm().train()
    if "cu_seq_lens_q" in batch:
        assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
        bounds = batch["cu_seq_lens_q"].tolist()
        parts = [
            target_nll(model(input_ids=batch["input_ids"][:, a:b]).logits, batch["labels"][:, a:b])
            for a, b in itertools.pairwise(bounds)
        ]
        nll, count = sum(p[0] for p in parts), sum(p[1] for p in parts)
    else:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        nll, count = target_nll(logits, batch["labels"])
    loss = nll / count
    loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= LR * p.grad
    return model, loss.item()


def flat_params(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@pytest.mark.parametrize("mode", sorted(MODES))
def test_one_sft_step_equals_the_reference_step(mode, tmp_path):
    trainer = sft_trainer(tmp_path, bf16=False, **MODES[mode])  # float32: equal to float rounding
    batch = the_batch(trainer)
    if mode != "padded":  # one row holding every document, positions restarting at each
        assert batch["input_ids"].shape[0] == 1 and len(batch["cu_seq_lens_q"]) == len(TEXT["text"]) + 1
        assert int((batch["position_ids"] == 0).sum()) == len(TEXT["text"])
    start = flat_params(favor_lm())
    expected, loss = reference_step(batch)
    trainer.train()
    got, want = flat_params(trainer.model) - start, flat_params(expected) - start
    assert float((got - want).norm() / want.norm()) < 1e-4
    log = trainer.state.log_history[0]
    assert math.isclose(log["loss"], loss, rel_tol=1e-4)
    assert math.isfinite(log["mean_token_accuracy"]) and math.isfinite(log["entropy"])


@pytest.mark.parametrize("mode", ["padded", "packing"])
def test_sft_training_lowers_the_loss(mode, tmp_path):
    trainer = sft_trainer(tmp_path, max_steps=8, optim="adamw_torch", learning_rate=3e-3, **MODES[mode])
    start = flat_params(trainer.model)
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < 0.8 * losses[0], losses
    assert torch.isfinite(flat_params(trainer.model)).all()
    assert not torch.equal(flat_params(trainer.model), start)


def docs_snippet() -> str:
    page = Path(__file__).resolve().parents[3] / "docs" / "plugins" / "favor.md"
    if not page.exists():  # the plugin's tests run from its sdist, without the repository's docs
        pytest.skip("docs/plugins/favor.md is not here")
    section = page.read_text(encoding="utf-8").split("## Under SFTTrainer and packed sequences", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_docs_snippet_trains_on_packed_batches(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(docs_snippet(), "favor.md", "exec"), namespace)
    trainer = namespace["trainer"]
    batch = the_batch(trainer)
    assert int((batch["position_ids"] == 0).sum()) > 1  # packed: several documents in a row
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert trainer.state.global_step == 5 and all(math.isfinite(x) for x in losses)
