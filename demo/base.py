"""Stage 2: the pretrained base the classifiers start from (zh-bert, word level) and what pre-training reached."""

from __future__ import annotations

import json
from pathlib import Path

from hfplug.data import zh_bert_dir, zh_bert_record


def pretrained_base() -> tuple[Path, dict]:
    """The word-level zh-bert folder and what the demo records about it: shape and ``zh_bert_record``."""
    folder = zh_bert_dir("word")
    config = json.loads((folder / "config.json").read_text("utf-8"))
    shape = {"layers": config["num_hidden_layers"], "hidden_size": config["hidden_size"]}
    return folder, {"checkpoint": "zh-bert word", **shape, **zh_bert_record("word")}
