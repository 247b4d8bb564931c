"""Bounded fuzzing of every input parser, inside the test suite (issue 9 item 2).

The targets are fuzz/targets.py: Kafka messages (`classify`), record bytes
(`decode_record`, and the fast decoder agreeing with it), DWD lines, metadata, files and
zip archives, proof bundles (both verifiers, which must agree) and the command lines on
bundle files, and the audit's document parsers (object names, window ids, checkpoint and
receipt documents, log entry bundles, signed log checkpoints). Each must give a verdict
(a result or its named error) on any input.

Here hypothesis drives them for a bounded number of examples (the whole file runs well
under two minutes), mixing raw bytes with mutations of genuine inputs; `python
fuzz/run.py --minutes N` runs the same targets under atheris for as long as you like. Every
crash either engine ever found lives in tests/data/fuzz_regressions/<target>/ and is
replayed below, so a fixed bug stays fixed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from fuzz.targets import TARGETS, Target, regression_cases

_SETTINGS = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # a bounded CI run, not a search that remembers
    phases=[Phase.explicit, Phase.generate],  # report the failing input as found: shrinking
    # a mutated bundle can take minutes, and fuzz/run.py saves crashes for replay anyway
)


@st.composite
def _inputs(draw: st.DrawFn, target: Target) -> bytes:
    """Raw bytes, or a genuine input with a few byte edits and splices."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=min(target.max_len, 2048)))
    data = bytearray(draw(st.sampled_from(target.seeds())))
    for _ in range(draw(st.integers(0, 6))):
        pos = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 3))
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << draw(st.integers(0, 7))
        elif op == 1:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del data[pos : pos + draw(st.integers(1, 32))]
        else:
            data[pos:pos] = draw(
                st.sampled_from(
                    [b"[", b"{", b"\\u0000", b"\xff", b"\n", b"9" * 20, b"\x00", b"\xb2"]
                )
            )
    return bytes(data[: target.max_len])


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_every_input_is_a_verdict(name: str) -> None:
    target = TARGETS[name]

    @_SETTINGS
    @given(_inputs(target))
    def fuzz(data: bytes) -> None:
        target.run(data)

    fuzz()


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_genuine_inputs_pass(name: str) -> None:
    for data in TARGETS[name].seeds():
        TARGETS[name].run(data)


@pytest.mark.parametrize(
    ("name", "case"),
    regression_cases(),
    ids=[f"{name}/{case.name}" for name, case in regression_cases()],
)
def test_fuzz_regression(name: str, case: Path) -> None:
    """A crash the fuzzer once found, replayed (the file's name says what kind)."""
    TARGETS[name].run(case.read_bytes())


def test_regression_cases_are_replayed() -> None:
    """Every file under tests/data/fuzz_regressions/ belongs to a known target."""
    from fuzz.targets import REGRESSIONS

    stray = [
        p
        for p in REGRESSIONS.rglob("*")
        if p.is_file() and p.suffix != ".md" and p.parent.name not in TARGETS
    ]
    assert stray == []


def test_found_bundle_bugs_stay_fixed() -> None:
    """The bundle crashes atheris found, as explicit inputs: both verifiers reject."""
    import copy

    from fuzz import seeds
    from fuzz.targets import _verdicts

    huge = copy.deepcopy(seeds.bundle())
    huge["checkpoint"]["counts"]["messages"] = 10**400  # no RFC 8785 (I-JSON) form
    surrogate = copy.deepcopy(seeds.bundle())
    surrogate["record"] = surrogate["record"].replace("00433", "\ud800", 1)  # no UTF-8 bytes
    window = copy.deepcopy(seeds.bundle())
    window["checkpoint"]["window"]["end"] = "2200-01-01T00:00:00Z"  # contradicts the id
    for doc in (huge, surrogate, window):
        assert _verdicts(doc) == ("rejected", "rejected")
    assert _verdicts(seeds.bundle()) == ("verified", "verified")
