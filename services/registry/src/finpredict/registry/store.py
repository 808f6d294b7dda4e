"""Content-addressed artifact storage.

:class:`ArtifactStore` is the interface; :class:`LocalArtifactStore` (a folder) is one
implementation, :class:`~finpredict.registry.s3store.S3ArtifactStore` (an S3-compatible bucket)
the other. Both hash uploads as they arrive (:class:`SpoolFile`), keep blobs under
``sha256/<ab>/<hash>`` and re-hash every read (:func:`verified_chunks`).

Layout of the local store::

    <root>/sha256/<first two hex>/<hex sha256>   immutable blobs
    <root>/tmp/<random>.part                      uploads in progress (swept at start-up)

Paths are derived only from a validated hex digest, never from client input, and are checked
to stay inside the root.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from finpredict.common.fsio import fsync_dir

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class StoreError(Exception):
    """A store operation failed (bad digest, missing blob, path escaping the store)."""


class ChecksumError(StoreError):
    """Stored bytes do not match their recorded sha256 (corruption on disk)."""


class StoreUnavailableError(StoreError):
    """The store cannot be reached or refused the request (a remote store down, timing out,
    throttling or misconfigured); the caller may retry later."""


class Upload(Protocol):
    """An upload in progress: bytes are hashed and counted as they are written."""

    @property
    def size(self) -> int: ...

    def write(self, chunk: bytes) -> None: ...

    def hexdigest(self) -> str: ...

    def commit(self) -> str:
        """Makes the blob durable under its content address; returns the hex sha256."""
        ...

    def abort(self) -> None: ...


class ArtifactStore(Protocol):
    """Where artifact bytes live, addressed by sha256."""

    def begin_upload(self) -> Upload: ...

    def uri(self, sha256: str) -> str: ...

    def holds(self, uri: str, sha256: str) -> bool:
        """True when ``uri`` names a blob this store wrote (the registry streams only those)."""
        ...

    def exists(self, sha256: str) -> bool: ...

    def iter_verified(self, sha256: str, size: int, chunk_size: int) -> Iterator[bytes]: ...

    def verify(self, sha256: str, size: int | None = None, *, raise_on_error: bool = True) -> bool: ...

    def sweep(self) -> int:
        """Removes uploads left over by a crash; returns how many."""
        ...


def check_sha256(value: str) -> str:
    """``value`` if it is a lower-case hex sha256, else :class:`StoreError`."""
    if not SHA256_RE.match(value):
        raise StoreError("not a lower-case hex sha256")
    return value


def verified_chunks(sha256: str, size: int, chunks: Iterator[bytes], where: str) -> Iterator[bytes]:
    """Passes ``chunks`` through while hashing them; after the last one raises
    :class:`ChecksumError` when the bytes (read from ``where``) are not ``size`` bytes with that
    sha256."""
    h = hashlib.sha256()
    total = 0
    for chunk in chunks:
        h.update(chunk)
        total += len(chunk)
        yield chunk
    if total != size or h.hexdigest() != sha256:
        raise ChecksumError(
            f"artifact {sha256} is corrupted {where}: read {total} bytes with sha256 "
            f"{h.hexdigest()}, expected {size} bytes"
        )


class SpoolFile:
    """A local temporary file that hashes and counts what is written to it: an upload's bytes
    before they are stored under their digest."""

    def __init__(self, tmp_dir: Path) -> None:
        self.path = tmp_dir / f"{uuid.uuid4().hex}.part"
        self._file: BinaryIO | None = self.path.open("xb")
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        assert self._file is not None
        self._file.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def close(self, *, durable: bool) -> None:
        """Closes the file (idempotent), after an fsync when ``durable``."""
        if self._file is None:
            return
        self._file.flush()
        if durable:
            os.fsync(self._file.fileno())
        self._file.close()
        self._file = None

    def remove(self) -> None:
        self.close(durable=False)
        self.path.unlink(missing_ok=True)


class SpooledUpload:
    """An upload hashed into a local spool file; a store's subclass says where ``commit`` puts it."""

    def __init__(self, spool_dir: Path) -> None:
        self._spool = SpoolFile(spool_dir)

    @property
    def size(self) -> int:
        return self._spool.size

    def write(self, chunk: bytes) -> None:
        self._spool.write(chunk)

    def hexdigest(self) -> str:
        return self._spool.hexdigest()

    def abort(self) -> None:
        self._spool.remove()


class _LocalUpload(SpooledUpload):
    def __init__(self, store: LocalArtifactStore) -> None:
        super().__init__(store.tmp_dir)
        self._store = store

    def commit(self) -> str:
        self._spool.close(durable=True)
        digest = self._spool.hexdigest()
        final = self._store.path_for(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists() and self._store.verify(digest, raise_on_error=False):
            self._spool.remove()  # same content already stored
        else:
            os.replace(self._spool.path, final)  # atomic within one filesystem
            fsync_dir(final.parent)
        return digest


class LocalArtifactStore:
    """Artifacts in a local folder, content-addressed by sha256."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.blob_dir = self.root / "sha256"
        self.tmp_dir = self.root / "tmp"
        self.blob_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path:
        digest = check_sha256(sha256)
        path = (self.blob_dir / digest[:2] / digest).resolve()
        if not path.is_relative_to(self.blob_dir):
            raise StoreError("path escapes the artifact store")
        return path

    def begin_upload(self) -> _LocalUpload:
        return _LocalUpload(self)

    def uri(self, sha256: str) -> str:
        return self.path_for(sha256).as_uri()

    def holds(self, uri: str, sha256: str) -> bool:
        return uri.startswith("file://")  # by digest: the data folder may have moved since

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def open(self, sha256: str) -> BinaryIO:
        path = self.path_for(sha256)
        try:
            return path.open("rb")
        except FileNotFoundError:
            raise StoreError(f"artifact {sha256} is missing from the store") from None

    def iter_verified(self, sha256: str, size: int, chunk_size: int) -> Iterator[bytes]:
        """Yields the blob in chunks; raises :class:`ChecksumError` at the end if it is corrupt."""
        with self.open(sha256) as f:
            yield from verified_chunks(sha256, size, iter(lambda: f.read(chunk_size), b""), "on disk")

    def verify(self, sha256: str, size: int | None = None, *, raise_on_error: bool = True) -> bool:
        """Re-hashes the blob; False (or :class:`ChecksumError`) when it does not match."""
        h = hashlib.sha256()
        total = 0
        with self.open(sha256) as f:
            while chunk := f.read(1024 * 1024):
                h.update(chunk)
                total += len(chunk)
        ok = h.hexdigest() == sha256 and (size is None or size == total)
        if not ok and raise_on_error:
            raise ChecksumError(
                f"artifact {sha256} is corrupted on disk: sha256 is {h.hexdigest()} ({total} bytes)"
            )
        return ok

    def sweep(self) -> int:
        count = 0
        for part in self.tmp_dir.glob("*.part"):
            part.unlink(missing_ok=True)
            count += 1
        return count
