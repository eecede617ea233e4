"""hfplug hook implementations for hfplug-wobert (importing this module imports nothing heavy)."""

from __future__ import annotations

import hfplug


@hfplug.hookimpl
def register_tokenizers(register) -> None:
    # Importing the class module also lets AutoTokenizer resolve "WoBertTokenizer" (see tokenization_wobert).
    from hfplug_wobert.tokenization_wobert import WoBertTokenizer

    register("wobert", WoBertTokenizer)
