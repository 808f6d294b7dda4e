"""Artifacts in an S3-compatible bucket, content-addressed by sha256, through boto3.

Layout under ``s3://<bucket>/<prefix>``::

    <prefix>sha256/<first two hex>/<hex sha256>   immutable blobs

An upload is spooled to a local temporary file while it is hashed (its key is its digest, known
only at the end), then sent with boto3's managed transfer: one PUT below the multipart threshold,
a multipart upload of parallel parts from it on. S3 shows an object whole or not at all, so no
reader ever sees a partial blob, and two uploads of the same bytes write the same object. Every
read is hashed again (:func:`~finpredict.registry.store.verified_chunks`): an object whose bytes
changed is refused with :class:`~finpredict.registry.store.ChecksumError`, never served.

Connect and read timeouts and a bounded number of attempts (botocore's standard retry mode) make
an unreachable or silent endpoint fail within seconds with
:class:`~finpredict.registry.store.StoreUnavailableError`. Credentials and region come from
boto3's own chain (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``,
``AWS_REGION``, a profile, a web identity or instance metadata); finpredict never reads them.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError

from finpredict.registry.config import RegistrySettings, S3Location
from finpredict.registry.store import (
    ChecksumError,
    SpooledUpload,
    StoreError,
    StoreUnavailableError,
    check_sha256,
    verified_chunks,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger("finpredict.registry")

_MISSING = frozenset({"NoSuchKey", "NotFound", "404"})
_READ_CHUNK = 1024 * 1024


@contextlib.contextmanager
def _s3_errors(what: str) -> Iterator[None]:
    """Maps boto3's errors to the store's: a missing object is a :class:`StoreError`, a checksum
    failure in transit a :class:`ChecksumError`, anything else (refused or reset connections,
    timeouts after the last attempt, throttling, 5xx, credentials) :class:`StoreUnavailableError`."""
    try:
        yield
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise StoreError(f"{what}: the object is missing from the store") from None
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        raise StoreUnavailableError(f"{what}: S3 answered {code or 'an error'} (HTTP {status})") from None
    except FlexibleChecksumError as exc:
        raise ChecksumError(f"{what}: {exc}") from None
    except (BotoCoreError, S3UploadFailedError) as exc:
        raise StoreUnavailableError(f"{what}: S3 is unavailable ({exc})") from None


def s3_client(settings: RegistrySettings) -> S3Client:
    """A boto3 S3 client with bounded timeouts and attempts (thread-safe: shared by the servicer)."""
    config = Config(
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
        retries={"mode": "standard", "total_max_attempts": settings.s3_max_attempts},
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
        max_pool_connections=16,
    )
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region or None,
        config=config,
    )


class _S3Upload(SpooledUpload):
    def __init__(self, store: S3ArtifactStore) -> None:
        super().__init__(store.spool_dir)
        self._store = store

    def commit(self) -> str:
        self._spool.close(durable=False)  # S3 holds the durable copy
        digest = self._spool.hexdigest()
        try:
            self._store.put(self._spool.path, digest)
        finally:
            self._spool.remove()
        return digest


class S3ArtifactStore:
    """Artifacts in an S3 bucket under a prefix, content-addressed by sha256."""

    def __init__(
        self, client: S3Client, location: S3Location, spool_dir: Path, transfer: TransferConfig
    ) -> None:
        self.client = client
        self.location = location
        self.spool_dir = spool_dir
        self.transfer = transfer
        spool_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: RegistrySettings, location: S3Location) -> S3ArtifactStore:
        transfer = TransferConfig(
            multipart_threshold=settings.s3_multipart_threshold_bytes,
            multipart_chunksize=settings.s3_multipart_chunk_bytes,
        )
        return cls(s3_client(settings), location, settings.s3_spool_dir(), transfer)

    def key(self, sha256: str) -> str:
        digest = check_sha256(sha256)
        return f"{self.location.prefix}sha256/{digest[:2]}/{digest}"

    def uri(self, sha256: str) -> str:
        return self.location.uri(self.key(sha256))

    def holds(self, uri: str, sha256: str) -> bool:
        return uri == self.uri(sha256)

    def begin_upload(self) -> _S3Upload:
        return _S3Upload(self)

    def put(self, path: Path, sha256: str) -> None:
        """Uploads the file at ``path`` as the blob ``sha256`` (multipart above the threshold)."""
        with _s3_errors(f"uploading {self.uri(sha256)}"):
            self.client.upload_file(
                str(path),
                self.location.bucket,
                self.key(sha256),
                ExtraArgs={"ContentType": "application/octet-stream", "Metadata": {"sha256": sha256}},
                Config=self.transfer,
            )

    def exists(self, sha256: str) -> bool:
        try:
            with _s3_errors(f"looking up {self.uri(sha256)}"):
                self.client.head_object(Bucket=self.location.bucket, Key=self.key(sha256))
        except StoreUnavailableError:
            raise
        except StoreError:
            return False
        return True

    def _chunks(self, sha256: str, chunk_size: int) -> Iterator[bytes]:
        """The object's bytes as they arrive (not verified)."""
        with _s3_errors(f"reading {self.uri(sha256)}"):
            body = self.client.get_object(Bucket=self.location.bucket, Key=self.key(sha256))["Body"]
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

    def iter_verified(self, sha256: str, size: int, chunk_size: int) -> Iterator[bytes]:
        """Yields the blob in chunks; raises :class:`ChecksumError` at the end if it is corrupt."""
        yield from verified_chunks(
            sha256, size, self._chunks(sha256, chunk_size), f"in the store ({self.uri(sha256)})"
        )

    def verify(self, sha256: str, size: int | None = None, *, raise_on_error: bool = True) -> bool:
        """Reads the whole object and hashes it; False (or :class:`ChecksumError`) on a mismatch."""
        h = hashlib.sha256()
        total = 0
        for chunk in self._chunks(sha256, _READ_CHUNK):
            h.update(chunk)
            total += len(chunk)
        ok = h.hexdigest() == sha256 and (size is None or size == total)
        if not ok and raise_on_error:
            raise ChecksumError(
                f"artifact {sha256} is corrupted in the store ({self.uri(sha256)}): "
                f"sha256 is {h.hexdigest()} ({total} bytes)"
            )
        return ok

    def probe(self) -> None:
        """Checks that the bucket answers; raises :class:`StoreError` (or its unavailable kind)."""
        with _s3_errors(f"checking {self.location.uri()}"):
            self.client.head_bucket(Bucket=self.location.bucket)

    def sweep(self) -> int:
        """Removes local spool files left by a crash (S3 aborts failed multipart uploads itself
        only through a bucket lifecycle rule: see the README)."""
        count = 0
        for part in self.spool_dir.glob("*.part"):
            part.unlink(missing_ok=True)
            count += 1
        return count
