"""Stage 2: masked-LM pre-training of a small Chinese BERT on People's Daily (FAVOR+ or sdpa attention)."""

from __future__ import annotations

from pathlib import Path

import datasets
from transformers import (
    AutoModelForMaskedLM,
    BertConfig,
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
    Trainer,
    set_seed,
)

from .settings import DemoSettings
from .training import (
    attention_implementation,
    configure_attention,
    is_main_process,
    run_training,
    training_arguments,
    wait_for_everyone,
)


def mlm_blocks(ids: list[list[int]], tokenizer: PreTrainedTokenizerBase, max_length: int) -> datasets.Dataset:
    """Sentences joined with [SEP] and cut into ``[CLS] ... [SEP]`` blocks of ``max_length`` tokens."""
    stream = [token for sentence in ids for token in (*sentence, tokenizer.sep_token_id)]
    width = max_length - 2
    blocks = [
        [tokenizer.cls_token_id, *stream[start : start + width], tokenizer.sep_token_id]
        for start in range(0, len(stream) - width + 1, width)
    ]
    return datasets.Dataset.from_dict({"input_ids": blocks})


def bert_config(tokenizer: PreTrainedTokenizerBase, settings: DemoSettings, **kwargs) -> BertConfig:
    return BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        intermediate_size=4 * settings.hidden_size,
        max_position_embeddings=settings.max_length,
        attention_probs_dropout_prob=0.0,  # FAVOR+ has no attention matrix to drop from
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )


def pretrain_mlm(
    tokenizer: PreTrainedTokenizerBase,
    ids: list[list[int]],
    settings: DemoSettings,
    attention: str,
    seed: int,
    out_dir: Path,
    progress: bool = True,
) -> dict:
    """Pre-train for ``settings.pretrain_steps`` optimizer steps, save model + tokenizer to ``out_dir``."""
    set_seed(seed)  # model initialisation draws from the global generator
    blocks = mlm_blocks(ids, tokenizer, settings.max_length)
    model = AutoModelForMaskedLM.from_config(
        bert_config(tokenizer, settings), attn_implementation=attention_implementation(attention)
    )
    configure_attention(model, attention, settings.favor_features)
    trainer = Trainer(
        model=model,
        args=training_arguments(
            out_dir / "trainer",
            seed,
            settings.pretrain_lr,
            settings.pretrain_batch_size,
            progress,
            max_steps=settings.pretrain_steps,
        ),
        train_dataset=blocks,
        data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15),
    )
    stats = run_training(trainer)
    trainer.save_model(str(out_dir))  # rank 0 writes
    if is_main_process():
        tokenizer.save_pretrained(out_dir)
    wait_for_everyone()
    return {"blocks": len(blocks), **stats}
