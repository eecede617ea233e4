"""Helpers for tests and examples: tiny randomly initialised models built from configs (no downloads)."""

from __future__ import annotations

from typing import Any

FAMILIES = ("bert", "llama", "gpt2")


def tiny_config(family: str, **overrides: Any):
    """A small config of ``family`` ("bert", "llama" or "gpt2"): 2 layers, hidden 64, 4 heads, vocab 1,000.

    The Llama config uses 2 key/value heads (grouped-query attention). ``overrides`` set any config field.
    """
    if family == "bert":
        from transformers import BertConfig

        defaults = dict(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=256,
        )
        return BertConfig(**{**defaults, **overrides})
    if family == "llama":
        from transformers import LlamaConfig

        defaults = dict(
            vocab_size=1000,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=128,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        )
        return LlamaConfig(**{**defaults, **overrides})
    if family == "gpt2":
        from transformers import GPT2Config

        defaults = dict(
            vocab_size=1000, n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=1, eos_token_id=2
        )
        return GPT2Config(**{**defaults, **overrides})
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def tiny_model(family: str, task: str = "base", seed: int = 0, **overrides: Any):
    """A tiny model of ``family`` for ``task`` ("base", "sequence-classification", "token-classification",
    "masked-lm", "causal-lm"), initialised with ``torch.manual_seed(seed)``."""
    import torch
    from transformers import (
        AutoModel,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
    )

    auto = {
        "base": AutoModel,
        "sequence-classification": AutoModelForSequenceClassification,
        "token-classification": AutoModelForTokenClassification,
        "masked-lm": AutoModelForMaskedLM,
        "causal-lm": AutoModelForCausalLM,
    }
    if task not in auto:
        raise ValueError(f"task must be one of {sorted(auto)}, got {task!r}")
    config = tiny_config(family, **overrides)
    torch.manual_seed(seed)
    return auto[task].from_config(config)


def char_tokenizer(alphabet: str = "abcdefghijklmnopqrstuvwxyz "):
    """A character-level ``PreTrainedTokenizerFast``: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, then one id per
    character of ``alphabet`` (3, 4, ...); an unknown character maps to ``<pad>``. Vocabulary size
    ``len(alphabet) + 3``: build the tiny model with ``vocab_size=len(tokenizer)``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, **{c: i + 3 for i, c in enumerate(dict.fromkeys(alphabet))}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>"
    )


def word_tokenizer(vocab_size: int = 1000, prefix: str = "w"):
    """A word-level ``PreTrainedTokenizerFast`` over the ids of a tiny model: ``<pad>`` 0, ``<unk>`` 1,
    ``<eos>`` 2, then the words ``f"{prefix}{i}"`` for i in 3 .. vocab_size - 1, split on whitespace."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<eos>": 2, **{f"{prefix}{i}": i for i in range(3, vocab_size)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def write_plugin_distribution(
    root,
    name: str,
    modules: dict[str, str],
    entry_points: dict[str, str],
    version: str = "0.0.1",
):
    """Write an installed-looking distribution into folder ``root`` (put ``root`` on ``sys.path``).

    ``modules`` maps module names to source; ``entry_points`` maps entry-point names in the ``hfplug``
    group to module names. Discovery then goes through ``importlib.metadata`` exactly as for a
    pip-installed plugin. Returns the ``.dist-info`` folder.
    """
    from pathlib import Path

    root = Path(root)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(source, encoding="utf-8")
    dist_info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir(parents=True, exist_ok=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n", encoding="utf-8"
    )
    lines = ["[hfplug]", *(f"{ep} = {module}" for ep, module in entry_points.items())]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dist_info


def run_torchrun(
    script, *args: str, nproc: int = 2, timeout: float = 300.0, env: dict[str, str] | None = None
):
    """Run ``script`` under ``torchrun --nproc_per_node nproc`` (gloo on CPU) and return the CompletedProcess.

    Raises ``AssertionError`` with both output streams when the launch fails. The script typically writes
    its results (parameters, metrics) to a path passed in ``args`` for the test to compare.
    """
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a free port, so parallel runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={nproc}",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        str(script),
        *args,
    ]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=full_env)
    if result.returncode != 0:
        raise AssertionError(
            f"torchrun failed with exit code {result.returncode}\n--- stdout ---\n{result.stdout[-5000:]}"
            f"\n--- stderr ---\n{result.stderr[-5000:]}"
        )
    return result


def deepspeed_config(stage: int) -> dict[str, Any]:
    """The DeepSpeed config of ``examples/configs/deepspeed_zero{stage}.json`` (stage 2 or 3), for
    ``TrainingArguments(deepspeed=...)``.

    Every batch, accumulation and clipping value is ``"auto"`` (the Trainer fills them from its arguments) and
    there is no ``optimizer`` section: the Trainer's own torch optimizer is wrapped by ZeRO
    (``zero_allow_untested_optimizer``), so no DeepSpeed op is compiled and the config runs on CPU ranks
    (``DS_ACCELERATOR=cpu``). Stage 3 gathers the 16-bit weights when the model is saved.
    """
    if stage not in (2, 3):
        raise ValueError(f"stage must be 2 or 3, got {stage!r}")
    zero: dict[str, Any] = {"stage": stage}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    return {
        "zero_optimization": zero,
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
    }


def finish_distributed() -> None:
    """End a torchrun script: barrier, destroy the process group (if one is running), flush the output
    streams and leave the process with ``os._exit(0)``. Call it as the last line of a script run by
    :func:`run_torchrun`, after every result is written.

    gloo's background threads can abort a rank at interpreter teardown ("terminate called without an
    active exception", SIGABRT) after all the work succeeded, even after ``destroy_process_group``: seen
    in the DDP and FSDP test scripts on a loaded machine. Skipping the teardown removes that failure; the
    tests assert on the files the ranks wrote.
    """
    import os
    import sys

    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def junk_values():
    """A hypothesis strategy of values a numeric, boolean or id argument must reject or handle.

    Draws from NaN, +-inf, zero, negatives, tiny and huge floats, huge ints, bools, strings, None, lists
    and arbitrary floats and ints. For property tests of public constructors and functions: each value
    either gives a clean error (:func:`assert_names_argument`) or a working object. Needs ``hypothesis``
    (a test dependency), imported here so ``hfplug.testing`` itself does not require it.
    """
    import math

    from hypothesis import strategies as st

    special = st.sampled_from(
        [
            math.nan,
            math.inf,
            -math.inf,
            0,
            0.0,
            -0.0,
            -1,
            -1.5,
            1e-300,
            1e38,
            1e300,
            10**18,
            -(10**18),
            True,
            False,
            "1",
            "no",
            "",
            None,
            [],
            [1],
            (1, 2),
        ]
    )
    return st.one_of(special, st.floats(), st.integers(-(10**12), 10**12), st.text(max_size=3))


def assert_names_argument(error: BaseException, name: str) -> None:
    """Assert that ``error`` is the clean error for a bad argument: a TypeError or ValueError (not a
    subclass raised from deep inside torch, such as ``RuntimeError``) whose message names ``name``."""
    assert isinstance(error, (TypeError, ValueError)), f"{type(error).__name__}: {error}"
    assert name in str(error), f"the error does not name {name!r}: {error}"
