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
    """The console command. Run as a program (`argv` None), a command is handed to the
    home's warm runner when one is up (`streamnotary.warm_client`), else it runs here."""
    if argv is None:
        from streamnotary.warm_client import run_warm, wants_warm

        argv = sys.argv[1:]
        if wants_warm(argv):
            code = run_warm(argv)
            if code is not None:
                return code
    for name, value in QUIET_PREFECT.items():
        os.environ.setdefault(name, value)
    parser = build_parser()
    args = parser.parse_args(argv)
    if _report_to_local_prefect(args):
        refresh_imported_prefect()
    return int(args.func(args) or 0)


def refresh_imported_prefect(*, logging_too: bool = False) -> None:
    """Make an already imported Prefect read the environment again.

    Prefect reads its settings when it is imported. A cold CLI process imports it only after
    `_report_to_local_prefect` set ``PREFECT_API_URL``; a warm runner's child (and a test
    process) imported it long before, so it would still point at no server.
    """
    if "prefect.context" not in sys.modules:
        return
    import prefect.context

    prefect.context.refresh_global_settings_context()
    if logging_too:
        from prefect.logging.configuration import setup_logging

        setup_logging()


def _report_to_local_prefect(args: argparse.Namespace) -> str | None:
    """Flows of this command report to the Prefect server `up` started, if it runs
    (no temporary server start per command; runs show in its UI); its URL if set now."""
    from pathlib import Path

    from streamnotary.config import default_home
    from streamnotary.prefect_server import use_local_server

    home = getattr(args, "home", None)
    return use_local_server(Path(home).expanduser().resolve() if home else default_home())


if __name__ == "__main__":
    sys.exit(main())
