"""The errors of live sources (storage/sources.py), importable without `requests`.

`tasks.retries` classifies every step's errors, and the anchor path imports it: keeping
these two classes apart spares that path importing `requests` (~0.1-0.3 s of the CLI's
start, issue 10). `storage.sources` re-exports them.
"""

from __future__ import annotations


class SourceError(RuntimeError):
    """A live source answered something unusable (404, not a zip, not JSON): permanent."""


class SourceUnavailable(SourceError):
    """A live source could not be reached (connection, DNS, timeout) or answered 429/5xx.

    Transient (tasks/retries.py): the session's own retries are used up, but a task-level
    retry a little later may succeed.
    """
