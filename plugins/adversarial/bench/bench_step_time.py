"""Step time of each adversarial callback relative to a plain Trainer step, beside hand-written loops.

BertForSequenceClassification (hidden 256, 4 layers, 4 heads, intermediate 1024, vocab 21128), batch 32 x 128
random tokens, CPU float32, AdamW, dropout 0.1, one torch thread. Trainer configurations and hand-written
PyTorch steps are interleaved over ``--rounds`` rounds; each value is the median step time, measured as process
CPU time (robust to other jobs on a shared machine) and as wall time. Peak memory: one subprocess per
configuration, peak RSS growth during training (VmHWM, reset just before ``train()``, minus the RSS then).

    python plugins/adversarial/bench/bench_step_time.py    # writes bench/results/step_time.{json,png}
    python plugins/adversarial/bench/bench_step_time.py --rounds 2 --name step_time_repeat   # a repeat run
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from hfplug_adversarial import FGM, FGSM, PGD, SMART, FreeLB, GradientPenalty
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

BATCH, LENGTH = 32, 128
RESULTS = Path(__file__).parent / "results"

CALLBACKS = {
    "plain": lambda: None,
    "FGM": lambda: FGM(epsilon=1.0),
    "FGM objective=sum": lambda: FGM(epsilon=1.0, objective="sum"),
    "FGSM": lambda: FGSM(),
    "PGD-3": lambda: PGD(steps=3),
    "FreeLB-3": lambda: FreeLB(steps=3),
    "GradientPenalty": lambda: GradientPenalty(),
    "SMART": lambda: SMART(),
}
TARGETS = {"FGM": 2.1, "FGSM": 2.1, "PGD-3": 4.2, "FreeLB-3": 4.2, "GradientPenalty": 2.5, "SMART": 2.6}


def make_model(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024, vocab_size=21128,
        num_labels=2,
    )  # fmt: skip
    return BertForSequenceClassification(config)


def make_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "input_ids": torch.randint(1000, 21128, (BATCH, LENGTH), generator=g),
        "attention_mask": torch.ones(BATCH, LENGTH, dtype=torch.long),
        "labels": torch.randint(0, 2, (BATCH,), generator=g),
    }


class Repeat(torch.utils.data.Dataset):
    def __init__(self, batch, n):
        self.batch, self.n = batch, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {k: v[i % BATCH] for k, v in self.batch.items()}


def now() -> tuple[float, float]:
    return time.process_time(), time.perf_counter()


def since(start: tuple[float, float]) -> tuple[float, float]:
    cpu, wall = now()
    return cpu - start[0], wall - start[1]


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self.start = [], (0.0, 0.0)

    def on_step_begin(self, args, state, control, **kwargs):
        self.start = now()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(since(self.start))


def trainer_for(name: str, steps: int, timer: TrainerCallback | None = None) -> Trainer:
    args = TrainingArguments(
        "/tmp/hfplug_adversarial_bench", per_device_train_batch_size=BATCH, max_steps=steps, learning_rate=1e-4,
        use_cpu=True, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    callbacks = [c for c in (CALLBACKS[name](), timer) if c is not None]
    return Trainer(make_model(), args, train_dataset=Repeat(make_batch(), BATCH * steps), callbacks=callbacks)


def trainer_step_times(name: str, warmup: int, measured: int) -> list[tuple[float, float]]:
    timer = StepTimer()
    trainer_for(name, warmup + measured, timer).train()
    return timer.times[warmup:]


# ---- hand-written PyTorch steps (the baseline each callback replaces) ------------------------------------
def hand_steps():
    model = make_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = make_batch()
    ids, am, y = batch["input_ids"], batch["attention_mask"], batch["labels"]
    wemb = model.get_input_embeddings()

    def loss_at(delta=None):
        e = wemb(ids)
        return model(inputs_embeds=e if delta is None else e + delta, attention_mask=am, labels=y).loss

    def clean_grad():
        e = wemb(ids)
        loss = model(inputs_embeds=e, attention_mask=am, labels=y).loss
        return torch.autograd.grad(loss, e)[0]

    def plain():
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, attention_mask=am, labels=y).loss.backward()
        opt.step()

    def fgm():
        opt.zero_grad(set_to_none=True)
        g = clean_grad()
        loss_at(g / (g.norm() + 1e-8)).backward()
        opt.step()

    def fgm_weight_snippet():  # the popular snippet (anchor-measurements §4): weight edit, clean + adversarial
        opt.zero_grad(set_to_none=True)
        model(input_ids=ids, attention_mask=am, labels=y).loss.backward()
        w = wemb.weight
        backup, n = w.data.clone(), w.grad.norm()
        w.data.add_(w.grad / n)
        model(input_ids=ids, attention_mask=am, labels=y).loss.backward()
        w.data.copy_(backup)
        opt.step()

    def fgsm():
        opt.zero_grad(set_to_none=True)
        loss_at(0.01 * clean_grad().sign()).backward()
        opt.step()

    def project(d, eps=1.0):
        return d * torch.clamp(eps / (d.norm() + 1e-8), max=1.0)

    def pgd3():
        opt.zero_grad(set_to_none=True)
        g, d = clean_grad(), 0.0
        for k in range(3):
            d = project(d + 0.3 * g / (g.norm() + 1e-8))
            if k < 2:
                dd = d.detach().requires_grad_()
                g = torch.autograd.grad(loss_at(dd), dd)[0]
        loss_at(d).backward()
        opt.step()

    def freelb3():
        opt.zero_grad(set_to_none=True)
        e = wemb(ids)
        d = (2 * torch.rand_like(e) - 1) / (LENGTH * e.shape[-1]) ** 0.5
        for k in range(3):
            dd = d.detach().requires_grad_()
            loss = loss_at(dd) / 3
            loss.backward()  # parameter gradients accumulate over the ascent steps
            if k < 2:
                g = dd.grad
                n = g.flatten(1).norm(dim=1).view(-1, 1, 1)
                d = dd.detach() + 0.1 * g / (n + 1e-8)
                d = d * torch.clamp(1.0 / (d.flatten(1).norm(dim=1).view(-1, 1, 1) + 1e-8), max=1.0)
        opt.step()

    def gradient_penalty():
        opt.zero_grad(set_to_none=True)
        e = wemb(ids)
        with sdpa_kernel(SDPBackend.MATH):  # the fused kernels have no double backward
            loss = model(inputs_embeds=e, attention_mask=am, labels=y).loss
        (ge,) = torch.autograd.grad(loss, e, create_graph=True)
        (loss + 0.5 * ge.pow(2).sum()).backward()
        opt.step()

    def smart():
        opt.zero_grad(set_to_none=True)
        e = wemb(ids)
        out = model(inputs_embeds=e, attention_mask=am, labels=y)
        noise = (1e-5 * torch.randn_like(e)).requires_grad_()
        adv = model(inputs_embeds=e.detach() + noise, attention_mask=am).logits
        p = out.logits.detach().float().log_softmax(-1)
        kl = (p.exp() * (p - adv.float().log_softmax(-1))).sum()
        step = noise + 1e-3 * torch.autograd.grad(kl, noise)[0]
        delta = (step / (step.abs().amax(-1, keepdim=True) + 1e-8)).detach()
        q = model(inputs_embeds=wemb(ids) + delta, attention_mask=am).logits.float().log_softmax(-1)
        pl = out.logits.float().log_softmax(-1)
        sym = (pl.detach().exp() * (pl.detach() - q)).sum(-1) + (q.detach().exp() * (q.detach() - pl)).sum(-1)
        (out.loss + sym.mean()).backward()
        opt.step()

    return {
        "plain": plain,
        "FGM": fgm,
        "FGM weight snippet (clean + adv)": fgm_weight_snippet,
        "FGSM": fgsm,
        "PGD-3": pgd3,
        "FreeLB-3": freelb3,
        "GradientPenalty": gradient_penalty,
        "SMART": smart,
    }


def timed(fn) -> tuple[float, float]:
    start = now()
    fn()
    return since(start)


def status_kib(field: str) -> int:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def peak_memory_child(name: str) -> None:
    trainer = trainer_for(name, 3)
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS mark (VmHWM)
    before = status_kib("VmRSS")
    trainer.train()
    print(json.dumps({"before": before, "peak": status_kib("VmHWM")}))


def peak_memory(name: str) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--memory-child", name], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def plot(result: dict, path: Path) -> None:
    """Grouped bars: Trainer + callback and hand-written loop, ratio to their plain step; target as a tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n in CALLBACKS if n != "plain"]
    x = range(len(names))
    fig, ax = plt.subplots(figsize=(8, 3.6))
    ax.bar([i - 0.2 for i in x], [result["trainer_ratio"][n] for n in names], 0.4, label="Trainer + callback")
    hand = [result["hand_ratio"].get(n, float("nan")) for n in names]
    ax.bar([i + 0.2 for i in x], hand, 0.4, label="hand-written loop")
    targets = [(i, TARGETS[n]) for i, n in enumerate(names) if n in TARGETS]
    ax.scatter(
        [i for i, _ in targets], [t for _, t in targets], marker="_", s=900, color="k", label="issue target"
    )
    ax.set_xticks(list(x), names, rotation=20, ha="right")
    ax.set_ylabel("step time / plain step (CPU time)")
    ax.set_title(
        f"BERT h256 L4, batch {BATCH} x {LENGTH}, CPU fp32, 1 thread (load {result['load_average_start'][0]:.1f})"
    )
    ax.set_ylim(0, 5.2)
    ax.legend(frameon=False, fontsize=8, loc="upper left", ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--steps", type=int, default=2, help="measured Trainer steps per round (after 1 warm-up)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: fairer on a shared machine)"
    )
    parser.add_argument("--name", default="step_time", help="results file name, without .json / .png")
    parser.add_argument("--memory-child")
    cli = parser.parse_args()
    torch.set_num_threads(cli.threads)
    if cli.memory_child:
        peak_memory_child(cli.memory_child)
        return
    load_start, started = os.getloadavg(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    trainer_times: dict[str, list[tuple[float, float]]] = {name: [] for name in CALLBACKS}
    hand = hand_steps()
    hand_times: dict[str, list[tuple[float, float]]] = {name: [] for name in hand}
    for _ in range(cli.rounds):
        for name in CALLBACKS:
            trainer_times[name] += trainer_step_times(name, 1, cli.steps)
            print(name, [round(cpu, 3) for cpu, _ in trainer_times[name]], flush=True)
        for name, fn in hand.items():
            fn()  # warm-up
            hand_times[name] += [timed(fn) for _ in range(cli.steps)]

    def medians(times, which):
        return {k: statistics.median(t[which] for t in v) for k, v in times.items()}

    def ratios(values):
        return {k: v / values["plain"] for k, v in values.items()}

    memory = {name: peak_memory(name) for name in ("plain", "FGM", "FGM objective=sum")}
    growth = {k: v["peak"] - v["before"] for k, v in memory.items()}
    trainer_cpu, hand_cpu = medians(trainer_times, 0), medians(hand_times, 0)
    trainer_wall, hand_wall = medians(trainer_times, 1), medians(hand_times, 1)
    result = {
        "setup": f"BertForSequenceClassification h256 L4, batch {BATCH} x {LENGTH}, CPU fp32, AdamW",
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "note": "shared 2-core machine, other jobs may run: ratios of CPU time are the reliable ones",
        "started_utc": started,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "rounds": cli.rounds,
        "steps_per_round": cli.steps,
        "trainer_cpu_s": trainer_cpu,
        "trainer_ratio": ratios(trainer_cpu),
        "hand_cpu_s": hand_cpu,
        "hand_ratio": ratios(hand_cpu),
        "trainer_wall_s": trainer_wall,
        "trainer_wall_ratio": ratios(trainer_wall),
        "hand_wall_s": hand_wall,
        "hand_wall_ratio": ratios(hand_wall),
        "targets": TARGETS,
        "peak_rss_bytes": memory,
        "peak_rss_growth_ratio": {k: v / growth["plain"] for k, v in growth.items()},
        "peak_rss_total_ratio": {k: v["peak"] / memory["plain"]["peak"] for k, v in memory.items()},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{cli.name}.json").write_text(json.dumps(result, indent=2))
    plot(result, RESULTS / f"{cli.name}.png")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
