"""The `vllm-elastic` console script: `vllm-elastic tune ...` (tools/tune/command.py)."""

from __future__ import annotations

import sys

COMMANDS = {"tune": "vllm_elastic.tools.tune.command"}


def main(argv: list[str] | None = None) -> None:
    import importlib

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        raise SystemExit(f"usage: vllm-elastic {{{','.join(COMMANDS)}}} ...")
    importlib.import_module(COMMANDS[argv[0]]).main(argv[1:])
