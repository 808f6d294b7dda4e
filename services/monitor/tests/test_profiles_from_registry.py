"""Profiles from the registry (issue 20, acceptance 1): a monitor with an empty data folder and no
profiles folder, its registry address and a reader token, raises the recession's drift alerts
with the reference profile the pipeline registered; while the registry is away the records are
kept and scored once it is back; a version registered without a profile is counted. The fetcher's
checks (the registry's sha256, a final NOT_FOUND) against a stand-in registry."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from datetime import UTC, timedelta
from pathlib import Path

import grpc
import polars as pl
import pytest

import drift_core
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.common.net import free_port
from finpredict.demo import replay as rp
from finpredict.monitor.fetch import FetchFailedError, ProfileFetcher
from finpredict.monitor.profiles import ProfileCache
from finpredict.pipelines.register import register
from finpredict.testkit.monitor import MODEL, authed, monitor_env, stub
from finpredict.testkit.process import ServiceProcess, start_service, wait_for
from finpredict.testkit.registry import ADMIN_TOKEN, READER_TOKEN, registry_env
from finpredict.testkit.scrape import metric_value


def _register(target: str, tmp: Path, profile: bytes) -> int:
    """Registers a version of :data:`MODEL` as the pipeline's register stage does (the model created
    when missing, the artifact streamed, the profile and its sha256 in the header)."""
    artifact = tmp / "model.ubj"
    artifact.write_bytes(b"an artifact " + profile[:16])
    header = registry_pb2.VersionHeader(
        model=MODEL,
        artifact_format="xgboost-ubj",
        threshold=0.1,
        reference_profile=profile,
        reference_profile_sha256=hashlib.sha256(profile).hexdigest() if profile else "",
    )
    return register(target, ADMIN_TOKEN, header, artifact).version


def _registry(work: Path, port: int = 0) -> ServiceProcess:
    return start_service("registry", work, env={**registry_env(work), "FINPREDICT_REGISTRY_PORT": str(port)})


def _monitor(work: Path, registry_target: str) -> ServiceProcess:
    env = monitor_env(
        work,
        FINPREDICT_MONITOR_REGISTRY_TARGET=registry_target,
        FINPREDICT_MONITOR_REGISTRY_TOKEN=READER_TOKEN,
        FINPREDICT_MONITOR_PROFILE_RETRY_INITIAL_S="0.2",
        FINPREDICT_MONITOR_PROFILE_RETRY_MAX_S="1",
    )
    del env["FINPREDICT_MONITOR_PROFILES_DIR"]  # as deployed: no profiles folder, the cache in data
    return start_service("monitor", work, env=env)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[ServiceProcess]:
    proc = _registry(tmp_path / "registry")
    yield proc
    proc.stop()


def test_the_recession_raises_drift_alerts_with_the_profile_from_the_registry(
    tmp_path: Path, registry: ServiceProcess, profile_bytes: bytes
) -> None:
    assert _register(registry.target, tmp_path, profile_bytes) == 1
    assert _register(registry.target, tmp_path, b"") == 2  # a version without a profile
    work = tmp_path / "monitor"
    proc = _monitor(work, registry.target)
    try:
        assert not (work / "data" / "predictions").exists() or not any(
            (work / "data" / "predictions").iterdir()
        )
        with grpc.insecure_channel(proc.target) as plain:
            ch = authed(plain)
            sc = rp.Scenario(days=14, first_day=7, per_hour=200, drift="recession", shift_day=10, seed=21)
            result = rp.replay(ch, rp.generate(sc), MODEL, 1)
            psi = result.firing("feature_psi_3d")
            assert psi, [a.rule for a in result.changes]
            assert {a.started_at.ToDatetime(tzinfo=UTC) for a in psi} == {sc.shift_time + timedelta(days=3)}
            assert {"credit_utilization", "revenue_growth"} <= {f for a in psi for f in a.features}
            assert result.first_firing("score_kl_1h") is not None
            # version 2 has no profile: its records are stored and counted, never folded
            v2 = rp.generate(rp.Scenario(days=1, per_hour=5, seed=22)).head(5)
            s = stub(ch)
            s.IngestPredictions(
                iter([pb.IngestPredictionsRequest(records=rp.to_records(v2, MODEL, 2))]), timeout=10
            )
            wait_for(
                lambda: (
                    metric_value(proc, "finpredict_monitor_records_unprofiled_total", reason="no_profile")
                    == 5
                ),
                30,
                "version 2's records counted as unprofiled",
            )
        cached = work / "data" / "profiles" / MODEL
        assert (cached / "1.bin").read_bytes() == profile_bytes
        assert (cached / "1.sha256").read_text() == hashlib.sha256(profile_bytes).hexdigest()
        assert metric_value(proc, "finpredict_monitor_profile_fetches_total", result="ok") == 1
        assert metric_value(proc, "finpredict_monitor_profile_fetches_total", result="no_profile") == 1
        assert (
            metric_value(proc, "finpredict_monitor_records_unprofiled_total", model=MODEL, version="1") == 0
        )
    finally:
        proc.stop()


def test_records_wait_while_the_registry_is_away_and_are_scored_when_it_is_back(
    tmp_path: Path, profile_bytes: bytes
) -> None:
    port = free_port()
    proc = _monitor(tmp_path / "monitor", f"127.0.0.1:{port}")
    try:
        with grpc.insecure_channel(proc.target) as plain:
            ch = authed(plain)
            sc = rp.Scenario(days=1, per_hour=200, drift="new_segment", shift_day=0, seed=23)
            stream = rp.generate(sc).filter(pl.col("time") < sc.start + timedelta(hours=3))
            result = rp.replay(ch, stream, MODEL, 1)  # ingest never waits for the registry
            assert result.accepted == stream.height
            assert list(result.changes) == [], "no profile yet: nothing evaluated"
            wait_for(
                lambda: (
                    metric_value(proc, "finpredict_monitor_profile_fetches_total", result="unavailable") >= 2
                ),
                30,
                "fetches retried while the registry is away",
            )
            assert metric_value(proc, "finpredict_monitor_profiles_pending") == 1
            registry = _registry(tmp_path / "registry", port)
            try:
                _register(registry.target, tmp_path, profile_bytes)

                def fired() -> list[pb.Alert] | None:
                    alerts = stub(ch).ListAlerts(pb.ListAlertsRequest(firing_only=True), timeout=10).alerts
                    return [a for a in alerts if a.rule == "score_kl_1h"] or None

                (kl,) = wait_for(fired, 60, "the kept records scored once the profile arrived")
                assert kl.started_at.ToDatetime(tzinfo=UTC) <= sc.start + timedelta(hours=3)
                assert metric_value(proc, "finpredict_monitor_profiles_pending") == 0
            finally:
                registry.stop()
    finally:
        proc.stop()


class _StandIn(registry_pb2_grpc.RegistryServiceServicer):
    """Answers GetVersion with a given version, or NOT_FOUND."""

    def __init__(self, version: registry_pb2.ModelVersion | None) -> None:
        self.version = version

    async def GetVersion(
        self, request: registry_pb2.GetVersionRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> registry_pb2.GetVersionResponse:
        if self.version is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such version")
        return registry_pb2.GetVersionResponse(version=self.version)


def _fetch(tmp_path: Path, version: registry_pb2.ModelVersion | None) -> FetchFailedError | None:
    async def run() -> FetchFailedError | None:
        server = grpc.aio.server()
        registry_pb2_grpc.add_RegistryServiceServicer_to_server(_StandIn(version), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()

        async def nothing(*_: object) -> None:
            return None

        fetcher = ProfileFetcher(f"127.0.0.1:{port}", "t", ProfileCache(tmp_path / "cache"), nothing, nothing)
        try:
            await fetcher.fetch((MODEL, 1))
            return None
        except FetchFailedError as exc:
            return exc
        finally:
            await fetcher.close()
            await server.stop(None)

    return asyncio.run(run())


def test_the_fetcher_checks_the_registry_checksum_and_knows_final_answers(
    tmp_path: Path, profile_bytes: bytes
) -> None:
    good = registry_pb2.ModelVersion(
        model=MODEL,
        version=1,
        reference_profile=profile_bytes,
        reference_profile_sha256=hashlib.sha256(profile_bytes).hexdigest(),
    )
    assert _fetch(tmp_path, good) is None
    assert drift_core.Profile.from_bytes((tmp_path / "cache" / MODEL / "1.bin").read_bytes()).n_features == 46
    corrupted = registry_pb2.ModelVersion()
    corrupted.CopyFrom(good)
    corrupted.reference_profile = profile_bytes[:-1] + b"\x00"
    failed = _fetch(tmp_path / "bad", corrupted)
    assert failed is not None
    assert (failed.reason, failed.final) == ("checksum", False)  # retried: the next answer may be good
    assert not (tmp_path / "bad" / "cache" / MODEL / "1.bin").exists()
    missing = _fetch(tmp_path / "missing", None)
    assert missing is not None
    assert (missing.reason, missing.final) == ("not_found", True)
    no_profile = _fetch(tmp_path / "none", registry_pb2.ModelVersion(model=MODEL, version=1))
    assert no_profile is not None
    assert (no_profile.reason, no_profile.final) == ("no_profile", True)


def test_a_cached_profile_failing_its_checksum_is_not_used(tmp_path: Path, profile_bytes: bytes) -> None:
    from finpredict.api.common.v1 import types_pb2

    cache = ProfileCache(tmp_path)
    schema = types_pb2.FeatureSchema(
        features=[types_pb2.FeatureSpec(name="extra_code", type=types_pb2.FEATURE_TYPE_CATEGORICAL)]
    )
    cache.store(MODEL, 1, profile_bytes, hashlib.sha256(profile_bytes).hexdigest(), schema)
    ref = cache.load(MODEL, 1)
    assert ref is not None
    assert "extra_code" in ref.categorical  # the schema's features the profile lacks count too
    assert "sector" in ref.categorical
    assert "annual_revenue" in ref.numeric
    (tmp_path / MODEL / "1.bin").write_bytes(profile_bytes[:-1] + b"\x01")  # rotted on disk
    assert cache.load(MODEL, 1) is None  # fetched again instead
    assert cache.load("../etc", 1) is None
