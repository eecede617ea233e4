"""Cost of the passes the methods are made of, on the step-time benchmark's model and batch.

Measures (process CPU time, median of interleaved repeats, one torch thread): a train-mode forward ``F``; a
forward plus a full backward (parameter and input gradients) ``F+B``; a forward plus a backward to the
embedding output only (``torch.autograd.grad``, no parameter gradients) ``F+Bin``; and the Trainer's
per-step extras ``O`` (gradient clipping to norm 1, AdamW step, zero_grad). From them it prints each
method's step cost implied by its pass count, as a ratio to a plain step ``F+B+O``: the lower bound any
implementation of that algorithm reaches on this machine.

    python plugins/adversarial/bench/profile_passes.py     # writes bench/results/passes.json
    python plugins/adversarial/bench/profile_passes.py --name passes_repeat   # bench/results/passes_repeat.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from bench_step_time import RESULTS, TARGETS, make_batch, make_model


def main(repeats: int = 7, name: str = "passes") -> None:
    torch.set_num_threads(1)
    model = make_model()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = make_batch()
    wemb = model.get_input_embeddings()
    ids, am, y = batch["input_ids"], batch["attention_mask"], batch["labels"]

    def loss_and_embeds():
        e = wemb(ids)
        return model(inputs_embeds=e, attention_mask=am, labels=y).loss, e

    def forward():
        loss_and_embeds()

    def forward_backward():
        loss_and_embeds()[0].backward()

    def forward_input_backward():
        loss, e = loss_and_embeds()
        torch.autograd.grad(loss, e)

    def extras():
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=False)

    parts = {"F": forward, "F+B": forward_backward, "F+Bin": forward_input_backward, "O": extras}
    forward_backward()  # gradients exist for the optimizer part
    times: dict[str, list[float]] = {k: [] for k in parts}
    for fn in parts.values():
        fn()  # warm-up
    for _ in range(repeats):
        for name, fn in parts.items():
            start = time.process_time()
            fn()
            times[name].append(time.process_time() - start)
    m = {k: statistics.median(v) for k, v in times.items()}
    f, b, b_in, o = m["F"], m["F+B"] - m["F"], m["F+Bin"] - m["F"], m["O"]
    plain = f + b + o
    bounds = {  # passes of each published algorithm (see the docs page)
        "FGM": (2 * f + b_in + b + o) / plain,
        "FGSM": (2 * f + b_in + b + o) / plain,
        "PGD-3": (4 * f + 3 * b_in + b + o) / plain,
        "FreeLB-3": (3 * f + 3 * b + o) / plain,
        "SMART": (3 * f + b_in + 2 * b + o) / plain,
    }
    result = {
        "load_average": os.getloadavg(),
        "repeats": repeats,
        "median_cpu_s": {"F": f, "B": b, "Bin": b_in, "O": o},
        "pass_count_ratio": bounds,
        "targets": {k: TARGETS[k] for k in bounds},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default="passes", help="results file name, without .json")
    main(name=parser.parse_args().name)
