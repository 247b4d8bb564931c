"""Fuzz targets: each takes arbitrary bytes and fails only on a real bug.

The contract every target checks is issue 9's "every input is a verdict": the function
under test returns a result or raises its own named error, never anything else
(no `RecursionError`, `KeyError`, `OverflowError`, bare `ValueError`, ...). Some targets
check more: the fast record decoder agrees with the general one, a rejected message's
quarantine document can be written (RFC 8785), and the two proof-bundle verifiers
(`tasks.proof_bundle` and the standard-library docs/verify_bundle.py) accept exactly
the same bundles.

A target raises `FuzzBug` (or lets the unexpected exception through) on a bug; both
atheris (fuzz/run.py) and hypothesis (tests/test_fuzz.py) treat that as a crash, and a
crash's input is saved under tests/data/fuzz_regressions/<target>/ and replayed forever.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from fuzz import seeds
from fuzz.draw import Draw

REPO = Path(__file__).resolve().parent.parent
REGRESSIONS = REPO / "tests" / "data" / "fuzz_regressions"


class FuzzBug(AssertionError):
    """A target found an input whose outcome breaks its contract."""


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    seeds: Callable[[], list[bytes]]
    max_len: int  # libFuzzer -max_len: beyond it inputs only repeat what limits already cut


# ---- records and messages ---------------------------------------------------------------


def record(data: bytes) -> None:
    """decode_record: Observation or RecordRejected; the fast path agrees; round trip."""
    from tasks.record import RecordRejected, canonical_bytes, decode_record
    from tasks.record_fast import decode_canonical

    try:
        obs = decode_record(data)
    except RecordRejected as exc:
        if not exc.reason or not isinstance(exc.detail, str):
            raise FuzzBug(f"rejection without a reason: {exc!r}") from exc
        obs = None
    fast = decode_canonical(data)
    if fast is not None and fast != obs:
        raise FuzzBug(f"fast decoder says {fast}, general decoder {obs}")
    if obs is not None and decode_record(canonical_bytes(obs)) != obs:
        raise FuzzBug(f"{obs} does not survive its canonical bytes")


def decode_message(data: bytes) -> Any:
    """flags(1) ts(8) keylen(1) key value: the SourceMessage a producer could write."""
    from tasks.message import SourceMessage

    d = Draw(data)
    flags = d.uint(1)
    ts = d.int64()
    key = d.bytes(d.uint(1))
    value = d.rest()
    return SourceMessage(
        "dwd",
        0,
        7,
        key if flags & 1 else None,
        value if flags & 2 else None,
        ts if flags & 4 else None,
    )


def message(data: bytes) -> None:
    """classify gives a verdict; a rejection's quarantine document is writable."""
    from tasks.message import classify
    from tasks.revision import document_bytes, quarantine_doc

    msg = decode_message(data)
    c = classify(msg, seeds.SPEC)
    if c.record is None:
        if not c.reason:
            raise FuzzBug("rejected without a reason")
        document_bytes(quarantine_doc(c))  # raises if the plan could not be written
    elif c.window != seeds.SPEC.key_of(c.record.station_id, c.record.observed_at):
        raise FuzzBug(f"record attributed to {c.window}")
    if c.window is not None:
        _ = (c.window.window_id, c.window.end)  # a window that cannot be named wedges a run


# ---- DWD -------------------------------------------------------------------------------


def dwd_lines(data: bytes) -> None:
    """Metadata and product text (split at the first NUL): only DwdFormatError/MetadataError."""
    from tasks.dwd import DwdFormatError, DwdLimits, read_product_bytes
    from tasks.dwd_metadata import MetadataError, parse_parameter_metadata

    meta, _, product = data.partition(b"\0")
    limits = DwdLimits(max_line_chars=256)
    with contextlib.suppress(MetadataError):
        parse_parameter_metadata(meta.decode("latin-1"), max_line_chars=256)
    quarantined: list[DwdFormatError] = []
    with contextlib.suppress(DwdFormatError):
        for _ in read_product_bytes(
            "fuzz.txt", product, lenient=True, quarantine=quarantined.append, limits=limits
        ):
            pass
    for q in quarantined:
        if not q.reason or len(q.raw) > 256:
            raise FuzzBug(f"quarantined line without reason or unbounded: {q!r}")
    with contextlib.suppress(DwdFormatError):
        for _ in read_product_bytes("fuzz.txt", product, limits=limits):
            pass


def dwd_file(data: bytes) -> None:
    """A product file or zip archive (any bytes): only DwdFormatError."""
    from tasks.dwd import DwdFormatError, DwdLimits, read_product_bytes

    limits = DwdLimits(max_member_bytes=1 << 20, max_total_bytes=2 << 20, max_line_chars=256)
    with contextlib.suppress(DwdFormatError):
        for _ in read_product_bytes("fuzz.zip", data, lenient=True, limits=limits):
            pass


def dwd_zip(data: bytes) -> None:
    """Structure-aware: an archive whose members' names and contents come from the input."""
    import zipfile

    d = Draw(data)
    buf = io.BytesIO()
    names = [
        seeds._product().name,
        "Metadaten_Parameter_tu_stunde_00433.txt",
        "sub/produkt_x.txt",
        "Metadaten_Parameter_x.txt",
        "other.txt",
    ]
    with zipfile.ZipFile(buf, "w", d.pick([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])) as zf:
        for _ in range(1 + d.below(3)):
            zf.writestr(d.pick(names), d.sized(4096))
    dwd_file(buf.getvalue())


# ---- proof bundles -----------------------------------------------------------------------

_NASTY: list[Any] = [
    None,
    True,
    0,
    -1,
    1,
    2**53,
    2**63,
    -(2**64),
    10**400,
    1.5,
    float("nan"),
    "",
    "\x00",
    "\ud800",
    "0" * 64,
    "ff" * 32,
    "00433_20180925T000000Z_86400s",
    "00433_99991231T000000Z_86400s",
    "00433_20180925T000000Z_999999999999s",
    [],
    [[]],
    {},
    {"a": 1},
]


def _paths(value: Any) -> list[tuple[Any, ...]]:
    """Every path into `value` (iteratively: mutated documents can be deeply nested)."""
    out: list[tuple[Any, ...]] = []
    stack: list[tuple[tuple[Any, ...], Any]] = [((), value)]
    while stack:
        prefix, v = stack.pop()
        out.append(prefix)
        if isinstance(v, dict):
            stack.extend(((*prefix, k), c) for k, c in v.items())
        elif isinstance(v, list):
            stack.extend(((*prefix, i), c) for i, c in enumerate(v))
    return out


def mutate_json(seed: Any, d: Draw) -> Any:
    """1-4 edits of `seed` chosen by `d`: replace, delete, deepen, or re-type one value."""
    doc = copy.deepcopy(seed)
    deepened = False
    for _ in range(1 + d.below(4)):
        paths = _paths(doc)
        path = d.pick(paths)
        op = d.below(5)
        if not path:
            if op == 0:
                doc = copy.deepcopy(d.pick(_NASTY))
            continue
        parent = doc
        for p in path[:-1]:
            parent = parent[p]
        last = path[-1]
        old = parent[last]
        if op == 0:
            new: Any = copy.deepcopy(d.pick(_NASTY))
        elif op == 1 and isinstance(parent, dict):
            del parent[last]
            continue
        elif op == 2 and not deepened:  # once: json.loads reads up to ~990 levels
            deepened = True
            new = old
            for _ in range(d.below(900)):
                new = [new]
        elif op == 3 and isinstance(old, str):
            raw = bytearray(old.encode("utf-8", "surrogatepass"))
            if raw:
                raw[d.below(len(raw))] ^= 1 << d.below(8)
            new = raw.decode("utf-8", "replace")
        elif op == 4 and isinstance(old, int) and not isinstance(old, bool):
            new = old + d.pick([-1, 1, 2**32, -(2**31)])
        else:
            new = copy.deepcopy(d.pick(_NASTY))
        parent[last] = new
    return doc


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


_standalone_module: ModuleType | None = None
_RESEAL_ERRORS = (KeyError, IndexError, TypeError, AttributeError, ValueError, RecursionError)


def standalone() -> ModuleType:
    """docs/verify_bundle.py, loaded from its file as an outsider would run it."""
    global _standalone_module
    if _standalone_module is None:
        spec = importlib.util.spec_from_file_location(
            "verify_bundle_standalone", REPO / "docs" / "verify_bundle.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _standalone_module = module
    return _standalone_module


def _verdicts(doc: Any) -> tuple[str, str]:
    from tasks.proof_bundle import ProofBundleError, verify_bundle

    try:
        verify_bundle(doc)
        ours = "verified"
    except ProofBundleError:
        ours = "rejected"
    std = standalone()
    try:
        std.verify(doc)
        theirs = "verified"
    except std.NotVerified:
        theirs = "rejected"
    return ours, theirs


def bundle(data: bytes) -> None:
    """Both verifiers: only their named errors, and the same verdict on every bundle."""
    d = Draw(data)
    doc = mutate_json(seeds.bundle(), d)
    ours, theirs = _verdicts(doc)
    if ours != theirs:
        raise FuzzBug(f"verifiers disagree: streamnotary {ours}, verify_bundle.py {theirs}")


def reseal(doc: Any) -> Any:
    """Make a (mutated) bundle self-consistent again, as a forger would.

    Offline verification can only check that the bundle's hashes chain up; the last link,
    that the ledger holds the digest, is online. A forger therefore recomputes every
    hash after editing: window root from the record's path, checkpoint digest, a one-leaf
    batch, ledger bodies and their digests. Whatever still differs between the verifiers
    after that is a real disagreement about what a valid bundle is. Parts that cannot be
    rebuilt (a topic that is not a string, ...) are left as the mutation made them.
    """
    std = standalone()
    with contextlib.suppress(std.NotVerified, *_RESEAL_ERRORS):
        cp = doc["checkpoint"]
        record_bytes = doc["record"].encode("utf-8")
        root = std.inclusion_root(
            record_bytes, doc["leaf_index"], doc["tree_size"], doc["audit_path"]
        )
        cp["merkle"]["root"] = root
        digest = std.digest(cp)
        doc["checkpoint_digest"] = digest
        batch_root = std.inclusion_root(bytes.fromhex(digest), 0, 1, [])  # one-leaf tree
        doc["batch"].update(root=batch_root, size=1, index=0, proof=[])
        topic = cp["source"]["topic"]
        window = cp["window"]
        batch_body = {"kind": "batch", "topic": topic, "root": batch_root, "size": 1}
        doc["ledger"]["batch"]["body"] = batch_body
        doc["ledger"]["batch"]["ref"].update(
            key=f"batch/{topic}/{batch_root}", digest=std.digest(batch_body)
        )
        if doc["ledger"]["window"] is not None:
            window_body = {
                "kind": "window",
                "topic": topic,
                "window_id": window["id"],
                "station_id": window["station_id"],
                "revision": cp["revision"],
                "checkpoint_digest": digest,
                "merkle_root": root,
                "batch_root": batch_root,
            }
            doc["ledger"]["window"]["body"] = window_body
            doc["ledger"]["window"]["ref"].update(
                key=f"window/{topic}/{window['id']}/r{cp['revision']}",
                digest=std.digest(window_body),
            )
    return doc


def bundle_forged(data: bytes) -> None:
    """Mutate, then re-seal every hash: both verifiers must still give the same verdict.

    One difference is by design and excluded: `verify-proof` also validates the whole
    checkpoint against checkpoint.schema.json, which the standard-library script cannot
    (it checks the checkpoint fields the proof uses: window, merkle, source.topic,
    revision). A forged checkpoint that breaks only the schema is rejected by the one and
    passes the other's offline part; its digest is then not on the ledger.
    """
    from tasks.checkpoint import CheckpointError, validate_checkpoint

    d = Draw(data)
    doc = reseal(mutate_json(seeds.bundle(), d))
    ours, theirs = _verdicts(doc)
    if ours != theirs and isinstance(doc, dict) and ours == "rejected":
        try:
            validate_checkpoint(doc.get("checkpoint"))
        except CheckpointError:
            return
    if ours != theirs:
        raise FuzzBug(f"verifiers disagree on a forged bundle: {ours} vs {theirs}")


def bundle_file(data: bytes) -> None:
    """The command lines on any file: `verify-proof` exits 0/1, verify_bundle.py 0/1."""
    from streamnotary.commands.audit import cmd_verify_proof

    path = _scratch() / "bundle.json"
    path.write_bytes(data)
    with _quiet():
        ours = cmd_verify_proof(_Args(str(path)))
        theirs = standalone().main(["verify_bundle.py", str(path)])
    if ours not in (0, 1) or theirs not in (0, 1):
        raise FuzzBug(f"exit codes {ours}, {theirs}")
    if ours != theirs:
        raise FuzzBug(f"verify-proof exits {ours}, verify_bundle.py {theirs}")


@dataclass
class _Args:
    bundle: str
    trust: str | None = None
    online: bool = False
    topic: str | None = None


_scratch_dir: Path | None = None


def _scratch() -> Path:
    global _scratch_dir
    if _scratch_dir is None:
        import tempfile

        _scratch_dir = Path(tempfile.mkdtemp(prefix="streamnotary-fuzz-"))
    return _scratch_dir


# ---- the audit's document parsers ----------------------------------------------------------


def audit_documents(data: bytes) -> None:
    """Object names, window ids, and checkpoint/receipt documents from the bucket."""
    from tasks.audit.documents import (
        CHECKPOINT_SCHEMA_FILE,
        RECEIPT_SCHEMA_FILE,
        parse_object_name,
        parse_window_id,
        schema_problem,
    )
    from tasks.window import WindowSpecError

    d = Draw(data)
    text = d.sized(300).decode("utf-8", "surrogateescape")
    name = parse_object_name("dwd", text)
    if name.problem is None and (name.window is None or name.revision is None):
        raise FuzzBug(f"{text!r} parsed without a problem but names no revision")
    with contextlib.suppress(WindowSpecError):
        key = parse_window_id(text)
        _ = (key.window_id, key.start, key.end)
    seed = json.loads(seeds.checkpoints()[0])
    doc = mutate_json(seed, d)
    for schema in (CHECKPOINT_SCHEMA_FILE, RECEIPT_SCHEMA_FILE):
        problem = schema_problem(doc, schema)
        if problem is not None and not isinstance(problem, str):
            raise FuzzBug(f"schema_problem returned {problem!r}")


def log_entries(data: bytes) -> None:
    """An entry bundle from the bucket: decode, parse, validate, index as the audit does."""
    from tasks.audit.coverage import check_entries, check_tiling, index_log
    from tasks.audit.documents import schema_problem
    from tasks.tlog.entries import LogEntryError, parse_entry
    from tasks.tlog.tiles import TileError, decode_bundle

    try:
        raw_entries = decode_bundle(data)
    except TileError:
        return
    entries = []
    for raw in raw_entries:
        try:
            entry = parse_entry(raw)
        except LogEntryError:
            return
        if schema_problem(entry, "log_entry.schema.json") is not None:
            return
        entries.append(entry)
    index = index_log(entries)
    check_tiling(index)
    check_entries(index)


def log_checkpoint(data: bytes) -> None:
    """A signed checkpoint note from the bucket or a receipt: only the named errors."""
    from tasks.tlog.checkpoint import LogCheckpointError, open_checkpoint
    from tasks.tlog.note import NoteError, parse_note

    with contextlib.suppress(NoteError):
        parse_note(data)
    with contextlib.suppress(LogCheckpointError):
        open_checkpoint(data, seeds.signer().verifier(), "streamnotary/dwd")


def log_entry_mutations(data: bytes) -> None:
    """Structure-aware: entries as JSON, mutated, re-encoded canonically into a bundle."""
    from tasks.canonical import CanonicalizationError, canonical_json
    from tasks.tlog.tiles import decode_bundle, encode_bundle

    d = Draw(data)
    entries = [json.loads(e) for e in decode_bundle(seeds.log_entries()[0])]
    out = []
    for entry in entries:
        try:
            out.append(canonical_json(mutate_json(entry, d) if d.flag() else entry))
        except (CanonicalizationError, RecursionError):
            return  # not encodable: the writer could not have produced it either
    if all(len(e) < 65_536 for e in out):
        log_entries(encode_bundle(out))


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("record", record, seeds.records, 4200),
        Target("message", message, seeds.messages, 4300),
        Target("dwd_lines", dwd_lines, seeds.dwd_lines, 8192),
        Target("dwd_file", dwd_file, seeds.dwd_files, 16384),
        Target("dwd_zip", dwd_zip, lambda: [bytes(64)], 8192),
        Target("bundle", bundle, lambda: [bytes(16)], 64),
        Target("bundle_forged", bundle_forged, lambda: [bytes(16)], 64),
        Target("bundle_file", bundle_file, seeds.bundles, 8192),
        Target("audit_documents", audit_documents, seeds.object_names, 512),
        Target("log_entries", log_entries, seeds.log_entries, 4096),
        Target("log_entry_mutations", log_entry_mutations, lambda: [bytes(16)], 64),
        Target("log_checkpoint", log_checkpoint, seeds.log_checkpoints, 1024),
    )
}


def regression_cases() -> list[tuple[str, Path]]:
    """Every saved crash input: (target name, file), replayed by tests/test_fuzz.py."""
    if not REGRESSIONS.is_dir():
        return []
    return [
        (d.name, f)
        for d in sorted(REGRESSIONS.iterdir())
        if d.is_dir() and d.name in TARGETS
        for f in sorted(d.iterdir())
        if f.is_file() and not f.name.startswith(".") and f.suffix != ".md"
    ]


if __name__ == "__main__":  # python -m fuzz.targets TARGET FILE: replay one input
    TARGETS[sys.argv[1]].run(Path(sys.argv[2]).read_bytes())
