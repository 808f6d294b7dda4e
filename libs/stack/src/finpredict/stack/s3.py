"""An S3-compatible server on loopback: moto's standalone server (``python -m moto.server``), the
cluster profile's artifact store and DVC remote (:class:`~finpredict.stack.launcher.Stack`) and the
test kit's S3 server.

moto keeps its objects in memory (they go when it stops) and checks no signatures: any static
credentials do (:data:`CREDENTIALS`). It comes with the ``cluster`` extra of ``finpredict-stack``
(``moto[server]``); the dev environment has it through the test kit. The buckets are made with
plain HTTP requests (path-style, an unverified SigV4 header that only names the service), so the
launcher needs no S3 client of its own.
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.error
import urllib.request

from finpredict.common.addresses import LOCALHOST

REGION = "us-east-1"
# What the local S3 server's clients send (the registry through boto3, DVC through dvc-s3).
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "finpredict-local-key",
    "AWS_SECRET_ACCESS_KEY": "finpredict-local-secret",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",  # never wait on an instance-metadata lookup
}
# Names the service to moto's dispatcher (which reads the credential scope, not the signature).
_AUTH = (
    f"AWS4-HMAC-SHA256 Credential={CREDENTIALS['AWS_ACCESS_KEY_ID']}/20260101/{REGION}/s3/aws4_request, "
    "SignedHeaders=host, Signature=0"
)


def require_moto() -> None:
    """FileNotFoundError naming what to install when moto's server is not importable."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        raise FileNotFoundError(
            "the local S3 server (moto's standalone server) is not installed: "
            "install finpredict-stack[cluster] (`uv sync --all-packages` in the checkout brings it)"
        )


def argv(port: int) -> list[str]:
    """The server's command line on loopback ``port``."""
    return [sys.executable, "-m", "moto.server", "-H", LOCALHOST, "-p", str(port)]


def endpoint(port: int) -> str:
    return f"http://{LOCALHOST}:{port}"


def _request(url: str, method: str) -> int:
    req = urllib.request.Request(url, method=method, headers={"Authorization": _AUTH})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as err:
        err.close()
        return int(err.code)


def answers(endpoint_url: str) -> bool:
    """Whether the server lists its buckets."""
    try:
        return _request(f"{endpoint_url}/", "GET") == 200
    except OSError:
        return False


def create_bucket(endpoint_url: str, bucket: str) -> None:
    """Creates ``bucket`` (an existing one is kept)."""
    status = _request(f"{endpoint_url}/{bucket}", "PUT")
    if status not in (200, 409):  # 409: BucketAlreadyOwnedByYou
        raise RuntimeError(f"creating bucket {bucket} on {endpoint_url} answered HTTP {status}")
