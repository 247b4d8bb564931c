"""The cyclic collector's pause (tasks/gc_pause.py): off inside, restored after, counted."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from tasks.gc_pause import cyclic_gc_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_off_inside_and_on_again_after() -> None:
    with cyclic_gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_an_exception_in_the_phase_still_resumes_collection() -> None:
    with pytest.raises(RuntimeError), cyclic_gc_paused():
        raise RuntimeError("the phase failed")
    assert gc.isenabled()


def test_a_nested_pause_ends_with_the_outer_one() -> None:
    with cyclic_gc_paused():
        with cyclic_gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_switched_off_before_stays_off() -> None:
    gc.disable()
    with cyclic_gc_paused():
        pass
    assert not gc.isenabled()


def test_overlapping_phases_of_two_threads_resume_when_the_last_ends() -> None:
    """Thread A pauses, B pauses, A ends first: B's phase must stay paused (a plain
    disable/enable pair would switch collection back on under B)."""
    b_paused, b_may_end = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def phase_b() -> None:
        with cyclic_gc_paused():
            b_paused.set()
            b_may_end.wait(10)
            seen["b_after_a_ended"] = gc.isenabled()

    with cyclic_gc_paused():
        b = threading.Thread(target=phase_b)
        b.start()
        assert b_paused.wait(10)
    seen["between"] = gc.isenabled()
    b_may_end.set()
    b.join(10)
    assert seen == {"between": False, "b_after_a_ended": False}
    assert gc.isenabled()
