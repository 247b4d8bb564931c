"""A directory with the object store's semantics, for single-machine use and tests.

Durability follows the POSIX rules for crash-safe file replacement: the data is written
to a temporary file and fsynced, then linked (write-once) or renamed (compare-and-swap)
to its name, and then the *directory* is fsynced, because the new directory entry is
data of the directory and is otherwise lost on power failure even though the file's
bytes were synced (fsync(2), "Calling fsync() does not necessarily ensure that the entry
in the directory containing the file has also reached disk"). Newly created directories
are fsynced into their parents the same way.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from storage.store_base import (
    ObjectChanged,
    ObjectInfo,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    PutOutcome,
    Tagged,
    _check_key,
    _differs,
)

_TMP_PREFIX = ".tmp-"


def fsync_dir(path: Path) -> None:
    """Make the entries of directory `path` durable (link, rename, unlink, mkdir in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path) -> None:
    """`mkdir -p` that fsyncs the parent of every directory it creates."""
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            continue
        fsync_dir(d.parent)


def _etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalObjectStore(ObjectStore):
    """Write-once objects by `os.link` (atomic, fails if the name exists), state by rename.

    `put_once` writes a fsynced temporary file and links it to the final name, so two
    concurrent writers cannot both win and a reader never sees a partial object.
    Write-once objects are made read-only (a guard against accidental edits, not a
    security boundary: there is no Object Lock on a local disk). Compare-and-swap
    (`put_if`) holds an exclusive `flock` on the object's directory while it compares the
    content hash (the entity tag) and renames; every writer of state takes that lock.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalObjectStore(root={str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*_check_key(key).split("/"))

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def _write_temp(self, path: Path, data: bytes) -> Path:
        make_dirs(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return Path(tmp)

    def put_once(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> PutOutcome:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            tmp.chmod(0o444)
            os.link(tmp, path)
        except FileExistsError:
            existing = path.read_bytes()
            if existing == data:
                return "existing"
            raise _differs(self.uri(key), existing, data) from None
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)
        return "created"

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(path.parent)

    @contextmanager
    def _locked_dir(self, path: Path) -> Iterator[None]:
        make_dirs(path.parent)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _current_etag(self, path: Path) -> str | None:
        try:
            return _etag(path.read_bytes())
        except FileNotFoundError:
            return None

    def get_tagged(self, key: str) -> Tagged:
        data = self.get(key)
        return Tagged(data, _etag(data))

    def put_if(
        self,
        key: str,
        data: bytes,
        expected_etag: str | None,
        content_type: str = "application/octet-stream",
    ) -> str:
        path = self._path(key)
        with self._locked_dir(path):
            current = self._current_etag(path)
            if current != expected_etag:
                if current == _etag(data):  # our own earlier attempt already landed
                    return current
                raise ObjectChanged(
                    f"{self.uri(key)} changed since it was read "
                    f"(expected {expected_etag or 'absent'}, found {current or 'absent'})"
                )
            self.put(key, data, content_type)
        return _etag(data)

    def delete_if(self, key: str, expected_etag: str) -> None:
        path = self._path(key)
        with self._locked_dir(path):
            current = self._current_etag(path)
            if current is None:
                return
            if current != expected_etag:
                raise ObjectChanged(f"{self.uri(key)} changed since it was read; not deleted")
            self.delete(key)

    def get(self, key: str, version_id: str | None = None) -> bytes:
        if version_id is not None:
            raise ObjectNotFound(f"{self.uri(key)}: a local directory keeps no versions")
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {self.uri(key)}") from None

    def get_range(self, key: str, offset: int, length: int, version_id: str | None = None) -> bytes:
        if version_id is not None:
            raise ObjectNotFound(f"{self.uri(key)}: a local directory keeps no versions")
        if offset < 0 or length < 0:
            raise ObjectStoreError(f"bad byte range {offset}+{length} of {self.uri(key)}")
        try:
            with self._path(key).open("rb") as f:
                f.seek(offset)
                return f.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(f"no object {self.uri(key)}") from None

    def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        return ObjectInfo(key, path.stat().st_size) if path.is_file() else None

    def list(self, prefix: str) -> Iterator[str]:
        # Walk only the deepest directory the prefix names, then filter by the string prefix.
        directory = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*directory.split("/")) if directory else self.root
        if not base.is_dir():
            return
        keys = []
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                if name.startswith(_TMP_PREFIX):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return
        fsync_dir(path.parent)
