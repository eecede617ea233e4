"""hfplug hook implementations for hfplug-wobert (importing this module imports nothing heavy)."""

from __future__ import annotations

import hfplug
from hfplug.hookspecs import RegisterTokenizer


@hfplug.hookimpl
def register_tokenizers(register: RegisterTokenizer) -> None:
    # A lazy reference: loading plugins imports nothing. The first lookup (hfplug.get_tokenizer_class("wobert"))
    # imports the class module, which also lets AutoTokenizer resolve "WoBertTokenizer" (see tokenization_wobert).
    register("wobert", "hfplug_wobert.tokenization_wobert:WoBertTokenizer")
