"""`flows.anchor_groups.run_each`: partition groups run at once; one failing stops none.

The grouped backfill and `anchor-groups` both run their groups through it. A group whose
run fails (lease held, plan needs repair) must not cut the others short, and its failure
must reach the caller with its own traceback, never be swallowed.
"""

from __future__ import annotations

import threading

import pytest

from flows.anchor_groups import GroupRunsFailed, run_each


class LeaseBusy(RuntimeError):
    pass


def test_every_job_finishes_and_each_failure_is_named_with_its_cause() -> None:
    failed = threading.Event()

    def fails() -> str:
        failed.set()
        raise LeaseBusy("p0_1 is held")

    def finishes_after_the_failure() -> str:
        assert failed.wait(10)  # still runs to the end after the other job failed
        return "anchored"

    with pytest.raises(GroupRunsFailed) as caught:
        run_each({"p0_1": fails, "p2_3": finishes_after_the_failure})
    assert set(caught.value.failures) == {"p0_1"}
    assert isinstance(caught.value.failures["p0_1"], LeaseBusy)
    assert caught.value.summaries == {"p2_3": "anchored"}
    assert isinstance(caught.value.__cause__, LeaseBusy)  # its traceback is kept
    assert "p0_1: LeaseBusy: p0_1 is held" in str(caught.value)


def test_results_by_name_when_all_succeed() -> None:
    assert run_each({"a": lambda: 1, "b": lambda: 2}) == {"a": 1, "b": 2}
