"""Object stores for payloads, checkpoints, receipts and state.

Everything except the cursor is written once: `put_once` uses a conditional write
(S3 ``If-None-Match: *``) so that a retry can never overwrite an object, and on a
conflict it compares the existing bytes: identical is success (the retry found its own
work), different is `ObjectConflict` (something else wrote there; fail loudly).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

PutOutcome = Literal["created", "existing"]


class ObjectStoreError(RuntimeError):
    """Base class of object-store failures."""


class ObjectNotFound(ObjectStoreError):
    """No object under the key."""


class ObjectConflict(ObjectStoreError):
    """A write-once key already holds different bytes."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str
    size: int


class ObjectStore(ABC):
    """Minimal store interface the pipeline and the auditor use."""

    @abstractmethod
    def uri(self, key: str) -> str:
        """A URI naming the object (``s3://bucket/prefix/key`` or ``file:///...``)."""

    @abstractmethod
    def put_once(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> PutOutcome:
        """Write-once put; see module docstring."""

    @abstractmethod
    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        """Overwriting put (only for mutable state such as the cursor)."""

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; `ObjectNotFound` if absent."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Size of the object, or None if absent."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[str]:
        """Keys under `prefix`, in lexicographic order."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object (missing is not an error)."""
