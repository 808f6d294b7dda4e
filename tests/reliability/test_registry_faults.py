"""Registry faults: ``kill -9`` under write load, and a slow network between client and registry.

Kill: two writers register versions (uploads in chunks) and move an alias as fast as they can;
the registry is killed with SIGKILL mid-load and restarted on the same data dir. Every
registration and alias move the clients got an answer for is there, with its bytes intact;
nothing half-written is visible (every listed version downloads and verifies, no upload is left
in the store, counted by ``finpredict_registry_swept_uploads_total``).

Slow: a TCP proxy delays the registry's answers or throttles the uplink. Clients with deadlines
get DEADLINE_EXCEEDED; a throttled upload is abandoned by the server too (counted) and leaves
nothing; a move that
committed although its answer came too late is found by a compare-and-set retry, never applied
twice; once the network is fast again the same channel works without any repair.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from finpredict.api.registry.v1 import registry_pb2 as pb
from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.testkit.process import ServiceProcess, start_service, wait_for
from finpredict.testkit.proxy import DelayProxy
from finpredict.testkit.scrape import metric_value

TOKEN = "reliability-admin-token-0123456789"
MD = bearer_metadata(TOKEN)
MODEL = "faulty"


def _env(tmp: Path) -> dict[str, str]:
    return {
        "FINPREDICT_REGISTRY_DATA_DIR": str(tmp / "data"),
        "FINPREDICT_REGISTRY_TOKENS": f"{TOKEN}=writer-bot:admin",
        "FINPREDICT_REGISTRY_SHUTDOWN_GRACE_S": "2",
        "FINPREDICT_REGISTRY_CHUNK_SIZE": "65536",
    }


def _upload(
    head: pb.VersionHeader, data: bytes, chunk: int = 32 * 1024
) -> Iterator[pb.RegisterVersionRequest]:
    yield pb.RegisterVersionRequest(header=head)
    for i in range(0, len(data), chunk):
        yield pb.RegisterVersionRequest(chunk=data[i : i + chunk])


def _download(stub: registry_pb2_grpc.RegistryServiceStub, version: int) -> bytes:
    request = pb.DownloadArtifactRequest(model=MODEL, version=version)
    return b"".join(r.chunk for r in stub.DownloadArtifact(request, metadata=MD, timeout=30))


@dataclass
class Acks:
    versions: dict[int, str] = field(default_factory=dict)  # version -> sha256 the client was told
    moves: dict[int, int] = field(default_factory=dict)  # audit event id -> version it moved to
    errors: list[grpc.StatusCode] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _writer(target: str, acks: Acks, stop: threading.Event) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        while not stop.is_set():
            data = os.urandom(int.from_bytes(os.urandom(2)) % (256 * 1024) + 1024)
            head = pb.VersionHeader(
                model=MODEL, artifact_format="xgboost-ubj", idempotency_key=os.urandom(8).hex()
            )
            try:
                version = stub.RegisterVersion(_upload(head, data), metadata=MD, timeout=30).version
                with acks.lock:
                    acks.versions[version.version] = hashlib.sha256(data).hexdigest()
                move = pb.SetAliasRequest(
                    model=MODEL, alias="staging", version=version.version, reason="load"
                )
                event = stub.SetAlias(move, metadata=MD, timeout=30).event
                with acks.lock:
                    acks.moves[event.event_id] = event.to_version
            except grpc.RpcError as exc:
                with acks.lock:
                    acks.errors.append(exc.code())  # type: ignore[attr-defined]
                return


def test_kill_9_under_write_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = start_service("registry", tmp_path / "run1", env=env)
    acks, stop = Acks(), threading.Event()
    try:
        with grpc.insecure_channel(proc.target) as channel:
            registry_pb2_grpc.RegistryServiceStub(channel).CreateModel(
                pb.CreateModelRequest(name=MODEL), metadata=MD, timeout=10
            )
        writers = [threading.Thread(target=_writer, args=(proc.target, acks, stop)) for _ in range(2)]
        for w in writers:
            w.start()
        wait_for(lambda: len(acks.moves) >= 8, 60, "the writers to get 8 alias moves acknowledged")
        counted = metric_value(proc, "finpredict_registry_registrations_total", outcome="created")
        proc.kill()  # SIGKILL, mid-load
        proc.wait(timeout=10)
        for w in writers:
            w.join(timeout=60)
        stop.set()
    finally:
        stop.set()
        proc.kill()
    # what the clients saw: answers until the kill, then UNAVAILABLE (never a wrong answer)
    assert acks.errors, "the writers were still writing when the registry died"
    assert set(acks.errors) == {grpc.StatusCode.UNAVAILABLE}, acks.errors
    # what it counted while alive: every acknowledged registration (and at most one per writer more)
    assert len(acks.versions) - 2 <= counted <= len(acks.versions) + 2, (counted, len(acks.versions))
    left = list((tmp_path / "data" / "artifacts" / "tmp").glob("*.part"))

    restarted = start_service("registry", tmp_path / "run2", env=env)
    try:
        assert metric_value(restarted, "finpredict_registry_swept_uploads_total") == len(left)
        assert not list((tmp_path / "data" / "artifacts" / "tmp").iterdir())
        with grpc.insecure_channel(restarted.target) as channel:
            stub = registry_pb2_grpc.RegistryServiceStub(channel)
            listed = stub.ListVersions(
                pb.ListVersionsRequest(model=MODEL, page_size=500), metadata=MD, timeout=10
            )
            stored = {v.version: v.artifact.sha256 for v in listed.versions}
            for version, sha in acks.versions.items():
                assert stored.get(version) == sha, f"acknowledged version {version} lost or changed"
            assert sorted(stored) == list(range(1, len(stored) + 1)), "version numbers have a gap"
            for version, sha in stored.items():  # acknowledged or not: every listed one is whole
                assert hashlib.sha256(_download(stub, version)).hexdigest() == sha
            audit = stub.ListAuditLog(
                pb.ListAuditLogRequest(model=MODEL, page_size=1000), metadata=MD, timeout=10
            )
            moves = {e.id: e.to_version for e in audit.entries if e.action == "alias.set"}
            for event_id, version in acks.moves.items():
                assert moves.get(event_id) == version, f"acknowledged move {event_id} lost"
            model = stub.GetModel(pb.GetModelRequest(name=MODEL), metadata=MD, timeout=10).model
            assert model.aliases["staging"] == moves[max(moves)]  # the alias is where its last move put it
            # and it goes on by itself: new writes work on the recovered data
            head = pb.VersionHeader(model=MODEL, artifact_format="xgboost-ubj")
            new = stub.RegisterVersion(_upload(head, b"after the crash"), metadata=MD, timeout=10).version
            assert new.version == len(stored) + 1
    finally:
        assert restarted.stop(timeout=20) == 0, restarted.logs()[-4000:]


@pytest.fixture
def slow_registry(tmp_path: Path) -> Iterator[tuple[ServiceProcess, DelayProxy]]:
    proc = start_service("registry", tmp_path / "run", env=_env(tmp_path))
    proxy = DelayProxy(proc.port).start()
    try:
        yield proc, proxy
    finally:
        proxy.stop()
        assert proc.stop(timeout=20) == 0, proc.logs()[-4000:]


def _handled(proc: ServiceProcess, method: str, *codes: str) -> float:
    full = f"/finpredict.registry.v1.RegistryService/{method}"
    return sum(
        metric_value(proc, "finpredict_grpc_server_handled_total", grpc_method=full, grpc_code=c)
        for c in codes
    )


def test_slow_network_deadlines_and_nothing_half_written(
    slow_registry: tuple[ServiceProcess, DelayProxy],
) -> None:
    proc, proxy = slow_registry
    with grpc.insecure_channel(proxy.target) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        stub.CreateModel(pb.CreateModelRequest(name=MODEL), metadata=MD, timeout=10)
        v1 = stub.RegisterVersion(
            _upload(pb.VersionHeader(model=MODEL), b"v1"), metadata=MD, timeout=10
        ).version

        # 1. a server slower than the deadline: the client gets DEADLINE_EXCEEDED, the server answered OK
        proxy.response_delay_s = 2.0
        with pytest.raises(grpc.RpcError) as exc:
            stub.GetModel(pb.GetModelRequest(name=MODEL), metadata=MD, timeout=1.0)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]

        # 2. a move whose answer comes too late has happened once; the CAS retry finds it
        with pytest.raises(grpc.RpcError) as exc:
            stub.SetAlias(
                pb.SetAliasRequest(model=MODEL, alias="staging", version=v1.version, expected_version=0),
                metadata=MD,
                timeout=1.0,
            )
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        proxy.response_delay_s = 0.0
        wait_for(lambda: _handled(proc, "SetAlias", "OK") == 1, 10, "the server to finish the move")
        with pytest.raises(grpc.RpcError) as exc:
            stub.SetAlias(
                pb.SetAliasRequest(model=MODEL, alias="staging", version=v1.version, expected_version=0),
                metadata=MD,
                timeout=10,
            )
        assert exc.value.code() == grpc.StatusCode.ABORTED  # type: ignore[attr-defined]
        audit = stub.ListAuditLog(pb.ListAuditLogRequest(model=MODEL), metadata=MD, timeout=10).entries
        assert [e.action for e in audit].count("alias.set") == 1

        # 3. a throttled upload: both ends give up at the deadline, nothing is stored
        proxy.upload_rate_bps = 256 * 1024
        data = os.urandom(2 * 1024 * 1024)
        head = pb.VersionHeader(model=MODEL, idempotency_key="slow-upload")
        with pytest.raises(grpc.RpcError) as exc:
            stub.RegisterVersion(_upload(head, data), metadata=MD, timeout=1.5)
        assert exc.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # type: ignore[attr-defined]
        proxy.upload_rate_bps = None
        wait_for(
            lambda: _handled(proc, "RegisterVersion", "DEADLINE_EXCEEDED", "CANCELLED") == 1,
            20,
            "the server to count the abandoned upload",
        )
        tmp_dir = Path(proc.extra_env["FINPREDICT_REGISTRY_DATA_DIR"]) / "artifacts" / "tmp"
        wait_for(lambda: not list(tmp_dir.iterdir()), 20, "the abandoned upload to be removed")
        model = stub.GetModel(pb.GetModelRequest(name=MODEL), metadata=MD, timeout=10).model
        assert model.latest_version == 1
        assert metric_value(proc, "finpredict_registry_registrations_total", outcome="created") == 1

        # 4. the network is fast again: the same channel, the same idempotent retry, one version
        retried = stub.RegisterVersion(_upload(head, data), metadata=MD, timeout=30).version
        again = stub.RegisterVersion(_upload(head, data), metadata=MD, timeout=30).version
        assert retried.version == again.version == 2
        assert retried.artifact.sha256 == hashlib.sha256(data).hexdigest()
