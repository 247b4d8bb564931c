"""(f) revisions: the supersedes chain is complete; only the latest revision counts."""

from __future__ import annotations

from collections.abc import Sequence

from tasks.audit.core import FAIL, INFO, NOT_CHECKABLE, CheckResult
from tasks.audit.evidence import RevisionInputs
from tasks.checkpoint import checkpoint_digest, ranges_of


def check_revisions(revisions: Sequence[RevisionInputs]) -> dict[int, CheckResult]:
    """Each revision names its predecessor by digest; numbering has no gaps."""
    by_rev = {r.revision: r for r in revisions}
    latest = max(by_rev)
    out: dict[int, CheckResult] = {}
    for rev in sorted(by_rev):
        res = CheckResult("revisions")
        cp = by_rev[rev].checkpoint
        if rev != latest:
            res.add(INFO, "superseded", f"superseded by r{latest}; only the latest revision counts")
        if cp is None:
            res.add(NOT_CHECKABLE, "checkpoint_missing", "no checkpoint: supersedes link unknown")
            out[rev] = res
            continue
        link = cp.get("supersedes")
        if rev == 0:
            if link is not None:
                res.add(FAIL, "dangling_link", "revision 0 must supersede nothing")
        elif link is None:
            res.add(FAIL, "missing_link", f"r{rev} does not name its predecessor")
        elif link.get("revision") != rev - 1:
            res.add(
                FAIL,
                "revision_gap",
                f"r{rev} supersedes r{link.get('revision')}, expected r{rev - 1}",
            )
        elif rev - 1 not in by_rev or by_rev[rev - 1].checkpoint is None:
            res.add(FAIL, "revision_gap", f"r{rev - 1}, which r{rev} supersedes, is not stored")
        else:
            prev = by_rev[rev - 1].checkpoint
            prev_digest = checkpoint_digest(prev)
            if link.get("checkpoint_digest") != prev_digest:
                res.add(
                    FAIL,
                    "dangling_link",
                    f"r{rev} supersedes digest {link.get('checkpoint_digest')}, "
                    f"r{rev - 1} digests to {prev_digest}",
                )
            else:
                prev_ranges, cur_ranges = ranges_of(prev), ranges_of(cp)
                for p, (lo, hi) in prev_ranges.items():
                    if p not in cur_ranges or cur_ranges[p][0] > lo or cur_ranges[p][1] < hi:
                        res.add(
                            FAIL,
                            "ranges_shrank",
                            f"r{rev} does not cover r{rev - 1}'s range in partition {p}",
                            partition=p,
                        )
        for missing in sorted(set(range(latest + 1)) - by_rev.keys()):
            if missing < rev:
                res.add(FAIL, "revision_gap", f"r{missing} is missing before r{rev}")
        out[rev] = res
    return out
