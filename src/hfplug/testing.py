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


def partitioned_deepspeed_config(stage: int) -> dict[str, Any]:
    """:func:`deepspeed_config` for tests on tiny models: under ZeRO-3 every parameter is partitioned
    (``stage3_param_persistence_threshold`` 0; DeepSpeed's default keeps parameters below 1e5 elements whole,
    which is every parameter of :func:`tiny_model`). ZeRO-2 is unchanged."""
    config = deepspeed_config(stage)
    if stage == 3:
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    return config


def sgd_arguments(output_dir: str, **overrides: Any):
    """``TrainingArguments`` whose steps a hand-written SGD loop reproduces exactly: ``optim="sgd"``, constant
    learning rate, weight decay 0, no clipping (``max_grad_norm=0``), examples in order
    (``train_sampling_strategy="sequential"``), a log entry every step, CPU, no reporting, saving or progress
    bar. ``overrides`` set or replace any argument (batch size, steps, ``learning_rate``, ...)."""
    from transformers import TrainingArguments

    settings: dict[str, Any] = dict(
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,
        train_sampling_strategy="sequential",
        logging_steps=1,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    return TrainingArguments(output_dir=output_dir, **{**settings, **overrides})


def deepspeed_sgd_arguments(stage: int, output_dir: str, **overrides: Any):
    """:func:`sgd_arguments` under DeepSpeed ZeRO-``stage`` (:func:`partitioned_deepspeed_config`).

    Build it before the model on a torchrun rank, after :func:`start_deepspeed_ranks`: under ZeRO-3 a model
    loaded with ``from_pretrained`` while these arguments live is partitioned at load, as users load models.
    """
    return sgd_arguments(output_dir, deepspeed=partitioned_deepspeed_config(stage), **overrides)


def start_deepspeed_ranks() -> None:
    """Start DeepSpeed's communication on a torchrun rank (gloo): call it first in a DeepSpeed test script.

    - Switches off ``deepspeed_shm_comm``, the shared-memory all-reduce kernel DeepSpeed's comm backend would
      JIT-compile at start-up (155 s on a loaded 2-core machine); it serves inference all-reduces only.
    - ``deepspeed.init_distributed(dist_backend="gloo")``: with ``use_cpu=True`` Accelerate starts
      ``torch.distributed`` but not ``deepspeed.comm``, so ``zero.Init`` inside ``from_pretrained`` would see
      one rank ("train_batch_size is not equal to ... 4 != 2 * 1 * 1").
    """
    import deepspeed
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo")


def gathered_parameters(model) -> dict[str, Any]:
    """Every named parameter of ``model`` in full, detached copies, gathered from the ZeRO-3 partitions
    (``deepspeed.zero.GatheredParameters``; a collective under ZeRO-3, so every rank calls it). Parameters
    that are not partitioned are copied as they are."""
    import deepspeed

    with deepspeed.zero.GatheredParameters(list(model.parameters())):
        return {name: value.detach().clone() for name, value in model.named_parameters()}


def deepspeed_record(trainer) -> dict[str, Any]:
    """What a DeepSpeed test compares after ``trainer.train()`` on each rank (call it on every rank):
    ``world_size``, the engine's ZeRO ``stage``, ``partitioned`` (per parameter: whether this rank holds a
    shard only), ``losses`` (the logged loss of each step, ``{step: loss}``) and ``params``
    (:func:`gathered_parameters`). Check it with :func:`assert_deepspeed_record`."""
    model = trainer.model
    return {
        "world_size": trainer.args.world_size,
        "stage": trainer.deepspeed.zero_optimization_stage(),
        "partitioned": [p.numel() == 0 for p in model.parameters()],
        "losses": {entry["step"]: entry["loss"] for entry in trainer.state.log_history if "loss" in entry},
        "params": gathered_parameters(model),
    }


def assert_deepspeed_record(record: dict[str, Any], stage: int, world_size: int = 2) -> None:
    """Assert that :func:`deepspeed_record` ``record`` comes from a ZeRO-``stage`` engine on ``world_size``
    ranks and that ZeRO-3 partitioned every parameter (ZeRO-2 none)."""
    assert (record["world_size"], record["stage"]) == (world_size, stage), record
    assert set(record["partitioned"]) == {stage == 3}, record["partitioned"]


def assert_ranks_match(
    ranks: list[dict[str, Any]], reference: dict[str, Any], rtol: float, atol: float
) -> None:
    """Assert that every rank's parameters (name -> tensor) equal rank 0's exactly and that rank 0's equal
    ``reference`` (the single-process loop's) within ``rtol`` and ``atol``, name by name."""
    import torch

    assert ranks[0].keys() == reference.keys()
    for name, value in reference.items():
        for other in ranks[1:]:
            torch.testing.assert_close(other[name], ranks[0][name], rtol=0, atol=0, msg=name)
        torch.testing.assert_close(ranks[0][name], value, rtol=rtol, atol=atol, msg=name)


def run_deepspeed_script(script, *args: str, timeout: float = 900.0):
    """:func:`run_torchrun` on 2 ranks with ``DS_ACCELERATOR=cpu`` (DeepSpeed's CPU accelerator, gloo
    without oneCCL). One launch should run every configuration a test module selected
    (:func:`selected_parameters`): each launch pays DeepSpeed's start-up."""
    return run_torchrun(script, *args, timeout=timeout, env={"DS_ACCELERATOR": "cpu"})


def selected_parameters(request, name: str) -> list[str]:
    """The values (as ``str``) of the parametrized argument ``name`` of the tests of ``request``'s module
    that this session runs (after ``-k``/``-m`` deselection), in collection order: for a module-scoped
    fixture that launches torchrun once for exactly those runs."""
    values = []
    for item in request.session.items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        if item.module is request.module and name in params:
            values.append(str(params[name]))
    return values


def import_script(path):
    """Import the torchrun script at ``path`` as a module (its ``if __name__ == "__main__"`` part does not
    run), so a test shares its constants and model builders with the single-process reference."""
    import importlib.util
    from pathlib import Path

    path = Path(path)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
