"""infra/k8s: every overlay renders, every object validates offline against the pinned Kubernetes
schemas and the operators' CRDs, and the policy checks pass; each check fails on a planted
violation."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml

from finpredict.testkit.deploy import (
    K8S,
    OVERLAYS,
    Obj,
    check_containers,
    check_grpc_probes,
    check_namespaces,
    check_network_policies,
    check_pdbs,
    check_references,
    check_secrets,
    check_service_accounts,
    check_termination_grace,
    find,
    image_pinned,
    ingress_sources,
    policy_violations,
    render_dir,
    rendered,
    schema_validator,
)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_every_service(overlay: str) -> None:
    objs = rendered(overlay)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for svc in ("gateway", "registry", "monitor", "console"):
        for kind in ("Deployment", "Service", "ServiceAccount", "ConfigMap", "PodDisruptionBudget"):
            assert (kind, svc) in kinds, f"{overlay}: no {kind}/{svc}"
    expected = {
        ("RayService", "model-server"),
        ("ServiceAccount", "model-server"),
        ("HorizontalPodAutoscaler", "gateway"),
        ("NetworkPolicy", "default-deny-all"),
        ("PrometheusRule", "finpredict-alerts"),
        ("PrometheusRule", "finpredict-recording"),
        ("ServiceMonitor", "gateway"),
        ("PodMonitor", "model-server"),
        ("AlertmanagerConfig", "finpredict"),
        ("ConfigMap", "grafana-dashboard-finpredict-slo"),
        ("CronJob", "retrain-schedule"),
    }
    assert expected <= kinds
    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    assert namespaces == {"finpredict-dev" if overlay == "dev" else "finpredict"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_pinned_schemas(overlay: str) -> None:
    validator = schema_validator()
    errors = [e for obj in rendered(overlay) for e in validator.errors(obj)]
    assert errors == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_policy_checks_pass(overlay: str) -> None:
    assert policy_violations(rendered(overlay)) == []


def test_overlays_differ_where_they_should() -> None:
    dev, prod = rendered("dev"), rendered("prod")
    assert find(dev, "HorizontalPodAutoscaler", "gateway")["spec"]["minReplicas"] == 1
    assert find(prod, "HorizontalPodAutoscaler", "gateway")["spec"]["minReplicas"] == 3
    reg = find(prod, "Deployment", "registry")
    assert reg["spec"]["replicas"] == 2
    env = {e["name"]: e for e in reg["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["FINPREDICT_REGISTRY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["optional"] is False
    for aws in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # S3 credentials, or the pod's IAM role
        assert env[aws]["valueFrom"]["secretKeyRef"]["name"] == "finpredict-registry-s3"
    store = "FINPREDICT_REGISTRY_ARTIFACT_STORE"
    assert find(prod, "ConfigMap", "registry")["data"][store].startswith("s3://")
    assert find(dev, "ConfigMap", "registry")["data"][store] == "/data/artifacts"
    assert find(prod, "PersistentVolumeClaim", "registry-artifacts")["spec"]["accessModes"] == [
        "ReadWriteMany"
    ]
    workers = find(prod, "RayService", "model-server")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert (workers["minReplicas"], workers["maxReplicas"]) == (2, 8)
    for o in prod:
        for c in o.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
            assert c["image"].startswith("registry.example.com/finpredict/"), c["image"]


def test_secrets_are_referenced_by_name() -> None:
    """PostgreSQL, tokens, W&B and PagerDuty keys come from Secrets the operator creates."""
    objs = rendered("prod")
    refs = set()
    for o in objs:
        text = yaml.safe_dump(o)
        for line in text.splitlines():
            if "secretKeyRef" in line or "routingKey" in line:
                refs.add(o["kind"])
    assert {"Deployment", "RayService", "AlertmanagerConfig"} <= refs
    am = find(objs, "AlertmanagerConfig", "finpredict")
    pd = am["spec"]["receivers"][0]["pagerdutyConfigs"][0]["routingKey"]
    assert pd == {"name": "finpredict-pagerduty", "key": "routing-key"}
    reg_env = find(objs, "Deployment", "registry")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["name"] for e in reg_env} >= {"FINPREDICT_REGISTRY_DATABASE_URL", "WANDB_API_KEY"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_outcomes_reach_the_monitor_through_the_gateway_only(overlay: str) -> None:
    """Clients record outcomes on the gateway (:50051, open to them), which forwards them to the
    monitor (:50054, which admits the gateway, the console for its reads, and the daily retraining
    CronJob) with its own monitor token."""
    objs = rendered(overlay)
    assert "any" in ingress_sources(objs, "gateway", 50051)
    assert ingress_sources(objs, "monitor", 50054) == {"app:gateway", "app:console", "app:retrain-schedule"}
    gateway_egress = [
        rule
        for o in objs
        if o["kind"] == "NetworkPolicy"
        and o["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "gateway"
        for rule in o["spec"].get("egress", [])
    ]
    assert any(
        any(
            peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "monitor"}
            for peer in rule["to"]
        )
        and {"protocol": "TCP", "port": 50054} in rule["ports"]
        for rule in gateway_egress
    ), gateway_egress
    env = find(objs, "Deployment", "gateway")["spec"]["template"]["spec"]["containers"][0]["env"]
    token = next(e for e in env if e["name"] == "FINPREDICT_GATEWAY_MONITOR_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "finpredict-gateway", "key": "monitor-token"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_monitor_authenticates_and_fetches_profiles_from_the_registry(overlay: str) -> None:
    """As deployed the monitor refuses calls without a token (its tokens from its Secret), and
    reads reference profiles from the registry with a token of its own: no profiles folder."""
    objs = rendered(overlay)
    container = _container(objs, "monitor")
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["FINPREDICT_MONITOR_TOKENS"] == {"name": "finpredict-monitor", "key": "tokens"}
    registry_token = {"name": "finpredict-monitor", "key": "registry-token"}
    assert refs["FINPREDICT_MONITOR_REGISTRY_TOKEN"] == registry_token
    config = find(objs, "ConfigMap", "monitor")["data"]
    assert config["FINPREDICT_MONITOR_REGISTRY_TARGET"] == "registry:50052"
    assert "FINPREDICT_MONITOR_PROFILES_DIR" not in config
    assert "app:monitor" in ingress_sources(objs, "registry", 50052)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_replicas_share_their_state_and_keep_none_in_the_pod(overlay: str) -> None:
    """Every gateway replica uses the PostgreSQL URL from the Secret (required); no rollout state
    sits in the pod: no data folder, no emptyDir but /tmp scratch space, and the HPA still scales."""
    objs = rendered(overlay)
    deployment = find(objs, "Deployment", "gateway")
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env = {e["name"]: e for e in container.get("env", [])}
    ref = env["FINPREDICT_GATEWAY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"], ref["optional"]) == ("finpredict-gateway", "database-url", False)
    assert env["FINPREDICT_GATEWAY_REPLICA_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    config = find(objs, "ConfigMap", "gateway")["data"]
    assert not {"FINPREDICT_GATEWAY_DATA_DIR", "FINPREDICT_GATEWAY_DATABASE_URL"} & set(config)
    empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    assert {mounts[name] for name in empty_dirs} <= {"/tmp"}, mounts
    hpa = find(objs, "HorizontalPodAutoscaler", "gateway")["spec"]
    assert hpa["maxReplicas"] > hpa["minReplicas"] >= 1
    if overlay == "prod":
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 20)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_cronjob_asks_the_monitor_for_the_daily_scheduled_retraining(overlay: str) -> None:
    """Clusters retrain daily: a CronJob (02:00 UTC, never two at once) runs `finpredict retrain run
    --schedule` from the monitor's image with a monitor admin token from the monitor's Secret; the
    network policies let it reach the monitor's gRPC port, and nothing else."""
    from typer.testing import CliRunner

    from finpredict.monitor.retrain_cli import app

    objs = rendered(overlay)
    cron = find(objs, "CronJob", "retrain-schedule")["spec"]
    # the monitor's image cannot run the training pipeline, so no overlay turns it on yet
    assert cron["suspend"] is True
    assert (cron["schedule"], cron["timeZone"], cron["concurrencyPolicy"]) == (
        "0 2 * * *",
        "Etc/UTC",
        "Forbid",
    )
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == _container(objs, "monitor")["image"]
    command = container["command"]
    assert command[:3] == ["python", "-m", "finpredict.monitor.retrain_cli"]
    assert {"run", "--schedule", "--model"} <= set(command)
    assert CliRunner().invoke(app, [*command[3:], "--help"]).exit_code == 0  # the verb and options exist
    env = {e["name"]: e for e in container["env"]}
    assert env["FINPREDICT_MONITOR_TARGET"]["value"] == "monitor:50054"
    token = env["FINPREDICT_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "finpredict-monitor", "key": "scheduler-token"}
    assert "app:retrain-schedule" in ingress_sources(objs, "monitor", 50054)
    egress = [
        rule
        for o in objs
        if o["kind"] == "NetworkPolicy"
        and o["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name")
        == "retrain-schedule"
        for rule in o["spec"].get("egress", [])
    ]
    monitor_only = {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "monitor"}}}
    assert egress == [{"to": [monitor_only], "ports": [{"protocol": "TCP", "port": 50054}]}]


def test_monitors_use_the_local_job_names() -> None:
    """Rules and dashboards select job=~"finpredict-.*": the cluster uses the local job names."""
    local = yaml.safe_load((K8S.parent / "prometheus" / "prometheus.yml").read_text())
    local_jobs = {j["job_name"] for j in local["scrape_configs"]}
    objs = rendered("prod")
    jobs = set()
    for o in objs:
        if o["kind"] in ("ServiceMonitor", "PodMonitor"):
            for ep in o["spec"].get("endpoints", []) + o["spec"].get("podMetricsEndpoints", []):
                for r in ep.get("relabelings", []):
                    if r.get("targetLabel") == "job":
                        jobs.add(r["replacement"])
    # Locally the model server also has a supervisor process with a control port
    # (job finpredict-model-server); in a cluster KubeRay supervises the RayService, so only the
    # Ray nodes' exporter (the replicas' metrics) is scraped there.
    assert jobs == local_jobs - {"finpredict-model-server"}


# --- each check fails on a planted violation -------------------------------------------------


def _deployment(objs: list[Obj], name: str = "gateway") -> Obj:
    return find(objs, "Deployment", name)


def _container(objs: list[Obj], name: str = "gateway") -> Obj:
    c: Obj = _deployment(objs, name)["spec"]["template"]["spec"]["containers"][0]
    return c


def _worker(objs: list[Obj]) -> Obj:
    w: Obj = find(objs, "RayService", "model-server")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    return w


def _drop_limits(objs: list[Obj]) -> None:
    del _container(objs)["resources"]["limits"]


def _drop_worker_memory_limit(objs: list[Obj]) -> None:
    del _worker(objs)["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]


def _drop_readiness(objs: list[Obj]) -> None:
    del _container(objs, "registry")["readinessProbe"]


def _http_probe(objs: list[Obj]) -> None:
    _container(objs)["livenessProbe"] = {"httpGet": {"path": "/", "port": 9451}}


def _root_user(objs: list[Obj]) -> None:
    c = _container(objs, "monitor")
    c["securityContext"]["runAsNonRoot"] = False
    c["securityContext"]["runAsUser"] = 0


def _writable_root(objs: list[Obj]) -> None:
    _container(objs)["securityContext"]["readOnlyRootFilesystem"] = False


def _no_seccomp(objs: list[Obj]) -> None:
    del _deployment(objs, "registry")["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]


def _keep_capabilities(objs: list[Obj]) -> None:
    _worker(objs)["template"]["spec"]["containers"][0]["securityContext"]["capabilities"] = {"drop": []}


def _escalation(objs: list[Obj]) -> None:
    del find(objs, "RayService", "model-server")["spec"]["rayClusterConfig"]["autoscalerOptions"][
        "securityContext"
    ]["allowPrivilegeEscalation"]


def _latest_image(objs: list[Obj]) -> None:
    _container(objs)["image"] = "finpredict/gateway:latest"


def _untagged_worker_image(objs: list[Obj]) -> None:
    _worker(objs)["template"]["spec"]["containers"][0]["image"] = "finpredict/model-server"


def _no_pdb(objs: list[Obj]) -> None:
    objs.remove(find(objs, "PodDisruptionBudget", "monitor"))


def _blocking_pdb(objs: list[Obj]) -> None:
    pdb = find(objs, "PodDisruptionBudget", "registry")
    pdb["spec"].pop("maxUnavailable", None)
    pdb["spec"]["minAvailable"] = _deployment(objs, "registry")["spec"]["replicas"]


def _short_grace(objs: list[Obj]) -> None:
    _deployment(objs)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 30


def _short_worker_grace(objs: list[Obj]) -> None:
    _worker(objs)["template"]["spec"]["terminationGracePeriodSeconds"] = 5


def _literal_token(objs: list[Obj]) -> None:
    _container(objs)["env"].append({"name": "FINPREDICT_GATEWAY_REGISTRY_TOKEN", "value": "s3cr3t"})


def _secret_object(objs: list[Obj]) -> None:
    objs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x", "namespace": "finpredict"}})


def _no_default_deny(objs: list[Obj]) -> None:
    objs.remove(find(objs, "NetworkPolicy", "default-deny-all"))


def _open_registry(objs: list[Obj]) -> None:
    find(objs, "NetworkPolicy", "registry")["spec"]["ingress"].append({"ports": [{"port": 50052}]})


def _monitor_from_clients(objs: list[Obj]) -> None:
    find(objs, "NetworkPolicy", "monitor")["spec"]["ingress"][0]["from"] = []


def _registry_from_a_stranger(objs: list[Obj]) -> None:
    rule = find(objs, "NetworkPolicy", "registry")["spec"]["ingress"][0]
    rule["from"].append({"podSelector": {"matchLabels": {"app.kubernetes.io/name": "batch-job"}}})


def _automount_token(objs: list[Obj]) -> None:
    _deployment(objs, "monitor")["spec"]["template"]["spec"]["automountServiceAccountToken"] = True


def _lax_namespace(objs: list[Obj]) -> None:
    find(objs, "Namespace", "finpredict")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] = (
        "baseline"
    )


def _service_selects_nothing(objs: list[Obj]) -> None:
    find(objs, "Service", "monitor")["spec"]["selector"] = {"app.kubernetes.io/name": "monitr"}


def _monitor_wrong_port(objs: list[Obj]) -> None:
    find(objs, "ServiceMonitor", "registry")["spec"]["endpoints"][0]["port"] = "prometheus"


PLANTED: list[tuple[str, Callable[[list[Obj]], None], Callable[[list[Obj]], list[str]], str]] = [
    ("limits", _drop_limits, check_containers, "no resources.limits.cpu"),
    ("ray memory limit", _drop_worker_memory_limit, check_containers, "no resources.limits.memory"),
    ("readiness probe", _drop_readiness, check_containers, "no readinessProbe"),
    ("grpc probe", _http_probe, check_grpc_probes, "livenessProbe is not a gRPC probe"),
    ("root user", _root_user, check_containers, "runAsNonRoot is not true"),
    ("writable root fs", _writable_root, check_containers, "readOnlyRootFilesystem is not true"),
    ("seccomp", _no_seccomp, check_containers, "seccompProfile is not RuntimeDefault"),
    ("capabilities", _keep_capabilities, check_containers, "do not drop ALL"),
    ("sidecar escalation", _escalation, check_containers, "allowPrivilegeEscalation is not false"),
    ("latest image", _latest_image, check_containers, "is not pinned"),
    ("untagged image", _untagged_worker_image, check_containers, "is not pinned"),
    ("missing pdb", _no_pdb, check_pdbs, "no PodDisruptionBudget"),
    ("blocking pdb", _blocking_pdb, check_pdbs, "allows no eviction"),
    ("grace vs drain", _short_grace, check_termination_grace, "terminationGracePeriodSeconds 30 <= drain"),
    ("ray grace", _short_worker_grace, check_termination_grace, "Serve's graceful shutdown"),
    ("literal token", _literal_token, check_secrets, "has a literal value"),
    ("secret object", _secret_object, check_secrets, "a Secret in the manifests"),
    ("default deny", _no_default_deny, check_network_policies, "no default-deny"),
    ("open registry", _open_registry, check_network_policies, "registry: port 50052 is reachable"),
    ("open monitor", _monitor_from_clients, check_network_policies, "monitor: port 50054 is reachable"),
    ("registry client", _registry_from_a_stranger, check_network_policies, "app:batch-job"),
    ("token mount", _automount_token, check_service_accounts, "automountServiceAccountToken"),
    ("pod security", _lax_namespace, check_namespaces, "restricted"),
    ("service selector", _service_selects_nothing, check_references, "selects no pods"),
    ("monitor port", _monitor_wrong_port, check_references, "no selected Service has a port"),
]


@pytest.mark.parametrize(
    ("mutate", "check", "message"), [p[1:] for p in PLANTED], ids=[p[0] for p in PLANTED]
)
def test_policy_check_fails_on_a_planted_violation(
    mutate: Callable[[list[Obj]], None], check: Callable[[list[Obj]], list[str]], message: str
) -> None:
    objs = rendered("prod")
    assert check(objs) == []
    mutate(objs)
    violations = check(objs)
    assert any(message in v for v in violations), violations
    assert policy_violations(objs), "the full policy run must report it too"


SCHEMA_PLANTED: list[tuple[str, Callable[[list[Obj]], Any], str]] = [
    ("unknown field", lambda o: _deployment(o)["spec"].update(replica=3), "replica"),
    ("wrong type", lambda o: _deployment(o)["spec"].update(replicas="two"), "replicas"),
    ("bad probe", lambda o: _container(o)["readinessProbe"].update(grpc={"port": "grpc"}), "grpc"),
    ("rayservice typo", lambda o: _worker(o).update(maxReplica=4), "maxReplica"),
    ("ray type", lambda o: _worker(o).update(minReplicas="one"), "minReplicas"),
    (
        "servicemonitor field",
        lambda o: find(o, "ServiceMonitor", "gateway")["spec"]["endpoints"][0].update(intervall="15s"),
        "intervall",
    ),
    (
        "prometheusrule shape",
        lambda o: find(o, "PrometheusRule", "finpredict-alerts")["spec"].update(groups={"a": 1}),
        "groups",
    ),
    (
        "unknown kind",
        lambda o: o.append({"apiVersion": "ray.io/v1", "kind": "RayServe", "metadata": {}}),
        "no schema",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [p[1:] for p in SCHEMA_PLANTED], ids=[p[0] for p in SCHEMA_PLANTED]
)
def test_schema_validation_fails_on_a_planted_error(mutate: Callable[[list[Obj]], Any], message: str) -> None:
    validator = schema_validator()
    objs = rendered("prod")
    mutate(objs)
    errors = [e for obj in objs for e in validator.errors(obj)]
    assert any(message in e for e in errors), errors


def test_rendering_fails_on_a_broken_kustomization(tmp_path: Any) -> None:
    (tmp_path / "kustomization.yaml").write_text("resources: [missing.yaml]\n")
    with pytest.raises(AssertionError, match="kustomize build"):
        render_dir(tmp_path)


@pytest.mark.parametrize(
    ("image", "pinned"),
    [
        ("finpredict/gateway:0.1.0", True),
        ("registry.example.com/finpredict/gateway:v1.2.3-rc.1", True),
        ("rayproject/ray:2.60.0-py311-cpu", True),
        ("finpredict/gateway@sha256:" + "a" * 64, True),
        ("finpredict/gateway:latest", False),
        ("finpredict/gateway:main", False),
        ("finpredict/gateway", False),
        ("finpredict/gateway:3.11", False),
    ],
)
def test_image_pinning_rule(image: str, pinned: bool) -> None:
    assert image_pinned(image) is pinned
