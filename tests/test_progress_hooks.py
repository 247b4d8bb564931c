"""Progress hooks (tasks.steps): a run's own hooks hear only their thread's steps.

Partition groups anchor on threads of one process (`anchor-groups`, a grouped backfill);
each run's progress artifacts and the backfill's per-group window counts must count that
run's steps only, while a process-wide hook (the CLI's progress bars) hears every step.
"""

from __future__ import annotations

import threading

from tasks import steps


def test_a_thread_hook_hears_its_thread_only_and_a_global_hook_hears_all() -> None:
    heard: dict[str, list[tuple[str, int]]] = {"a": [], "b": [], "all": []}
    lock = threading.Lock()

    def hook_for(name: str) -> steps.ProgressHook:
        def hook(phase: str, done: int, total: int) -> None:
            with lock:
                heard[name].append((phase, done))

        return hook

    everyone = hook_for("all")
    steps.add_progress_hook(everyone)
    barrier = threading.Barrier(2)

    def group(name: str) -> None:
        mine = hook_for(name)
        steps.add_progress_hook(mine, this_thread=True)
        barrier.wait()  # both hooks registered before either reports
        try:
            for done in range(1, 4):
                steps.report_progress(f"anchors-{name}", done, 3)
            barrier.wait()  # both reported before either hook goes
        finally:
            steps.remove_progress_hook(mine)

    threads = [threading.Thread(target=group, args=(n,)) for n in ("a", "b")]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    finally:
        steps.remove_progress_hook(everyone)
    assert heard["a"] == [("anchors-a", d) for d in (1, 2, 3)]
    assert heard["b"] == [("anchors-b", d) for d in (1, 2, 3)]
    assert sorted(heard["all"]) == sorted(heard["a"] + heard["b"])
    steps.report_progress("after", 1, 1)  # every hook removed: nobody hears this
    assert len(heard["all"]) == 6
