"""Fixtures: a real PostgreSQL server (from the OS packages) and real registry subprocesses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from finpredict.testkit.registry import (
    ADMIN_TOKEN,
    Client,
    Postgres,
    Registry,
    running_registry,
    start_postgres,
)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    yield from start_postgres()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry server per module and backend (tests use unique model names)."""
    pg = request.getfixturevalue("postgres") if request.param == "postgres" else None
    with running_registry(request.param, tmp_path_factory.mktemp(f"registry-{request.param}"), pg) as reg:
        yield reg


@pytest.fixture
def admin(registry: Registry) -> Iterator[Client]:
    client = registry.client(ADMIN_TOKEN)
    yield client
    client.close()
