"""Sub-commands `demo`, `ingest` and `anchor`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="start embedded services, replay the DWD demo data, anchor it"
    )
    demo.add_argument(
        "--ledger",
        choices=("local", "evm", "multichain"),
        default="local",
        help="where to anchor (default: local; evm starts anvil, multichain a MultiChain node)",
    )
    demo.add_argument("--json", action="store_true", help="print the summary as JSON on stdout")
    demo.add_argument(
        "--home",
        type=Path,
        help="project data directory (default: $STREAMNOTARY_HOME or ~/.streamnotary)",
    )
    demo.set_defaults(func=cmd_demo)

    ingest = sub.add_parser(
        "ingest", help="produce DWD product files (path, zip or URL) into Kafka"
    )
    ingest.add_argument(
        "sources", nargs="+", help="DWD produkt_* file, DWD zip archive, or http(s) URL"
    )
    ingest.add_argument("--topic")
    ingest.add_argument(
        "--lenient", action="store_true", help="quarantine malformed lines instead of failing"
    )
    ingest.set_defaults(func=cmd_ingest)

    backfill = sub.add_parser(
        "backfill",
        help="ingest DWD archives or directories of them, then anchor everything (drain)",
    )
    backfill.add_argument(
        "sources", nargs="*", help="DWD zip, produkt_* file, directory of them, or URL"
    )
    backfill.add_argument("--topic")
    backfill.add_argument(
        "--from-topic",
        metavar="T",
        help="also re-verify a range of Kafka topic T (default range: --since/--until, "
        "else all of it); windows new to --topic are produced there unless T is --topic",
    )
    backfill.add_argument(
        "--offsets",
        metavar="P:START-END,...",
        help="with --from-topic: half-open offset ranges per partition instead of a time range",
    )
    backfill.add_argument(
        "--lenient", action="store_true", help="quarantine malformed lines instead of failing"
    )
    backfill.add_argument(
        "--since", type=_utc_time, help="only observations at or after (ISO date or time, UTC)"
    )
    backfill.add_argument(
        "--until", type=_utc_time, help="only observations before (ISO date or time, UTC)"
    )
    backfill.add_argument("--json", action="store_true", help="print the summary as JSON")
    backfill.set_defaults(func=cmd_backfill)

    anchor = sub.add_parser("anchor", help="run anchor-windows once (as a Prefect flow run)")
    anchor.add_argument("--topic")
    anchor.add_argument("--ledger", choices=("local", "multichain", "evm", "bitcoin"))
    anchor.add_argument(
        "--drain", action="store_true", help="close every open window (end of a backfill)"
    )
    anchor.add_argument(
        "--until-caught-up",
        action="store_true",
        help="run again, in this process, until no backlog is left (each run reads at most "
        "max_messages_per_run offsets and is its own flow run); --json then prints "
        '{"runs": [one summary per run]}',
    )
    anchor.add_argument(
        "--max-runs",
        type=_positive_int,
        help="with --until-caught-up: stop after this many runs even with backlog left (a "
        "catch-up process's RSS rises run after run: run the command again, in a new "
        "process, until the backlog is 0; docs/operations.md)",
    )
    anchor.add_argument(
        "--deploy",
        action="store_true",
        help="evm: deploy a new contract even where the recorded one has no code "
        "(only after a chain reset; see docs/ledgers.md)",
    )
    anchor.add_argument(
        "--group",
        help="anchor only this partition group (setting partition_groups, e.g. p0_1); "
        "default with groups configured: every group, one process each, in parallel",
    )
    anchor.add_argument("--json", action="store_true")
    anchor.set_defaults(func=cmd_anchor)


def _utc_time(text: str) -> datetime:
    """An ISO date or time; naive values are UTC."""
    t = datetime.fromisoformat(text)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _positive_int(text: str) -> int:
    """A whole number of at least 1 (argparse reports anything else as a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _home_env(home: Path | None) -> None:
    if home is not None:
        os.environ["STREAMNOTARY_HOME"] = str(home.resolve())


def cmd_demo(args: argparse.Namespace) -> int:
    from streamnotary.demo import run_demo

    _home_env(args.home)
    summary = run_demo(
        ledger=args.ledger, home=args.home.resolve() if args.home else None, quiet=args.json
    )
    return _emit(summary, as_json=args.json)


def _emit(summary: dict[str, Any], *, as_json: bool) -> int:
    """Print a run summary: JSON on stdout for machines, else the table."""
    from streamnotary.demo import render_summary

    if as_json:
        json.dump(summary, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        render_summary(summary, Console())
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from flows.ingest_dwd import ingest_dwd

    allow_cli_sources(args.sources)
    result = ingest_dwd(sources=args.sources, topic=args.topic, lenient=args.lenient)
    for source, r in result.items():
        outcome = "skipped (already ingested)" if r["skipped"] else f"{r['records']} produced"
        print(f"{source}: {outcome}")
    return 0


# Exit status of a run that did not write because another run holds the topic
# (sysexits.h EX_TEMPFAIL: try again later).
EXIT_TOPIC_BUSY = 75
# Exit status when the object store does not refuse overwrites (sysexits.h EX_CONFIG).
EXIT_STORE_UNSAFE = 78


def cmd_anchor(args: argparse.Namespace) -> int:
    import time

    from flows.anchor_windows import PlanResumeError, anchor_windows
    from storage.lease import LeaseError
    from storage.writeonce import WriteOnceNotEnforced
    from streamnotary.config import ENV_PREFIX
    from tasks.groups import GroupConfigError
    from tasks.planner import CursorConflict
    from tasks.stage_timing import add_call_time

    if args.max_runs is not None and not args.until_caught_up:
        print("streamnotary anchor: --max-runs needs --until-caught-up", file=sys.stderr)
        return 2
    if args.deploy:  # explicit operator decision, for this process only
        os.environ[f"{ENV_PREFIX}LEDGER_DEPLOY"] = "replace"
    if not args.group:
        from streamnotary.config import load_settings
        from tasks.groups import groups_of

        groups = groups_of(load_settings(topic=args.topic).partition_groups)
        if groups:
            return anchor_groups_in_processes(args, [g.name for g in groups])
    started = time.perf_counter()

    def timed_run(run: dict[str, Any]) -> None:
        """Each run's own call time: the next one starts right after this returns."""
        nonlocal started
        now = time.perf_counter()
        add_call_time(run["timings"], now - started)
        started = now

    try:
        if args.until_caught_up:
            from flows.catch_up import anchor_until_caught_up

            runs = anchor_until_caught_up(
                topic=args.topic,
                ledger=args.ledger,
                drain=args.drain,
                group=args.group,
                after_run=timed_run,
                max_runs=args.max_runs,
            )
            return emit_runs(runs, as_json=args.json)
        summary = anchor_windows(
            topic=args.topic, ledger=args.ledger, drain=args.drain, group=args.group
        )
    except (LeaseError, CursorConflict) as exc:
        print(f"streamnotary anchor: {exc}", file=sys.stderr)
        return EXIT_TOPIC_BUSY
    except (PlanResumeError, GroupConfigError) as exc:
        print(f"streamnotary anchor: {exc}", file=sys.stderr)
        return 1
    except WriteOnceNotEnforced as exc:
        print(f"streamnotary anchor: {exc}", file=sys.stderr)
        return EXIT_STORE_UNSAFE
    timed_run(summary)
    return _emit(summary, as_json=args.json)


def emit_runs(runs: list[dict[str, Any]], *, as_json: bool) -> int:
    """Print the runs of `anchor --until-caught-up`: JSON, or the last run's table after a
    line per run."""
    if as_json:
        json.dump({"runs": runs}, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
        return 0
    from streamnotary import process_memory
    from tasks.stage_timing import describe

    for i, run in enumerate(runs, 1):
        memory = process_memory.describe(run.get("memory"))
        print(
            f"run {i}: {run['messages_read']:,} message(s) read, "
            f"{run['new_anchors']:,} revision(s) anchored, backlog {run['backlog']:,}; "
            f"{describe(run['timings'])}" + (f"; {memory}" if memory else "")
        )
    _emit(runs[-1], as_json=False)
    print(
        f"{len(runs)} run(s): {sum(r['new_anchors'] for r in runs):,} revision(s) anchored, "
        f"{runs[-1]['backlog']:,} offset(s) of backlog left"
    )
    return 0


def anchor_groups_in_processes(args: argparse.Namespace, groups: list[str]) -> int:
    """`anchor` with partition groups: one `anchor --group` process per group, started
    together (each its own lease, cursor and log; window building uses a core each).

    Each child's output is passed through, prefixed by its group; the exit status is the
    first non-zero child status (75 if a group's lease was held), else 0.
    """
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    argv = [sys.executable, "-m", "streamnotary.cli", "anchor"]
    for flag, value in (("--topic", args.topic), ("--ledger", args.ledger)):
        if value:
            argv += [flag, value]
    argv += [
        flag
        for flag, on in (
            ("--drain", args.drain),
            ("--until-caught-up", args.until_caught_up),
            ("--json", args.json),
        )
        if on
    ]
    if args.max_runs is not None:
        argv += ["--max-runs", str(args.max_runs)]
    children = {
        g: subprocess.Popen(
            [*argv, "--group", g], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for g in groups
    }
    # read every child's pipes at once: a child blocked on a full pipe would stall its group
    with ThreadPoolExecutor(len(children)) as pool:
        talks = {g: pool.submit(child.communicate) for g, child in children.items()}
        outputs = {g: talk.result() for g, talk in talks.items()}
    status = 0
    if args.json:
        merged: dict[str, Any] = {}
        for g, (out, _err) in outputs.items():
            try:
                merged[g] = json.loads(out)
            except ValueError:
                merged[g] = None
        json.dump({"groups": merged}, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    for g, (out, err) in outputs.items():
        if not args.json:
            for line in out.splitlines():
                print(f"[{g}] {line}")
        for line in err.splitlines():
            print(f"[{g}] {line}", file=sys.stderr)
        code = children[g].returncode
        if code and not status:
            status = code
    return status


def expand_sources(sources: list[str]) -> list[str]:
    """Directories become their DWD archives and product files (sorted, recursively)."""
    from streamnotary.paths import is_url

    out: list[str] = []
    for source in sources:
        path = Path(source).expanduser()
        if is_url(source) or not path.is_dir():
            out.append(source)
            continue
        found = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and (p.suffix == ".zip" or p.name.startswith("produkt_"))
        )
        out += [str(p) for p in found]
    return out


def cmd_backfill(args: argparse.Namespace) -> int:
    import time

    from flows.backfill import backfill, line_hooks
    from storage.lease import LeaseError
    from storage.writeonce import WriteOnceNotEnforced
    from streamnotary.demo import progress_bars
    from tasks.stage_timing import add_call_time

    sources = expand_sources(args.sources)
    if args.offsets and not args.from_topic:
        print("streamnotary backfill: --offsets needs --from-topic", file=sys.stderr)
        return 2
    if not sources and not args.from_topic:
        print("streamnotary backfill: no DWD archives or product files found", file=sys.stderr)
        return 1
    if args.offsets:
        from flows.backfill_sources import parse_offsets

        try:
            parse_offsets(args.offsets)
        except ValueError as exc:
            print(f"streamnotary backfill: {exc}", file=sys.stderr)
            return 2
    allow_cli_sources(sources)
    err = Console(stderr=True, quiet=args.json)
    err.print(f"backfill of {len(sources)} source(s)")
    started = time.perf_counter()
    line_hooks.append(print_line := lambda line: err.print(line, highlight=False))
    try:
        with progress_bars(err):
            result = backfill(
                sources=sources,
                topic=args.topic,
                lenient=args.lenient,
                since=args.since,
                until=args.until,
                from_topic=args.from_topic,
                offsets=args.offsets,
            )
    except LeaseError as exc:
        print(f"streamnotary backfill: {exc}", file=sys.stderr)
        return EXIT_TOPIC_BUSY
    except WriteOnceNotEnforced as exc:
        print(f"streamnotary backfill: {exc}", file=sys.stderr)
        return EXIT_STORE_UNSAFE
    finally:
        line_hooks.remove(print_line)
    seconds = time.perf_counter() - started
    summary = result["anchored"]
    add_call_time(summary["timings"], seconds)
    produced = sum(r["records"] for r in result["ingested"].values() if not r["skipped"])
    summary["ingested_records"] = produced
    summary["skipped_sources"] = sum(r["skipped"] for r in result["ingested"].values())
    summary["backfill"] = windows = result["windows"]
    err.print(
        f"backfill: {produced:,} records produced, {summary['new_anchors']:,} window "
        f"revisions anchored in {seconds:.1f} s "
        f"({summary['messages_read'] / seconds:,.0f} messages/s, "
        f"{summary['new_anchors'] / seconds:,.1f} windows/s); "
        f"{windows['skipped']:,} window(s) skipped (already anchored, identical), "
        f"{windows['conflicts']:,} conflict(s)",
        highlight=False,
    )
    always = Console(stderr=True)  # conflicts need a person: shown even with --json
    for c in windows["conflicting"]:
        always.print(
            f"conflict: {c['window_id']} anchored as r{c['anchored_revision']} with root "
            f"{c['anchored_root'][:16]}…, recomputed root {c['recomputed_root'][:16]}…: "
            "not re-anchored",
            highlight=False,
        )
    return _emit(summary, as_json=args.json)


def allow_cli_sources(sources: list[str]) -> None:
    """The operator named these sources on the command line: extend the ingest allow-lists
    (in this process only) so that the flow's confinement, meant for parameters that
    arrive through the Prefect API, accepts them."""
    from streamnotary.config import ENV_PREFIX, load_settings
    from streamnotary.paths import is_url

    settings = load_settings()
    roots = list(settings.ingest_roots)
    prefixes = list(settings.ingest_url_prefixes)
    for source in sources:
        if is_url(source):
            prefixes.append(source)
        else:
            roots.append(str(Path(source).expanduser().resolve().parent))
    os.environ[f"{ENV_PREFIX}INGEST_ROOTS"] = json.dumps(roots)
    os.environ[f"{ENV_PREFIX}INGEST_URL_PREFIXES"] = json.dumps(prefixes)
