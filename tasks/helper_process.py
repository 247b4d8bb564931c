"""Helper processes that never outlive the process that started them.

The payload encoders (`tasks.payload_process`) and the catch-up's read-ahead
(`storage.read_ahead`) run in `ProcessPoolExecutor` helpers forked from a `forkserver`.
"""

from __future__ import annotations

import os
import select
import threading
import time


def die_with(owner: int) -> None:
    """In a helper: exit as soon as the process that started the pool (`owner`) is gone.

    A helper waits on its task queue, whose pipe it holds both ends of, and it holds the
    fork server's liveness pipe too, so neither would ever tell it that a flow run killed
    with SIGKILL (the OOM killer, a drill) is gone: it would wait forever. A daemon thread
    waits on the owner's pidfd (Linux 5.3+; elsewhere it polls once a second) instead.
    """

    def watch() -> None:
        try:
            fd = os.pidfd_open(owner)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
        else:
            while True:
                try:
                    os.kill(owner, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    pass
                time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="owner-watch", daemon=True).start()
