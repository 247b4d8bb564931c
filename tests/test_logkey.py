"""The log key file appears whole or not at all, however many processes create it at once."""

from __future__ import annotations

import multiprocessing
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from storage.logkey import LogKeyExists, generate_key, load_signer, read_key
from streamnotary.config import Settings

RACERS = 6
ROUNDS = 10


def _race(home: str, barrier: Any, out: Any) -> None:
    """First use of the default key, as every partition group's process makes it."""
    barrier.wait()
    try:
        out.put(load_signer(Settings(home=home)).verifier().encode())
    except Exception as exc:
        out.put(f"error: {exc}")


def test_racing_first_uses_all_read_the_one_complete_key(tmp_path: Path) -> None:
    """The anchor command starts one process per partition group and each creates the
    default key on first use: a racer that found the file between its creation and its
    write read a half-written key (seen in the suite as "is not a signer key")."""
    ctx = multiprocessing.get_context("forkserver")  # no fork of a threaded pytest
    for round_ in range(ROUNDS):
        home = tmp_path / f"home{round_}"
        path = home / "log.key"
        barrier, out = ctx.Barrier(RACERS), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(str(home), barrier, out)) for _ in range(RACERS)]
        for p in procs:
            p.start()
        seen = [out.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(timeout=30)
        assert not [s for s in seen if s.startswith("error")], seen
        assert len(set(seen)) == 1  # one key, the same for every racer
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert [p.name for p in path.parent.iterdir()] == ["log.key"]  # no temp file left


def test_an_existing_key_is_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "log.key"
    first = generate_key(path)
    with pytest.raises(LogKeyExists):
        generate_key(path)
    assert read_key(path).verifier().encode() == first.encode()
    assert os.listdir(tmp_path) == ["log.key"]
