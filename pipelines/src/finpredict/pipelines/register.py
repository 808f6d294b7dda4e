"""Stage ``register``: registers the evaluated model version in the registry, with lineage.

Runs only after ``evaluate`` passed every gate (DVC stops the pipeline otherwise). The version
carries the UBJ artifact (streamed in chunks after a ``VersionHeader``), the manifest, the
feature schema, the decision threshold, the metrics and gate results, the reference profile
and the lineage: git commit, the DVC md5 of every data path in ``dvc.lock``, the sha256 of
``dvc.lock``, the params, the W&B run id/path and the trigger.

Environment: ``FINPREDICT_REGISTRY_TARGET`` (host:port, required; the clients' setting,
:class:`~finpredict.common.config.ClientSettings`) and ``FINPREDICT_REGISTRY_TOKEN`` (bearer token
with the writer role; the model is created first when missing, which needs admin).
``FINPREDICT_TRIGGER`` overrides ``register.trigger`` (these two are
:class:`~finpredict.pipelines.config.PipelineSettings`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the lock)
from google.protobuf import struct_pb2

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.common.config import ClientSettings, ConfigError, env_var_name, load_settings
from finpredict.features import FeatureSchema
from finpredict.pipelines.common import (
    DVC_LOCK,
    GATES_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PROFILE_FILE,
    REGISTRATION_FILE,
    WANDB_FILE,
    PipelineError,
    git_commit,
    load_params,
    read_json,
    run_stage,
    section,
    sha256_file,
    write_json,
)
from finpredict.pipelines.config import PipelineSettings

CHUNK = 1 << 20
TARGET_ENV = env_var_name(ClientSettings, "registry_target")

_KIND = {
    "numeric": types_pb2.FEATURE_TYPE_NUMERIC,
    "integer": types_pb2.FEATURE_TYPE_INTEGER,
    "categorical": types_pb2.FEATURE_TYPE_CATEGORICAL,
}


def schema_proto(schema: FeatureSchema) -> types_pb2.FeatureSchema:
    out = types_pb2.FeatureSchema()
    for f in schema.features:
        spec = out.features.add(
            name=f.name, type=_KIND[f.kind], nullable=f.nullable, description=f.description
        )
        if f.min is not None:
            spec.min = f.min
        if f.max is not None:
            spec.max = f.max
        spec.categories.extend(f.categories)
    return out


def data_md5_from_lock(lock_path: Path) -> dict[str, str]:
    """path -> DVC md5 of every ``data/`` dependency or output recorded in ``dvc.lock``."""
    try:
        lock = yaml.safe_load(lock_path.read_text()) or {}
    except FileNotFoundError:
        raise PipelineError(f"{lock_path}: not found (run the pipeline with dvc repro)") from None
    found: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for entry in (stage.get("deps") or []) + (stage.get("outs") or []):
            path = str(entry.get("path", ""))
            if path.startswith("data/") and entry.get("md5"):
                found[path] = str(entry["md5"])
    return found


def build_header(params: dict[str, Any], model_name: str, trigger: str) -> registry_pb2.VersionHeader:
    manifest_text = MANIFEST_FILE.read_text()
    manifest = json.loads(manifest_text)
    schema = FeatureSchema.from_dict(manifest["feature_schema"])
    metrics = read_json(METRICS_FILE)
    gates = read_json(GATES_FILE)
    wandb_info = read_json(WANDB_FILE)
    if not gates.get("passed"):
        raise PipelineError(f"{GATES_FILE}: not every gate passed; refusing to register")
    if sha256_file(MODEL_FILE) != manifest["sha256"]:
        raise PipelineError(f"{MODEL_FILE}: sha256 differs from {MANIFEST_FILE}")
    struct = struct_pb2.Struct()
    struct.update(json.loads(json.dumps(params)))
    lineage = registry_pb2.Lineage(
        git_commit=git_commit(),
        data_md5=data_md5_from_lock(DVC_LOCK),
        dvc_lock_sha256=sha256_file(DVC_LOCK),
        params=struct,
        wandb_run_id=str(wandb_info.get("run_id", "")),
        wandb_run_path=str(wandb_info.get("run_path", "")),
        trigger=trigger,
    )
    comparators = {">=": types_pb2.COMPARATOR_GREATER_OR_EQUAL, "<=": types_pb2.COMPARATOR_LESS_OR_EQUAL}
    gate_results = [
        types_pb2.GateResult(
            name=g["name"],
            value=float(g["value"]),
            threshold=float(g["threshold"]),
            comparator=comparators[g["comparator"]],
            passed=bool(g["passed"]),
            detail=str(g["detail"]),
        )
        for g in gates["gates"]
    ]
    numeric_metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    profile = PROFILE_FILE.read_bytes() if PROFILE_FILE.exists() else b""
    key = hashlib.sha256(
        (manifest["sha256"] + sha256_file(DVC_LOCK) + str(wandb_info.get("run_id", ""))).encode()
    ).hexdigest()
    return registry_pb2.VersionHeader(
        model=model_name,
        description=f"XGBoost credit-default model, {manifest['training']['n_trees']} trees",
        artifact_format=manifest["format"],
        manifest_json=manifest_text,
        artifact_sha256=manifest["sha256"],
        feature_schema=schema_proto(schema),
        threshold=float(metrics["threshold"]),
        metrics=numeric_metrics,
        gate_results=gate_results,
        tags={"wandb_mode": str(wandb_info.get("mode", "")), "pipeline": "dvc"},
        lineage=lineage,
        reference_profile=profile,
        reference_profile_sha256=hashlib.sha256(profile).hexdigest() if profile else "",
        idempotency_key=key,
    )


def _requests(
    header: registry_pb2.VersionHeader, artifact: Path
) -> Iterator[registry_pb2.RegisterVersionRequest]:
    yield registry_pb2.RegisterVersionRequest(header=header)
    with artifact.open("rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            yield registry_pb2.RegisterVersionRequest(chunk=block)


def ensure_model(
    stub: registry_pb2_grpc.RegistryServiceStub,
    name: str,
    metadata: tuple[tuple[str, str], ...],
    timeout: float,
    target: str,
) -> None:
    """Creates the model when it does not exist (needs admin; a writer token is enough after that)."""
    try:
        stub.GetModel(registry_pb2.GetModelRequest(name=name), metadata=metadata, timeout=timeout)
        return
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise PipelineError(
                f"registry {target}: GetModel failed: {exc.code().name}: {exc.details()}"
            ) from None
    try:
        stub.CreateModel(
            registry_pb2.CreateModelRequest(name=name, description="Credit default (PD) model"),
            metadata=metadata,
            timeout=timeout,
        )
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.ALREADY_EXISTS:  # created concurrently
            return
        hint = (
            " (creating a model needs a token with the admin role)"
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED
            else ""
        )
        raise PipelineError(
            f"registry {target}: model {name!r} does not exist and CreateModel failed: "
            f"{exc.code().name}: {exc.details()}{hint}"
        ) from None


def register(
    target: str, token: str, header: registry_pb2.VersionHeader, artifact: Path, timeout: float = 60.0
) -> registry_pb2.ModelVersion:
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    with grpc.insecure_channel(target) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        ensure_model(stub, header.model, metadata, timeout, target)
        try:
            resp = stub.RegisterVersion(_requests(header, artifact), metadata=metadata, timeout=timeout)
        except grpc.RpcError as exc:
            raise PipelineError(
                f"registry {target}: RegisterVersion failed: {exc.code().name}: {exc.details()}"
            ) from None
    return resp.version


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    params = load_params()
    rp = section(params, "register")
    try:
        client, settings = load_settings(ClientSettings), load_settings(PipelineSettings)
    except ConfigError as exc:
        raise PipelineError(str(exc)) from None
    if "registry_target" not in client.model_fields_set:  # no default: a pipeline registers on purpose
        raise PipelineError(f"{TARGET_ENV} is not set (host:port of the registry); `task train` starts one")
    model_name = str(rp.get("model", "credit-default"))
    trigger = settings.trigger or str(rp.get("trigger", "manual"))
    header = build_header(params, model_name, trigger)
    version = register(client.registry_target, settings.registry_token.get_secret_value(), header, MODEL_FILE)
    result = {
        "model": version.model,
        "version": version.version,
        "gates_passed": version.gates_passed,
        "artifact_sha256": version.artifact.sha256,
        "lineage": {
            "git_commit": header.lineage.git_commit,
            "data_md5": dict(header.lineage.data_md5),
            "dvc_lock_sha256": header.lineage.dvc_lock_sha256,
            "wandb_run_id": header.lineage.wandb_run_id,
            "wandb_run_path": header.lineage.wandb_run_path,
            "trigger": header.lineage.trigger,
        },
    }
    write_json(REGISTRATION_FILE, result)
    print(
        f"[register] {version.model} version {version.version} registered "
        f"(gates passed: {version.gates_passed})"
    )


if __name__ == "__main__":
    run_stage("register", main)
