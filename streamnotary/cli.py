"""The `streamnotary` console command.

Sub-commands live in the modules that own them; each exposes `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# module path -> registers its sub-commands on the parser
_COMMAND_MODULES = (
    "streamnotary.commands.services",  # up, down, status
    "streamnotary.commands.pipeline",  # ingest, anchor, demo
    "streamnotary.commands.audit",  # audit, prove, verify-proof
    "streamnotary.commands.trust",  # keygen, trust export
    "streamnotary.commands.generate",  # generate (synthetic DWD history)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamnotary",
        description="Make a Kafka stream auditable: windows, Merkle roots, anchors, audits.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
