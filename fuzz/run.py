#!/usr/bin/env python3
"""Long fuzzing run over every input parser: ``python fuzz/run.py --minutes N``.

Splits N minutes over the targets of fuzz/targets.py (or those named with ``--target``)
and runs each under atheris (coverage-guided libFuzzer for Python, a dev extra), in a
child process per target so that a crash ends only that child. The corpus persists in
``.fuzz-corpus/<target>/`` (ignored by git) and is seeded from genuine inputs
(fuzz/seeds.py). Every crashing, hanging (> 20 s) or memory-exhausting input is
written to ``tests/data/fuzz_regressions/<target>/<kind>-<sha1>.bin``, where
tests/test_fuzz.py replays it on every test run; fix the bug, commit the file.

Without atheris the same targets run under a simple mutation loop (random byte edits and
splices of the seeds), which is weaker but needs nothing installed.

Exit status: 0 when no new crash was found, 1 otherwise. The bounded run inside the test
suite is tests/test_fuzz.py (hypothesis); this script is for the long runs.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CORPUS = REPO / ".fuzz-corpus"
KINDS = ("crash", "timeout", "oom", "leak", "slow-unit")
# modules whose code the fuzzer should see: instrumented for coverage feedback
INSTRUMENTED = (
    "tasks.record",
    "tasks.record_fast",
    "tasks.message",
    "tasks.window",
    "tasks.revision",
    "tasks.dwd",
    "tasks.dwd_metadata",
    "tasks.proof_bundle",
    "tasks.checkpoint",
    "tasks.merkle",
    "tasks.batch",
    "tasks.canonical",
    "tasks.audit.documents",
    "tasks.audit.coverage",
    "tasks.tlog.entries",
    "tasks.tlog.note",
    "tasks.tlog.checkpoint",
    "tasks.tlog.tiles",
)


def _targets() -> dict[str, object]:
    from fuzz.targets import TARGETS

    return TARGETS  # type: ignore[return-value]


def _save(target: str, data: bytes, kind: str) -> Path:
    from fuzz.targets import REGRESSIONS

    folder = REGRESSIONS / target
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{kind}-{hashlib.sha1(data).hexdigest()[:16]}.bin"
    path.write_bytes(data)
    return path


def _seed_corpus(name: str) -> Path:
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    for data in _targets()[name].seeds():  # type: ignore[attr-defined]
        (folder / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
    return folder


# ---- atheris -----------------------------------------------------------------------------


def child(name: str, seconds: int, artifacts: Path) -> None:
    """Run one target under atheris (in this process) until `seconds` have passed."""
    import importlib

    import atheris

    with atheris.instrument_imports(include=["tasks", "storage", "streamnotary"]):
        for module in INSTRUMENTED:
            importlib.import_module(module)
    from fuzz.targets import TARGETS

    target = TARGETS[name]
    corpus = _seed_corpus(name)
    argv = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-artifact_prefix={artifacts}/",
        f"-max_len={target.max_len}",
        "-timeout=20",
        "-rss_limit_mb=3072",
        "-print_final_stats=1",
        str(corpus),
    ]
    atheris.Setup(argv, target.run)
    atheris.Fuzz()


def run_atheris(names: list[str], seconds_each: int) -> list[Path]:
    found: list[Path] = []
    for name in names:
        artifacts = CORPUS / "artifacts" / name
        deadline = time.monotonic() + seconds_each
        while (remaining := int(deadline - time.monotonic())) >= 5:
            shutil.rmtree(artifacts, ignore_errors=True)
            artifacts.mkdir(parents=True)
            print(f"== {name}: atheris for {remaining} s", flush=True)
            proc = subprocess.run(
                [sys.executable, __file__, "--child", name, "--seconds", str(remaining)],
                env={**os.environ, "PYTHONPATH": str(REPO)},
                cwd=REPO,
                check=False,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                errors="replace",
            )
            tail = "\n".join(proc.stdout.splitlines()[-12:])
            print(tail, flush=True)
            new = [p for p in sorted(artifacts.iterdir()) if p.name.startswith(KINDS)]
            for art in new:
                kind = art.name.split("-", 1)[0]
                saved = _save(name, art.read_bytes(), kind)
                print(f"!! {name}: {kind} saved as {saved.relative_to(REPO)}", flush=True)
                found.append(saved)
            if proc.returncode == 0 or not new:
                break  # time is up (or the child ended without a finding)
    return found


# ---- fallback: random mutation -----------------------------------------------------------


def _mutate(rng: random.Random, data: bytes, seeds: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(5)
        pos = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(pos, len(b) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif op == 2 and b:
            del b[pos : pos + rng.randint(1, 16)]
        elif op == 3:
            other = rng.choice(seeds)
            start = rng.randrange(len(other) + 1)
            b[pos:pos] = other[start : start + rng.randint(1, 64)]
        else:
            b[pos:pos] = rng.choice([b"[", b"{", b"\\u0000", b"\xff", b"\n", b"9" * 20, b"\x00"])
    return bytes(b)


def run_random(names: list[str], seconds_each: int) -> list[Path]:
    found: list[Path] = []
    rng = random.Random(int(time.time()))
    for name in names:
        target = _targets()[name]
        seeds = target.seeds() or [b""]  # type: ignore[attr-defined]
        deadline = time.monotonic() + seconds_each
        execs = 0
        seen: set[str] = set()
        while time.monotonic() < deadline:
            data = _mutate(rng, rng.choice(seeds), seeds)[: target.max_len]  # type: ignore[attr-defined]
            execs += 1
            try:
                target.run(data)  # type: ignore[attr-defined]
            except Exception as exc:  # any exception at all is the finding here
                signature = f"{type(exc).__name__}:{traceback.extract_tb(exc.__traceback__)[-1]}"
                if signature not in seen:
                    seen.add(signature)
                    saved = _save(name, data, "crash")
                    print(f"!! {name}: {type(exc).__name__}: {exc!s:.200} -> {saved.name}")
                    found.append(saved)
        print(f"== {name}: {execs} inputs in {seconds_each} s, {len(seen)} distinct crash(es)")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="total budget (default 10)")
    parser.add_argument("--target", action="append", help="only this target (repeatable)")
    parser.add_argument("--engine", choices=("auto", "atheris", "random"), default="auto")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.seconds, CORPUS / "artifacts" / args.child)
        return 0
    names = args.target or list(_targets())
    unknown = sorted(set(names) - set(_targets()))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; known: {sorted(_targets())}")
    engine = args.engine
    if engine == "auto":
        try:
            import atheris  # noqa: F401
        except ImportError:
            engine = "random"
        else:
            engine = "atheris"
    seconds_each = max(10, int(args.minutes * 60 / len(names)))
    print(f"fuzzing {len(names)} target(s) with {engine}, {seconds_each} s each", flush=True)
    run = run_atheris if engine == "atheris" else run_random
    found = run(names, seconds_each)
    print(f"{len(found)} new finding(s)" + "".join(f"\n  {p.relative_to(REPO)}" for p in found))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
