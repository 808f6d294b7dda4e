"""Acceptance 4: a registry killed (SIGKILL) mid-upload leaves no half-registered version."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from finpredict.api.registry.v1 import registry_pb2 as pb
from finpredict.testkit.process import start_service, wait_for
from finpredict.testkit.registry import (
    ADMIN_TOKEN,
    Client,
    Postgres,
    audit,
    create_model,
    header,
    register,
    registry_env,
    sha256,
)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_kill_9_mid_upload_leaves_nothing_and_the_upload_can_be_retried(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = ""
    if backend == "postgres":
        pg: Postgres = request.getfixturevalue("postgres")
        url = pg.new_database()
    env = registry_env(tmp_path, url)
    proc = start_service("registry", tmp_path, env=env)
    tmp_dir = tmp_path / "data" / "artifacts" / "tmp"
    artifact = b"\x5a" * (3 * 1024 * 1024)
    try:
        client = Client(proc.target, ADMIN_TOKEN)
        model = create_model(client, "crash")
        release = threading.Event()

        def slow_upload() -> Iterator[pb.RegisterVersionRequest]:
            head = header(model, artifact_sha256=sha256(artifact), idempotency_key="train-run-7")
            yield pb.RegisterVersionRequest(header=head)
            yield pb.RegisterVersionRequest(chunk=artifact[: 1024 * 1024])
            release.wait(timeout=30)  # the server dies while we hold the rest back
            yield pb.RegisterVersionRequest(chunk=artifact[1024 * 1024 :])

        errors: list[grpc.RpcError] = []

        def call() -> None:
            try:
                client.RegisterVersion(slow_upload())
            except grpc.RpcError as exc:
                errors.append(exc)

        caller = threading.Thread(target=call, daemon=True)
        caller.start()
        part = wait_for(
            lambda: next((p for p in tmp_dir.glob("*.part") if p.stat().st_size > 0), None),
            20,
            "the upload to reach the store",
        )
        proc.kill()
        proc.wait(timeout=10)
        release.set()
        caller.join(timeout=30)
        assert errors
        assert errors[0].code() == grpc.StatusCode.UNAVAILABLE
        assert part.exists()  # the half upload is on disk ...
        client.close()
    finally:
        proc.kill()

    restarted = start_service("registry", tmp_path, env=env)
    try:
        client = Client(restarted.target, ADMIN_TOKEN)
        assert not part.exists()
        assert not list(tmp_dir.iterdir())
        assert client.GetModel(pb.GetModelRequest(name=model)).model.latest_version == 0
        assert client.ListVersions(pb.ListVersionsRequest(model=model)).versions == []
        assert [e.action for e in audit(client, model)] == ["model.create"]
        retried = register(
            client, model, artifact, artifact_sha256=sha256(artifact), idempotency_key="train-run-7"
        )
        assert retried.version == 1
        assert retried.artifact.size_bytes == len(artifact)
        again = register(
            client, model, artifact, artifact_sha256=sha256(artifact), idempotency_key="train-run-7"
        )
        assert again.version == 1
        client.close()
    finally:
        assert restarted.stop(timeout=15) == 0, restarted.logs()


def test_sigterm_ends_watch_streams_cleanly_and_drains_fast(tmp_path: Path) -> None:
    import time

    env = {**registry_env(tmp_path), "FINPREDICT_REGISTRY_SHUTDOWN_GRACE_S": "30"}
    proc = start_service("registry", tmp_path, env=env)
    client = Client(proc.target, ADMIN_TOKEN)
    try:
        model = create_model(client, "drain")
        stream = client.stub.WatchAliases(
            pb.WatchAliasesRequest(model=model, after_event_id=-1), metadata=client.metadata, timeout=60
        )
        received: list[pb.WatchAliasesResponse] = []
        finished = threading.Event()

        def consume() -> None:
            received.extend(stream)  # ends without error when the server drains
            finished.set()

        threading.Thread(target=consume, daemon=True).start()
        wait_for(lambda: stream.is_active() and proc.health() == 1, 10, "the watch to be open")
        t0 = time.monotonic()
        proc.terminate()
        assert proc.wait(timeout=20) == 0
        assert time.monotonic() - t0 < 15  # not held for the 30 s grace by the open stream
        assert finished.wait(10)
        assert stream.code() == grpc.StatusCode.OK
    finally:
        client.close()
        proc.kill()
