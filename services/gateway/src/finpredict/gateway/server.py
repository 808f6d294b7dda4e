"""Assembles the gateway on the shared server skeleton.

:class:`Gateway` opens its channels and the shared state inside the event loop (``open``, a
start hook: migrations, the first snapshot, the first try for the controller lease), mounts the
scoring API, the Open Inference Protocol and the rollout service behind bearer-token auth, and
on shutdown stops the controller, publishes its last measurements, hands the lease back,
flushes the prediction log and closes channels. The lease holder also watches the registry for
versions their promotion policy hands off to a canary (:mod:`finpredict.gateway.handoff`).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
from sqlalchemy import Engine

from finpredict.api.inference import grpc_predict_v2_pb2 as oip_pb
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from finpredict.api.monitor.v1 import monitor_pb2_grpc
from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.api.rollout.v1 import rollout_pb2_grpc
from finpredict.api.scoring.v1 import scoring_pb2 as scoring_pb
from finpredict.api.scoring.v1 import scoring_pb2_grpc
from finpredict.common.auth import (
    OPEN_SERVICE_PREFIXES,
    READER,
    WRITER,
    BearerAuthInterceptor,
    TokenSpecError,
    bearer_metadata,
    parse_tokens,
)
from finpredict.common.channel import create_channel
from finpredict.common.config import ConfigError, env_var_name
from finpredict.common.server import ServiceBinding
from finpredict.gateway.backend import ModelServerBackend
from finpredict.gateway.catalog import Catalog
from finpredict.gateway.config import GatewaySettings
from finpredict.gateway.controller import RolloutController
from finpredict.gateway.feedback import FeedbackForwarder
from finpredict.gateway.handoff import HandOffWatcher
from finpredict.gateway.inference import InferenceServicer
from finpredict.gateway.outcomes import OutcomeForwarder
from finpredict.gateway.policies import PolicyStore
from finpredict.gateway.prediction_log import PredictionLog
from finpredict.gateway.rollout import RolloutStore
from finpredict.gateway.rollout_service import METHOD_ROLES as ROLLOUT_ROLES
from finpredict.gateway.rollout_service import SERVICE as ROLLOUT_SERVICE
from finpredict.gateway.rollout_service import RolloutServicer
from finpredict.gateway.scoring import ScoringCore
from finpredict.gateway.scoring_service import ScoringServicer
from finpredict.gateway.state.db import create_state_engine, migrate
from finpredict.gateway.state.lease import Lease, LeaseKeeper
from finpredict.gateway.state.legacy import import_legacy
from finpredict.gateway.state.sync import Applied, StateSync
from finpredict.gateway.state.windows import WindowStore

log = logging.getLogger("finpredict.gateway")

SCORING_SERVICE = scoring_pb.DESCRIPTOR.services_by_name["ScoringService"].full_name
OIP_SERVICE = oip_pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
METHOD_ROLES: dict[str, str] = {
    **ROLLOUT_ROLES,
    f"/{SCORING_SERVICE}/Score": READER,
    f"/{SCORING_SERVICE}/ScoreBatch": READER,
    # Outcomes are ground truth that moves accuracy alerts (and retraining): a scoring client's reader
    # token cannot write them; the job that knows what became of the loans holds a writer token.
    f"/{SCORING_SERVICE}/RecordOutcomes": WRITER,
    # Feedback overrides training labels: a writer too (an analyst's or the case tool's token).
    f"/{SCORING_SERVICE}/RecordFeedback": WRITER,
    **{f"/{OIP_SERVICE}/{m}": READER for m in ("ModelReady", "ModelMetadata", "ModelInfer")},
}
# Liveness, readiness and server metadata are open, like gRPC health (probes carry no token).
OPEN_METHODS = tuple(f"/{OIP_SERVICE}/{m}" for m in ("ServerLive", "ServerReady", "ServerMetadata"))


@dataclass
class Gateway:
    settings: GatewaySettings
    interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    core: ScoringCore | None = None
    controller: RolloutController | None = None
    prediction_log: PredictionLog | None = None
    scoring: ScoringServicer | None = None
    inference: InferenceServicer | None = None
    rollouts: RolloutServicer | None = None
    engine: Engine | None = None
    sync: StateSync | None = None
    lease: LeaseKeeper | None = None
    handoff: HandOffWatcher | None = None

    def __post_init__(self) -> None:
        try:
            tokens = parse_tokens(self.settings.tokens.get_secret_value())
        except TokenSpecError as exc:
            raise ConfigError(f"{env_var_name(GatewaySettings, 'tokens')}: {exc}") from None
        if not tokens:
            log.warning(
                "no tokens configured: every gateway RPC will be refused (set %s)",
                env_var_name(GatewaySettings, "tokens"),
            )
        self.interceptors = [
            BearerAuthInterceptor(tokens, METHOD_ROLES, open_prefixes=(*OPEN_SERVICE_PREFIXES, *OPEN_METHODS))
        ]

    def _channel(self, target: str, propagate: bool = True) -> grpc.aio.Channel:
        s = self.settings
        channel = create_channel(
            target,
            tls_ca_file=s.tls_ca_file,
            tls_cert_file=s.tls_client_cert_file,
            tls_key_file=s.tls_client_key_file,
            max_message_bytes=s.max_message_bytes,
            propagate=propagate,
        )
        self.channels.append(channel)
        return channel

    async def open(self) -> None:
        """Opens channels and stores and starts the background tasks (inside the event loop)."""
        s = self.settings
        registry_token = s.registry_token.get_secret_value()
        registry_md = bearer_metadata(registry_token) if registry_token else ()
        registry = registry_pb2_grpc.RegistryServiceStub(self._channel(s.registry_target))
        catalog = Catalog(registry, lambda: registry_md, alias_ttl_s=s.alias_ttl_s)
        backend = ModelServerBackend(
            # the backend adds the trace context itself (the request path's hottest call)
            self._channel(s.model_server_target, propagate=False),
            s.model_server_application,
            timeout_s=s.backend_timeout_s,
            retries=s.backend_retries,
            timeout_retries=s.backend_timeout_retries,
            batch_window_s=s.batch_window_ms / 1000,
            max_batch_rows=s.max_batch_rows,
            breaker_failures=s.breaker_failures,
            breaker_cooldown_s=s.breaker_cooldown_s,
        )
        self.engine = engine = create_state_engine(s.resolved_database_url())
        await asyncio.to_thread(migrate, engine)
        if not s.database_url:  # a single gateway upgraded in place keeps its rollouts
            await asyncio.to_thread(import_legacy, engine, s.data_dir)
        replica = s.resolved_replica_id()
        applied = Applied()
        rollout_store = RolloutStore(engine)
        policies = PolicyStore(engine, applied)
        windows = WindowStore(engine, replica=replica, source=f"{replica}/{uuid.uuid4().hex[:8]}")
        self.lease = LeaseKeeper(Lease(engine, replica, s.lease_s))
        self.controller = RolloutController(
            rollout_store,
            windows,
            self.lease,
            catalog,
            applied=applied,
            tick_s=s.controller_tick_s,
            canary_weight_factor=s.test_hook_canary_weight_factor,
        )
        self.sync = StateSync(
            engine, rollout_store, self.controller.live, policies, windows, applied, s.state_poll_s
        )
        await self.sync.refresh()  # routes by the shared state from the first request
        await self.lease.step()
        log.info("gateway state opened", extra={"replica": replica, "dialect": engine.dialect.name})
        outcomes = feedback = None
        if s.monitor_target:
            monitor = monitor_pb2_grpc.MonitorServiceStub(self._channel(s.monitor_target))
            monitor_token = s.monitor_token.get_secret_value()
            monitor_md = bearer_metadata(monitor_token) if monitor_token else ()
            self.prediction_log = PredictionLog(
                monitor,
                capacity=s.log_buffer_records,
                batch_records=s.log_batch_records,
                flush_s=s.log_flush_s,
                metadata=monitor_md,
            )
            self.prediction_log.start()
            live = self.controller.live
            outcomes = OutcomeForwarder(
                monitor,
                monitor_md,
                max_outcomes=s.max_request_rows,
                on_labelled=lambda rows: live.record_outcomes(rows, policies.experiments),
            )
            feedback = FeedbackForwarder(monitor, monitor_md, max_feedback=s.max_request_rows)
        self.core = ScoringCore(
            catalog,
            backend,
            self.controller,
            policies,
            self.prediction_log,
            shadow_concurrency=s.shadow_concurrency,
        )
        self.scoring = ScoringServicer(self.core, s.max_request_rows, outcomes, feedback)
        self.inference = InferenceServicer(self.core, s.max_request_rows)
        self.rollouts = RolloutServicer(self.controller, policies, catalog)
        self.controller.start_loop()
        if s.handoff_poll_s:
            self.handoff = HandOffWatcher(
                registry, lambda: registry_md, self.controller, self.lease, poll_s=s.handoff_poll_s
            )
            self.handoff.start()
        self.sync.start()
        self.lease.start()

    async def drain(self) -> None:
        if self.inference is not None:
            self.inference.ready = False

    async def close(self) -> None:
        """Stops the controller, publishes the last measurements, hands the lease back, flushes the
        prediction log, closes channels and the database."""
        if self.handoff is not None:
            await self.handoff.close()
        if self.controller is not None:
            await self.controller.close()
        if self.sync is not None:
            await self.sync.close()
        if self.lease is not None:
            await self.lease.close()
        if self.core is not None:
            await self.core.close()
            await self.core.backend.close()
        if self.prediction_log is not None:
            await self.prediction_log.close()
        for channel in self.channels:
            await channel.close(None)
        if self.engine is not None:
            self.engine.dispose()

    def _opened(self) -> tuple[ScoringServicer, InferenceServicer, RolloutServicer]:
        if self.scoring is None or self.inference is None or self.rollouts is None:
            raise RuntimeError("Gateway.open() must run before the services are mounted")
        return self.scoring, self.inference, self.rollouts

    def bindings(self) -> list[ServiceBinding]:
        """The gRPC services the gateway mounts (servicers exist once ``open`` has run)."""
        return [
            ServiceBinding(
                SCORING_SERVICE,
                lambda server: scoring_pb2_grpc.add_ScoringServiceServicer_to_server(
                    self._opened()[0], server
                ),
            ),
            ServiceBinding(
                OIP_SERVICE,
                lambda server: oip_grpc.add_GRPCInferenceServiceServicer_to_server(self._opened()[1], server),
            ),
            ServiceBinding(
                ROLLOUT_SERVICE,
                lambda server: rollout_pb2_grpc.add_RolloutServiceServicer_to_server(
                    self._opened()[2], server
                ),
            ),
        ]
