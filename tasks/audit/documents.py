"""Screening of what the bucket holds, before any check looks at it.

The bucket is written by the operator, and anybody with write access to it: its object
names and documents are hostile input. A stray object (``.../README.json``), a window
id whose size overflows the calendar, or a checkpoint ``{}`` must become a finding on the
window it names (or on the run, when it names none) while every other window is still
audited. The checks then only ever see documents that conform to their JSON Schema
(docs/schemas/checkpoint.schema.json, receipt.schema.json); everything else is reported
here, by name, as what it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tasks.audit.core import FAIL, INFO, Finding
from tasks.checkpoint import schema_validator
from tasks.window import WindowKey, WindowSpecError

CHECKPOINT_SCHEMA_FILE = "checkpoint.schema.json"
RECEIPT_SCHEMA_FILE = "receipt.schema.json"
KINDS = {"payloads": ".parquet", "checkpoints": ".json", "receipts": ".json"}
REVISION_NAME = re.compile(r"r([0-9]{4})")


class DocumentError(ValueError):
    """A stored document does not conform to its schema."""


@dataclass(frozen=True, slots=True)
class ObjectName:
    """What one object key under a window prefix names; `problem` when it names no revision.

    `window` is None when the key names no window at all (the finding then goes on the
    run); `revision` is None when it names a window but no revision of it.
    """

    object_key: str
    kind: str | None = None
    window: WindowKey | None = None
    revision: int | None = None
    problem: str | None = None

    looks_like_revision: bool = False  # named like ``r0001.json`` but unusable

    def finding(self) -> Finding:
        """The finding a stray name produces (only meaningful when `problem` is set).

        An object named like a revision of a window that cannot exist (bad id, size that
        overflows) is a forged or corrupt document: ``fail``. Anything else (a README)
        cannot change what is verified and is only noted: ``info``.
        """
        if self.looks_like_revision:
            return Finding(FAIL, "unusable_window_object", str(self.problem))
        return Finding(INFO, "stray_object", str(self.problem))


def parse_window_id(text: str) -> WindowKey:
    """`WindowKey.parse` that also rejects ids whose start or end cannot be represented."""
    try:
        key = WindowKey.parse(text)
        _ = key.end  # a huge size can overflow the calendar only at the end
    except (OverflowError, ValueError) as exc:
        raise WindowSpecError(f"not a window id: {text!r} ({exc})") from exc
    return key


def parse_object_name(scope: str, object_key: str) -> ObjectName:
    """Classify ``<kind>/<scope>/<station>/<start>_<size>s/r<rev>.<ext>`` (docs/formats.md);
    `scope` is the topic, or ``<topic>/<group>`` for a partition group's windows.

    Never raises: anything that does not follow `storage.layout` comes back with a
    `problem`, attributed to the window it names when it names one.
    """
    kind, _, rest = object_key.partition("/")
    parts = [kind, scope, *rest.removeprefix(f"{scope}/").split("/")]
    if kind not in KINDS or not rest.startswith(f"{scope}/") or len(parts) != 5:
        return ObjectName(object_key, problem=f"unexpected object {object_key!r}")
    stem, dot, ext = parts[4].partition(".")
    m = REVISION_NAME.fullmatch(stem)
    revision_like = m is not None and f"{dot}{ext}" == KINDS[kind]
    try:
        window = parse_window_id(f"{parts[2]}_{parts[3]}")
    except WindowSpecError as exc:
        problem = f"object {object_key!r} names no window: {exc}"
        return ObjectName(object_key, kind, problem=problem, looks_like_revision=revision_like)
    if f"{parts[2]}_{parts[3]}" != window.window_id:
        problem = f"object {object_key!r} is not a canonical window path"
        return ObjectName(object_key, kind, problem=problem, looks_like_revision=revision_like)
    if m is None or not revision_like:
        return ObjectName(
            object_key,
            kind,
            window,
            problem=f"stray object {object_key!r} in window {window.window_id}",
        )
    return ObjectName(object_key, kind, window, int(m.group(1)))


def schema_problem(doc: Any, schema_file: str) -> str | None:
    """The first violation of `schema_file` by `doc`, as text; None when it conforms."""
    try:
        error = next(iter(schema_validator(schema_file).iter_errors(doc)), None)
    except RecursionError:
        return "nested too deeply to validate"
    if error is None:
        return None
    path = "/".join(str(p) for p in error.absolute_path)
    return f"invalid at /{path}: {error.message}"[:500]
