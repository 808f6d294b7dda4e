"""The ``ModelServer`` Serve deployment: gRPC ingress methods, multiplexed versions, batching.

One deployment answers the ``finpredict.serving.v1.ModelServerService`` RPCs that Serve's gRPC
proxy routes to it (the method name equals the RPC name). Versions are multiplexed by the id
``<model>:<version>`` (gRPC metadata ``multiplexed_model_id`` lets the proxy route a request to
a replica that has the version loaded); each replica keeps at most ``max_models_per_replica``
versions (LRU). A version is downloaded from the registry once, verified (sha256 against the
registry and against the manifest), loaded with ``nthread=1`` and warmed up before it counts as
loaded. Concurrent requests are coalesced by ``@serve.batch`` (size and wait set by
``reconfigure``) into one XGBoost call per version.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from ray import serve
from ray.serve.grpc_util import RayServegRPCContext

from finpredict.api.registry.v1 import registry_pb2
from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.common.config import load_settings
from finpredict.common.interceptors import TRACE_ID_KEY
from finpredict.common.telemetry import configure_tracing, current_trace_id, extract_context, flush_tracing
from finpredict.model_server import metrics
from finpredict.model_server.app_args import AppArgs, model_id, parse_args, parse_model_id
from finpredict.model_server.config import ReplicaSettings
from finpredict.model_server.registry_client import ArtifactFetchError, RegistryClient
from finpredict.model_server.scoring import (
    InvalidRequestError,
    LoadedVersion,
    ScoreItem,
    check_model_ref,
    check_predict_request,
    describe,
    predictions_to_proto,
    row_records,
    score_items,
    warmup_record,
)
from finpredict.modelio import ArtifactError, Predictions, load_model_bytes

log = logging.getLogger("ray.serve")
tracer = trace.get_tracer("finpredict.model_server")

DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_S = 0.0  # no wait: batches form from what arrives while one is scored
# Replica spans leave in batches at most this long after they end (the OTLP default is 5 s).
SPAN_EXPORT_DELAY_MS = 200
SERVICE = "finpredict.serving.v1.ModelServerService"
# gRPC codes that mean "the model server failed" rather than "the caller asked for something wrong"
_SERVER_FAULTS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.FAILED_PRECONDITION,  # a version whose artifact was refused
}


class ModelLoadError(RuntimeError):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@serve.deployment(name="ModelServer")
class ModelServer:
    """Scores rows with registry model versions (see the module docstring)."""

    def __init__(self, args: dict[str, Any] | AppArgs | None = None) -> None:
        self.args = parse_args(args)
        a = self.args
        env = load_settings(ReplicaSettings)
        self.registry = RegistryClient(a.registry_target, env.registry_token, a.registry_timeout_s)
        self.replica = serve.get_replica_context().replica_id.unique_id
        # Each replica is its own process: it exports its spans itself (the endpoint reaches it
        # through the environment of `ray start` or of the worker pod, like the registry token).
        configure_tracing(
            "model-server",
            env.model_server_otlp_endpoint,
            schedule_delay_ms=SPAN_EXPORT_DELAY_MS,
            resource_attributes={"service.instance.id": self.replica, "finpredict.component": "replica"},
        )
        self.loaded: dict[str, LoadedVersion] = {}  # model id -> version, most recent last
        self.refused: dict[str, str] = {}
        self.threshold_overrides: dict[str, float] = {}
        self._load_locks: dict[str, asyncio.Lock] = {}

        async def load(mid: str) -> LoadedVersion:
            return await self._load(mid)

        self._get_model: Callable[[str], Awaitable[LoadedVersion]] = serve.multiplexed(
            max_num_models_per_replica=a.max_models_per_replica
        )(load)
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_error: str = ""
        self._last_event_id = 0
        self._preloaded = False

    # ----- lifecycle ------------------------------------------------------------------------

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Applies ``user_config`` without a restart: batch size and wait, threshold overrides."""
        size = int(user_config.get("max_batch_size", DEFAULT_MAX_BATCH_SIZE))
        wait = float(user_config.get("batch_wait_timeout_s", DEFAULT_BATCH_WAIT_S))
        if size < 1 or wait < 0:
            raise ValueError("user_config: max_batch_size must be >= 1 and batch_wait_timeout_s >= 0")
        batched: Any = self._batched  # the @serve.batch wrapper carries these setters
        batched.set_max_batch_size(size)
        batched.set_batch_wait_timeout_s(wait)
        overrides = user_config.get("thresholds") or {}
        self.threshold_overrides = {str(k): float(v) for k, v in overrides.items()}
        for mid, lv in self.loaded.items():
            if mid in self.threshold_overrides:
                lv.threshold = self.threshold_overrides[mid]
        self.max_batch_size, self.batch_wait_s = size, wait

    async def check_health(self) -> None:
        """Healthy once the preload list is loaded; the alias watcher reconnects on its own."""
        if self.args.preload and not self._preloaded:
            await self._preload()
        if self.args.watch_aliases and (self._watch_task is None or self._watch_task.done()):
            self._watch_task = asyncio.get_running_loop().create_task(self._watch())

    async def _preload(self) -> None:
        for mid in self.args.preload:
            await self._get_model(mid)
        self._preloaded = True

    # ----- loading --------------------------------------------------------------------------

    async def _load(self, mid: str) -> LoadedVersion:
        name, version = parse_model_id(mid)
        t0 = time.perf_counter()
        with tracer.start_as_current_span(
            "ModelServer/LoadVersion",
            attributes={"finpredict.model": name, "finpredict.model_version": version},
        ):
            try:
                fetched = await self.registry.fetch(name, version)
            except ArtifactFetchError as exc:
                metrics.LOAD_FAILURES.inc(tags={"model": name, "version": str(version), "reason": "fetch"})
                self.refused[mid] = str(exc)
                raise ModelLoadError(exc.code, str(exc)) from None
            mv = fetched.version
            try:
                model = await asyncio.to_thread(
                    load_model_bytes,
                    fetched.raw,
                    mv.artifact.manifest_json,
                    nthread=1,
                    where=f"artifact of {mid}",
                )
                if model.sha256 != mv.artifact.sha256:
                    raise ArtifactError(
                        f"artifact of {mid}: registry sha256 {mv.artifact.sha256} != {model.sha256}"
                    )
                # warm-up: one scored (and explained) row before the version counts as loaded
                x = model.matrix([warmup_record(model.schema)])
                model.predict(x, explain=True)
            except ArtifactError as exc:
                metrics.LOAD_FAILURES.inc(tags={"model": name, "version": str(version), "reason": "artifact"})
                self.refused[mid] = str(exc)
                log.error("refused model version %s: %s", mid, exc)
                raise ModelLoadError(grpc.StatusCode.FAILED_PRECONDITION, f"refused {mid}: {exc}") from None
        load_ms = (time.perf_counter() - t0) * 1000
        threshold = self.threshold_overrides.get(mid, mv.threshold)
        lv = LoadedVersion(name, version, model, threshold, model.sha256, load_ms)
        self.refused.pop(mid, None)
        self.loaded[mid] = lv
        self._evict_untracked()
        log.info("loaded model version %s", describe(lv))
        metrics.LOADS.inc(tags={"model": name, "version": str(version)})
        return _Unloadable(lv, self, mid)  # type: ignore[return-value]

    def _evict_untracked(self) -> None:
        bound = self.args.max_models_per_replica
        while len(self.loaded) > bound + 1:  # the multiplex wrapper evicts; this is a safety net
            self.loaded.pop(next(iter(self.loaded)))

    async def _model(self, name: str, version: int) -> LoadedVersion:
        mid = model_id(name, version)
        wrapped = await self._get_model(mid)
        lv = wrapped.loaded if isinstance(wrapped, _Unloadable) else wrapped
        self.loaded.pop(mid, None)
        self.loaded[mid] = lv  # most recently used last
        return lv

    # ----- alias events ---------------------------------------------------------------------

    async def _watch(self) -> None:
        """Preloads the new target of a watched alias as soon as the registry announces the move."""
        models = self.args.watch_models or [""]
        aliases = set(self.args.watch_aliases)
        backoff = 0.5

        async def one(model: str) -> None:
            nonlocal backoff
            # Live events from the first connection on (replaying history would load every
            # version an alias ever pointed at); after a reconnect, resume after the last one seen.
            after = 0
            while True:
                try:
                    async for msg in self.registry.watch(model, after):
                        backoff = 0.5
                        ev = msg.event
                        after = max(after, ev.event_id)
                        if (
                            ev.alias in aliases
                            and ev.to_version > 0
                            and ev.kind
                            in (
                                registry_pb2.ALIAS_EVENT_KIND_SET,
                                registry_pb2.ALIAS_EVENT_KIND_ROLLBACK,
                            )
                        ):
                            try:
                                await self._model(ev.model, ev.to_version)
                                metrics.PRELOADS.inc(tags={"model": ev.model, "version": str(ev.to_version)})
                            except ModelLoadError as exc:
                                log.error("preload of %s:%s failed: %s", ev.model, ev.to_version, exc)
                except grpc.aio.AioRpcError as exc:
                    self._watch_error = f"{exc.code().name}: {exc.details()}"
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)

        await asyncio.gather(*(one(m) for m in models))

    # ----- RPCs -----------------------------------------------------------------------------

    async def Predict(  # noqa: N802 - the method name is the RPC name
        self, request: pb.PredictRequest, grpc_context: RayServegRPCContext | None = None
    ) -> pb.PredictResponse:
        t0 = time.perf_counter()
        labels = {"model": request.model.name or "?", "version": str(request.model.version)}
        # Serve's proxy hands the caller's gRPC metadata to the replica: continue its W3C trace.
        ctx = extract_context(grpc_context.invocation_metadata() if grpc_context else None)
        with tracer.start_as_current_span(
            "ModelServer/Predict",
            context=ctx,  # type: ignore[arg-type]
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": SERVICE,
                "rpc.method": "Predict",
                "finpredict.model": request.model.name,
                "finpredict.model_version": request.model.version,
                "finpredict.rows": len(request.rows),
                "finpredict.replica": self.replica,
            },
        ) as span:
            if grpc_context is not None:
                grpc_context.set_trailing_metadata([(TRACE_ID_KEY, current_trace_id())])
            try:
                name, version = check_predict_request(
                    request, self.args.max_rows_per_request, self.args.max_top_k
                )
                self._check_routing(name, version, grpc_context)
                lv = await self._model(name, version)
                records = row_records(request.rows, lv.model.schema)
                explain = request.explain or request.all_contributions or request.top_k > 0
                item = ScoreItem(lv, records, explain)
                preds = await (self._batched(item) if self.args.batching else self._unbatched(item))
                span.set_attribute("finpredict.batch_size", item.batch_size)
                resp = predictions_to_proto(
                    lv, preds, 0, len(records), request.top_k if explain else 0, request.all_contributions
                )
            except InvalidRequestError as exc:
                return self._fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), labels, t0, span)
            except ModelLoadError as exc:
                return self._fail(grpc_context, exc.code, str(exc), labels, t0, span)
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
        metrics.REQUESTS.inc(tags=labels)
        metrics.ROWS.inc(len(request.rows), tags=labels)
        metrics.LATENCY.observe((time.perf_counter() - t0) * 1000, tags=labels)
        return resp

    def _check_routing(self, name: str, version: int, grpc_context: RayServegRPCContext | None) -> None:
        routed = serve.get_multiplexed_model_id()
        if routed and routed != model_id(name, version):
            raise InvalidRequestError(
                "model",
                f"metadata multiplexed_model_id={routed!r} differs from the request's model "
                f"{model_id(name, version)!r}",
            )

    def _fail(
        self,
        grpc_context: RayServegRPCContext | None,
        code: grpc.StatusCode,
        message: str,
        labels: dict[str, str],
        t0: float,
        span: Span | None = None,
    ) -> pb.PredictResponse:
        if span is not None:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_FAULTS:
                span.set_status(Status(StatusCode.ERROR, f"{code.name}: {message}"))
        metrics.ERRORS.inc(tags={**labels, "code": code.name})
        metrics.LATENCY.observe((time.perf_counter() - t0) * 1000, tags=labels)
        if grpc_context is None:
            raise RuntimeError(f"{code.name}: {message}")
        grpc_context.set_code(code)
        grpc_context.set_details(message)
        return pb.PredictResponse()

    async def _unbatched(self, item: ScoreItem) -> Predictions:
        item.batch_size = 1
        metrics.BATCH_SIZE.observe(1, tags={"model": item.loaded.name, "version": str(item.loaded.version)})
        return score_items([item])[0]

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_SIZE, batch_wait_timeout_s=DEFAULT_BATCH_WAIT_S)
    async def _batched(self, items: list[ScoreItem]) -> list[Predictions]:
        for item in items:
            item.batch_size = len(items)
        first = items[0].loaded
        metrics.BATCH_SIZE.observe(len(items), tags={"model": first.name, "version": str(first.version)})
        return score_items(items)

    async def LoadModel(  # noqa: N802
        self, request: pb.LoadModelRequest, grpc_context: RayServegRPCContext | None = None
    ) -> pb.LoadModelResponse:
        labels = {"model": request.model.name or "?", "version": str(request.model.version)}
        t0 = time.perf_counter()
        ctx = extract_context(grpc_context.invocation_metadata() if grpc_context else None)
        with tracer.start_as_current_span(
            "ModelServer/LoadModel",
            context=ctx,  # type: ignore[arg-type]
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": SERVICE,
                "rpc.method": "LoadModel",
                "finpredict.model": request.model.name,
                "finpredict.model_version": request.model.version,
                "finpredict.replica": self.replica,
            },
        ) as span:
            try:
                name, version = check_model_ref(request.model)
                self._check_routing(name, version, grpc_context)
                already = model_id(name, version) in self.loaded
                lv = await self._model(name, version)
            except InvalidRequestError as exc:
                self._fail(grpc_context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), labels, t0, span)
                return pb.LoadModelResponse()
            except ModelLoadError as exc:
                self._fail(grpc_context, exc.code, str(exc), labels, t0, span)
                return pb.LoadModelResponse()
            span.set_attribute("rpc.grpc.status_code", grpc.StatusCode.OK.value[0])
        return pb.LoadModelResponse(
            model=lv.ref, artifact_sha256=lv.sha256, load_ms=0.0 if already else lv.load_ms
        )

    async def ListLoadedModels(  # noqa: N802
        self, request: pb.ListLoadedModelsRequest, grpc_context: RayServegRPCContext | None = None
    ) -> pb.ListLoadedModelsResponse:
        return pb.ListLoadedModelsResponse(models=[lv.ref for lv in reversed(self.loaded.values())])

    def __del__(self) -> None:
        """Serve calls this on a graceful replica shutdown: the last spans are not lost."""
        with contextlib.suppress(Exception):
            flush_tracing(2000)

    # test/ops helpers reachable through a DeploymentHandle
    def replica_info(self) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "pid": os.getpid(),
            "loaded": list(self.loaded),
            "refused": dict(self.refused),
            "max_batch_size": getattr(self, "max_batch_size", DEFAULT_MAX_BATCH_SIZE),
            "batch_wait_s": getattr(self, "batch_wait_s", DEFAULT_BATCH_WAIT_S),
            "watch_error": self._watch_error,
        }


class _Unloadable:
    """What the multiplex wrapper caches: when it evicts the entry, the version is dropped too."""

    def __init__(self, loaded: LoadedVersion, owner: ModelServer, mid: str) -> None:
        self.loaded = loaded
        self._owner = owner
        self._mid = mid

    def __del__(self) -> None:  # called by Serve's multiplex wrapper on eviction (and by the GC)
        with contextlib.suppress(Exception):
            if self._owner.loaded.get(self._mid) is self.loaded:
                del self._owner.loaded[self._mid]
                log.info("unloaded model version %s", self._mid)
