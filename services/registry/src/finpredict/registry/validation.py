"""Request validation: every refusal names the offending field (``INVALID_ARGUMENT``)."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence

from google.protobuf.struct_pb2 import Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2
from finpredict.common.triggers import valid_trigger
from finpredict.registry import policy as pol
from finpredict.registry.policy import COMPARATOR_GE, COMPARATOR_LE, Policy, PolicyGate
from finpredict.registry.repo import GateRow

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
GATE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
TAG_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
EXTERNAL_SCHEMES = ("s3://", "gs://", "https://", "wandb-artifact://")
MAX_TEXT = 10_000
MAX_REASON = 2_000


class InvalidArgumentError(Exception):
    """A request field is invalid; ``str()`` is ``"<field>: <problem>"``."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


def name(field: str, value: str, what: str = "name") -> str:
    if not value:
        raise InvalidArgumentError(field, f"{what} is required")
    if not NAME_RE.match(value):
        raise InvalidArgumentError(
            field, f"{what} {value!r} must match [a-z0-9][a-z0-9_-]* (at most 64 characters)"
        )
    return value


def optional_name(field: str, value: str) -> str:
    return name(field, value) if value else ""


def text(field: str, value: str, limit: int = MAX_TEXT) -> str:
    if len(value) > limit:
        raise InvalidArgumentError(field, f"longer than {limit} characters")
    return value


def positive(field: str, value: int) -> int:
    if value <= 0:
        raise InvalidArgumentError(field, f"must be a positive version number, got {value}")
    return value


def finite(field: str, value: float) -> float:
    if not math.isfinite(value):
        raise InvalidArgumentError(field, f"must be a finite number, got {value}")
    return value


# The range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
MIN_TIMESTAMP_S, MAX_TIMESTAMP_S = -62_135_596_800, 253_402_300_799


def timestamp(field: str, value: Timestamp) -> Timestamp:
    if not MIN_TIMESTAMP_S <= value.seconds <= MAX_TIMESTAMP_S or not 0 <= value.nanos < 1_000_000_000:
        raise InvalidArgumentError(field, "must be a time between years 1 and 9999")
    return value


def struct(field: str, value: Struct) -> Struct:
    """A Struct that converts to JSON: numbers must be finite (JSON has no NaN or infinity)."""
    for key, item in value.fields.items():
        _json_value(f"{field}[{key!r}]", item)
    return value


def _json_value(field: str, value: Value) -> None:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        finite(field, value.number_value)
    elif kind == "struct_value":
        struct(field, value.struct_value)
    elif kind == "list_value":
        for i, item in enumerate(value.list_value.values):
            _json_value(f"{field}[{i}]", item)


def tags(field: str, value: Mapping[str, str]) -> dict[str, str]:
    for k, v in value.items():
        if not TAG_KEY_RE.match(k):
            raise InvalidArgumentError(f"{field}[{k!r}]", "tag keys must match [A-Za-z0-9][A-Za-z0-9_.:/-]*")
        text(f"{field}[{k!r}]", v, 1024)
    return dict(value)


def metrics(field: str, value: Mapping[str, float]) -> dict[str, float]:
    for k, v in value.items():
        if not GATE_RE.match(k):
            raise InvalidArgumentError(
                f"{field}[{k!r}]", "metric names must match [A-Za-z0-9][A-Za-z0-9_.:-]*"
            )
        finite(f"{field}[{k!r}]", v)
    return dict(value)


def page_size(field: str, value: int, default: int, maximum: int) -> int:
    if value < 0:
        raise InvalidArgumentError(field, f"must not be negative, got {value}")
    return min(value or default, maximum)


def gates(field: str, results: Sequence[types_pb2.GateResult]) -> list[GateRow]:
    """Checks gate results server-side: ``passed`` must agree with value, threshold, comparator."""
    out: list[GateRow] = []
    seen: set[str] = set()
    for i, g in enumerate(results):
        f = f"{field}[{i}]"
        if not GATE_RE.match(g.name):
            raise InvalidArgumentError(
                f"{f}.name", f"gate name {g.name!r} must match [A-Za-z0-9][A-Za-z0-9_.:-]*"
            )
        if g.name in seen:
            raise InvalidArgumentError(f"{f}.name", f"gate {g.name!r} appears twice")
        seen.add(g.name)
        finite(f"{f}.value", g.value)
        finite(f"{f}.threshold", g.threshold)
        if g.comparator == COMPARATOR_GE:
            passed = g.value >= g.threshold
        elif g.comparator == COMPARATOR_LE:
            passed = g.value <= g.threshold
        else:
            raise InvalidArgumentError(f"{f}.comparator", "must be GREATER_OR_EQUAL or LESS_OR_EQUAL")
        if g.passed != passed:
            raise InvalidArgumentError(
                f"{f}.passed",
                f"gate {g.name!r} says passed={g.passed} but {g.value} vs threshold {g.threshold} "
                f"gives {passed}",
            )
        out.append(GateRow(g.name, g.value, g.threshold, g.comparator, passed, text(f"{f}.detail", g.detail)))
    return out


def header(h: registry_pb2.VersionHeader) -> list[GateRow]:
    """Validates a registration header; returns its gate rows."""
    name("header.model", h.model, "model name")
    text("header.description", h.description)
    if len(h.artifact_format) > 64:
        raise InvalidArgumentError("header.artifact_format", "longer than 64 characters")
    if h.manifest_json:
        try:
            doc = json.loads(h.manifest_json)
        except json.JSONDecodeError as exc:
            raise InvalidArgumentError("header.manifest_json", f"not valid JSON ({exc.msg})") from None
        if not isinstance(doc, dict):
            raise InvalidArgumentError("header.manifest_json", "must be a JSON object")
    if h.artifact_sha256 and not SHA_RE.match(h.artifact_sha256):
        raise InvalidArgumentError("header.artifact_sha256", "must be 64 lower-case hex digits")
    if h.reference_profile_sha256:
        if not SHA_RE.match(h.reference_profile_sha256):
            raise InvalidArgumentError("header.reference_profile_sha256", "must be 64 lower-case hex digits")
        if hashlib.sha256(h.reference_profile).hexdigest() != h.reference_profile_sha256:
            raise InvalidArgumentError(
                "header.reference_profile_sha256", "does not match the sha256 of header.reference_profile"
            )
    if h.artifact_uri:
        if not h.artifact_uri.startswith(EXTERNAL_SCHEMES):
            raise InvalidArgumentError(
                "header.artifact_uri",
                f"scheme must be one of {', '.join(EXTERNAL_SCHEMES)} "
                "(local paths are refused: upload the bytes)",
            )
        text("header.artifact_uri", h.artifact_uri, 2048)
        if not h.artifact_sha256:
            raise InvalidArgumentError("header.artifact_sha256", "required when registering by artifact_uri")
    if not math.isfinite(h.threshold) or not 0.0 <= h.threshold <= 1.0:
        raise InvalidArgumentError("header.threshold", f"must be within [0, 1], got {h.threshold}")
    metrics("header.metrics", h.metrics)
    tags("header.tags", h.tags)
    seen: set[str] = set()
    for i, spec in enumerate(h.feature_schema.features):
        f = f"header.feature_schema.features[{i}]"
        if not spec.name:
            raise InvalidArgumentError(f"{f}.name", "required")
        if spec.name in seen:
            raise InvalidArgumentError(f"{f}.name", f"feature {spec.name!r} appears twice")
        seen.add(spec.name)
        if spec.type == types_pb2.FEATURE_TYPE_UNSPECIFIED:
            raise InvalidArgumentError(f"{f}.type", "must be set")
    lin = h.lineage
    if lin.wandb_link_status:
        raise InvalidArgumentError(
            "header.lineage.wandb_link_status", "is set by the registry, leave it empty"
        )
    if lin.trigger and not valid_trigger(lin.trigger):
        raise InvalidArgumentError(
            "header.lineage.trigger",
            "must be 'manual', 'manual:<reason>', 'schedule', 'schedule:<date>' or 'alert:<id>'",
        )
    struct("header.lineage.params", lin.params)
    if lin.dvc_lock_sha256 and not SHA_RE.match(lin.dvc_lock_sha256):
        raise InvalidArgumentError("header.lineage.dvc_lock_sha256", "must be 64 lower-case hex digits")
    for i, ref in enumerate(lin.parents):
        name(f"header.lineage.parents[{i}].name", ref.name, "model name")
        positive(f"header.lineage.parents[{i}].version", ref.version)
    if len(h.idempotency_key) > 128:
        raise InvalidArgumentError("header.idempotency_key", "longer than 128 characters")
    return gates("header.gate_results", h.gate_results)


# LineageRequirement enum value -> the policy's lineage name.
LINEAGE_NAMES: dict[int, str] = {
    registry_pb2.LINEAGE_REQUIREMENT_GIT_COMMIT: pol.GIT_COMMIT,
    registry_pb2.LINEAGE_REQUIREMENT_DATA_MD5: pol.DATA_MD5,
    registry_pb2.LINEAGE_REQUIREMENT_DVC_LOCK_SHA256: pol.DVC_LOCK_SHA256,
    registry_pb2.LINEAGE_REQUIREMENT_REFERENCE_PROFILE: pol.REFERENCE_PROFILE,
}


def policy(field: str, p: registry_pb2.PromotionPolicy) -> Policy:
    """A promotion policy to store: named gates with GE/LE rules and finite thresholds, each at
    most once; known lineage requirements, each at most once. Output-only fields are ignored."""
    gates: list[PolicyGate] = []
    for i, g in enumerate(p.gates):
        f = f"{field}.gates[{i}]"
        if not GATE_RE.match(g.name):
            raise InvalidArgumentError(
                f"{f}.name", f"gate name {g.name!r} must match [A-Za-z0-9][A-Za-z0-9_.:-]*"
            )
        if any(seen.name == g.name for seen in gates):
            raise InvalidArgumentError(f"{f}.name", f"gate {g.name!r} appears twice")
        if g.comparator not in (COMPARATOR_GE, COMPARATOR_LE):
            raise InvalidArgumentError(f"{f}.comparator", "must be GREATER_OR_EQUAL or LESS_OR_EQUAL")
        gates.append(PolicyGate(g.name, int(g.comparator), finite(f"{f}.threshold", g.threshold)))
    lineage: list[str] = []
    for i, r in enumerate(p.required_lineage):
        f = f"{field}.required_lineage[{i}]"
        if r not in LINEAGE_NAMES:
            raise InvalidArgumentError(f, f"unknown lineage requirement {r}")
        if LINEAGE_NAMES[r] in lineage:
            raise InvalidArgumentError(f, f"{LINEAGE_NAMES[r]} appears twice")
        lineage.append(LINEAGE_NAMES[r])
    return Policy(tuple(gates), tuple(lineage), hand_off(f"{field}.hand_off", p.hand_off))


HAND_OFF_MODES: dict[int, str] = {
    registry_pb2.HAND_OFF_MODE_UNSPECIFIED: pol.HAND_OFF_OFF,
    registry_pb2.HAND_OFF_MODE_OFF: pol.HAND_OFF_OFF,
    registry_pb2.HAND_OFF_MODE_CANARY: pol.HAND_OFF_CANARY,
}
MAX_ANALYSIS_INTERVAL_S = 7 * 86_400.0  # as the gateway's StartRollout


def hand_off(field: str, h: registry_pb2.HandOff) -> pol.HandOff:
    """The hand-off settings as a gateway's StartRollout would accept them (steps increasing in
    (0, 100] and ending at 100, an interval up to 7 days, non-negative finite limits); off drops
    them. ``after_version`` is output only."""
    if h.mode not in HAND_OFF_MODES:
        raise InvalidArgumentError(f"{field}.mode", f"unknown hand-off mode {h.mode}")
    mode = HAND_OFF_MODES[h.mode]
    if mode == pol.HAND_OFF_OFF:
        return pol.HandOff()
    steps = [finite(f"{field}.steps", s) for s in h.steps]
    if steps and (steps[-1] != 100 or any(not 0 < s <= 100 for s in steps) or sorted(set(steps)) != steps):
        raise InvalidArgumentError(
            f"{field}.steps", f"must be increasing percentages ending at 100, got {steps}"
        )
    interval = h.analysis_interval.seconds + h.analysis_interval.nanos / 1e9
    if not 0 <= interval <= MAX_ANALYSIS_INTERVAL_S:
        raise InvalidArgumentError(f"{field}.analysis_interval", "must be positive and at most 7 days")
    if h.min_requests_per_step < 0:
        raise InvalidArgumentError(f"{field}.min_requests_per_step", "must not be negative")
    limits: list[tuple[str, float]] = []
    for spec, value in h.thresholds.ListFields():
        f = f"{field}.thresholds.{spec.name}"
        if finite(f, value) < 0:
            raise InvalidArgumentError(f, f"must not be negative, got {value}")
        limits.append((spec.name, float(value)))
    return pol.HandOff(
        mode=mode,
        steps=tuple(steps),
        analysis_interval_s=interval,
        min_requests_per_step=int(h.min_requests_per_step),
        thresholds=tuple(sorted(limits)),
    )
