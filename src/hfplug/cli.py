"""``hfplug`` command line: ``hfplug plugins [--json]``."""

from __future__ import annotations

import argparse
import json
import sys

from .api import list_plugins


def _print_table(plugins: list[dict]) -> None:
    if not plugins:
        print("No hfplug plugins installed (or HFPLUG_PLUGINS selects none).")
        return
    for plugin in plugins:
        print(f"{plugin['name']} {plugin['version']}  [{plugin['entry_point']} -> {plugin['module']}]")
        if plugin["error"]:
            print(f"    ERROR: {plugin['error']}")
            continue
        for conflict in plugin["conflicts"]:
            print(f"    CONFLICT: {conflict}")
        print(f"    hooks: {', '.join(plugin['hooks']) or '-'}")
        for kind, names in plugin["registered"].items():
            print(f"    {kind}: {', '.join(names)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hfplug", description="Inspect installed hfplug plugins.")
    sub = parser.add_subparsers(dest="command", required=True)
    plugins = sub.add_parser("plugins", help="list installed plugins, their hooks and registered names")
    plugins.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    if args.command == "plugins":
        listing = list_plugins()
        if args.json:
            json.dump(listing, sys.stdout, indent=2)
            print()
        else:
            _print_table(listing)
        return 1 if any(p["error"] or p["conflicts"] for p in listing) else 0
    return 2  # unreachable: argparse enforces the sub-command


if __name__ == "__main__":
    sys.exit(main())
