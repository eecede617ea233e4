"""hfplug hook implementations for hfplug-wobert (nothing heavy at import)."""

from __future__ import annotations

import hfplug


@hfplug.hookimpl
def register_tokenizers(register) -> None:
    # Importing the package also lets AutoTokenizer resolve "WoBertTokenizer" (see hfplug_wobert.__init__).
    from hfplug_wobert import WoBertTokenizer

    register("wobert", WoBertTokenizer)
