"""The hfplug demo: one pipeline through every plugin on bundled real data (``python -m demo``)."""
