"""Static checks of services/*/Dockerfile: pinned bases, multi-stage, non-root, no build tools or
secrets in the final image, a health check, and the service's own start command."""

from __future__ import annotations

import importlib
import re
import tomllib

import pytest
import yaml

from finpredict.common.config import ServiceSettings
from finpredict.testkit.deploy import ROOT, SERVICES, check_dockerfile, dockerfile_stages


def _package(service: str) -> str:
    return service.replace("-", "_")


def _ports(service: str) -> list[int]:
    config = importlib.import_module(f"finpredict.{_package(service)}.config")
    # the service's own settings: the ServiceSettings subclass its config module defines
    settings_cls = next(
        v
        for v in vars(config).values()
        if isinstance(v, type)
        and issubclass(v, ServiceSettings)
        and v is not ServiceSettings
        and v.__module__ == config.__name__
    )
    fields = settings_cls.model_fields
    ports = [int(fields["port"].default), int(fields["metrics_port"].default)]
    if service == "model-server":
        serve = yaml.safe_load(config.DEFAULT_SERVE_CONFIG.read_text())
        ports += [int(serve["grpc_options"]["port"]), int(serve["http_options"]["port"])]
    return ports


def _dockerfile(service: str) -> str:
    return (ROOT / "services" / service / "Dockerfile").read_text()


@pytest.mark.parametrize("service", SERVICES)
def test_dockerfile_passes_the_static_checks(service: str) -> None:
    assert (ROOT / "services" / service / "src" / "finpredict" / _package(service) / "__main__.py").exists()
    assert check_dockerfile(_dockerfile(service), _package(service), _ports(service)) == []


def test_model_server_is_built_on_the_locked_ray_version() -> None:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    ray = next(p["version"] for p in lock["package"] if p["name"] == "ray")
    stages = dockerfile_stages(_dockerfile("model-server"))
    assert stages, "no FROM"
    for stage in stages:
        match = re.match(r"rayproject/ray:(\d+\.\d+\.\d+)-py311", stage.base)
        assert match, stage.base
        assert match.group(1) == ray
    rayservice = (ROOT / "infra" / "k8s" / "base" / "model-server.yaml").read_text()
    assert f'rayVersion: "{ray}"' in rayservice


@pytest.mark.parametrize("service", [s for s in SERVICES if s != "model-server"])
def test_python_services_use_the_workspace_python(service: str) -> None:
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minor = re.search(r">=3\.(\d+)", requires)
    assert minor
    for stage in dockerfile_stages(_dockerfile(service)):
        assert stage.base.startswith(f"python:3.{minor.group(1)}."), stage.base


GOOD = _dockerfile("gateway")

PLANTED = [
    (
        "unpinned base",
        GOOD.replace("FROM python:3.11.7-slim-bookworm\n", "FROM python:slim\n"),
        "is not pinned",
    ),
    (
        "latest base",
        GOOD.replace("FROM python:3.11.7-slim-bookworm\n", "FROM python:latest\n"),
        "is not pinned",
    ),
    (
        "unpinned copy",
        GOOD.replace("ghcr.io/astral-sh/uv:0.13.8", "ghcr.io/astral-sh/uv:latest"),
        "is not pinned",
    ),
    ("no user", GOOD.replace("USER 10001:10001\n", ""), "sets no USER"),
    ("root user", GOOD.replace("USER 10001:10001\n", "USER root\n"), "runs as root"),
    ("named user", GOOD.replace("USER 10001:10001\n", "USER finpredict\n"), "not numeric"),
    ("single stage", GOOD[GOOD.index("FROM python:3.11.7-slim-bookworm\n") :], "not a multi-stage build"),
    (
        "uv in final",
        GOOD.replace(
            "COPY --from=build /src/.venv",
            "COPY --from=ghcr.io/astral-sh/uv:0.13.8 /uv /usr/local/bin/uv\nCOPY --from=build /src/.venv",
        ),
        "build tool in the final stage",
    ),
    (
        "compiler in final",
        GOOD.replace("USER 10001:10001", "RUN apt-get install -y build-essential\nUSER 10001:10001"),
        "build tool in the final stage",
    ),
    (
        "secret env",
        GOOD.replace("PYTHONUNBUFFERED=1", "PYTHONUNBUFFERED=1 FINPREDICT_GATEWAY_TOKENS=abc=me:admin"),
        "TOKENS is set",
    ),
    (
        "secret file",
        GOOD.replace("COPY libs libs", "COPY .run/secrets.env /src/\nCOPY libs libs"),
        "copies a secret file",
    ),
    ("whole context", GOOD.replace("COPY libs libs", "COPY . ."), "whole build context"),
    ("no healthcheck", re.sub(r"HEALTHCHECK .*\n", "", GOOD), "no HEALTHCHECK"),
    (
        "wrong entrypoint",
        GOOD.replace(
            'ENTRYPOINT ["python", "-m", "finpredict.gateway"]',
            'ENTRYPOINT ["python", "-m", "finpredict.registry"]',
        ),
        "is not the service's start command",
    ),
    (
        "shell entrypoint",
        GOOD.replace(
            'ENTRYPOINT ["python", "-m", "finpredict.gateway"]', "ENTRYPOINT python -m finpredict.gateway"
        ),
        "exec form",
    ),
    ("port", GOOD.replace("EXPOSE 50051 9451", "EXPOSE 9451"), "port 50051 is not EXPOSEd"),
]


@pytest.mark.parametrize(("text", "message"), [p[1:] for p in PLANTED], ids=[p[0] for p in PLANTED])
def test_dockerfile_check_fails_on_a_planted_violation(text: str, message: str) -> None:
    assert text != GOOD, "the plant did not change the Dockerfile"
    violations = check_dockerfile(text, "gateway", _ports("gateway"))
    assert any(message in v for v in violations), violations
