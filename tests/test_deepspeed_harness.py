"""The DeepSpeed test harness of hfplug.testing, checked without launching ranks."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfplug.testing import (
    assert_deepspeed_record,
    assert_ranks_match,
    deepspeed_config,
    import_script,
    sgd_arguments,
    tiny_model,
)

# what a hand-written SGD loop reproduces, written out here (not read from the helper)
SGD_SETTINGS = {
    "optim": "sgd",
    "lr_scheduler_type": "constant",
    "weight_decay": 0.0,
    "max_grad_norm": 0.0,
    "train_sampling_strategy": "sequential",
    "logging_steps": 1,
    "use_cpu": True,
    "report_to": [],
    "save_strategy": "no",
    "disable_tqdm": True,
}


def _settings(args) -> dict:
    values = {name: getattr(args, name) for name in SGD_SETTINGS}
    for name in ("optim", "lr_scheduler_type", "save_strategy"):  # enums in TrainingArguments
        values[name] = getattr(values[name], "value", values[name])
    return values


def test_sgd_arguments_values_and_overrides(tmp_path: Path):
    args = sgd_arguments(str(tmp_path), learning_rate=0.25, max_grad_norm=1.0, per_device_train_batch_size=3)
    assert _settings(args) == {**SGD_SETTINGS, "max_grad_norm": 1.0}
    assert (args.learning_rate, args.per_device_train_batch_size, args.output_dir) == (0.25, 3, str(tmp_path))
    assert args.deepspeed is None


@pytest.fixture
def forget_deepspeed_config():
    """TrainingArguments(deepspeed=...) makes every later from_pretrained build under zero.Init: undo it."""
    yield
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()


@pytest.mark.parametrize(
    "stage, zero",
    [
        (2, {"stage": 2}),
        (
            3,
            {
                "stage": 3,
                "stage3_gather_16bit_weights_on_model_save": True,
                "stage3_param_persistence_threshold": 0,
            },
        ),
    ],
)
def test_deepspeed_sgd_arguments_partition_every_parameter_under_zero3(
    stage, zero, tmp_path: Path, monkeypatch, forget_deepspeed_config
):
    pytest.importorskip(
        "deepspeed", reason="DeepSpeed is an optional dependency: pip install 'hfplug[deepspeed]'"
    )
    from hfplug.testing import deepspeed_sgd_arguments

    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    shipped = deepspeed_config(stage)
    args = deepspeed_sgd_arguments(stage, str(tmp_path), learning_rate=0.5, max_steps=3)
    assert _settings(args) == SGD_SETTINGS
    assert (args.learning_rate, args.max_steps) == (0.5, 3)
    assert args.deepspeed == {**shipped, "zero_optimization": zero}
    assert deepspeed_config(stage) == shipped  # the shipped config is not changed behind the caller's back


def test_gathered_parameters_copies_every_parameter_of_an_unpartitioned_model():
    pytest.importorskip(
        "deepspeed", reason="DeepSpeed is an optional dependency: pip install 'hfplug[deepspeed]'"
    )
    from hfplug.testing import gathered_parameters

    model = tiny_model("bert", "sequence-classification")
    params = gathered_parameters(model)
    named = dict(model.named_parameters())
    assert params.keys() == named.keys()
    for name, value in params.items():
        assert torch.equal(value, named[name]) and not value.requires_grad, name
        assert value.data_ptr() != named[name].data_ptr(), name  # a copy: the next step does not change it


def test_record_and_rank_checks_fail_on_a_difference():
    record = {"world_size": 2, "stage": 3, "partitioned": [True, True]}
    assert_deepspeed_record(record, 3)
    for bad in ({"partitioned": [True, False]}, {"stage": 2}, {"world_size": 1}):
        with pytest.raises(AssertionError):
            assert_deepspeed_record({**record, **bad}, 3)
    with pytest.raises(AssertionError):
        assert_deepspeed_record({**record, "stage": 2}, 2)  # ZeRO-2 holds whole parameters

    reference = {"w": torch.tensor([1.0, 2.0])}
    rank0 = {"w": torch.tensor([1.0, 2.0 + 1e-6])}
    assert_ranks_match([rank0, {"w": rank0["w"].clone()}], reference, rtol=1e-5, atol=0)
    with pytest.raises(AssertionError):  # ranks must agree to the bit
        assert_ranks_match([rank0, {"w": torch.tensor([1.0, 2.0])}], reference, rtol=1e-5, atol=0)
    with pytest.raises(AssertionError):  # and rank 0 must be within the tolerance of the reference
        assert_ranks_match([rank0], reference, rtol=1e-7, atol=0)
    with pytest.raises(AssertionError):  # and hold every parameter of the reference
        assert_ranks_match([rank0], {**reference, "b": torch.zeros(1)}, rtol=1e-5, atol=0)


def test_import_script_shares_definitions_without_running_main(tmp_path: Path):
    script = tmp_path / "_some_script.py"
    script.write_text(
        'STEPS = 3\nif __name__ == "__main__":\n    raise SystemExit("ran")\n', encoding="utf-8"
    )
    module = import_script(script)
    assert module.STEPS == 3 and module.__name__ == "_some_script"


SELECTION_MODULE = """
import pytest
from hfplug.testing import selected_parameters

@pytest.fixture(scope="module")
def launched(request):
    print("SELECTED", request.module.__name__, selected_parameters(request, "stage"))

@pytest.mark.parametrize("stage", [pytest.param(3, id="three"), pytest.param(2, marks=pytest.mark.slow, id="two")])
def test_stage(stage, launched):
    pass

@pytest.mark.parametrize("stage", [7])
def test_seven(stage):
    pass

@pytest.mark.parametrize("run", ["x"])
def test_other_argument(run):
    pass
"""


@pytest.mark.parametrize(
    "options, expected",
    [
        ([], {"test_alpha": ["3", "2", "7"], "test_beta": ["3", "2", "7"]}),
        (["-m", "not slow"], {"test_alpha": ["3", "7"], "test_beta": ["3", "7"]}),
        (["-k", "test_alpha and two"], {"test_alpha": ["2"]}),
    ],
)
def test_selected_parameters_are_this_modules_selected_runs(options, expected, tmp_path: Path):
    """A real pytest session: the fixture sees the parameter values of its own module's selected tests only."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    slow: slow\n", encoding="utf-8")
    for name in ("test_alpha", "test_beta"):
        (tmp_path / f"{name}.py").write_text(SELECTION_MODULE, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-s", "-q", "-p", "no:cacheprovider", *options, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        env={
            k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"
        },  # CI's own -m "not slow" stays out
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen = {m[0]: ast.literal_eval(m[1]) for m in re.findall(r"SELECTED (\w+) (\[.*?\])", result.stdout)}
    assert seen == expected
