"""(h) coverage: every Kafka offset the log says was consumed is accounted for exactly once.

This is what ties the anchor log to Kafka, beyond CT and Sigsum. From the log alone
(`index_log`, which joins each run entry with the run_part entries before it):

* per partition the runs' read ranges ``[start, end)`` must tile the topic from the first
  anchored offset to the last, with no gap and no overlap (`check_tiling`);
* a run entry's ``parts`` are exactly the run_part entries right before it, numbered from 0,
  of its run (`run_parts_problem`): a lost, extra or moved part fails the run;
* each (window, revision) has exactly one window entry, revision r supersedes r-1 by the
  digest logged for r-1, and every window range lies inside what the runs read
  (`check_entries`).

Then, message by message over the tiled ranges (`Accounting`), each offset must be in
exactly one place: inside the ranges of the latest revision of the window the message
classifies into, or in a window the last run holds open, or (no window) in a run's
unattributable list. A message that classifies into window W but lies outside W's ranges
fails W with its partition and offset -- this is what catches an operator who leaves a
window's first message out and anchors the rest consistently.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from tasks.audit.core import FAIL, INFO, NOT_CHECKABLE, PASS, Finding, worst
from tasks.message import Classified
from tasks.tlog.entries import merge_run_parts, run_parts_problem

Range = tuple[int, int]


def _in(ranges: Iterable[Range], offset: int) -> bool:
    return any(s <= offset < e for s, e in ranges)


def _ranges(doc: Any) -> dict[int, list[Range]]:
    """``{"<partition>": [[s, e], ...]}`` -> ``{partition: [(s, e), ...]}``."""
    return {int(p): [(int(s), int(e)) for s, e in rs] for p, rs in (doc or {}).items()}


@dataclass(slots=True)
class LogIndex:
    """The log entries, indexed for the coverage checks (entries are schema-valid)."""

    revisions: dict[str, dict[int, list[tuple[int, dict[str, Any]]]]]  # id -> rev -> [(i, e)]
    runs: list[tuple[int, dict[str, Any]]]
    read: dict[int, list[tuple[int, int, int]]]  # partition -> [(start, end, run)]
    unattributable: dict[int, Counter[int]]
    quarantined: dict[int, Counter[int]]
    held_open: dict[str, dict[int, list[Range]]]  # by the last run entry
    part_problems: list[tuple[int, str]] = field(default_factory=list)  # (log index, why)

    def run_after(self, index: int) -> tuple[int, dict[str, Any]] | None:
        """The run entry that closes the run of the entry at `index` (its position, entry)."""
        at = bisect_right([i for i, _ in self.runs], index)
        return self.runs[at] if at < len(self.runs) else None

    def latest(self, window_id: str) -> dict[str, Any] | None:
        revs = self.revisions.get(window_id)
        if not revs:
            return None
        return revs[max(revs)][-1][1]

    def latest_ranges(self, window_id: str) -> dict[int, list[Range]]:
        entry = self.latest(window_id)
        return {} if entry is None else _ranges(entry["ranges"])

    def extent(self) -> dict[int, Range]:
        """Per partition, [first offset, last offset) the runs read."""
        return {
            p: (min(s for s, _, _ in rs), max(e for _, e, _ in rs)) for p, rs in self.read.items()
        }

    def window_sizes(self) -> list[int]:
        """The window sizes the log names, in its window entries and in the windows the last
        run holds open: every message is classified under each. A log whose windows are
        all still open names sizes only there, and without them no message would be
        accounted for at all. Ids that are not ``..._<seconds>s`` name no size (no message
        classifies into them; their entries fail elsewhere)."""
        sizes: set[int] = set()
        for w in (*self.revisions, *self.held_open):
            size = w.rsplit("_", 1)[-1]
            digits = size.removesuffix("s")
            if size.endswith("s") and digits.isascii() and digits.isdigit() and len(digits) < 12:
                sizes.add(int(digits))
        return sorted(s for s in sizes if s > 0)


def index_log(entries: Sequence[dict[str, Any]]) -> LogIndex:
    revisions: dict[str, dict[int, list[tuple[int, dict[str, Any]]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    runs: list[tuple[int, dict[str, Any]]] = []
    read: dict[int, list[tuple[int, int, int]]] = defaultdict(list)
    unattributable: dict[int, Counter[int]] = defaultdict(Counter)
    quarantined: dict[int, Counter[int]] = defaultdict(Counter)
    parts: list[dict[str, Any]] = []  # run_part entries since the last window or run entry
    problems: list[tuple[int, str]] = []
    for i, e in enumerate(entries):
        if e["type"] == "run_part":
            parts.append(e)
            continue
        if e["type"] == "window":
            if parts:
                problems.append((i, "a window entry follows run parts: they end at a run entry"))
                parts = []
            revisions[e["window_id"]][e["revision"]].append((i, e))
            continue
        problem = run_parts_problem(e, parts)
        if problem:
            problems.append((i, problem))
        e = merge_run_parts(e, parts)
        parts = []
        runs.append((i, e))
        for p, (s, end) in e["read"].items():
            read[int(p)].append((int(s), int(end), e["run"]))
        for p, offsets in e["unattributable"].items():
            unattributable[int(p)].update(offsets)
        for p, offsets in e["quarantined"].items():
            quarantined[int(p)].update(offsets)
    if parts:
        problems.append((len(entries), "the log ends with run parts and no run entry"))
    held = {w: _ranges(r) for w, r in runs[-1][1]["held_open"].items()} if runs else {}
    return LogIndex(
        {w: dict(r) for w, r in revisions.items()},
        runs,
        {p: sorted(rs) for p, rs in read.items()},
        dict(unattributable),
        dict(quarantined),
        held,
        problems,
    )


def check_tiling(index: LogIndex) -> dict[int, list[Finding]]:
    """Per partition: the runs' read ranges are contiguous, never overlap, never go back."""
    out: dict[int, list[Finding]] = {}
    for p, ranges in sorted(index.read.items()):
        found: list[Finding] = []
        for (_s0, e0, r0), (s1, e1, r1) in pairwise(ranges):
            if s1 > e0:
                found.append(
                    Finding(FAIL, "read_gap", f"no run read [{e0}, {s1}) (runs {r0}, {r1})", p, e0)
                )
            elif s1 < e0:
                found.append(
                    Finding(
                        FAIL,
                        "read_overlap",
                        f"runs {r0} and {r1} both read [{s1}, {min(e0, e1)})",
                        p,
                        s1,
                    )
                )
        for s, e, r in ranges:
            if e <= s:
                found.append(Finding(FAIL, "read_empty", f"run {r} reads [{s}, {e})", p, s))
        for o, n in sorted(index.unattributable.get(p, Counter()).items()):
            if n > 1:
                found.append(
                    Finding(FAIL, "offset_logged_twice", f"unattributable in {n} runs", p, o)
                )
        out[p] = found
    return out


def check_entries(index: LogIndex) -> tuple[dict[str, list[Finding]], list[Finding]]:
    """Duplicate (window, revision) entries, the logged supersedes chain, ranges in reads.

    Returns (findings per window id, findings on the run).
    """
    per_window: dict[str, list[Finding]] = defaultdict(list)
    extent = index.extent()
    runs_seen: Counter[int] = Counter(e["run"] for _, e in index.runs)
    run_findings = [
        Finding(FAIL, "duplicate_run_entry", f"run {r} has {n} run entries")
        for r, n in sorted(runs_seen.items())
        if n > 1
    ]
    run_findings += [
        Finding(FAIL, "run_parts_mismatch", f"log entry {i}: {why}")
        for i, why in index.part_problems
    ]
    for wid, revs in sorted(index.revisions.items()):
        for rev, items in sorted(revs.items()):
            if len(items) > 1:
                where = ", ".join(str(i) for i, _ in items)
                per_window[wid].append(
                    Finding(
                        FAIL,
                        "duplicate_log_entry",
                        f"r{rev} is logged {len(items)} times (entries {where}): a window "
                        "revision is anchored once; a rewrite needs a new revision",
                    )
                )
            entry = items[-1][1]
            link = entry["supersedes"]
            if rev == 0 and link is not None:
                per_window[wid].append(Finding(FAIL, "log_dangling_link", "r0 supersedes"))
            elif rev > 0:
                prev = revs.get(rev - 1)
                if prev is None or link is None or link["revision"] != rev - 1:
                    per_window[wid].append(
                        Finding(FAIL, "log_revision_gap", f"r{rev} has no logged predecessor")
                    )
                elif link["checkpoint_digest"] != prev[-1][1]["checkpoint_digest"]:
                    per_window[wid].append(
                        Finding(
                            FAIL,
                            "log_dangling_link",
                            f"r{rev} supersedes a digest r{rev - 1}'s log entry does not have",
                        )
                    )
            for p, rs in _ranges(entry["ranges"]).items():
                lo, hi = extent.get(p, (0, 0))
                for s, e in rs:
                    if s < lo or e > hi:
                        per_window[wid].append(
                            Finding(
                                FAIL,
                                "range_not_read",
                                f"r{rev} claims [{s}, {e}) of partition {p}; the runs read "
                                f"[{lo}, {hi})",
                                p,
                                s,
                            )
                        )
    return dict(per_window), run_findings


@dataclass(slots=True)
class PartitionCoverage:
    """How every offset of one partition's logged extent was accounted for."""

    partition: int
    first: int
    last: int
    runs: int
    in_windows: int = 0
    held_open: int = 0
    unattributable: int = 0
    quarantined: int = 0
    not_read: int = 0  # gone from Kafka (retention) or unreadable: not checkable
    findings: list[Finding] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        v = worst(f.severity for f in self.findings)
        return NOT_CHECKABLE if v == PASS and self.not_read else v

    @property
    def offsets(self) -> int:
        return self.last - self.first

    def to_json(self) -> dict[str, Any]:
        accounted = self.in_windows + self.held_open + self.unattributable
        return {
            "partition": self.partition,
            "first": self.first,
            "last": self.last,
            "runs": self.runs,
            "offsets": self.offsets,
            "accounted": accounted,
            "in_windows": self.in_windows,
            "held_open": self.held_open,
            "unattributable": self.unattributable,
            "quarantined": self.quarantined,
            "not_checkable": self.not_read,
            "verdict": self.verdict,
            "findings": [f.to_json() for f in self.findings],
        }


class Accounting:
    """Feed every classified message once (`add`), then `finish` with what was read.

    Messages are classified once per window size present in the log; a message counts for
    the first window (of any size) whose latest logged revision covers its offset.
    """

    def __init__(self, index: LogIndex) -> None:
        self.index = index
        self.extent = index.extent()
        self.partitions = {
            p: PartitionCoverage(p, lo, hi, len(index.read[p]))
            for p, (lo, hi) in self.extent.items()
        }
        self.window_findings: dict[str, list[Finding]] = defaultdict(list)
        self.seen: Counter[int] = Counter()  # messages inside the extent, per partition
        self._ranges: dict[str, dict[int, list[Range]]] = {}

    def _latest(self, window_id: str) -> dict[int, list[Range]]:
        if window_id not in self._ranges:
            self._ranges[window_id] = self.index.latest_ranges(window_id)
        return self._ranges[window_id]

    def add(self, classified: Sequence[Classified]) -> None:
        """One message, classified under each window size of the log (same message)."""
        msg = classified[0].message
        p, o = msg.partition, msg.offset
        lo, hi = self.extent.get(p, (0, 0))
        cov = self.partitions.get(p)
        windows = [c.window for c in classified if c.window is not None]
        inside = cov is not None and lo <= o < hi
        if inside:
            self.seen[p] += 1
        if o in self.index.quarantined.get(p, ()) and inside:
            cov.quarantined += 1  # type: ignore[union-attr]
        for w in windows:
            if _in(self._latest(w.window_id).get(p, ()), o):
                if inside:
                    cov.in_windows += 1  # type: ignore[union-attr]
                return
        for w in windows:
            if _in(self.index.held_open.get(w.window_id, {}).get(p, ()), o):
                if inside:
                    cov.held_open += 1  # type: ignore[union-attr]
                return
        if not windows:
            if not inside:
                return  # before the log or not yet read: not the log's to account
            if o in self.index.unattributable.get(p, ()):
                cov.unattributable += 1  # type: ignore[union-attr]
            else:
                cov.findings.append(  # type: ignore[union-attr]
                    Finding(
                        FAIL,
                        "offset_unaccounted",
                        "unattributable message is in no run's unattributable list",
                        p,
                        o,
                    )
                )
            return
        if cov is not None and o >= hi:
            return  # not read by any logged run yet: the late-data scan reports it
        w = next((w for w in windows if w.window_id in self.index.revisions), windows[0])
        if inside or w.window_id in self.index.revisions:
            where = "inside" if inside else "before"
            self.window_findings[w.window_id].append(
                Finding(
                    FAIL,
                    "offset_outside_window",
                    f"message classifies into {w.window_id} but lies outside the ranges of its "
                    f"latest logged revision ({where} the offsets the runs read)",
                    p,
                    o,
                )
            )
            if inside and cov is not None:
                cov.findings.append(
                    Finding(FAIL, "offset_unaccounted", f"belongs to {w.window_id}", p, o)
                )

    def finish(self, readable: dict[int, Range]) -> list[PartitionCoverage]:
        """`readable`: per partition the offsets [start, end) actually read from Kafka."""
        for p, found in check_tiling(self.index).items():
            self.partitions[p].findings[:0] = found
        for p, cov in self.partitions.items():
            start, end = readable.get(p, (cov.last, cov.last))
            lo, hi = max(cov.first, start), min(cov.last, end)
            cov.not_read = (cov.last - cov.first) - max(0, hi - lo)
            missing = max(0, hi - lo) - self.seen[p]
            if missing:
                cov.findings.append(
                    Finding(INFO, "offsets_without_message", f"{missing} offsets have no message")
                )
        return [self.partitions[p] for p in sorted(self.partitions)]
