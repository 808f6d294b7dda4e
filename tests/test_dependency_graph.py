"""What each service ships with, read from the lock file's dependency graph.

A service image installs its runtime dependencies and nothing else: no test harness (the
dev-only ``finpredict-testkit``, pytest, hypothesis), no training pipeline (DVC, W&B, XGBoost's
training stack come with ``finpredict-pipelines``), no demo or local launcher.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVICES = ["finpredict-gateway", "finpredict-model-server", "finpredict-registry", "finpredict-monitor"]
SERVICES += ["finpredict-console"]
# libraries every service may use; they must stay as lean as the services
SHARED_LIBS = ["finpredict-api", "finpredict-common", "finpredict-features", "finpredict-modelio"]
SHARED_LIBS += ["finpredict-metrics", "finpredict-sqldb", "drift-core"]
NEVER_AT_RUNTIME = {
    "finpredict-testkit",
    "finpredict-pipelines",
    "finpredict-demo",
    "finpredict-stack",
    "pytest",
    "hypothesis",
    "dvc",
    "wandb",
}


def runtime_graph(lock: Mapping[str, object]) -> dict[str, set[str]]:
    """Package -> the packages it needs at run time (its ``dependencies``; dev groups excluded)."""
    packages = lock["package"]
    assert isinstance(packages, list)
    return {p["name"]: {d["name"] for d in p.get("dependencies", [])} for p in packages}


def closure(graph: Mapping[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        name = todo.pop()
        for dep in graph.get(name, set()):
            if dep not in seen:
                seen.add(dep)
                todo.append(dep)
    return seen


@pytest.fixture(scope="module")
def lock() -> dict[str, object]:
    with (ROOT / "uv.lock").open("rb") as f:
        return tomllib.load(f)


@pytest.mark.parametrize("package", SERVICES + SHARED_LIBS)
def test_runtime_dependencies_hold_no_test_harness_pipeline_or_demo(
    lock: dict[str, object], package: str
) -> None:
    graph = runtime_graph(lock)
    assert package in graph, f"{package} is not in uv.lock"
    forbidden = closure(graph, package) & NEVER_AT_RUNTIME
    assert not forbidden, f"{package} pulls in {sorted(forbidden)} at run time"


def test_the_testkit_is_a_dev_dependency_of_the_workspace_only(lock: dict[str, object]) -> None:
    packages = lock["package"]
    assert isinstance(packages, list)
    dependents = {p["name"] for p in packages if "finpredict-testkit" in runtime_graph(lock)[p["name"]]}
    assert dependents == set(), dependents
    dev_users = {
        p["name"]
        for p in packages
        for group in p.get("dev-dependencies", {}).values()
        if any(d["name"] == "finpredict-testkit" for d in group)
    }
    assert dev_users == {"finpredict-workspace"}, dev_users


def test_the_check_sees_a_forbidden_dependency_through_a_chain() -> None:
    graph = {"svc": {"lib"}, "lib": {"finpredict-pipelines"}, "finpredict-pipelines": {"dvc"}}
    assert closure(graph, "svc") & NEVER_AT_RUNTIME == {"finpredict-pipelines", "dvc"}
    assert closure({"svc": {"lib"}, "lib": set()}, "svc") & NEVER_AT_RUNTIME == set()
