"""Decode speed of ``generate()`` with FAVOR+ attention: tokens per second on tiny random Llama and GPT-2.

For each family (2 layers, hidden 64, 4 heads, vocab 1,000; FavorConfig() defaults, m = 256), batch 1, a
16-token prompt and N new tokens (greedy, no early stop), the best of ``--repeats`` rounds (after one
warm-up round; each round runs every mode once) of:

- ``sdpa``: the same weights with transformers' sdpa attention and plain ``generate()`` (the baseline);
- ``favor_plain``: plain ``generate()`` on the favor model, nothing passed;
- ``favor_dynamic``: ``generate(..., cache_implementation="dynamic")``;
- ``favor_cache``: ``generate(..., past_key_values=FavorCache())``.

Each entry records the cache class ``generate`` returned, tokens/s and the ratio to sdpa in the same run.

    python examples/favor_decode_tokens_per_second.py --label after

Results are merged under ``--label`` into examples/results/favor_decode_tokens_per_second.json (run it on
two checkouts with different labels to compare them; each label keeps its machine, load and date).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import time
from pathlib import Path

import torch
from hfplug_favor import FavorCache, FavorConfig, set_favor_config

import hfplug
from hfplug.testing import tiny_model

RESULT = Path(__file__).parent / "results" / "favor_decode_tokens_per_second.json"
PROMPT = 16
OVERRIDES = {"llama": dict(max_position_embeddings=512), "gpt2": dict(n_positions=512)}
MODES = {
    "favor_plain": lambda: {},
    "favor_dynamic": lambda: {"cache_implementation": "dynamic"},
    "favor_cache": lambda: {"past_key_values": FavorCache()},
}


def generate_seconds(model, prompt: torch.Tensor, new_tokens: int, options: dict) -> tuple[float, str]:
    """Wall seconds of greedy ``generate`` producing exactly ``new_tokens``, and the cache class it returned."""
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
            return_dict_in_generate=True,
            **options,
        )
    seconds = time.perf_counter() - start
    assert out.sequences.shape[1] == PROMPT + new_tokens
    return seconds, type(out.past_key_values).__name__


def measure(new_tokens: tuple[int, ...], repeats: int) -> dict:
    """Per family and N: the modes run round-robin ``repeats`` times after one warm-up round (so load changes
    hit every mode alike); best time per mode."""
    hfplug.use_attention("favor")
    prompt = torch.randint(5, 1000, (1, PROMPT), generator=torch.Generator().manual_seed(0))
    results = {}
    for family, overrides in OVERRIDES.items():
        sdpa, favor = (tiny_model(family, "causal-lm", **overrides).eval() for _ in range(2))  # same weights
        sdpa.set_attn_implementation("sdpa")
        favor.set_attn_implementation("favor")
        set_favor_config(favor, FavorConfig())
        runs = {"sdpa": (sdpa, dict), **{mode: (favor, options) for mode, options in MODES.items()}}
        for n in new_tokens:
            best, caches = dict.fromkeys(runs, float("inf")), {}
            for round_ in range(repeats + 1):
                for mode, (model, options) in runs.items():
                    seconds, caches[mode] = generate_seconds(model, prompt, n, options())
                    if round_:
                        best[mode] = min(best[mode], seconds)
            row = {
                mode: {
                    "tokens_per_second": round(n / best[mode], 1),
                    "ratio_to_sdpa": round(best["sdpa"] / best[mode], 3),
                    "cache": caches[mode],
                }
                for mode in runs
            }
            results[f"{family}/{n}"] = row
            print(family, n, json.dumps(row))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True, help="key of this run in the JSON (e.g. before, after)")
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    results = measure(tuple(args.new_tokens), args.repeats)
    data = json.loads(RESULT.read_text()) if RESULT.exists() else {}
    data[args.label] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, 1 thread",
        "load_average_start_end": [load_at_start, [round(x, 2) for x in os.getloadavg()]],
        "date": datetime.date.today().isoformat(),
        "prompt_tokens": PROMPT,
        "results": results,
    }
    RESULT.parent.mkdir(exist_ok=True)
    RESULT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {RESULT}")


if __name__ == "__main__":
    main()
