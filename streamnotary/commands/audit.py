"""`streamnotary audit`, `streamnotary prove` and `streamnotary verify-proof`.

Exit codes of `audit`: 0 every selected window passed; 1 at least one check failed;
2 nothing failed but something is `pending` or `not_checkable` (an auditor must not read
that as a pass). `verify-proof` needs no configuration and no running service.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamnotary.config import Settings

EXIT_PASS, EXIT_FAIL, EXIT_UNSETTLED = 0, 1, 2


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "audit",
        help="verify anchored windows (anchor, payload, canonical form, analytics, completeness)",
        description="Audit anchored window revisions. Exit 0 = pass, 1 = a check failed, "
        "2 = pending or not checkable.",
    )
    p.add_argument(
        "window_ids", nargs="*", metavar="WINDOW_ID", help="e.g. 00433_20190907T000000Z_86400s"
    )
    p.add_argument("--all", action="store_true", help="every anchored window of the topic")
    p.add_argument("--station", help="only this station's windows")
    p.add_argument("--since", help="windows ending after this time (ISO 8601, UTC if no offset)")
    p.add_argument("--until", help="windows starting before this time")
    p.add_argument("--latest", type=int, metavar="N", help="the N windows that end last")
    p.add_argument("--topic", help="Kafka topic (default: configured topic)")
    p.add_argument(
        "--json", action="store_true", help="print the JSON report (streamnotary.audit-report/1)"
    )
    p.add_argument("--json-out", metavar="FILE", help="also write the JSON report to FILE")
    p.add_argument(
        "--trust",
        metavar="FILE",
        help="trust policy to pin (streamnotary trust export): log key, origin, ledger identity",
    )
    p.add_argument(
        "--state",
        metavar="DIR",
        help="remember the verified log head here; the next audit must be consistent with it",
    )
    p.add_argument("--html", metavar="FILE", help="write the self-contained HTML report to FILE")
    p.set_defaults(func=cmd_audit)

    p = subparsers.add_parser(
        "prove",
        help="write a proof bundle for one record",
        description="Proof that one record is in an anchored window "
        "(streamnotary.proof-bundle/2 through the signed log; /1 for windows before the log).",
    )
    p.add_argument("--station", required=True, help="station id, e.g. 00433")
    p.add_argument("--at", required=True, help="observation time, e.g. 2019-09-07T17:00Z")
    p.add_argument("--topic", help="Kafka topic (default: configured topic)")
    p.add_argument("--out", metavar="FILE", help="write the bundle here (default: stdout)")
    p.set_defaults(func=cmd_prove)

    p = subparsers.add_parser(
        "verify-proof",
        help="check a proof bundle offline",
        description="Verify a proof bundle without any service (see also docs/verify_bundle.py).",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="bundle file written by `streamnotary prove`")
    p.add_argument(
        "--trust",
        metavar="FILE",
        help="trust policy pinning the log key and ledger (default: this machine's own log key)",
    )
    p.add_argument(
        "--online",
        action="store_true",
        help="also look the anchored head up on the pinned ledger and report newer revisions",
    )
    p.add_argument("--topic", help="Kafka topic for --online (default: the bundle's)")
    p.set_defaults(func=cmd_verify_proof)


def cmd_audit(args: argparse.Namespace) -> int:
    from flows.audit import AuditFailed, SelectionError, audit
    from flows.audit_log import TrustPolicyError
    from tasks.audit_artifacts import write_outputs

    if args.state:
        # The operator's own directory, passed as a setting: the flow parameter `state_dir`
        # is confined to the report directory because anyone with Prefect API access sets it.
        os.environ["STREAMNOTARY_AUDIT_STATE_DIR"] = str(Path(args.state).expanduser().resolve())
    try:
        report = audit(
            window_ids=list(args.window_ids),
            station=args.station,
            since=args.since,
            until=args.until,
            latest=args.latest,
            all_windows=args.all,
            topic=args.topic,
            trust_path=args.trust,
        )
    except AuditFailed as exc:
        report = exc.report
    except (SelectionError, TrustPolicyError) as exc:
        print(f"streamnotary audit: {exc}", file=sys.stderr)
        return 64
    # The operator's own paths: written here, not passed as (confined) flow parameters.
    write_outputs(report, args.json_out, args.html)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_summary(report)
    return exit_code(report)


def exit_code(report: dict[str, Any]) -> int:
    return {"pass": EXIT_PASS, "fail": EXIT_FAIL}.get(report["verdict"], EXIT_UNSETTLED)


def _print_summary(report: dict[str, Any]) -> None:
    from streamnotary.report import failures

    s = report["summary"]
    counts = ", ".join(f"{v} {k}" for k, v in s["by_verdict"].items() if v)
    print(
        f"audit of {report['topic']}: {report['verdict'].upper()} "
        f"({s['windows']} windows: {counts or 'none'})"
    )
    for f in failures(report):
        where = f" p{f['partition']}@{f.get('offset', '?')}" if "partition" in f else ""
        print(
            f"  {f['window_id']} r{f['revision']} {f['check']}: {f['severity']}{where}: "
            f"{f['message']}"
        )


def cmd_prove(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from flows.audit import ProofError, parse_time, prove_record
    from storage.ledger.factory import open_ledger
    from storage.logkey import LogKeyError, log_verifier
    from storage.objectstore import open_store
    from streamnotary.config import load_settings
    from tasks.groups import GroupConfigError

    settings = load_settings(topic=args.topic)

    def prove_in(settings: Settings) -> dict[str, Any]:
        try:
            verifier = log_verifier(settings)
        except LogKeyError:
            verifier = None
        with open_ledger(settings) as ledger:
            return prove_record(
                store=open_store(settings),
                ledger=ledger,
                topic=settings.topic,
                station=args.station,
                at=parse_time(args.at),
                window_seconds=settings.window_seconds,
                verifier=verifier,
                log_scope=settings.log_scope.name,
            )

    try:
        if not settings.partition_groups:
            bundle = prove_in(settings)
        else:  # prove from the log of the group whose window holds the record
            errors: list[str] = []
            for group in _holding_groups(settings, args.station, args.at):
                try:
                    bundle = prove_in(replace(settings, group=group))
                    break
                except ProofError as exc:
                    errors.append(f"group {group}: {exc}")
            else:
                raise ProofError("; ".join(errors))
    except (ProofError, GroupConfigError) as exc:
        print(f"streamnotary prove: {exc}", file=sys.stderr)
        return EXIT_FAIL
    text = json.dumps(bundle, indent=2, sort_keys=True) + "\n"
    if args.out:
        Path(args.out).write_text(text)
        print(
            f"wrote {args.out}: leaf {bundle['leaf_index']} of {bundle['tree_size']} in "
            f"{bundle['checkpoint']['window']['id']} r{bundle['checkpoint']['revision']}"
        )
    else:
        sys.stdout.write(text)
    return EXIT_PASS


def cmd_verify_proof(args: argparse.Namespace) -> int:
    """Verify offline (and with --online, against the pinned ledger and the log). Every
    line printed passes through `printable`: bundles are hostile input."""
    from flows.audit_log import TrustPolicy, TrustPolicyError
    from tasks.canonical import parse_document
    from tasks.proof_bundle import ProofBundleError, printable, verify_bundle

    notes: list[str] = []
    try:
        bundle = parse_document(Path(args.bundle).read_bytes())
        trust = TrustPolicy.load(args.trust) if args.trust else None
        group = None
        if trust is not None and trust.groups:  # v2: the log of the window's group
            group = _bundle_group(bundle, trust)
            notes.append(f"partition group {group.name}: log {group.origin}")
            trust = trust.for_group(group)
        pinned = (trust.origin, trust.verifier) if trust else _local_key(bundle, notes)
        steps = verify_bundle(bundle, pinned, trust.ledger if trust else None)
        if args.online:
            from flows.prove import check_online

            steps += check_online(bundle, trust, pinned, args.topic, group and group.name)
    except (OSError, ValueError, RecursionError, ProofBundleError, TrustPolicyError) as exc:
        for note in notes:
            print(printable(note))
        print(printable(f"NOT VERIFIED: {exc}"))
        return EXIT_FAIL
    for note in notes:
        print(printable(note))
    for step in steps:
        print(printable(f"ok  {step}"))
    if any(step.startswith("NEWER REVISION") for step in steps):
        print("VERIFIED, BUT SUPERSEDED: a newer revision of the window is anchored")
        return EXIT_UNSETTLED
    tail = "" if args.online else "; finish with the ledger lookup above (or --online)"
    print(f"VERIFIED{' (offline part)' if not args.online else ''}{tail}")
    return EXIT_PASS


def _bundle_group(bundle: Any, trust: Any) -> Any:
    """The group of a v2 trust policy whose log must hold the bundle's window: the one
    owning the partitions its checkpoint names (the bundle is hostile input; choosing by
    them is safe because that group's pinned key then has to verify the proof)."""
    from tasks.groups import PartitionGroup, owner_of
    from tasks.proof_bundle import ProofBundleError

    try:
        ranges = bundle["checkpoint"]["source"]["ranges"]
        parts = {int(r["partition"]) for r in ranges}
    except (KeyError, TypeError, ValueError) as exc:
        raise ProofBundleError(f"the bundle names no partitions: {exc!r}") from exc
    groups = [PartitionGroup(g.name, frozenset(g.partitions)) for g in trust.groups]
    name = owner_of(groups, parts).name  # GroupConfigError is a ValueError
    return next(g for g in trust.groups if g.name == name)


def _local_key(bundle: Any, notes: list[str]) -> tuple[str, Any] | None:
    """Without --trust: this machine's own log key (an operator checking their own bundle)."""
    from storage.logkey import LogKeyError, log_origin, log_verifier
    from streamnotary.config import load_settings

    topic = None
    if isinstance(bundle, dict) and isinstance(bundle.get("checkpoint"), dict):
        topic = (bundle["checkpoint"].get("source") or {}).get("topic")
    settings = load_settings(topic=topic if isinstance(topic, str) else None)
    try:
        verifier = log_verifier(settings)
    except LogKeyError:
        return None
    notes.append("note: no --trust given: checking against this machine's own log key")
    return log_origin(settings), verifier


def _holding_groups(settings: Settings, station: str, at: str) -> list[str]:
    """The partition groups holding a window of `station` at `at`, in setting order: under
    the group's keys (layout per_window), else in the group's signed log (layout pack
    keeps checkpoints only where the log locates them). Usually one; more when a producer
    that does not key by station split the window across groups (each its own window)."""
    from dataclasses import replace

    from flows.audit import ProofError, parse_time
    from flows.prove import holds_window, logged_window
    from storage.logkey import LogKeyError, log_verifier
    from storage.objectstore import open_store
    from tasks.groups import groups_of

    store, when = open_store(settings), parse_time(at)
    found = []
    for g in groups_of(settings.partition_groups):
        scoped = replace(settings, group=g.name)
        scope = scoped.log_scope.name
        if holds_window(store, scope, station, when, settings.window_seconds):
            found.append(g.name)
            continue
        try:
            verifier = log_verifier(scoped)
        except LogKeyError:
            continue
        if logged_window(store, scope, verifier, station, when, settings.window_seconds):
            found.append(g.name)
    if not found:
        raise ProofError(
            f"no partition group holds a window of station {station} at {at} "
            f"in topic {settings.topic!r}"
        )
    return found
