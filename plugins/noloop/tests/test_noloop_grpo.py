"""No-loop in TRL's GRPO generation (trl 1.16, transformers backend, no vLLM).

GRPOTrainer offers no place for logits processors or stopping criteria: ``GRPOConfig.generation_kwargs``
only builds a ``GenerationConfig``, which refuses them, and ``_generate_single_turn`` calls
``unwrapped_model.generate(**generate_inputs, generation_config=self.generation_config)``. The components are
bound to the model instance's ``generate`` instead (``functools.partial``: the trainer calls that instance).
Through the trainer's own generation path (``GRPOTrainer._generate`` on prompts repeated per generation, as
its sampler repeats them), every completion equals ``model.generate`` with fresh components and the same
seed, cut after the first eos as TRL cuts it; the same prompts loop to the length cap without no-loop.
The model echoes its last token (output layer = input embeddings x 10), so it loops under sampling too.
"""

from __future__ import annotations

import functools

import pytest
import torch
from _noloop_helpers import EOS, first_loop_end, word_tokenizer
from hfplug_noloop import NoLoopConfig

from hfplug.testing import tiny_model

trl = pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

LOOP = dict(min_pattern_size=1, max_pattern_size=4, min_count=3, window=32, min_loop_tokens=6)
NEW = 24  # max_completion_length
GENERATIONS = 2


def echo_model():
    """A tiny Llama whose output layer is its input embeddings x 10, eos never scored: sampling at temperature
    1 mostly repeats the last token, so every row loops within a few tokens."""
    model = tiny_model("llama", "causal-lm", seed=1).eval()
    with torch.no_grad():
        model.get_output_embeddings().weight.copy_(model.get_input_embeddings().weight * 10.0)
        model.get_output_embeddings().weight[EOS].zero_()
    return model


def config(loop_action: str) -> NoLoopConfig:
    return NoLoopConfig(
        epsilon=0.2,
        start=8,
        loop_action=loop_action,
        min_pattern_size=LOOP["min_pattern_size"],
        max_pattern_size=LOOP["max_pattern_size"],
        min_count=LOOP["min_count"],
        loop_window=LOOP["window"],
        min_loop_tokens=LOOP["min_loop_tokens"],
    )


def texts(seed: int, widths: tuple[int, ...]) -> list[str]:
    generator = torch.Generator().manual_seed(seed)
    return [
        " ".join(f"t{i}" for i in torch.randint(3, 1000, (w,), generator=generator).tolist()) for w in widths
    ]


def grpo_trainer(model, tokenizer, prompts: list[str], reward=None, **overrides) -> trl.GRPOTrainer:
    args = trl.GRPOConfig(
        output_dir="/tmp/hfplug_noloop_grpo", per_device_train_batch_size=4,
        num_generations=GENERATIONS, max_completion_length=NEW, use_cpu=True, report_to=[], logging_steps=1,
        save_strategy="no", disable_tqdm=True, bf16=False, seed=0, **{"max_steps": 1, **overrides},
    )  # fmt: skip
    return trl.GRPOTrainer(
        model=model, reward_funcs=reward or (lambda completions, **kw: [0.0] * len(completions)), args=args,
        train_dataset=datasets.Dataset.from_dict({"prompt": prompts}), processing_class=tokenizer,
    )  # fmt: skip


def reference(generate, tokenizer, prompts: list[str], seed: int, **lists) -> list[list[int]]:
    """Completions of ``generate`` on the left-padded prompts, sampled at temperature 1 (GRPO's defaults),
    each cut after its first eos (TRL's completion mask)."""
    rows = [tokenizer(p)["input_ids"] for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows])
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
    torch.manual_seed(seed)
    out = generate(
        ids, attention_mask=mask, do_sample=True, max_new_tokens=NEW, pad_token_id=0, eos_token_id=[EOS],
        temperature=1.0, top_k=0, top_p=1.0, **lists,
    )  # fmt: skip
    completions = []
    for row in out[:, width:].tolist():
        completions.append(row[: row.index(EOS) + 1] if EOS in row else row)
    return completions


def test_generation_kwargs_cannot_carry_processors():
    """The documented reason: GRPOConfig.generation_kwargs ends in GenerationConfig(**generation_kwargs),
    which refuses generate()'s own arguments."""
    tokenizer = word_tokenizer()
    procs, stops = config("eos").build(tokenizer)
    for key, value in (("logits_processor", procs), ("stopping_criteria", stops)):
        with pytest.raises(
            ValueError, match=f"Argument `{key}` is not a valid argument of `GenerationConfig`"
        ):
            grpo_trainer(echo_model(), tokenizer, texts(0, (6,)), generation_kwargs={key: value})


@pytest.mark.parametrize("loop_action", ["eos", "stop"])
def test_trainer_generation_equals_generate(loop_action):
    """Three generation batches through GRPOTrainer._generate with one reused build: ragged prompts (left
    padding), the same prompts again in another order, then prompts one token wider than the last width
    seen. Each batch equals model.generate with a fresh build and the same seed; without no-loop every row
    runs to the cap and ends in a loop."""
    tokenizer = word_tokenizer()
    model = echo_model()
    plain_generate = model.generate
    procs, stops = config(loop_action).build(tokenizer)
    model.generate = functools.partial(model.generate, logits_processor=procs, stopping_criteria=stops)
    trainer = grpo_trainer(model, tokenizer, texts(0, (6,)))
    first, wider = texts(1, (6, 8)), 0
    for seed in range(3):
        prompts = texts(seed, (wider, wider)) if seed == 2 else [first, first[::-1]][seed]
        prompts = [p for p in prompts for _ in range(GENERATIONS)]  # as GRPO's RepeatSampler yields them
        torch.manual_seed(seed)
        got = trainer._generate(prompts)[1]
        fresh_procs, fresh_stops = config(loop_action).build(tokenizer)
        lists = dict(logits_processor=fresh_procs, stopping_criteria=fresh_stops)
        expected = reference(plain_generate, tokenizer, prompts, seed, **lists)
        assert got == expected, f"batch {seed}"
        wider = 8 + max(map(len, got))  # one token wider than the rows the processors saw last
        looping = reference(plain_generate, tokenizer, prompts, seed)
        assert all(len(c) == NEW and EOS not in c and first_loop_end(c, LOOP) for c in looping), (
            f"batch {seed}"
        )
        if loop_action == "eos":
            assert all(c[-1] == EOS and len(c) < NEW for c in got), f"batch {seed}"
        else:  # a row cut by the loop stop is padded to the batch's length: TRL keeps those pads
            cut = {r["row"]: r["generated_tokens"] for r in fresh_stops[0].report()}
            assert cut, "the loop stop must cut some row here"
            for row, count in cut.items():
                assert set(got[row][count:]) <= {0} and first_loop_end(got[row], LOOP) == count


def test_grpo_training_steps_end_every_completion():
    """Three GRPO steps (train(), one generation batch per step, the 4 prompts seen in a new order from step
    3 on): the reused build raises nothing, and every completion the reward function sees ends with eos
    before the cap, forced right after the first loop at the latest (the loop rule written out)."""
    tokenizer = word_tokenizer()
    model = echo_model()
    procs, stops = config("eos").build(tokenizer)
    model.generate = functools.partial(model.generate, logits_processor=procs, stopping_criteria=stops)
    seen: list[list[int]] = []

    def reward(completions, completion_ids, **kwargs):
        seen.extend(completion_ids)
        return [float(len(c)) for c in completion_ids]

    trainer = grpo_trainer(model, tokenizer, texts(3, (5, 6, 7, 8)), reward=reward, max_steps=3)
    trainer.train()
    assert len(seen) == 3 * 4
    for completion in seen:
        assert completion[-1] == EOS and len(completion) < NEW, completion
        assert first_loop_end(completion[:-1], LOOP) in (None, len(completion) - 1), completion
    logged = [log for log in trainer.state.log_history if "completions/clipped_ratio" in log]
    assert len(logged) == 3 and all(log["completions/clipped_ratio"] == 0 for log in logged)
