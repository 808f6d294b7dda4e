"""Stage ``register``: registers the evaluated model version in the registry, with lineage.

Runs only after ``evaluate`` passed every gate (DVC stops the pipeline otherwise). The version
carries the UBJ artifact (streamed in chunks after a ``VersionHeader``), the manifest, the
feature schema, the decision threshold, the metrics and gate results, the reference profile
and the lineage: git commit, the DVC md5 of every data path in ``dvc.lock``, the sha256 of
``dvc.lock``, the params, the W&B run id/path and the trigger.

A run on the same params, data and code as a registered version (the same run fingerprint,
:mod:`finpredict.pipelines.runs`) registers nothing: the stage prints ``reused run <run id>
(version N)`` and writes that version, with ``reused: true``, into ``reports/registration.json``.
New versions carry the fingerprint in their lineage and as the tag ``run_fingerprint``.

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the lock)
from google.protobuf import struct_pb2

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.config import ClientSettings, ConfigError, env_var_name, load_settings
from finpredict.features import FeatureSchema
from finpredict.pipelines import runs
from finpredict.pipelines.common import (
    DVC_LOCK,
    GATES_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PROFILE_FILE,
    REGISTRATION_FILE,
    SOURCE_FILE,
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


def training_data(path: Path) -> registry_pb2.TrainingData:
    """The ingest stage's record of what it read (``data/raw/source.json``) for the lineage; empty
    when the stage did not write one."""
    if not path.exists():
        return registry_pb2.TrainingData()
    rec = read_json(path)
    out = registry_pb2.TrainingData(
        source=str(rec.get("source", "")),
        maturity_days=float(rec.get("maturity_days", 0.0)),
        rows=int(rec.get("rows", 0)),
        excluded_unmatured=int(rec.get("excluded_unmatured", 0)),
        excluded_unlabelled=int(rec.get("excluded_unlabelled", 0)),
        label_coverage=float(rec.get("label_coverage", 0.0)),
        feedback_labels=int(rec.get("feedback_labels", 0)),
        snapshot_path=str(rec.get("snapshot_path", "")),
        snapshot_md5=str(rec.get("snapshot_md5", "")),
    )
    for name in ("window_start", "window_end", "as_of"):
        if rec.get(name):
            getattr(out, name).FromDatetime(datetime.fromisoformat(str(rec[name])).astimezone(UTC))
    return out


def build_header(
    params: dict[str, Any], model_name: str, trigger: str, fingerprint: str = "", code_version: str = ""
) -> registry_pb2.VersionHeader:
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
        fingerprint=fingerprint,
        training_data=training_data(SOURCE_FILE),
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
        tags={
            "wandb_mode": str(wandb_info.get("mode", "")),
            "pipeline": "dvc",
            **({runs.FINGERPRINT_TAG: fingerprint} if fingerprint else {}),
            **({runs.CODE_VERSION_TAG: code_version} if code_version else {}),
        },
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


def find_run(
    target: str, token: str, model: str, fingerprint: str, timeout: float = 60.0
) -> registry_pb2.ModelVersion | None:
    """The newest version of ``model`` registered by a run with this fingerprint, if any."""
    metadata = bearer_metadata(token) if token else ()
    request = registry_pb2.SearchVersionsRequest(
        model=model, tags={runs.FINGERPRINT_TAG: fingerprint}, page_size=1
    )
    with grpc.insecure_channel(target) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        try:
            found = stub.SearchVersions(request, metadata=metadata, timeout=timeout).versions
        except grpc.RpcError as exc:
            raise PipelineError(
                f"registry {target}: SearchVersions failed: {exc.code().name}: {exc.details()}"
            ) from None
    return found[0] if found else None


def registration_result(
    version: registry_pb2.ModelVersion, lineage: registry_pb2.Lineage, fingerprint: str, *, reused: bool
) -> dict[str, Any]:
    """``reports/registration.json``: the version this run registered, or (``reused``) the one of
    an earlier run with the same fingerprint, when this run registered nothing."""
    return {
        "model": version.model,
        "version": version.version,
        "gates_passed": version.gates_passed,
        "artifact_sha256": version.artifact.sha256,
        "reused": reused,
        "run_id": runs.run_id(version),
        "fingerprint": fingerprint,
        "lineage": {
            "git_commit": lineage.git_commit,
            "data_md5": dict(lineage.data_md5),
            "dvc_lock_sha256": lineage.dvc_lock_sha256,
            "wandb_run_id": lineage.wandb_run_id,
            "wandb_run_path": lineage.wandb_run_path,
            "trigger": lineage.trigger,
        },
    }


def register(
    target: str, token: str, header: registry_pb2.VersionHeader, artifact: Path, timeout: float = 60.0
) -> registry_pb2.ModelVersion:
    metadata = bearer_metadata(token) if token else ()
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
    code = runs.code_version()
    fp = runs.fingerprint(params, data_md5_from_lock(DVC_LOCK), code)
    token = settings.registry_token.get_secret_value()
    earlier = find_run(client.registry_target, token, model_name, fp)
    if earlier is not None:  # same params, data and code: that run's result stands
        write_json(REGISTRATION_FILE, registration_result(earlier, earlier.lineage, fp, reused=True))
        print(
            f"[register] reused run {runs.run_id(earlier)} (version {earlier.version}) of {model_name}: "
            f"same params, data and code (fingerprint {fp[:12]}); nothing new registered"
        )
        return
    header = build_header(params, model_name, trigger, fingerprint=fp, code_version=code)
    version = register(client.registry_target, token, header, MODEL_FILE)
    write_json(REGISTRATION_FILE, registration_result(version, header.lineage, fp, reused=False))
    print(
        f"[register] {version.model} version {version.version} registered "
        f"(gates passed: {version.gates_passed})"
    )


if __name__ == "__main__":
    run_stage("register", main)
