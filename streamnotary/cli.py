"""The `streamnotary` console command.

Sub-commands live in the modules that own them; each exposes `register(subparsers)`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# module path -> registers its sub-commands on the parser
_COMMAND_MODULES = (
    "streamnotary.commands.services",  # up, down, status
    "streamnotary.commands.pipeline",  # ingest, anchor, demo
    "streamnotary.commands.audit",  # audit, prove, verify-proof
    "streamnotary.commands.repair",  # repair (unfinished plans, the topic lease)
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


# Prefect settings for this process and everything it starts (a temporary Prefect server
# when PREFECT_API_URL is unset, flow-run subprocesses): no anonymous usage heartbeat, which
# fails offline ("Failed to send telemetry") and, on a temporary server's SQLite, raced the
# first flow run ("database is locked"). An operator's explicit value wins.
QUIET_PREFECT = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def main(argv: list[str] | None = None) -> int:
    for name, value in QUIET_PREFECT.items():
        os.environ.setdefault(name, value)
    parser = build_parser()
    args = parser.parse_args(argv)
    _report_to_local_prefect(args)
    return int(args.func(args) or 0)


def _report_to_local_prefect(args: argparse.Namespace) -> None:
    """Flows of this command report to the Prefect server `up` started, if it runs
    (no temporary server start per command; runs show in its UI)."""
    from pathlib import Path

    from streamnotary.config import default_home
    from streamnotary.prefect_server import use_local_server

    home = getattr(args, "home", None)
    use_local_server(Path(home).expanduser().resolve() if home else default_home())


if __name__ == "__main__":
    sys.exit(main())
