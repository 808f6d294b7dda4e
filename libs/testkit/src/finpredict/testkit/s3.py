"""An S3-compatible server on loopback for tests: moto's standalone server, in a subprocess
(started as the local platform's, :mod:`finpredict.stack.s3`).

``start_s3_server`` backs the session-scoped ``s3`` fixture of the kit's pytest plugin
(:mod:`finpredict.testkit.pytest_plugin`): one server for the whole run, each test suite making
its own buckets with :meth:`S3Server.create_bucket`. The registry reaches it
through :meth:`S3Server.registry_env`, DVC through :meth:`S3Server.dvc_env` and a remote with
``endpointurl`` set; the static credentials below are all moto asks for.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from finpredict.common.net import free_port
from finpredict.stack import s3 as local_s3
from finpredict.testkit.names import unique
from finpredict.testkit.process import ServiceExitedError, wait_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

REGION = local_s3.REGION
CREDENTIALS = local_s3.CREDENTIALS


@dataclass
class S3Server:
    """A running moto server and a boto3 client of it (the test's own view of the bucket)."""

    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def endpoint_url(self) -> str:
        return local_s3.endpoint(self.port)

    def client(self, endpoint_url: str | None = None) -> S3Client:
        return s3_client(endpoint_url or self.endpoint_url)

    def create_bucket(self, prefix: str = "fp") -> str:
        """A new empty bucket with a unique name."""
        name = unique(prefix).lower()
        self.client().create_bucket(Bucket=name)
        return name

    def registry_env(
        self, bucket: str, prefix: str = "artifacts", endpoint_url: str | None = None
    ) -> dict[str, str]:
        """The registry's environment for an artifact store at ``s3://bucket/prefix`` on this server
        (or on ``endpoint_url``: a proxy in front of it)."""
        return {
            **CREDENTIALS,
            "FINPREDICT_REGISTRY_ARTIFACT_STORE": f"s3://{bucket}/{prefix}",
            "FINPREDICT_REGISTRY_S3_ENDPOINT_URL": endpoint_url or self.endpoint_url,
        }

    def dvc_env(self) -> dict[str, str]:
        """The credentials DVC's S3 remote (``dvc-s3``, through boto) reads from the environment."""
        return dict(CREDENTIALS)

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def s3_client(endpoint_url: str) -> S3Client:
    """A boto3 client of the S3-compatible server at ``endpoint_url`` (path-style, one attempt)."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 1}),
    )


def start_s3_server() -> Iterator[S3Server]:
    """Starts ``moto.server`` on 127.0.0.1 and a free port, yields it once it answers, stops it."""
    root = Path(tempfile.mkdtemp(prefix="fp-s3-"))
    log_path = root / "moto.log"
    port = free_port()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(local_s3.argv(port), stdout=log, stderr=subprocess.STDOUT, cwd=root)
    server = S3Server(port, proc, log_path)

    def answers() -> bool:
        if proc.poll() is not None:
            raise ServiceExitedError(f"moto server exited with {proc.returncode}: {server.logs()}")
        server.client().list_buckets()
        return True

    try:
        wait_for(answers, 60, "the S3 server (moto) to answer")
        yield server
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
