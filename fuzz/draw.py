"""Turn fuzzer bytes into structured choices, the same way for atheris and hypothesis.

A coverage-guided fuzzer mutates raw bytes; a target that needs a message (key, value,
timestamp) or a mutation plan for a JSON document reads them from a `Draw` over those
bytes. The reading is total and deterministic: running out of bytes yields zeros and
empty strings, so every byte string is a valid input and a saved crash replays exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


class Draw:
    """Sequential reader of choices from `data` (like atheris' FuzzedDataProvider)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def bytes(self, n: int) -> bytes:
        out = self._data[self._pos : self._pos + max(0, n)]
        self._pos += len(out)
        return out

    def uint(self, nbytes: int) -> int:
        return int.from_bytes(self.bytes(nbytes).ljust(nbytes, b"\0"), "big")

    def int64(self) -> int:
        return int.from_bytes(self.bytes(8).ljust(8, b"\0"), "big", signed=True)

    def below(self, n: int) -> int:
        """An int in [0, n) (0 when n <= 0)."""
        return self.uint(2) % n if n > 0 else 0

    def pick(self, options: Sequence[T]) -> T:
        return options[self.below(len(options))]

    def flag(self) -> bool:
        return self.uint(1) & 1 == 1

    def sized(self, max_len: int) -> bytes:
        """A length-prefixed byte string of at most `max_len` bytes."""
        return self.bytes(self.below(max_len + 1))

    def rest(self) -> bytes:
        return self.bytes(self.remaining())
