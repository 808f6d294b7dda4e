"""The gateway's integration fixtures: a real registry, Ray with the model-server app, a real
monitor, and the gateway, all on loopback; one of each for the module that uses them. And a real
PostgreSQL server for the shared-state tests (one for the session)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from finpredict.testkit.gateway import Stack, running_stack, train
from finpredict.testkit.monitoring import OtlpTraceReceiver
from finpredict.testkit.names import unique
from finpredict.testkit.registry import Postgres, start_postgres


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    yield from start_postgres()


@pytest.fixture(scope="module")
def traces() -> Iterator[OtlpTraceReceiver]:
    """An OTLP endpoint every service of the stack exports its spans to."""
    receiver = OtlpTraceReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, traces: OtlpTraceReceiver) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gw")
    # Every hop exports its spans (batched every 200 ms) to the test's OTLP receiver.
    otlp = {
        f"FINPREDICT_{svc}_OTLP_ENDPOINT": traces.endpoint for svc in ("REGISTRY", "MODEL_SERVER", "GATEWAY")
    }
    otlp["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    models = {
        "v1": train(seed=1, rounds=20),
        "v2": train(seed=1, rounds=22),
        "bad": train(seed=2, rounds=20, positive_share=0.9),
        # scores pushed toward 0.5 (two boosting rounds): a miscalibrated candidate whose own
        # training profile agrees with it
        "flat": train(seed=1, rounds=2),
    }
    buffer = {"FINPREDICT_GATEWAY_LOG_BUFFER_RECORDS": "2000"}
    with running_stack(tmp, unique("credit"), models, env=otlp, gateway_env=buffer) as s:
        yield s
