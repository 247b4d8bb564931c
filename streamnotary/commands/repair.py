"""Sub-command `repair`: the documented way out of an unfinished plan (flows/repair.py)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    repair = sub.add_parser(
        "repair",
        help="show the topic's lease and unfinished plan; --complete or --discard it safely",
    )
    repair.add_argument("--topic")
    repair.add_argument("--group", help="a partition group's state (setting partition_groups)")
    action = repair.add_mutually_exclusive_group()
    action.add_argument(
        "--complete", action="store_true", help="finish the plan (anchors what it planned)"
    )
    action.add_argument(
        "--discard",
        action="store_true",
        help="delete the plan and its own objects; refused if any part of it is anchored",
    )
    repair.add_argument("--json", action="store_true", help="print the report as JSON")
    repair.set_defaults(func=cmd_repair)


def _print_report(report: dict[str, Any]) -> None:
    print(f"topic {report['topic']}")
    print(f"  lease: {report['lease'] or 'free'}")
    print(f"  cursor: run {report['cursor_runs']}")
    if not report["plan"]:
        print("  no unfinished plan")
        return
    print(
        f"  unfinished plan: cursor run {report['plan_cursor_runs']} "
        f"({report['cursor_status']}), "
        + (
            f"legacy batch {report['batch_root']} "
            f"{'ANCHORED' if report['batch_anchored'] else 'not anchored'}, "
            if report["batch_root"]
            else ""
        )
        + f"log {'APPENDED' if report['log_appended'] else 'not appended'}, "
        f"{report['quarantine']} quarantined message(s)"
    )
    for w in report["windows"]:
        flags = [
            name
            for name, on in (
                ("payload", w["payload_stored"]),
                ("checkpoint", w["checkpoint_stored"]),
                ("ANCHORED", w["anchored"]),
                ("receipt", w["receipt_stored"]),
            )
            if on
        ]
        print(f"    {w['window_id']} r{w['revision']}: {', '.join(flags) or 'nothing stored'}")
    if report["anything_anchored"]:
        print("  parts are anchored: finish with `streamnotary repair --complete`")
    else:
        print("  nothing is anchored: `--complete` finishes it, `--discard` removes it safely")


def cmd_repair(args: argparse.Namespace) -> int:
    from flows import repair
    from flows.anchor_windows import topic_lease
    from storage.lease import LeaseError
    from storage.objectstore import open_store
    from storage.writeonce import WriteOnceNotEnforced, check_write_once
    from streamnotary.commands.pipeline import EXIT_STORE_UNSAFE, EXIT_TOPIC_BUSY
    from streamnotary.config import load_settings

    settings = load_settings(topic=args.topic, group=args.group)
    result: dict[str, Any] = {}
    try:
        check_write_once(open_store(settings))
        with topic_lease(settings, "repair"):
            result["before"] = repair.inspect(settings).to_json()
            if args.complete:
                result["complete"] = repair.complete(settings)
            elif args.discard:
                result["discarded"] = repair.discard(settings)
            if args.complete or args.discard:
                result["after"] = repair.inspect(settings).to_json()
    except LeaseError as exc:
        print(f"streamnotary repair: {exc}", file=sys.stderr)
        return EXIT_TOPIC_BUSY
    except WriteOnceNotEnforced as exc:
        print(f"streamnotary repair: {exc}", file=sys.stderr)
        return EXIT_STORE_UNSAFE
    except repair.RepairRefused as exc:
        print(f"streamnotary repair: refused: {exc}", file=sys.stderr)
        return 1
    if args.json:
        json.dump(result, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    _print_report(result["before"])
    if "complete" in result:
        print(f"completed: {result['complete']}")
    if "discarded" in result:
        print(f"discarded {len(result['discarded'])} object(s)")
    if "after" in result:
        _print_report(result["after"])
    return 0
