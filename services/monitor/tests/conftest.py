"""Fixtures of the monitor tests: a reference profile and a helper that starts the real monitor."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from finpredict.demo import replay as rp
from finpredict.testkit.monitor import MODEL, StartMonitor, authed, monitor_env
from finpredict.testkit.process import ServiceProcess, start_service


@pytest.fixture(scope="session")
def profile_bytes() -> bytes:
    """The replay's reference profile (45 features + the score), as the pipeline stores it."""
    return bytes(rp.reference_profile().to_bytes())


@pytest.fixture
def start_monitor(tmp_path: Path, profile_bytes: bytes) -> Iterator[StartMonitor]:
    """Starts the real monitor process (stopped at the end, by pid) with a profile for v1."""
    started: list[ServiceProcess] = []

    def start(env: dict[str, str] | None = None, work: Path | None = None) -> ServiceProcess:
        work = work or tmp_path
        profiles = work / "profiles" / MODEL
        profiles.mkdir(parents=True, exist_ok=True)
        (profiles / "1.bin").write_bytes(profile_bytes)
        proc = start_service(
            "monitor", work, env=monitor_env(work, FINPREDICT_MONITOR_LOG_FORMAT="json", **(env or {}))
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture
def channel_for() -> Iterator[Callable[[ServiceProcess], grpc.Channel]]:
    """Channels to a monitor, every call authenticated as the test admin."""
    channels: list[grpc.Channel] = []

    def make(proc: ServiceProcess) -> grpc.Channel:
        ch = authed(grpc.insecure_channel(proc.target))
        channels.append(ch)
        return ch

    yield make
    for ch in channels:
        ch.close()
