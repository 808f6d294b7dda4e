"""The RayService runs the same Serve config as local runs, and the generated copies are fresh."""

from __future__ import annotations

import copy
import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest
import yaml

from finpredict.common import addresses
from finpredict.common.config import env_var_name
from finpredict.model_server.config import DEFAULT_SERVE_CONFIG, ModelServerSettings, ReplicaSettings
from finpredict.model_server.driver import load_serve_config
from finpredict.testkit.deploy import K8S, OVERLAYS, find, rendered


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("finpredict_k8s_generate", K8S / "generate.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generate = _generator()


def _local_config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_SERVE_CONFIG.read_text())
    return data


def _diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str) for d in _diff(a.get(k), b.get(k), f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rayservice_runs_the_local_serve_config(overlay: str) -> None:
    """serveConfigV2 is what the supervisor deploys from serve_config.yaml with the in-cluster
    registry target (its FINPREDICT_MODEL_SERVER_REGISTRY_TARGET override), nothing else."""
    service = find(rendered(overlay), "RayService", "model-server")
    in_cluster = yaml.safe_load(service["spec"]["serveConfigV2"])
    expected = load_serve_config(
        ModelServerSettings(
            serve_config=DEFAULT_SERVE_CONFIG,
            registry_target="registry:50052",
            serve_grpc_port=-1,
            serve_http_port=-1,
        )
    )
    assert in_cluster == expected
    assert _diff(_local_config(), in_cluster) == [".applications[0].args.registry_target"]


def test_the_local_config_uses_the_default_addresses() -> None:
    """The YAML cannot import ``finpredict.common.addresses``: the gateway's default model-server
    target and the app's default registry target must still match it."""
    config = _local_config()
    assert config["grpc_options"]["port"] == addresses.SERVE_GRPC_PORT
    assert config["applications"][0]["args"]["registry_target"] == addresses.REGISTRY_ADDRESS


def test_the_registry_target_is_the_registry_service() -> None:
    objs = rendered("prod")
    service = find(objs, "Service", "registry")
    port = next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    assert f"{service['metadata']['name']}:{port}" == generate.REGISTRY_TARGET


def test_serve_ports_match_the_ray_pods_and_the_gateway() -> None:
    objs = rendered("prod")
    rs = find(objs, "RayService", "model-server")
    serve = yaml.safe_load(rs["spec"]["serveConfigV2"])
    worker = rs["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in worker["ports"]}
    assert ports["serve-grpc"] == serve["grpc_options"]["port"]
    # KubeRay's readiness check of a worker's Serve proxy uses the port named "serve"
    assert ports["serve"] == serve["http_options"]["port"]
    assert str(serve["http_options"]["port"]) in " ".join(worker["readinessProbe"]["exec"]["command"])
    svc_port = rs["spec"]["serveService"]["spec"]["ports"][0]["port"]
    gateway_env = find(objs, "ConfigMap", "gateway")["data"]
    target = f"{rs['spec']['serveService']['metadata']['name']}:{svc_port}"
    assert gateway_env["FINPREDICT_GATEWAY_MODEL_SERVER_TARGET"] == target
    assert gateway_env["FINPREDICT_GATEWAY_MODEL_SERVER_APPLICATION"] == serve["applications"][0]["name"]
    token_env = env_var_name(ReplicaSettings, "model_server_registry_token")
    assert token_env in {e["name"] for e in worker["env"]}


def test_generated_files_are_fresh() -> None:
    assert generate.stale() == [], "run `task infra:generate`"


def test_freshness_check_fails_on_a_stale_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A change to serve_config.yaml (or a rule file) that was not regenerated is caught."""
    changed = copy.deepcopy(_local_config())
    changed["applications"][0]["deployments"][0]["autoscaling_config"]["max_replicas"] = 40
    real = generate.cluster_serve_config
    monkeypatch.setattr(generate, "cluster_serve_config", lambda: {**real(), **changed})
    stale = generate.stale()
    assert [p.name for p in stale] == ["serve_config.yaml"]
    assert generate.main(["--check"]) == 1


def test_prometheus_rules_are_the_infra_rule_files() -> None:
    objs = rendered("prod")
    for path in sorted((K8S.parent / "prometheus" / "rules").glob("*.yml")):
        rule = find(objs, "PrometheusRule", f"finpredict-{path.stem}")
        assert rule["spec"]["groups"] == yaml.safe_load(path.read_text())["groups"]


def test_grafana_dashboards_are_the_infra_dashboards() -> None:
    objs = rendered("prod")
    for path in sorted((K8S.parent / "grafana" / "dashboards").glob("*.json")):
        cm = find(objs, "ConfigMap", f"grafana-dashboard-{path.stem}")
        assert cm["data"] == {path.name: path.read_text()}
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
