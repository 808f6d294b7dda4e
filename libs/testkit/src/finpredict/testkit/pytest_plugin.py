"""The test kit's pytest plugin (entry point ``pytest11``): fixtures that several test suites
share, started at most once per run and only when a test asks for them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from finpredict.testkit.s3 import S3Server


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """One S3-compatible server (moto) on loopback for the whole run; suites make their own buckets."""
    from finpredict.testkit.s3 import start_s3_server  # boto3 and moto only when asked for

    yield from start_s3_server()
