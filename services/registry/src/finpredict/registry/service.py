# ruff: noqa: N802  (gRPC method names are CamelCase)
"""The RegistryService gRPC servicer.

Blocking database and file work runs in worker threads (``asyncio.to_thread``); the event loop
only moves messages. Alias events are pushed to ``WatchAliases`` subscribers after commit through
an in-process wake-up (:class:`EventHub`); subscribers then read the events from the database in
id order, so the stream is ordered, gap-free and resumable.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import importlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from prometheus_client import Counter
from sqlalchemy.exc import OperationalError

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.api.rollout.v1 import rollout_pb2
from finpredict.common.auth import ADMIN, DEFAULT_ROLE_IMPLIES, READER, WRITER, current_subject
from finpredict.registry import validation as v
from finpredict.registry.policy import HAND_OFF_CANARY, HAND_OFF_OFF, HandOff
from finpredict.registry.repo import (
    PRODUCTION,
    STATUS_DELETED,
    AbortedError,
    AuditRow,
    GatesFailedError,
    ModelRow,
    NewVersion,
    PolicyRow,
    RegistryError,
    Repository,
    VersionRow,
)
from finpredict.registry.store import ArtifactStore, ChecksumError, StoreError, StoreUnavailableError

log = logging.getLogger("finpredict.registry")
T = TypeVar("T")
SERVICE = registry_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name

# Appends gate results after registration (a human or job that validated the version). Only this
# role may: not a writer (it registers the results it computed, then they are immutable) and not
# an admin (who moves `production`), so nobody can both vouch for a version and promote it.
VALIDATOR = "validator"
ROLE_IMPLIES = {**DEFAULT_ROLE_IMPLIES, VALIDATOR: frozenset({READER})}

# Role each RPC needs (admin implies writer implies reader; validator implies reader); used by the
# auth interceptor.
METHOD_ROLES: dict[str, str] = {
    f"/{SERVICE}/{method}": role
    for method, role in {
        "CreateModel": ADMIN,
        "GetModel": READER,
        "ListModels": READER,
        "RegisterVersion": WRITER,
        "GetVersion": READER,
        "ListVersions": READER,
        "SearchVersions": READER,
        "SetAlias": ADMIN,
        "RollbackAlias": ADMIN,
        "DeleteAlias": ADMIN,
        "DeleteVersion": ADMIN,
        "GetLineage": READER,
        "AppendGateResults": VALIDATOR,
        "GetPolicy": READER,
        "SetPolicy": ADMIN,
        "ListAuditLog": READER,
        "WatchAliases": READER,
        "DownloadArtifact": READER,
    }.items()
}

REGISTRATIONS = Counter(
    "finpredict_registry_registrations", "Version registrations, by outcome (created, replayed).", ["outcome"]
)
ALIAS_MOVES = Counter(
    "finpredict_registry_alias_moves", "Alias moves, by kind (set, rollback, delete).", ["kind"]
)
SWEPT_UPLOADS = Counter(
    "finpredict_registry_swept_uploads",
    "Unfinished uploads (left by a crash) removed from the artifact store at start-up.",
)
REFUSALS = Counter(
    "finpredict_registry_refusals",
    "Refused registry operations, by reason (gates_failed: the promotion policy refused production, "
    "cas_conflict, checksum, invalid_argument).",
    ["reason"],
)

_KIND = {
    "alias.set": registry_pb2.ALIAS_EVENT_KIND_SET,
    "alias.rollback": registry_pb2.ALIAS_EVENT_KIND_ROLLBACK,
    "alias.delete": registry_pb2.ALIAS_EVENT_KIND_DELETE,
}


def _ts(us: int) -> Timestamp:
    return Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def _us(ts: Timestamp) -> int:
    return ts.seconds * 1_000_000 + ts.nanos // 1000


def encode_token(value: int | str) -> str:
    return base64.urlsafe_b64encode(f"v1:{value}".encode()).decode().rstrip("=")


def decode_token(field: str, token: str, kind: type[T]) -> T | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "v1":
            raise ValueError
        decoded = kind(value)  # type: ignore[call-arg]
        if isinstance(decoded, int) and not 0 <= decoded < 2**63:  # ids are int64 in the database
            raise ValueError
        return decoded
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise v.InvalidArgumentError(field, "not a page token from a previous response") from None


def model_pb(m: ModelRow) -> registry_pb2.Model:
    return registry_pb2.Model(
        name=m.name,
        description=m.description,
        tags=m.tags,
        created_at=_ts(m.created_at_us),
        created_by=m.created_by,
        aliases=m.aliases,
        latest_version=m.latest_version,
    )


def gate_pb(g: Any) -> types_pb2.GateResult:
    return types_pb2.GateResult(
        name=g.name,
        value=g.value,
        threshold=g.threshold,
        comparator=g.comparator,  # type: ignore[arg-type]
        passed=g.passed,
        detail=g.detail,
    )


_LINEAGE_ENUM = {name: value for value, name in v.LINEAGE_NAMES.items()}
_HAND_OFF_ENUM = {
    HAND_OFF_OFF: registry_pb2.HAND_OFF_MODE_OFF,
    HAND_OFF_CANARY: registry_pb2.HAND_OFF_MODE_CANARY,
}


def policy_pb(row: PolicyRow) -> registry_pb2.PromotionPolicy:
    out = registry_pb2.PromotionPolicy(
        gates=[
            registry_pb2.PolicyGate(name=g.name, comparator=g.comparator, threshold=g.threshold)  # type: ignore[arg-type]
            for g in row.policy.gates
        ],
        required_lineage=[_LINEAGE_ENUM[r] for r in row.policy.required_lineage],  # type: ignore[misc]
        is_default=row.is_default,
        updated_by=row.updated_by,
        hand_off=hand_off_pb(row.policy.hand_off),
    )
    if not row.is_default:
        out.updated_at.CopyFrom(_ts(row.updated_at_us))
    return out


def hand_off_pb(h: HandOff) -> registry_pb2.HandOff:
    out = registry_pb2.HandOff(
        mode=_HAND_OFF_ENUM[h.mode],  # type: ignore[arg-type]
        steps=h.steps,
        min_requests_per_step=h.min_requests_per_step,
        thresholds=rollout_pb2.AnalysisThresholds(**dict(h.thresholds)),
        after_version=h.after_version,
    )
    if h.analysis_interval_s:
        out.analysis_interval.FromNanoseconds(round(h.analysis_interval_s * 1e9))
    return out


def lineage_pb(row: VersionRow) -> registry_pb2.Lineage:
    lineage = registry_pb2.Lineage()
    json_format.Parse(row.lineage_json, lineage)
    lineage.wandb_link_status = row.wandb_link_status
    return lineage


def version_pb(row: VersionRow) -> registry_pb2.ModelVersion:
    schema = types_pb2.FeatureSchema()
    schema.ParseFromString(row.feature_schema_pb)
    return registry_pb2.ModelVersion(
        model=row.model,
        version=row.version,
        status=row.status,  # type: ignore[arg-type]
        description=row.description,
        created_at=_ts(row.created_at_us),
        created_by=row.created_by,
        artifact=registry_pb2.Artifact(
            sha256=row.artifact_sha256,
            size_bytes=row.artifact_size,
            uri=row.artifact_uri,
            format=row.artifact_format,
            manifest_json=row.manifest_json,
        ),
        feature_schema=schema,
        threshold=row.threshold,
        metrics=row.metrics,
        gate_results=[gate_pb(g) for g in row.gates],
        gates_passed=row.gates_passed,
        tags=row.tags,
        aliases=row.aliases,
        lineage=lineage_pb(row),
        reference_profile=row.reference_profile,
        reference_profile_sha256=row.reference_profile_sha256,
    )


def event_pb(row: AuditRow) -> registry_pb2.AliasEvent:
    return registry_pb2.AliasEvent(
        event_id=row.id,
        model=row.model,
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        kind=_KIND.get(row.action, registry_pb2.ALIAS_EVENT_KIND_UNSPECIFIED),
        actor=row.actor,
        reason=row.reason,
        time=_ts(row.time_us),
    )


def audit_pb(row: AuditRow) -> registry_pb2.AuditEntry:
    return registry_pb2.AuditEntry(
        id=row.id,
        action=row.action,
        model=row.model,
        version=row.version,
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        reason=row.reason,
        time=_ts(row.time_us),
    )


class EventHub:
    """Wakes ``WatchAliases`` subscribers after an alias move is committed."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.closed = False

    def current(self) -> asyncio.Event:
        return self._event

    def notify(self) -> None:
        old, self._event = self._event, asyncio.Event()
        old.set()

    def close(self) -> None:
        self.closed = True
        self.notify()


class WandbLinker:
    """Links a promoted version's artifact into the W&B registry, or records that it is pending."""

    def __init__(self, mode: str, registry_path: str) -> None:
        self.mode = mode
        self.registry_path = registry_path

    def link(self, row: VersionRow) -> str:
        """Returns the link status to record: "linked", "pending", or "" when disabled."""
        if self.mode == "disabled":
            return ""
        if self.mode == "offline":
            return "pending"
        lineage = lineage_pb(row)
        if not lineage.wandb_run_path:
            return "pending"
        try:
            wandb: Any = importlib.import_module("wandb")
            run = wandb.Api().run(lineage.wandb_run_path)
            for artifact in run.logged_artifacts():
                if artifact.type == "model" and artifact.digest:
                    artifact.link(f"{self.registry_path}/{row.model}", aliases=[PRODUCTION])
                    return "linked"
            log.warning("no model artifact in W&B run", extra={"model": row.model, "version": row.version})
        except Exception as exc:  # network, auth or API errors: retry later
            log.warning("W&B link failed; pending", extra={"model": row.model, "error": type(exc).__name__})
        return "pending"


def _rpc(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Maps validation and registry errors to gRPC statuses."""

    @functools.wraps(fn)
    async def wrapper(self: RegistryServicer, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        try:
            return await fn(self, request, context)
        except v.InvalidArgumentError as exc:
            REFUSALS.labels("invalid_argument").inc()
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except RegistryError as exc:
            _count_refusal(exc)
            await context.abort(exc.code, str(exc))
        except OperationalError as exc:
            log.error("database unavailable", extra={"error": type(exc.orig).__name__})
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the registry database is unavailable; retry")
        except StoreUnavailableError as exc:
            log.error("artifact store unavailable", extra={"error": str(exc)})
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, f"the artifact store is unavailable; retry: {exc}"
            )
        raise AssertionError("unreachable")

    return wrapper


def _count_refusal(exc: RegistryError) -> None:
    if isinstance(exc, GatesFailedError):
        REFUSALS.labels("gates_failed").inc()
    elif isinstance(exc, AbortedError):
        REFUSALS.labels("cas_conflict").inc()


class RegistryServicer(registry_pb2_grpc.RegistryServiceServicer):
    """Implements registry v1 on a :class:`Repository` and an :class:`ArtifactStore`."""

    def __init__(
        self,
        repo: Repository,
        store: ArtifactStore,
        *,
        chunk_size: int,
        max_artifact_bytes: int,
        wandb: WandbLinker,
        watch_poll_s: float = 1.0,
    ) -> None:
        self.repo = repo
        self.store = store
        self.chunk_size = chunk_size
        self.max_artifact_bytes = max_artifact_bytes
        self.wandb = wandb
        self.watch_poll_s = watch_poll_s
        self.hub = EventHub()
        self._background: set[asyncio.Task[None]] = set()

    # ----- models -----------------------------------------------------------------------------

    @_rpc
    async def CreateModel(self, request: registry_pb2.CreateModelRequest, context: Any) -> Any:
        v.name("name", request.name, "model name")
        v.text("description", request.description)
        tags = v.tags("tags", request.tags)
        row = await asyncio.to_thread(
            self.repo.create_model, request.name, request.description, tags, current_subject()
        )
        return registry_pb2.CreateModelResponse(model=model_pb(row))

    @_rpc
    async def GetModel(self, request: registry_pb2.GetModelRequest, context: Any) -> Any:
        v.name("name", request.name, "model name")
        row = await asyncio.to_thread(self.repo.get_model, request.name)
        return registry_pb2.GetModelResponse(model=model_pb(row))

    @_rpc
    async def ListModels(self, request: registry_pb2.ListModelsRequest, context: Any) -> Any:
        size = v.page_size("page_size", request.page_size, 50, 500)
        after = decode_token("page_token", request.page_token, str) or ""
        rows = await asyncio.to_thread(self.repo.list_models, after, size + 1)
        nxt = encode_token(rows[size - 1].name) if len(rows) > size else ""
        return registry_pb2.ListModelsResponse(models=[model_pb(r) for r in rows[:size]], next_page_token=nxt)

    # ----- versions ---------------------------------------------------------------------------

    @_rpc
    async def RegisterVersion(self, request_iterator: Any, context: Any) -> Any:
        it = request_iterator.__aiter__()
        try:
            first = await it.__anext__()
        except StopAsyncIteration:
            raise v.InvalidArgumentError(
                "header", "the stream is empty; the first message must be the header"
            ) from None
        if first.WhichOneof("payload") != "header":
            raise v.InvalidArgumentError("header", "the first message must be the header")
        h: registry_pb2.VersionHeader = first.header
        gates = v.header(h)
        await asyncio.to_thread(self.repo.get_model, h.model)  # NOT_FOUND before any upload
        if h.artifact_uri:
            async for msg in it:
                if msg.WhichOneof("payload") == "chunk":
                    raise v.InvalidArgumentError("chunk", "no chunks may follow a header with artifact_uri")
                raise v.InvalidArgumentError("header", "only the first message may be a header")
            sha, size, uri = h.artifact_sha256, 0, h.artifact_uri
        else:
            sha, size = await self._receive(h, it)
            uri = self.store.uri(sha)
        lineage = registry_pb2.Lineage()
        lineage.CopyFrom(h.lineage)
        new = NewVersion(
            description=h.description,
            artifact_sha256=sha,
            artifact_size=size,
            artifact_uri=uri,
            artifact_format=h.artifact_format,
            manifest_json=h.manifest_json,
            feature_schema_pb=h.feature_schema.SerializeToString(deterministic=True),
            threshold=h.threshold,
            lineage_json=json_format.MessageToJson(lineage, preserving_proto_field_name=True, indent=None),
            reference_profile=h.reference_profile,
            idempotency_key=h.idempotency_key or None,
            tags=dict(h.tags),
            metrics=dict(h.metrics),
            gates=gates,
        )
        row, created = await asyncio.to_thread(self.repo.register_version, h.model, new, current_subject())
        REGISTRATIONS.labels("created" if created else "replayed").inc()
        log.info(
            "version registered" if created else "registration replayed (idempotency key)",
            extra={"model": row.model, "version": row.version, "sha256": row.artifact_sha256},
        )
        return registry_pb2.RegisterVersionResponse(version=version_pb(row))

    async def _receive(self, h: registry_pb2.VersionHeader, it: AsyncIterator[Any]) -> tuple[str, int]:
        """Streams chunks into a temporary file while hashing; commits it under its sha256."""
        upload = await asyncio.to_thread(self.store.begin_upload)
        try:
            async for msg in it:
                if msg.WhichOneof("payload") != "chunk":
                    raise v.InvalidArgumentError("header", "only the first message may be a header")
                if upload.size + len(msg.chunk) > self.max_artifact_bytes:
                    raise v.InvalidArgumentError("chunk", f"artifact exceeds {self.max_artifact_bytes} bytes")
                await asyncio.to_thread(upload.write, msg.chunk)
            if upload.size == 0:
                raise v.InvalidArgumentError(
                    "chunk", "no artifact bytes were sent (or set header.artifact_uri)"
                )
            digest = upload.hexdigest()
            if h.artifact_sha256 and digest != h.artifact_sha256:
                raise v.InvalidArgumentError(
                    "header.artifact_sha256",
                    f"the uploaded bytes hash to {digest}, not {h.artifact_sha256}; upload refused",
                )
            size = upload.size
            return await asyncio.to_thread(upload.commit), size
        except BaseException:
            await asyncio.shield(asyncio.to_thread(upload.abort))
            raise

    @_rpc
    async def GetVersion(self, request: registry_pb2.GetVersionRequest, context: Any) -> Any:
        v.name("model", request.model, "model name")
        which = request.WhichOneof("selector")
        if which == "version":
            v.positive("version", request.version)
            row = await asyncio.to_thread(self.repo.get_version, request.model, request.version)
        elif which == "alias":
            v.name("alias", request.alias, "alias")
            row = await asyncio.to_thread(self.repo.get_version, request.model, 0, request.alias)
        else:
            raise v.InvalidArgumentError("selector", "set exactly one of version or alias")
        return registry_pb2.GetVersionResponse(version=version_pb(row))

    @_rpc
    async def ListVersions(self, request: registry_pb2.ListVersionsRequest, context: Any) -> Any:
        v.name("model", request.model, "model name")
        size = v.page_size("page_size", request.page_size, 50, 500)
        before = decode_token("page_token", request.page_token, int) or 0
        rows = await asyncio.to_thread(self.repo.list_versions, request.model, before, size + 1)
        nxt = encode_token(rows[size - 1].version) if len(rows) > size else ""
        return registry_pb2.ListVersionsResponse(
            versions=[version_pb(r) for r in rows[:size]], next_page_token=nxt
        )

    @_rpc
    async def SearchVersions(self, request: registry_pb2.SearchVersionsRequest, context: Any) -> Any:
        v.optional_name("model", request.model)
        v.tags("tags", request.tags)
        filters: list[tuple[str, int, float]] = []
        for i, mf in enumerate(request.metrics):
            if not v.GATE_RE.match(mf.name):
                raise v.InvalidArgumentError(f"metrics[{i}].name", "a metric name is required")
            if mf.comparator not in (
                types_pb2.COMPARATOR_GREATER_OR_EQUAL,
                types_pb2.COMPARATOR_LESS_OR_EQUAL,
            ):
                raise v.InvalidArgumentError(
                    f"metrics[{i}].comparator", "must be GREATER_OR_EQUAL or LESS_OR_EQUAL"
                )
            filters.append((mf.name, int(mf.comparator), v.finite(f"metrics[{i}].value", mf.value)))
        after = before = None
        if request.HasField("created_after"):
            after = _us(v.timestamp("created_after", request.created_after))
        if request.HasField("created_before"):
            before = _us(v.timestamp("created_before", request.created_before))
        if after is not None and before is not None and after >= before:
            raise v.InvalidArgumentError("created_before", "must be later than created_after")
        if request.alias:
            v.name("alias", request.alias, "alias")
        size = v.page_size("page_size", request.page_size, 50, 500)
        before_id = decode_token("page_token", request.page_token, int) or 0
        rows = await asyncio.to_thread(
            functools.partial(
                self.repo.search_versions,
                model=request.model,
                tags=dict(request.tags),
                metric_filters=filters,
                created_after_us=after,
                created_before_us=before,
                alias=request.alias,
                gates_passed_only=request.gates_passed_only,
                before_id=before_id,
                limit=size + 1,
            )
        )
        nxt = encode_token(rows[size - 1].id) if len(rows) > size else ""
        return registry_pb2.SearchVersionsResponse(
            versions=[version_pb(r) for r in rows[:size]], next_page_token=nxt
        )

    @_rpc
    async def DeleteVersion(self, request: registry_pb2.DeleteVersionRequest, context: Any) -> Any:
        v.name("model", request.model, "model name")
        v.positive("version", request.version)
        v.text("reason", request.reason, v.MAX_REASON)
        row = await asyncio.to_thread(
            self.repo.delete_version, request.model, request.version, request.reason, current_subject()
        )
        return registry_pb2.DeleteVersionResponse(entry=audit_pb(row))

    @_rpc
    async def GetLineage(self, request: registry_pb2.GetLineageRequest, context: Any) -> Any:
        v.name("model", request.model, "model name")
        v.positive("version", request.version)
        row = await asyncio.to_thread(self.repo.get_version, request.model, request.version)
        return registry_pb2.GetLineageResponse(
            model=types_pb2.ModelRef(name=row.model, version=row.version),
            lineage=lineage_pb(row),
            metrics=row.metrics,
            gate_results=[gate_pb(g) for g in row.gates],
            artifact_sha256=row.artifact_sha256,
            created_at=_ts(row.created_at_us),
            created_by=row.created_by,
        )

    @_rpc
    async def AppendGateResults(self, request: registry_pb2.AppendGateResultsRequest, context: Any) -> Any:
        v.name("model", request.model, "model name")
        v.positive("version", request.version)
        if not request.results:
            raise v.InvalidArgumentError("results", "at least one gate result is required")
        gates = v.gates("results", request.results)
        row = await asyncio.to_thread(
            self.repo.append_gates, request.model, request.version, gates, current_subject()
        )
        log.info(
            "gate results appended",
            extra={
                "model": row.model,
                "version": row.version,
                "actor": current_subject(),
                "gates": ",".join(g.name for g in gates),
            },
        )
        return registry_pb2.AppendGateResultsResponse(version=version_pb(row))

    # ----- promotion policies -------------------------------------------------------------------

    @_rpc
    async def GetPolicy(self, request: registry_pb2.GetPolicyRequest, context: Any) -> Any:
        v.name("model", request.model, "model name")
        if request.version < 0:
            raise v.InvalidArgumentError(
                "version", f"must be 0 (none) or a version number, got {request.version}"
            )
        if not request.version:
            row = await asyncio.to_thread(self.repo.get_policy, request.model)
            return registry_pb2.GetPolicyResponse(policy=policy_pb(row))
        row, problems = await asyncio.to_thread(self.repo.check_policy, request.model, request.version)
        return registry_pb2.GetPolicyResponse(
            policy=policy_pb(row), check=registry_pb2.PolicyCheck(promotable=not problems, problems=problems)
        )

    @_rpc
    async def SetPolicy(self, request: registry_pb2.SetPolicyRequest, context: Any) -> Any:
        v.name("model", request.model, "model name")
        policy = v.policy("policy", request.policy)
        v.text("reason", request.reason, v.MAX_REASON)
        row, audit = await asyncio.to_thread(
            self.repo.set_policy, request.model, policy, request.reason, current_subject()
        )
        log.info(
            "promotion policy set",
            extra={"model": row.model, "actor": audit.actor, "event_id": audit.id, "policy": audit.reason},
        )
        return registry_pb2.SetPolicyResponse(policy=policy_pb(row), entry=audit_pb(audit))

    # ----- aliases ----------------------------------------------------------------------------

    async def _after_move(self, row: AuditRow, kind: str) -> None:
        ALIAS_MOVES.labels(kind).inc()
        self.hub.notify()
        log.info(
            "alias moved",
            extra={
                "model": row.model,
                "alias": row.alias,
                "from_version": row.from_version,
                "to_version": row.to_version,
                "actor": row.actor,
                "event_id": row.id,
            },
        )
        if row.alias == PRODUCTION and row.to_version:
            if self.wandb.mode == "online":
                task = asyncio.create_task(self._link(row.model, row.to_version))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                await self._link(row.model, row.to_version)

    async def _link(self, model: str, version: int) -> None:
        try:
            target = await asyncio.to_thread(self.repo.get_version, model, version)
            status = await asyncio.to_thread(self.wandb.link, target)
            if status:
                await asyncio.to_thread(self.repo.set_wandb_status, model, version, status)
        except Exception:
            log.exception("recording the W&B link status failed", extra={"model": model, "version": version})

    @_rpc
    async def SetAlias(self, request: registry_pb2.SetAliasRequest, context: Any) -> Any:
        v.name("model", request.model, "model name")
        v.name("alias", request.alias, "alias")
        v.positive("version", request.version)
        expected = request.expected_version if request.HasField("expected_version") else None
        if expected is not None and expected < 0:
            raise v.InvalidArgumentError("expected_version", "must be 0 (alias absent) or a version number")
        v.text("reason", request.reason, v.MAX_REASON)
        row = await asyncio.to_thread(
            self.repo.set_alias,
            request.model,
            request.alias,
            request.version,
            expected,
            request.reason,
            current_subject(),
        )
        await self._after_move(row, "set")
        return registry_pb2.SetAliasResponse(event=event_pb(row))

    @_rpc
    async def RollbackAlias(self, request: registry_pb2.RollbackAliasRequest, context: Any) -> Any:
        v.name("model", request.model, "model name")
        v.name("alias", request.alias, "alias")
        v.text("reason", request.reason, v.MAX_REASON)
        row = await asyncio.to_thread(
            self.repo.rollback_alias, request.model, request.alias, request.reason, current_subject()
        )
        await self._after_move(row, "rollback")
        return registry_pb2.RollbackAliasResponse(event=event_pb(row))

    @_rpc
    async def DeleteAlias(self, request: registry_pb2.DeleteAliasRequest, context: Any) -> Any:
        v.name("model", request.model, "model name")
        v.name("alias", request.alias, "alias")
        v.text("reason", request.reason, v.MAX_REASON)
        row = await asyncio.to_thread(
            self.repo.delete_alias, request.model, request.alias, request.reason, current_subject()
        )
        await self._after_move(row, "delete")
        return registry_pb2.DeleteAliasResponse(event=event_pb(row))

    # ----- audit, events, artifacts -------------------------------------------------------------

    @_rpc
    async def ListAuditLog(self, request: registry_pb2.ListAuditLogRequest, context: Any) -> Any:
        v.optional_name("model", request.model)
        size = v.page_size("page_size", request.page_size, 100, 1000)
        after = decode_token("page_token", request.page_token, int) or 0
        rows = await asyncio.to_thread(self.repo.list_audit, request.model, after, size + 1)
        nxt = encode_token(rows[size - 1].id) if len(rows) > size else ""
        return registry_pb2.ListAuditLogResponse(
            entries=[audit_pb(r) for r in rows[:size]], next_page_token=nxt
        )

    async def WatchAliases(
        self, request: registry_pb2.WatchAliasesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[registry_pb2.WatchAliasesResponse]:
        try:
            v.optional_name("model", request.model)
            if request.after_event_id < -1:
                raise v.InvalidArgumentError(
                    "after_event_id", "must be -1 (from the beginning), 0 (from now) or an id"
                )
        except v.InvalidArgumentError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if request.after_event_id == 0:
            cursor = await asyncio.to_thread(self.repo.last_event_id)
        else:
            cursor = max(request.after_event_id, 0)
        batch = 500
        while not self.hub.closed:
            wake = self.hub.current()  # taken before reading: a move committed meanwhile still wakes us
            rows = await asyncio.to_thread(self.repo.list_audit, request.model, cursor, batch, True)
            for row in rows:
                cursor = row.id
                yield registry_pb2.WatchAliasesResponse(event=event_pb(row))
            if len(rows) == batch:
                continue
            with contextlib.suppress(TimeoutError):  # poll too: other replicas write events
                await asyncio.wait_for(wake.wait(), self.watch_poll_s)

    async def DownloadArtifact(
        self, request: registry_pb2.DownloadArtifactRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[registry_pb2.DownloadArtifactResponse]:
        code, message = grpc.StatusCode.OK, ""
        try:
            v.name("model", request.model, "model name")
            v.positive("version", request.version)
            row = await asyncio.to_thread(self.repo.get_version, request.model, request.version)
            if row.status == STATUS_DELETED:
                raise _RefusedError(
                    grpc.StatusCode.NOT_FOUND, f"version {row.version} of {row.model!r} is deleted"
                )
            if not self.store.holds(row.artifact_uri, row.artifact_sha256):
                raise _RefusedError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the artifact is stored outside the registry at {row.artifact_uri}",
                )
            # Verify before sending a byte, and again while streaming (the file could change).
            await asyncio.to_thread(self.store.verify, row.artifact_sha256, row.artifact_size)
            chunks = self.store.iter_verified(row.artifact_sha256, row.artifact_size, self.chunk_size)
            first = True
            while (chunk := await asyncio.to_thread(next, chunks, None)) is not None:
                if first:
                    yield registry_pb2.DownloadArtifactResponse(
                        chunk=chunk, sha256=row.artifact_sha256, size_bytes=row.artifact_size
                    )
                    first = False
                else:
                    yield registry_pb2.DownloadArtifactResponse(chunk=chunk)
        except v.InvalidArgumentError as exc:
            code, message = grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        except RegistryError as exc:
            code, message = exc.code, str(exc)
        except _RefusedError as exc:
            code, message = exc.code, str(exc)
        except ChecksumError as exc:
            REFUSALS.labels("checksum").inc()
            log.error(
                "artifact checksum mismatch", extra={"model": request.model, "version": request.version}
            )
            code, message = grpc.StatusCode.DATA_LOSS, f"{request.model} version {request.version}: {exc}"
        except StoreUnavailableError as exc:
            log.error("artifact store unavailable", extra={"error": str(exc)})
            code, message = grpc.StatusCode.UNAVAILABLE, f"the artifact store is unavailable; retry: {exc}"
        except StoreError as exc:
            code, message = grpc.StatusCode.DATA_LOSS, f"{request.model} version {request.version}: {exc}"
        if code != grpc.StatusCode.OK:
            await context.abort(code, message)

    async def close(self) -> None:
        """Ends the watch streams (so the server can drain) and waits for background links."""
        self.hub.close()
        if self._background:
            await asyncio.wait(self._background, timeout=10)


class _RefusedError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
