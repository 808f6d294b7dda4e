"""Helpers of the deployment tests: the pinned tools, rendering, schema validation, policy checks.

Every check returns a list of violations (strings naming the object and the rule) so that the
tests can assert both that the repository passes and that a planted violation is reported.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the lock)

from finpredict.common import addresses
from finpredict.testkit.paths import REPO_ROOT

ROOT = REPO_ROOT
K8S = ROOT / "infra" / "k8s"
TOOLS = ROOT / ".tools"
OVERLAYS = ("dev", "prod")
SERVICES = ("gateway", "registry", "model-server", "monitor", "console")
WORKFLOWS = ROOT / ".github" / "workflows"

Obj = dict[str, Any]


# ---------------------------------------------------------------------------------------------
# tools


@cache
def versions() -> dict[str, str]:
    out = {}
    for line in (K8S / "tools" / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


@cache
def install_tools() -> None:
    """Runs the idempotent installer (quick when everything is in place)."""
    subprocess.run(["bash", str(K8S / "tools" / "install.sh")], check=True, cwd=ROOT)


def tool(name: str) -> Path:
    install_tools()
    return TOOLS / "bin" / name


# ---------------------------------------------------------------------------------------------
# rendering


def render_dir(path: Path) -> list[Obj]:
    proc = subprocess.run(
        [str(tool("kustomize")), "build", str(path)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise AssertionError(f"kustomize build {path} failed:\n{proc.stderr}")
    return [d for d in yaml.load_all(proc.stdout, Loader=_Loader) if d]


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml when there; YAML 1.1 gives a bare `=` (kustomize prints `matchType: =` unquoted,
    the CRDs have it in enums) the "value" tag: read it as the string it is."""


_Loader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


@cache
def _rendered(overlay: str) -> tuple[Obj, ...]:
    return tuple(render_dir(K8S / "overlays" / overlay))


def rendered(overlay: str) -> list[Obj]:
    """A fresh deep copy of the rendered overlay (tests may mutate it)."""
    return copy.deepcopy(list(_rendered(overlay)))


def name_of(obj: Obj) -> str:
    meta = obj.get("metadata", {})
    ns = meta.get("namespace", "")
    return f"{obj.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"


def find(objs: list[Obj], kind: str, name: str) -> Obj:
    for o in objs:
        if o["kind"] == kind and o["metadata"]["name"] == name:
            return o
    raise KeyError(f"{kind}/{name}")


# ---------------------------------------------------------------------------------------------
# schema validation (Kubernetes strict schemas + the operators' CRDs), offline


class SchemaValidator:
    """Validates objects against the pinned Kubernetes release and the CRDs of KubeRay and the
    Prometheus Operator. Unknown fields are errors (strict), as `kubectl apply --validate=strict`."""

    def __init__(self) -> None:
        import jsonschema  # type: ignore[import-untyped]  # (no types-jsonschema in the lock)
        from referencing import Registry, Resource

        install_tools()
        v = versions()
        self._jsonschema = jsonschema
        self.k8s_dir = TOOLS / "schemas" / "kubernetes" / f"v{v['KUBERNETES_VERSION']}-local-strict"
        defs = json.loads((self.k8s_dir / "_definitions.json").read_text())
        self._registry: Any = Registry().with_resource(defs["$id"], Resource.from_contents(defs))
        self._native: dict[str, Any] = {}
        self._crd_dirs = [
            TOOLS / "crds" / f"kuberay-{v['KUBERAY_VERSION']}",
            TOOLS / "crds" / f"prometheus-operator-{v['PROMETHEUS_OPERATOR_VERSION']}",
        ]
        self._crds: dict[tuple[str, str], Any] = {}

    def _crd_validator(self, api_version: str, kind: str) -> Any:
        """The CRD of `kind` is in <group>_<plural>.yaml (the operators' file naming); loaded once."""
        key = (api_version, kind)
        if key not in self._crds:
            self._crds[key] = None
            group = api_version.rpartition("/")[0]
            for folder in self._crd_dirs:
                path = folder / f"{group}_{kind.lower()}s.yaml"
                if not group or not path.exists():
                    continue
                for crd in yaml.load_all(path.read_text(), Loader=_Loader):
                    if not crd or crd.get("kind") != "CustomResourceDefinition":
                        continue
                    if crd["spec"]["names"]["kind"] != kind:
                        continue
                    for ver in crd["spec"]["versions"]:
                        if ver.get("served", True) and f"{group}/{ver['name']}" == api_version:
                            schema = strict_openapi(ver["schema"]["openAPIV3Schema"])
                            self._crds[key] = self._jsonschema.Draft4Validator(schema)
        return self._crds[key]

    def _native_validator(self, api_version: str, kind: str) -> Any:
        key = f"{api_version}/{kind}"
        if key not in self._native:
            group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
            path = self.k8s_dir / f"{kind.lower()}-{group_version}.json"
            if not path.exists():
                self._native[key] = None
            else:
                schema = json.loads(path.read_text())
                self._native[key] = self._jsonschema.Draft202012Validator(schema, registry=self._registry)
        return self._native[key]

    def errors(self, obj: Obj) -> list[str]:
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        validator = self._crd_validator(api_version, kind) or self._native_validator(api_version, kind)
        if validator is None:
            return [f"{name_of(obj)}: no schema for {api_version} {kind} (Kubernetes or the pinned CRDs)"]
        out = []
        for err in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))[:5]:
            where = ".".join(str(p) for p in err.absolute_path) or "(root)"
            out.append(f"{name_of(obj)}: {where}: {err.message[:300]}")
        return out


def strict_openapi(node: Any) -> Any:
    """A CRD's OpenAPI v3 schema as a strict JSON schema (what kubeconform's openapi2jsonschema
    does): objects with declared properties refuse unknown ones, `nullable` allows null."""
    if isinstance(node, list):
        return [strict_openapi(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_openapi(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@cache
def schema_validator() -> SchemaValidator:
    return SchemaValidator()


# ---------------------------------------------------------------------------------------------
# policy checks


@dataclass
class Container:
    owner: str  # e.g. Deployment/ns/gateway, RayService/ns/model-server[worker serve]
    spec: Obj
    pod: Obj  # the pod spec it runs in ({} for the KubeRay autoscaler sidecar)
    sidecar: bool = False  # operator-managed sidecar: probes are not configurable
    batch: bool = False  # a Job's pod (a CronJob's too): it runs to completion, no probes


def pod_specs(obj: Obj) -> Iterator[tuple[str, Obj, Obj]]:
    """(owner, pod template, pod spec) of every pod an object runs."""
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        tpl = obj["spec"]["template"]
        yield name_of(obj), tpl, tpl["spec"]
    elif kind == "CronJob":
        tpl = obj["spec"]["jobTemplate"]["spec"]["template"]
        yield name_of(obj), tpl, tpl["spec"]
    elif kind == "RayService":
        cluster = obj["spec"]["rayClusterConfig"]
        head = cluster["headGroupSpec"]["template"]
        yield f"{name_of(obj)}[head]", head, head["spec"]
        for group in cluster.get("workerGroupSpecs", []):
            tpl = group["template"]
            yield f"{name_of(obj)}[worker {group['groupName']}]", tpl, tpl["spec"]


def containers(objs: list[Obj]) -> Iterator[Container]:
    for obj in objs:
        for owner, _tpl, spec in pod_specs(obj):
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                batch = obj["kind"] in ("Job", "CronJob")
                yield Container(f"{owner} container {c['name']}", c, spec, batch=batch)
        if obj["kind"] == "RayService" and obj["spec"]["rayClusterConfig"].get("enableInTreeAutoscaling"):
            opts = obj["spec"]["rayClusterConfig"].get("autoscalerOptions", {})
            head_spec = obj["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
            yield Container(f"{name_of(obj)} autoscaler sidecar", opts, head_spec, sidecar=True)


PINNED_IMAGE = re.compile(r"^[^@\s]+(@sha256:[0-9a-f]{64}|:v?\d+\.\d+\.\d+([-+.][0-9A-Za-z.-]+)?)$")


def image_pinned(image: str) -> bool:
    """Pinned: a digest, or an exact version tag (never latest, a branch name or no tag)."""
    return bool(PINNED_IMAGE.match(image))


def check_containers(objs: list[Obj]) -> list[str]:
    out = []
    for c in containers(objs):
        spec, pod = c.spec, c.pod
        res = spec.get("resources", {})
        for part in ("requests", "limits"):
            for key in ("cpu", "memory"):
                if key not in res.get(part, {}):
                    out.append(f"{c.owner}: no resources.{part}.{key}")
        if not c.sidecar and not c.batch:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in spec:
                    out.append(f"{c.owner}: no {probe}")
        sc = spec.get("securityContext", {})
        pod_sc = pod.get("securityContext", {})
        if not (
            sc.get("runAsNonRoot") or (pod_sc.get("runAsNonRoot") and sc.get("runAsNonRoot") is not False)
        ):
            out.append(f"{c.owner}: runAsNonRoot is not true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"{c.owner}: runs as user 0")
        if sc.get("readOnlyRootFilesystem") is not True:
            out.append(f"{c.owner}: readOnlyRootFilesystem is not true")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c.owner}: allowPrivilegeEscalation is not false")
        if sc.get("privileged"):
            out.append(f"{c.owner}: privileged")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []):
            out.append(f"{c.owner}: capabilities do not drop ALL")
        if sc.get("capabilities", {}).get("add"):
            out.append(f"{c.owner}: adds capabilities")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if not c.sidecar and seccomp != "RuntimeDefault":
            out.append(f"{c.owner}: seccompProfile is not RuntimeDefault")
        image = spec.get("image")
        if image is not None and not image_pinned(image):
            out.append(f"{c.owner}: image {image!r} is not pinned (exact version tag or digest)")
        if image is None and not c.sidecar:
            out.append(f"{c.owner}: no image")
    return out


def check_grpc_probes(objs: list[Obj]) -> list[str]:
    """finpredict's own Deployments use Kubernetes' native gRPC probes (the gRPC health service);
    an HTTP-only container (the console: an ``http`` port, no ``grpc`` one) probes its own
    ``/healthz`` and ``/readyz`` on that port instead."""
    out = []
    for obj in objs:
        if obj["kind"] != "Deployment":
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            ports = {p["containerPort"] for p in c.get("ports", []) if p.get("name") == "grpc"}
            http = {p["name"] for p in c.get("ports", []) if p.get("name") == "http"}
            if http and not ports:
                for probe in ("readinessProbe", "livenessProbe"):
                    get = c.get(probe, {}).get("httpGet")
                    if (
                        get is None
                        or get.get("port") not in http
                        or get.get("path") not in ("/healthz", "/readyz")
                    ):
                        out.append(
                            f"{name_of(obj)} container {c['name']}: {probe} is not an HTTP health probe"
                        )
                continue
            for probe in ("readinessProbe", "livenessProbe"):
                grpc = c.get(probe, {}).get("grpc")
                if grpc is None:
                    out.append(f"{name_of(obj)} container {c['name']}: {probe} is not a gRPC probe")
                elif grpc.get("port") not in ports:
                    out.append(f"{name_of(obj)} container {c['name']}: {probe} is not on the grpc port")
    return out


def selector_matches(selector: Obj, labels: dict[str, str]) -> bool:
    if not selector:
        return False
    for k, v in selector.get("matchLabels", {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions", []):
        value, op = labels.get(expr["key"]), expr["operator"]
        if op == "In" and value not in expr["values"]:
            return False
        if op == "NotIn" and value in expr["values"]:
            return False
        if op == "Exists" and value is None:
            return False
        if op == "DoesNotExist" and value is not None:
            return False
    return True


def check_pdbs(objs: list[Obj]) -> list[str]:
    """Every Deployment (and every Ray worker group) is covered by a PodDisruptionBudget, and a
    budget never forbids every eviction of a single replica (a drain would hang)."""
    out = []
    pdbs = [o for o in objs if o["kind"] == "PodDisruptionBudget"]
    for obj in objs:
        if obj["kind"] not in ("Deployment", "RayService"):
            continue
        ns = obj["metadata"].get("namespace")
        for owner, tpl, _spec in pod_specs(obj):
            if owner.endswith("[head]"):
                continue  # the Ray head is a singleton the operator recreates
            labels = tpl.get("metadata", {}).get("labels", {})
            covering = [
                p
                for p in pdbs
                if p["metadata"].get("namespace") == ns
                and selector_matches(p["spec"].get("selector", {}), labels)
            ]
            if not covering:
                out.append(f"{owner}: no PodDisruptionBudget selects its pods")
            replicas = obj["spec"].get("replicas", 1) if obj["kind"] == "Deployment" else None
            for p in covering:
                if replicas is not None and p["spec"].get("minAvailable") in (
                    replicas,
                    str(replicas),
                    "100%",
                ):
                    out.append(f"{owner}: {name_of(p)} allows no eviction of its {replicas} replica(s)")
    return out


def _env(objs: list[Obj], ns: str | None, container: Obj) -> dict[str, str]:
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        ref = src.get("configMapRef")
        if ref:
            for o in objs:
                meta = o["metadata"]
                if o["kind"] == "ConfigMap" and meta["name"] == ref["name"] and meta.get("namespace") == ns:
                    env.update(o.get("data", {}))
    for e in container.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
    return env


def check_termination_grace(objs: list[Obj]) -> list[str]:
    """terminationGracePeriodSeconds exceeds the service's drain (drain delay + shutdown grace,
    the defaults of finpredict.common.config when unset) or, for Ray workers, the Serve config's
    longest graceful_shutdown_timeout_s."""
    out = []
    for obj in objs:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] == "Deployment":
            spec = obj["spec"]["template"]["spec"]
            grace = spec.get("terminationGracePeriodSeconds", 30)
            for c in spec["containers"]:
                env = _env(objs, ns, c)
                delay = next((float(v) for k, v in env.items() if k.endswith("_DRAIN_DELAY_S")), 0.0)
                shutdown = next((float(v) for k, v in env.items() if k.endswith("_SHUTDOWN_GRACE_S")), 10.0)
                if grace <= delay + shutdown:
                    out.append(
                        f"{name_of(obj)}: terminationGracePeriodSeconds {grace} <= drain "
                        f"{delay:g} + shutdown grace {shutdown:g}"
                    )
        elif obj["kind"] == "RayService":
            serve = yaml.safe_load(obj["spec"]["serveConfigV2"])
            longest = max(
                d.get("graceful_shutdown_timeout_s", 20) + d.get("graceful_shutdown_wait_loop_s", 2)
                for app in serve["applications"]
                for d in app.get("deployments", [])
            )
            for group in obj["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
                grace = group["template"]["spec"].get("terminationGracePeriodSeconds", 30)
                if grace <= longest:
                    out.append(
                        f"{name_of(obj)}[worker {group['groupName']}]: terminationGracePeriodSeconds "
                        f"{grace} <= Serve's graceful shutdown {longest:g}"
                    )
    return out


SECRET_NAME = re.compile(r"(TOKEN|PASSWORD|SECRET|API_KEY|DATABASE_URL|ROUTING_KEY|CREDENTIAL)", re.I)


def check_secrets(objs: list[Obj]) -> list[str]:
    """No Secret objects are rendered (they are created out of band and referenced by name), and
    no secret-looking setting has a literal value (env or ConfigMap)."""
    out = []
    for obj in objs:
        if obj["kind"] == "Secret":
            out.append(f"{name_of(obj)}: a Secret in the manifests (create it out of band, reference it)")
        if obj["kind"] == "ConfigMap":
            for key, value in obj.get("data", {}).items():
                if SECRET_NAME.search(key) and value:
                    out.append(f"{name_of(obj)}: {key} holds a literal secret value")
    for c in containers(objs):
        for e in c.spec.get("env", []):
            if SECRET_NAME.search(e["name"]) and "value" in e and e["value"]:
                out.append(f"{c.owner}: env {e['name']} has a literal value (use secretKeyRef)")
    return out


def _policies_for(objs: list[Obj], ns: str | None, labels: dict[str, str]) -> list[Obj]:
    return [
        o
        for o in objs
        if o["kind"] == "NetworkPolicy"
        and o["metadata"].get("namespace") == ns
        and (o["spec"]["podSelector"] == {} or selector_matches(o["spec"]["podSelector"], labels))
    ]


def _port_covered(rule: Obj, port: int, port_names: dict[str, int]) -> bool:
    ports = rule.get("ports")
    if not ports:
        return True
    for p in ports:
        value = p.get("port")
        if value is None or value == port or port_names.get(str(value)) == port:
            return True
    return False


def ingress_sources(objs: list[Obj], app: str, port: int) -> set[str]:
    """Who may connect to pods `app.kubernetes.io/name=<app>` on `port`: 'any' for a rule without
    peers or an open ipBlock, 'app:<name>' for pod selectors, 'namespace:<name>' otherwise."""
    sources: set[str] = set()
    for owner_obj in objs:
        for _owner, tpl, spec in pod_specs(owner_obj):
            labels = tpl.get("metadata", {}).get("labels", {})
            if labels.get("app.kubernetes.io/name") != app:
                continue
            ns = owner_obj["metadata"].get("namespace")
            port_names = {
                p["name"]: p["containerPort"] for c in spec["containers"] for p in c.get("ports", [])
            }
            for pol in _policies_for(objs, ns, labels):
                for rule in pol["spec"].get("ingress", []):
                    if not _port_covered(rule, port, port_names):
                        continue
                    peers = rule.get("from")
                    if not peers:
                        sources.add("any")
                    for peer in peers or []:
                        if "ipBlock" in peer:
                            sources.add("any" if peer["ipBlock"]["cidr"] in ("0.0.0.0/0", "::/0") else "ip")
                        elif "namespaceSelector" in peer:
                            nss = peer["namespaceSelector"].get("matchLabels", {})
                            sources.add("namespace:" + nss.get("kubernetes.io/metadata.name", "*"))
                        elif "podSelector" in peer:
                            sources.add(
                                "app:"
                                + peer["podSelector"]
                                .get("matchLabels", {})
                                .get("app.kubernetes.io/name", "*")
                            )
    return sources


# gRPC ports clients would use, per app (the manifests keep the default ports)
SERVICE_PORTS = {
    "gateway": addresses.GATEWAY_PORT,
    "registry": addresses.REGISTRY_PORT,
    "monitor": addresses.MONITOR_PORT,
    "model-server": addresses.SERVE_GRPC_PORT,
}
# (the console reads models, versions, policies and the audit log for people)
ALLOWED_REGISTRY_CLIENTS = {"app:gateway", "app:monitor", "app:model-server", "app:console"}


def check_network_policies(objs: list[Obj]) -> list[str]:
    """Default deny in every namespace; only the gateway is open to clients; only the gateway,
    the monitor (and the model server's replicas, which download artifacts) reach the registry."""
    out = []
    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] in ("Deployment", "RayService")}
    for ns in namespaces:
        deny = [
            o
            for o in objs
            if o["kind"] == "NetworkPolicy"
            and o["metadata"].get("namespace") == ns
            and o["spec"]["podSelector"] == {}
            and set(o["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not o["spec"].get("ingress")
            and not o["spec"].get("egress")
        ]
        if not deny:
            out.append(f"namespace {ns}: no default-deny NetworkPolicy (ingress and egress)")
    for app, port in SERVICE_PORTS.items():
        sources = ingress_sources(objs, app, port)
        if app == "gateway":
            if "any" not in sources:
                out.append(f"gateway: clients cannot reach port {port}")
        elif "any" in sources or "ip" in sources:
            out.append(f"{app}: port {port} is reachable from outside finpredict ({sorted(sources)})")
        if app == "registry" and not sources <= ALLOWED_REGISTRY_CLIENTS:
            out.append(f"registry: reachable from {sorted(sources - ALLOWED_REGISTRY_CLIENTS)}")
    return out


def check_service_accounts(objs: list[Obj]) -> list[str]:
    out = []
    for obj in objs:
        if obj["kind"] not in ("Deployment", "CronJob"):
            continue
        for _owner, _tpl, spec in pod_specs(obj):
            if spec.get("automountServiceAccountToken") is not False:
                out.append(f"{name_of(obj)}: automountServiceAccountToken is not false")
            if spec.get("serviceAccountName") in (None, "default"):
                out.append(f"{name_of(obj)}: runs as the default service account")
    return out


def check_namespaces(objs: list[Obj]) -> list[str]:
    out = []
    for obj in objs:
        if obj["kind"] == "Namespace":
            labels = obj["metadata"].get("labels", {})
            if labels.get("pod-security.kubernetes.io/enforce") != "restricted":
                out.append(f"{name_of(obj)}: Pod Security Standard 'restricted' is not enforced")
    return out


def check_references(objs: list[Obj]) -> list[str]:
    """Services select pods that exist and target their named ports; HPAs scale what exists;
    ServiceMonitors point at Service ports that exist."""
    out = []
    pods = []
    for obj in objs:
        for _owner, tpl, spec in pod_specs(obj):
            ports = {p["name"] for c in spec["containers"] for p in c.get("ports", []) if "name" in p}
            pods.append((obj["metadata"].get("namespace"), tpl.get("metadata", {}).get("labels", {}), ports))
    for obj in objs:
        ns = obj["metadata"].get("namespace")
        if obj["kind"] == "Service":
            sel = obj["spec"].get("selector", {})
            matching = [p for p in pods if p[0] == ns and all(p[1].get(k) == v for k, v in sel.items())]
            if not matching:
                out.append(f"{name_of(obj)}: selects no pods")
            for port in obj["spec"]["ports"]:
                target = port.get("targetPort")
                if isinstance(target, str) and not any(target in p[2] for p in matching):
                    out.append(f"{name_of(obj)}: targetPort {target!r} is not a container port")
        if obj["kind"] == "HorizontalPodAutoscaler":
            ref = obj["spec"]["scaleTargetRef"]
            if not any(
                o["kind"] == ref["kind"]
                and o["metadata"]["name"] == ref["name"]
                and o["metadata"].get("namespace") == ns
                for o in objs
            ):
                out.append(f"{name_of(obj)}: scales {ref['kind']}/{ref['name']}, which does not exist")
        if obj["kind"] == "ServiceMonitor":
            services = [
                s
                for s in objs
                if s["kind"] == "Service"
                and s["metadata"].get("namespace") == ns
                and selector_matches(obj["spec"]["selector"], s["metadata"].get("labels", {}))
            ]
            for ep in obj["spec"]["endpoints"]:
                if not any(ep.get("port") in {p.get("name") for p in s["spec"]["ports"]} for s in services):
                    out.append(f"{name_of(obj)}: no selected Service has a port named {ep.get('port')!r}")
    return out


POLICY_CHECKS = (
    check_containers,
    check_grpc_probes,
    check_pdbs,
    check_termination_grace,
    check_secrets,
    check_network_policies,
    check_service_accounts,
    check_namespaces,
    check_references,
)


def policy_violations(objs: list[Obj]) -> list[str]:
    return [v for check in POLICY_CHECKS for v in check(objs)]


# ---------------------------------------------------------------------------------------------
# Dockerfiles


@dataclass
class Stage:
    base: str
    name: str | None
    lines: list[str]  # instructions (continuations joined), the FROM line first


def dockerfile_stages(text: str) -> list[Stage]:
    joined: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        joined.append(buf + line)
        buf = ""
    if buf:
        joined.append(buf)
    stages: list[Stage] = []
    for instr in joined:
        words = instr.split()
        if words[0].upper() == "FROM":
            args = [w for w in words[1:] if not w.startswith("--")]
            name = args[2] if len(args) >= 3 and args[1].upper() == "AS" else None
            stages.append(Stage(args[0], name, [instr]))
        elif stages:
            stages[-1].lines.append(instr)
    return stages


def _instr(stage: Stage, keyword: str) -> list[str]:
    return [line[len(keyword) :].strip() for line in stage.lines if line.split()[0].upper() == keyword]


SECRET_FILES = re.compile(r"(^|[\s/])(\.run|\.env|secrets?\.[a-z]+|.*\.pem|.*\.key|id_rsa)(\s|/|$)")
BUILD_TOOLS = re.compile(
    r"(/uv\b|\buv (sync|pip|export|build)|\bcargo\b|\brustup\b|\bgcc\b|\bbuild-essential\b|\bmaturin\b)"
)


def check_dockerfile(text: str, package: str, ports: list[int]) -> list[str]:
    """Static rules for a service Dockerfile; `package` is the finpredict sub-package it starts."""
    out = []
    stages = dockerfile_stages(text)
    if len(stages) < 2:
        out.append("not a multi-stage build")
    names = {s.name for s in stages if s.name}
    for stage in stages:
        refs = [stage.base] + [
            m.group(1) for line in _instr(stage, "COPY") for m in [re.search(r"--from=(\S+)", line)] if m
        ]
        for ref in refs:
            if ref in names:
                continue
            if not image_pinned(ref):
                out.append(f"image {ref!r} is not pinned (exact version tag or digest)")
        for line in _instr(stage, "COPY") + _instr(stage, "ADD"):
            if re.match(r"^(--\S+\s+)*\.\s+\.$", line) or re.match(r"^(--\S+\s+)*\.\s+\S+$", line):
                out.append(f"COPY {line}: copies the whole build context (local secrets in .run/ too)")
            if SECRET_FILES.search(line):
                out.append(f"COPY {line}: copies a secret file")
        for line in _instr(stage, "ENV") + _instr(stage, "ARG"):
            for m in re.finditer(r"([A-Za-z_][A-Za-z0-9_]*)=(\S+)", line):
                if SECRET_NAME.search(m.group(1)) and m.group(2) not in ('""', "''"):
                    out.append(f"{m.group(1)} is set in the image (secrets come from the environment)")
    final = stages[-1] if stages else Stage("", None, [])
    users = _instr(final, "USER")
    if not users:
        out.append("the final stage sets no USER")
    elif users[-1].split(":")[0] in ("root", "0"):
        out.append("the final stage runs as root")
    elif not users[-1].split(":")[0].isdigit():
        out.append("USER is not numeric (Kubernetes cannot verify runAsNonRoot)")
    if not _instr(final, "HEALTHCHECK"):
        out.append("the final stage has no HEALTHCHECK")
    for line in final.lines[1:]:
        if BUILD_TOOLS.search(line):
            out.append(f"build tool in the final stage: {line[:80]}")
    entry = _instr(final, "ENTRYPOINT")
    expected = ["python", "-m", f"finpredict.{package}"]
    if not entry:
        out.append("no ENTRYPOINT")
    else:
        try:
            got = json.loads(entry[-1])
        except json.JSONDecodeError:
            got = shlex.split(entry[-1])
            out.append("ENTRYPOINT is not in exec form")
        if got != expected:
            out.append(f"ENTRYPOINT {got} is not the service's start command {expected}")
    exposed = {int(p.split("/")[0]) for line in _instr(final, "EXPOSE") for p in line.split()}
    for port in ports:
        if port not in exposed:
            out.append(f"port {port} is not EXPOSEd")
    return out


# ---------------------------------------------------------------------------------------------
# Taskfiles and workflows


def taskfile_tasks(root: Path = ROOT) -> dict[str, Obj]:
    """Every task `task <name>` accepts: the root Taskfile's and its includes' (namespaced)."""
    main = yaml.safe_load((root / "Taskfile.yml").read_text())
    tasks: dict[str, Obj] = {name: spec or {} for name, spec in (main.get("tasks") or {}).items()}
    for ns, inc in (main.get("includes") or {}).items():
        path = inc if isinstance(inc, str) else inc["taskfile"]
        sub = yaml.safe_load((root / path).read_text())
        for name, spec in (sub.get("tasks") or {}).items():
            tasks[f"{ns}:{name}"] = spec or {}
    return tasks


def run_commands(workflow: Obj) -> list[tuple[str, str]]:
    """(job id, command line) of every `run:` step, one entry per line."""
    out = []
    for job_id, job in (workflow.get("jobs") or {}).items():
        for step in job.get("steps", []):
            for line in str(step.get("run", "")).splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    out.append((job_id, line))
    return out


TASK_CALL = re.compile(r"(?:^|&&|;|\|\|)\s*task\s+([A-Za-z0-9_:.-]+)")


def check_workflow_tasks(workflow: Obj, tasks: dict[str, Obj]) -> list[str]:
    """Every `task X` a workflow runs exists and is public (not internal)."""
    out = []
    for job, line in run_commands(workflow):
        for m in TASK_CALL.finditer(line):
            name = m.group(1)
            if name not in tasks:
                out.append(f"job {job}: `task {name}` is not a task in Taskfile.yml")
            elif tasks[name].get("internal"):
                out.append(f"job {job}: `task {name}` is internal")
    return out


def load_workflow(path: Path) -> Obj:
    data: dict[Any, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as True
    if True in data:
        data["on"] = data.pop(True)
    return data


def triggers(workflow: Obj) -> set[str]:
    on = workflow.get("on")
    if isinstance(on, str):
        return {on}
    if isinstance(on, list):
        return set(on)
    return set(on or {})
