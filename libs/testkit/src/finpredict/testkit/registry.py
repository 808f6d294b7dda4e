"""Harness of the registry tests: a throwaway PostgreSQL, real registry processes, request builders."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.net import free_port
from finpredict.registry.config import S3Location
from finpredict.stack.postgres import PostgresCluster, pg_bin
from finpredict.testkit.evaluation import PASSING_GATES, lineage
from finpredict.testkit.evaluation import gate as gate  # re-exported for the registry tests
from finpredict.testkit.names import unique
from finpredict.testkit.process import ServiceProcess, start_service, wait_for
from finpredict.testkit.s3 import S3Server

ADMIN_TOKEN = "admin-token-0123456789"
WRITER_TOKEN = "writer-token-0123456789"
READER_TOKEN = "reader-token-0123456789"
VALIDATOR_TOKEN = "validator-token-0123456789"
TOKENS = (
    f"{ADMIN_TOKEN}=alice:admin,{WRITER_TOKEN}=trainer:writer,{READER_TOKEN}=bob:reader,"
    f"{VALIDATOR_TOKEN}=carol:validator"
)


# ----- PostgreSQL ------------------------------------------------------------------------------


@dataclass
class Postgres:
    cluster: PostgresCluster
    proc: subprocess.Popen[bytes]
    _dbs: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def port(self) -> int:
        return self.cluster.port

    def admin_url(self) -> str:
        return self.cluster.url(driver="postgresql")

    def new_database(self) -> str:
        """Creates a fresh database and returns its SQLAlchemy URL."""
        name = f"registry_{next(self._dbs)}"
        self.cluster.create_database(name)
        return self.cluster.url(name)


def start_postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster on loopback (the launcher's, :mod:`finpredict.stack.postgres`),
    run as the ``postgres`` OS user when we are root."""
    try:
        pg_bin()
    except FileNotFoundError as exc:
        pytest.fail(str(exc))
    root = Path(tempfile.mkdtemp(prefix="fp-registry-pg-"))
    cluster = PostgresCluster(root, free_port())
    cluster.init()
    log = (root / "postgres.log").open("wb")
    proc = cluster.spawn(log)
    pg = Postgres(cluster, proc)

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {(root / 'postgres.log').read_text(errors='replace')}")
        return cluster.ready()

    try:
        wait_for(ready, 30, "postgres to accept connections")
        yield pg
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # fast shutdown of our own postmaster, by pid
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        log.close()
        shutil.rmtree(root, ignore_errors=True)


# ----- registry --------------------------------------------------------------------------------


class Client:
    """A registry stub with one token's metadata applied to every call."""

    def __init__(self, target: str, token: str | None) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        self.metadata = bearer_metadata(token) if token else ()

    def __getattr__(self, method: str) -> Any:
        rpc = getattr(self.stub, method)

        def call(request: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("timeout", 30)
            return rpc(request, metadata=self.metadata, **kwargs)

        return call

    def close(self) -> None:
        self.channel.close()


@dataclass
class Registry:
    backend: str  # "sqlite", "postgres", or "s3": SQLite with the artifacts in an S3 bucket
    proc: ServiceProcess
    data_dir: Path
    env: dict[str, str]
    s3: S3Server | None = None

    @property
    def target(self) -> str:
        return self.proc.target

    def client(self, token: str | None = ADMIN_TOKEN) -> Client:
        return Client(self.target, token)

    @property
    def upload_dir(self) -> Path:
        """Where the registry spools uploads in progress (``*.part`` files)."""
        return self.data_dir / ("s3-uploads" if self.s3 else "artifacts/tmp")

    def s3_key(self, digest: str) -> tuple[str, str]:
        """The bucket and key of an artifact in the registry's S3 store."""
        where = S3Location.parse(self.env["FINPREDICT_REGISTRY_ARTIFACT_STORE"])
        return where.bucket, f"{where.prefix}sha256/{digest[:2]}/{digest}"

    def read_blob(self, digest: str) -> bytes:
        """The stored bytes of an artifact, read behind the registry's back."""
        if self.s3 is None:
            return (self.data_dir / "artifacts" / "sha256" / digest[:2] / digest).read_bytes()
        bucket, key = self.s3_key(digest)
        return self.s3.client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def write_blob(self, digest: str, data: bytes) -> None:
        """Overwrites the stored bytes of an artifact behind the registry's back (corruption)."""
        if self.s3 is None:
            (self.data_dir / "artifacts" / "sha256" / digest[:2] / digest).write_bytes(data)
            return
        bucket, key = self.s3_key(digest)
        self.s3.client().put_object(Bucket=bucket, Key=key, Body=data)


def registry_env(tmp: Path, database_url: str = "") -> dict[str, str]:
    env = {
        "FINPREDICT_REGISTRY_DATA_DIR": str(tmp / "data"),
        "FINPREDICT_REGISTRY_TOKENS": TOKENS,
        "FINPREDICT_REGISTRY_LOG_FORMAT": "text",
        "FINPREDICT_REGISTRY_SHUTDOWN_GRACE_S": "2",
        "FINPREDICT_REGISTRY_WATCH_POLL_S": "0.5",
        "FINPREDICT_REGISTRY_CHUNK_SIZE": "65536",
    }
    if database_url:
        env["FINPREDICT_REGISTRY_DATABASE_URL"] = database_url
    return env


def start_registry(work: Path, tokens: str, extra: dict[str, str] | None = None) -> ServiceProcess:
    """A registry subprocess on SQLite in ``work`` with ``tokens`` (the stacks' registry)."""
    env = {
        "FINPREDICT_REGISTRY_DATA_DIR": str(work / "data"),
        "FINPREDICT_REGISTRY_TOKENS": tokens,
        "FINPREDICT_REGISTRY_LOG_FORMAT": "text",
        "FINPREDICT_REGISTRY_SHUTDOWN_GRACE_S": "1",
        **(extra or {}),
    }
    return start_service("registry", work, env=env)


@contextlib.contextmanager
def running_registry(
    backend: str, tmp: Path, pg: Postgres | None, s3: S3Server | None = None, **extra: str
) -> Iterator[Registry]:
    """A registry subprocess; with ``s3``, its artifacts go to a new bucket on that server."""
    url = pg.new_database() if backend == "postgres" and pg is not None else ""
    store = s3.registry_env(s3.create_bucket("registry")) if s3 is not None else {}
    env = {**registry_env(tmp, url), **store, **extra}
    proc = start_service("registry", tmp, env=env)
    try:
        yield Registry(backend, proc, tmp / "data", env, s3)
    finally:
        code = proc.stop(timeout=15)
        assert code == 0, proc.logs()


# ----- request builders ------------------------------------------------------------------------


# What the pipeline registers with a version that passed evaluation (promotable under the
# registry's default policy); the registry stores the profile's bytes without reading them.
PASSING = PASSING_GATES
LINEAGE = lineage()
PROFILE = b"\x00\x01reference-profile"


def promotable(**kwargs: Any) -> dict[str, Any]:
    """Header fields of a version the default promotion policy accepts (``kwargs`` override)."""
    return {"gate_results": PASSING, "lineage": LINEAGE, "reference_profile": PROFILE, **kwargs}


def header(model: str, **kwargs: Any) -> registry_pb2.VersionHeader:
    kwargs.setdefault("artifact_format", "xgboost-ubj")
    kwargs.setdefault("threshold", 0.5)
    return registry_pb2.VersionHeader(model=model, **kwargs)


def upload_requests(
    head: registry_pb2.VersionHeader, data: bytes, chunk: int = 64 * 1024
) -> Iterator[registry_pb2.RegisterVersionRequest]:
    yield registry_pb2.RegisterVersionRequest(header=head)
    for i in range(0, len(data), chunk):
        yield registry_pb2.RegisterVersionRequest(chunk=data[i : i + chunk])


def register(client: Client, model: str, data: bytes, **kwargs: Any) -> registry_pb2.ModelVersion:
    head = header(model, **kwargs)
    return client.RegisterVersion(upload_requests(head, data)).version  # type: ignore[no-any-return]


def create_model(client: Client, prefix: str = "m") -> str:
    name = unique(prefix)
    client.CreateModel(registry_pb2.CreateModelRequest(name=name, description="test model"))
    return name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def code_of(exc_info: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc_info.value.code()  # type: ignore[attr-defined,no-any-return]


def details_of(exc_info: pytest.ExceptionInfo[grpc.RpcError]) -> str:
    return exc_info.value.details() or ""  # type: ignore[attr-defined]


def audit(client: Client, model: str) -> Sequence[registry_pb2.AuditEntry]:
    return client.ListAuditLog(registry_pb2.ListAuditLogRequest(model=model, page_size=1000)).entries  # type: ignore[no-any-return]
