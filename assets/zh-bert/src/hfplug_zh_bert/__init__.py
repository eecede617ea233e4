"""Data package: the zh-bert checkpoints (``char/`` and ``word/``); find them with ``hfplug.data.zh_bert_dir``."""
