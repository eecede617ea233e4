"""Stage 2: the pretrained base the classifiers start from (zh-bert, word level) and what pre-training reached."""

from __future__ import annotations

import json
from pathlib import Path

from hfplug.data import zh_bert_dir


def pretrained_base() -> tuple[Path, dict]:
    """The word-level zh-bert folder and a summary of its ``pretraining.json``: shape, masked-LM steps (the char
    steps it started from included), held-out masked-LM loss and masked-token accuracy, weights' sha256."""
    folder = zh_bert_dir("word")
    record = json.loads((folder / "pretraining.json").read_text("utf-8"))
    return folder, {
        "checkpoint": "zh-bert word",
        "layers": record["shape"]["num_hidden_layers"],
        "hidden_size": record["shape"]["hidden_size"],
        "mlm_steps": record["steps_before"] + record["steps"],
        "held_out_loss": record["held_out"]["loss"],
        "held_out_accuracy": record["held_out"]["accuracy"],
        "sha256": record["sha256"]["model.safetensors"],
    }
