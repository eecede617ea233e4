"""The demo pipeline (``python -m demo``) at smoke size: it runs end to end, is deterministic for a seed,
its table shows the run's numbers, and its training stages run on two processes with ranks in agreement."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from demo import numerics
from demo.__main__ import parse_args, run
from demo.table import render
from hfplug.data import zh_bert_dir
from hfplug.testing import run_torchrun

REPO = Path(__file__).resolve().parents[1]
# measured, or the moment and machine load of the run: everything else must repeat exactly
TIMINGS = {"seconds", "train_seconds", "latency_ms", "date", "load_average", "load_average_end"}


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    return value


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    return [
        run(
            parse_args(
                ["--preset", "smoke", "--no-progress", "--output-dir", str(tmp_path_factory.mktemp(name))]
            )
        )
        for name in ("first", "second")
    ]


def test_same_seed_gives_the_same_results(smoke_runs):
    first, second = smoke_runs
    assert without_timings(first) == without_timings(second)


def test_pipeline_shape_and_table(smoke_runs):
    results = smoke_runs[0]
    classifiers = results["classifiers"]
    assert classifiers["theseus"]["layers"] == classifiers["cross_entropy"]["layers"] // 2
    assert results["data"]["train_counts"] == [60, 10]
    assert results["tokenizers"]["word"]["reviews"] < results["tokenizers"]["char"]["reviews"]
    # the floor (start 4, epsilon 0.05) ends every greedy row within 4 + 14 < 24 new tokens
    assert results["generation"]["noloop"]["non_termination"] == 0.0
    table = render(results)
    for key in ("cross_entropy", "fgm_logit_adjusted", "theseus"):
        assert f"{classifiers[key]['balanced_accuracy']:.4f}" in table
    assert f"{results['generation']['plain']['rep_4']:.3f}" in table
    assert f"{results['tokenizers']['word']['peoples_daily']:.3f}" in table


@pytest.mark.parametrize("argv", [["--attention", "linear"], ["--threads", "0"], ["--threads", "two"]])
def test_bad_arguments_are_rejected(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert argv[0] in capsys.readouterr().err


def test_environment_is_recorded(smoke_runs):
    env = smoke_runs[0]["environment"]
    assert env["threads"] == torch.get_num_threads() and env["torch"] == torch.__version__
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()


def _has_avx2() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return platform.machine() == "x86_64" and cpuinfo.exists() and " avx2" in cpuinfo.read_text()


@pytest.mark.skipif(not _has_avx2(), reason="the kernel pin applies to x86-64 CPUs with AVX2")
@pytest.mark.parametrize(("preset", "expected"), [(None, "AVX2"), ("default", "DEFAULT")])
def test_kernel_pin_takes_effect_unless_the_user_chose(preset, expected):
    """demo.numerics caps ATen at AVX2 when called before the first kernel; a value the user set wins."""
    env = {k: v for k, v in os.environ.items() if k not in numerics.PINNED_KERNELS}
    if preset is not None:
        env["ATEN_CPU_CAPABILITY"] = preset
    code = (
        "import torch, transformers\n"  # imports run no kernel: pinning after them still works
        "from demo import numerics\n"
        "numerics.pin_cpu_kernels()\n"
        "torch.ones(4).sum()\n"
        "print(torch.backends.cpu.get_cpu_capability())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected


@pytest.mark.distributed
def test_finetune_stage_on_two_ranks_agrees(tmp_path):
    run_torchrun(REPO / "tests/_demo_finetune_ddp_script.py", str(tmp_path), env={"PYTHONPATH": str(REPO)})
    params = [torch.load(tmp_path / f"params{rank}.pt") for rank in (0, 1)]
    assert params[0].keys() == params[1].keys()
    for name in params[0]:
        torch.testing.assert_close(params[0][name], params[1][name], rtol=0, atol=0, msg=name)
    metrics = [(tmp_path / f"metrics{rank}.json").read_text() for rank in (0, 1)]
    assert metrics[0] == metrics[1] and '"world_size": 2' in metrics[0]
    pretrained = load_file(zh_bert_dir("word") / "model.safetensors")
    name = "bert.encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(params[0][name], pretrained[name].float())  # fine-tuning changed the encoder
