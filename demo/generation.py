"""Stage 5: a small causal LM on People's Daily sentences, decoded greedily with and without no-loop."""

from __future__ import annotations

import re
import time
from pathlib import Path

import datasets
import torch
from hfplug_noloop import NoLoopConfig
from transformers import (
    AutoModelForCausalLM,
    DataCollatorForLanguageModeling,
    GPT2Config,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    set_seed,
)

import hfplug.metrics
from hfplug.metrics.ngrams import truncate_at_eos

from .settings import DemoSettings
from .training import attention_implementation, configure_attention, run_training, training_arguments

SENTENCE_END = re.compile(r"(?<=[。！？])")


def split_sentences(lines: list[str]) -> list[str]:
    """Lines cut after 。！？ (People's Daily lines are paragraphs)."""
    return [sentence for line in lines for sentence in SENTENCE_END.split(line) if sentence.strip()]


def lm_context(settings: DemoSettings) -> int:
    """Positions the LM needs: [CLS] + prompt + every new token."""
    return 1 + settings.prompt_tokens + settings.max_new_tokens


def lm_examples(
    ids: list[list[int]], tokenizer: PreTrainedTokenizerBase, settings: DemoSettings
) -> datasets.Dataset:
    """``[CLS] sentence [SEP]`` for every sentence that fits the context ([SEP] is the LM's eos)."""
    limit = lm_context(settings) - 2
    rows = [
        [tokenizer.cls_token_id, *sentence, tokenizer.sep_token_id]
        for sentence in ids
        if 0 < len(sentence) <= limit
    ]
    return datasets.Dataset.from_dict({"input_ids": rows})


def train_lm(
    tokenizer: PreTrainedTokenizerBase,
    ids: list[list[int]],
    settings: DemoSettings,
    attention: str,
    seed: int,
    out_dir: Path,
    progress: bool = True,
) -> tuple[PreTrainedModel, dict]:
    """A GPT-2-style LM with the WoBERT vocabulary, ``settings.lm_steps`` optimizer steps."""
    set_seed(seed)  # model initialisation draws from the global generator
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=lm_context(settings),
        n_embd=settings.hidden_size,
        n_layer=settings.lm_layers,
        n_head=settings.num_heads,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention_implementation(attention))
    configure_attention(model, attention, settings.favor_features)
    examples = lm_examples(ids, tokenizer, settings)
    trainer = Trainer(
        model=model,
        args=training_arguments(
            out_dir, seed, settings.lm_lr, settings.lm_batch_size, progress, max_steps=settings.lm_steps
        ),
        train_dataset=examples,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False),
    )
    return trainer.model, {"sentences": len(examples), **run_training(trainer)}


@torch.no_grad()
def generation_metrics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    settings: DemoSettings,
    noloop: bool,
) -> dict:
    """Greedy continuations of ``prompts``; non-termination at the cap, rep-4 and distinct-2 (evaluate module)."""
    kwargs = {}
    if noloop:
        config = NoLoopConfig(start=settings.noloop_start, epsilon=settings.noloop_epsilon)
        components = config.build(tokenizer)
        kwargs = {
            "logits_processor": components.logits_processor,
            "stopping_criteria": components.stopping_criteria,
        }
    if model.config._attn_implementation == "favor":  # O(1) work per token; plain generate() recomputes
        from hfplug_favor import FavorCache

        kwargs["past_key_values"] = FavorCache()
    model.eval()
    input_ids = torch.tensor([[tokenizer.cls_token_id, *prompt] for prompt in prompts])
    start = time.perf_counter()
    output = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=settings.max_new_tokens,
        eos_token_id=tokenizer.sep_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )
    seconds = time.perf_counter() - start
    generated = output[:, input_ids.shape[1] :].tolist()
    metric = hfplug.metrics.load("repetition")
    scores = metric.compute(
        predictions=generated,
        eos_token_id=tokenizer.sep_token_id,
        max_length=settings.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
    )
    lengths = [len(row) for row in truncate_at_eos(generated, tokenizer.sep_token_id, tokenizer.pad_token_id)]
    return {
        **scores,
        "mean_length": sum(lengths) / len(lengths),
        "seconds": seconds,
        "example": tokenizer.decode(output[0], skip_special_tokens=True),
    }
