"""Fixtures: a real PostgreSQL server (from the OS packages) and real registry subprocesses; the
S3-compatible server (``s3``) comes from the test kit's pytest plugin."""

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


@pytest.fixture(scope="module", params=["sqlite", "postgres", "s3"])
def registry(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One registry server per module and backend (tests use unique model names): SQLite,
    PostgreSQL, or SQLite with its artifacts in an S3 bucket."""
    pg = request.getfixturevalue("postgres") if request.param == "postgres" else None
    s3 = request.getfixturevalue("s3") if request.param == "s3" else None
    tmp = tmp_path_factory.mktemp(f"registry-{request.param}")
    with running_registry(request.param, tmp, pg, s3) as reg:
        yield reg


@pytest.fixture
def admin(registry: Registry) -> Iterator[Client]:
    client = registry.client(ADMIN_TOKEN)
    yield client
    client.close()
