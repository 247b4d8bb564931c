"""Sub-commands `keygen` and `trust export`: the log key and what an auditor pins.

`keygen` writes the Ed25519 log signing key (0600) and prints only its verifier key.
`trust export` prints the trust policy (`streamnotary.trust/v1`, docs/formats.md):
the log's origin and verifier key, and the ledger's identity from `Ledger.identity()`;
with partition groups configured `streamnotary.trust/v2`: each group's partitions and log.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

TRUST_SCHEMA = "streamnotary.trust/v1"
TRUST_GROUPS_SCHEMA = "streamnotary.trust/v2"  # topics anchored in partition groups


def register(sub: argparse._SubParsersAction) -> None:
    keygen = sub.add_parser("keygen", help="create the log signing key (0600, never printed)")
    keygen.add_argument("--out", type=Path, help="key file (default: setting log_key_path)")
    keygen.add_argument("--name", default="streamnotary", help="key name (default: streamnotary)")
    keygen.set_defaults(func=cmd_keygen)

    trust = sub.add_parser("trust", help="trust policy for auditors")
    trust_sub = trust.add_subparsers(dest="trust_command", required=True, metavar="ACTION")
    export = trust_sub.add_parser("export", help="print trust.json: log key and ledger identity")
    export.add_argument("--topic")
    export.add_argument("--ledger", choices=("local", "multichain", "evm", "bitcoin"))
    export.set_defaults(func=cmd_trust_export)


def cmd_keygen(args: argparse.Namespace) -> int:
    from storage.logkey import LogKeyError, generate_key, key_path, log_origin
    from streamnotary.config import load_settings

    settings = load_settings()
    path = args.out.expanduser() if args.out else key_path(settings)
    try:
        generate_key(path, args.name)
    except LogKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    origin = log_origin(settings)
    print(f"wrote log key {path} (mode 0600)")
    print(f"verifier key for {origin}: {verifier_for(path, origin)}")
    return 0


def verifier_for(path: Path, origin: str) -> str:
    from storage.logkey import read_key

    return read_key(path).named(origin).verifier().encode()


def trust_policy(settings: Any) -> dict[str, Any]:
    """The trust policy for the configured topic and ledger (schema `streamnotary.trust/v1`)."""
    from storage.ledger.factory import open_ledger
    from tasks.groups import LogScope, groups_of

    with open_ledger(settings) as ledger:
        identity = ledger.identity()
    groups = groups_of(settings.partition_groups)
    if groups:
        return {
            "schema": TRUST_GROUPS_SCHEMA,
            "topic": settings.topic,
            "groups": [
                {
                    "name": g.name,
                    "partitions": sorted(g.partitions),
                    "log": _pinned_log(settings, LogScope(settings.topic, g.name).name),
                }
                for g in groups
            ],
            "ledger": identity,
        }
    return {"schema": TRUST_SCHEMA, "log": _pinned_log(settings), "ledger": identity}


def _pinned_log(settings: Any, scope: str | None = None) -> dict[str, str]:
    """The `log` member: a log's origin and the verifier key of the log key under it."""
    from storage.logkey import log_origin, log_verifier

    return {
        "origin": log_origin(settings, scope),
        "verifier_key": log_verifier(settings, scope).encode(),
    }


def cmd_trust_export(args: argparse.Namespace) -> int:
    from storage.ledger.base import LedgerError
    from storage.logkey import LogKeyError
    from streamnotary.config import load_settings

    settings = load_settings(topic=args.topic, ledger=args.ledger)
    try:
        policy = trust_policy(settings)
    except (LogKeyError, LedgerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(policy, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0
