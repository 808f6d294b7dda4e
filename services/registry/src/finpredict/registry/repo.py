"""Registry storage operations (synchronous; the service runs them in worker threads).

Every write happens in one transaction: either all of its rows are committed or none are.
Errors are raised as :class:`RegistryError` subclasses that carry the gRPC status to return.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import grpc
from sqlalchemy import Connection, Engine, and_, exists, func, insert, select, update
from sqlalchemy import delete as sa_delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from finpredict.registry import policy as pol
from finpredict.registry.db import read_tx, write_tx
from finpredict.registry.policy import COMPARATOR_GE, DEFAULT_POLICY, HandOff, Policy
from finpredict.registry.schema import (
    aliases,
    audit_log,
    gate_results,
    models,
    promotion_policies,
    registry_state,
    version_metrics,
    version_tags,
    versions,
)

STATUS_READY = 1
STATUS_DELETED = 2
PRODUCTION = "production"
ALIAS_ACTIONS = ("alias.set", "alias.rollback", "alias.delete")


class RegistryError(Exception):
    """A refused operation and the gRPC status it maps to."""

    code = grpc.StatusCode.INTERNAL


class NotFoundError(RegistryError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExistsError(RegistryError):
    code = grpc.StatusCode.ALREADY_EXISTS


class AbortedError(RegistryError):
    code = grpc.StatusCode.ABORTED


class FailedPreconditionError(RegistryError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class GatesFailedError(FailedPreconditionError):
    """Promotion to production refused by the model's promotion policy: the missing or failing
    gates and the missing lineage are named."""


class GatesImmutableError(FailedPreconditionError):
    """An appended gate result names a gate the version already has a result for."""


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass
class GateRow:
    name: str
    value: float
    threshold: float
    comparator: int
    passed: bool
    detail: str


@dataclass
class VersionRow:
    id: int
    model: str
    version: int
    status: int
    description: str
    created_at_us: int
    created_by: str
    artifact_sha256: str
    artifact_size: int
    artifact_uri: str
    artifact_format: str
    manifest_json: str
    feature_schema_pb: bytes
    threshold: float
    lineage_json: str
    wandb_link_status: str
    reference_profile: bytes
    idempotency_key: str | None
    reference_profile_sha256: str = ""
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    gates: list[GateRow] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)

    @property
    def gates_passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)


@dataclass
class ModelRow:
    id: int
    name: str
    description: str
    tags: dict[str, str]
    created_at_us: int
    created_by: str
    latest_version: int
    aliases: dict[str, int]


@dataclass
class PolicyRow:
    """A model's promotion policy in force; ``updated_by`` is empty for the default."""

    model: str
    policy: Policy
    updated_at_us: int
    updated_by: str

    @property
    def is_default(self) -> bool:
        return not self.updated_by


@dataclass
class AuditRow:
    id: int
    action: str
    model: str
    version: int
    alias: str
    from_version: int
    to_version: int
    actor: str
    reason: str
    time_us: int


@dataclass
class NewVersion:
    """Everything a registration stores besides the allocated number."""

    description: str
    artifact_sha256: str
    artifact_size: int
    artifact_uri: str
    artifact_format: str
    manifest_json: str
    feature_schema_pb: bytes
    threshold: float
    lineage_json: str
    reference_profile: bytes
    idempotency_key: str | None
    tags: Mapping[str, str]
    metrics: Mapping[str, float]
    gates: Sequence[GateRow]


def _next_event_id(conn: Connection) -> int:
    value = conn.execute(
        update(registry_state)
        .where(registry_state.c.id == 1)
        .values(last_event_id=registry_state.c.last_event_id + 1)
        .returning(registry_state.c.last_event_id)
    ).scalar_one()
    return int(value)


def _audit(
    conn: Connection,
    action: str,
    model: str,
    actor: str,
    reason: str = "",
    version: int = 0,
    alias: str = "",
    from_version: int = 0,
    to_version: int = 0,
) -> AuditRow:
    row = AuditRow(
        id=_next_event_id(conn),
        action=action,
        model=model,
        version=version,
        alias=alias,
        from_version=from_version,
        to_version=to_version,
        actor=actor,
        reason=reason,
        time_us=now_us(),
    )
    conn.execute(insert(audit_log).values(**row.__dict__))
    return row


def _model_row(conn: Connection, name: str, *, lock: bool = False) -> Any:
    stmt = select(models).where(models.c.name == name)
    if lock:
        stmt = stmt.with_for_update()
    row = conn.execute(stmt).one_or_none()
    if row is None:
        raise NotFoundError(f"model {name!r} not found")
    return row


def _aliases_of(conn: Connection, model_ids: Sequence[int]) -> dict[int, dict[str, int]]:
    out: dict[int, dict[str, int]] = {mid: {} for mid in model_ids}
    if model_ids:
        for r in conn.execute(select(aliases).where(aliases.c.model_id.in_(model_ids))):
            out[r.model_id][r.name] = int(r.version)
    return out


def _to_model(row: Any, alias_map: dict[str, int]) -> ModelRow:
    return ModelRow(
        id=row.id,
        name=row.name,
        description=row.description,
        tags=json.loads(row.tags_json),
        created_at_us=row.created_at_us,
        created_by=row.created_by,
        latest_version=int(row.latest_version),
        aliases=alias_map,
    )


_VERSION_COLS = [c for c in versions.c if c.name not in ("model_id",)]


def _load_versions(conn: Connection, rows: Sequence[Any]) -> list[VersionRow]:
    """Turns version rows (joined with the model name) into full records with tags, gates, aliases."""
    out = [
        VersionRow(
            id=r.id,
            model=r.model_name,
            version=int(r.version),
            status=r.status,
            description=r.description,
            created_at_us=r.created_at_us,
            created_by=r.created_by,
            artifact_sha256=r.artifact_sha256,
            artifact_size=int(r.artifact_size),
            artifact_uri=r.artifact_uri,
            artifact_format=r.artifact_format,
            manifest_json=r.manifest_json,
            feature_schema_pb=bytes(r.feature_schema_pb),
            threshold=r.threshold,
            lineage_json=r.lineage_json,
            wandb_link_status=r.wandb_link_status,
            reference_profile=bytes(r.reference_profile),
            idempotency_key=r.idempotency_key,
            reference_profile_sha256=r.reference_profile_sha256,
        )
        for r in rows
    ]
    if not out:
        return out
    by_id = {v.id: v for v in out}
    ids = list(by_id)
    for t in conn.execute(select(version_tags).where(version_tags.c.version_id.in_(ids))):
        by_id[t.version_id].tags[t.key] = t.value
    for m in conn.execute(select(version_metrics).where(version_metrics.c.version_id.in_(ids))):
        by_id[m.version_id].metrics[m.name] = m.value
    newest: dict[tuple[int, str], Any] = {}
    for g in conn.execute(
        select(gate_results).where(gate_results.c.version_id.in_(ids)).order_by(gate_results.c.id)
    ):
        newest[(g.version_id, g.name)] = g
    for (vid, _name), g in sorted(newest.items(), key=lambda kv: kv[0][1]):
        by_id[vid].gates.append(GateRow(g.name, g.value, g.threshold, g.comparator, bool(g.passed), g.detail))
    alias_rows = conn.execute(
        select(aliases.c.name, aliases.c.version, models.c.name.label("model_name"))
        .join(models, models.c.id == aliases.c.model_id)
        .where(models.c.name.in_({v.model for v in out}))
        .order_by(aliases.c.name)
    )
    key = {(v.model, v.version): v for v in out}
    for a in alias_rows:
        target = key.get((a.model_name, int(a.version)))
        if target is not None:
            target.aliases.append(a.name)
    return out


def _version_select() -> Any:
    return select(*_VERSION_COLS, versions.c.model_id, models.c.name.label("model_name")).join(
        models, models.c.id == versions.c.model_id
    )


def _get_version_row(conn: Connection, model: str, version: int) -> VersionRow:
    rows = conn.execute(_version_select().where(models.c.name == model, versions.c.version == version)).all()
    if not rows:
        raise NotFoundError(f"version {version} of model {model!r} not found")
    return _load_versions(conn, rows)[0]


class Repository:
    """All registry reads and writes, over one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # ----- models -----------------------------------------------------------------------------

    def create_model(self, name: str, description: str, tags: Mapping[str, str], actor: str) -> ModelRow:
        try:
            with write_tx(self.engine) as conn:
                if conn.execute(select(models.c.id).where(models.c.name == name)).first():
                    raise AlreadyExistsError(f"model {name!r} already exists")
                conn.execute(
                    insert(models).values(
                        name=name,
                        description=description,
                        tags_json=json.dumps(dict(sorted(tags.items()))),
                        created_at_us=now_us(),
                        created_by=actor,
                        latest_version=0,
                    )
                )
                _audit(conn, "model.create", name, actor)
                return _to_model(_model_row(conn, name), {})
        except IntegrityError:
            raise AlreadyExistsError(f"model {name!r} already exists") from None

    def get_model(self, name: str) -> ModelRow:
        with read_tx(self.engine) as conn:
            row = _model_row(conn, name)
            return _to_model(row, _aliases_of(conn, [row.id])[row.id])

    def list_models(self, after: str, limit: int) -> list[ModelRow]:
        with read_tx(self.engine) as conn:
            stmt = select(models).order_by(models.c.name).limit(limit)
            if after:
                stmt = stmt.where(models.c.name > after)
            rows = conn.execute(stmt).all()
            amap = _aliases_of(conn, [r.id for r in rows])
            return [_to_model(r, amap[r.id]) for r in rows]

    # ----- versions ---------------------------------------------------------------------------

    def find_by_idempotency_key(self, model: str, key: str) -> VersionRow | None:
        with read_tx(self.engine) as conn:
            rows = conn.execute(
                _version_select().where(models.c.name == model, versions.c.idempotency_key == key)
            ).all()
            return _load_versions(conn, rows)[0] if rows else None

    def register_version(self, model: str, new: NewVersion, actor: str) -> tuple[VersionRow, bool]:
        """Allocates the next version number and inserts the version atomically.

        Returns the version and whether it was created (False: an earlier registration with the
        same idempotency key).
        """
        for attempt in range(2):
            try:
                return self._register_once(model, new, actor)
            except IntegrityError:
                if attempt or new.idempotency_key is None:
                    raise
        raise AssertionError("unreachable")

    def _register_once(self, model: str, new: NewVersion, actor: str) -> tuple[VersionRow, bool]:
        with write_tx(self.engine) as conn:
            if new.idempotency_key is not None:
                found = conn.execute(
                    _version_select().where(
                        models.c.name == model, versions.c.idempotency_key == new.idempotency_key
                    )
                ).all()
                if found:
                    existing = _load_versions(conn, found)[0]
                    if existing.artifact_sha256 != new.artifact_sha256:
                        raise FailedPreconditionError(
                            f"idempotency_key {new.idempotency_key!r} was used for version "
                            f"{existing.version} with a different artifact"
                        )
                    return existing, False
            allocated = conn.execute(
                update(models)
                .where(models.c.name == model)
                .values(latest_version=models.c.latest_version + 1)
                .returning(models.c.id, models.c.latest_version)
            ).one_or_none()
            if allocated is None:
                raise NotFoundError(f"model {model!r} not found")
            model_id, number = int(allocated[0]), int(allocated[1])
            t = now_us()
            version_id = conn.execute(
                insert(versions)
                .values(
                    model_id=model_id,
                    version=number,
                    status=STATUS_READY,
                    description=new.description,
                    created_at_us=t,
                    created_by=actor,
                    artifact_sha256=new.artifact_sha256,
                    artifact_size=new.artifact_size,
                    artifact_uri=new.artifact_uri,
                    artifact_format=new.artifact_format,
                    manifest_json=new.manifest_json,
                    feature_schema_pb=new.feature_schema_pb,
                    threshold=new.threshold,
                    lineage_json=new.lineage_json,
                    wandb_link_status="",
                    reference_profile=new.reference_profile,
                    reference_profile_sha256=(
                        hashlib.sha256(new.reference_profile).hexdigest() if new.reference_profile else ""
                    ),
                    idempotency_key=new.idempotency_key,
                )
                .returning(versions.c.id)
            ).scalar_one()
            if new.tags:
                conn.execute(
                    insert(version_tags),
                    [{"version_id": version_id, "key": k, "value": v} for k, v in new.tags.items()],
                )
            if new.metrics:
                conn.execute(
                    insert(version_metrics),
                    [{"version_id": version_id, "name": k, "value": v} for k, v in new.metrics.items()],
                )
            self._insert_gates(conn, version_id, new.gates, t)
            _audit(conn, "version.register", model, actor, version=number)
            return _get_version_row(conn, model, number), True

    @staticmethod
    def _insert_gates(conn: Connection, version_id: int, gates: Sequence[GateRow], t: int) -> None:
        if gates:
            conn.execute(
                insert(gate_results),
                [
                    {
                        "version_id": version_id,
                        "name": g.name,
                        "value": g.value,
                        "threshold": g.threshold,
                        "comparator": g.comparator,
                        "passed": g.passed,
                        "detail": g.detail,
                        "created_at_us": t,
                    }
                    for g in gates
                ],
            )

    def get_version(self, model: str, version: int = 0, alias: str = "") -> VersionRow:
        with read_tx(self.engine) as conn:
            if alias:
                row = _model_row(conn, model)
                target = conn.execute(
                    select(aliases.c.version).where(aliases.c.model_id == row.id, aliases.c.name == alias)
                ).scalar_one_or_none()
                if target is None:
                    raise NotFoundError(f"alias {alias!r} of model {model!r} not found")
                version = int(target)
            return _get_version_row(conn, model, version)

    def list_versions(self, model: str, before: int, limit: int) -> list[VersionRow]:
        with read_tx(self.engine) as conn:
            _model_row(conn, model)
            stmt = (
                _version_select()
                .where(models.c.name == model)
                .order_by(versions.c.version.desc())
                .limit(limit)
            )
            if before:
                stmt = stmt.where(versions.c.version < before)
            return _load_versions(conn, conn.execute(stmt).all())

    def search_versions(
        self,
        *,
        model: str,
        tags: Mapping[str, str],
        metric_filters: Sequence[tuple[str, int, float]],
        created_after_us: int | None,
        created_before_us: int | None,
        alias: str,
        gates_passed_only: bool,
        before_id: int,
        limit: int,
    ) -> list[VersionRow]:
        conds: list[ColumnElement[bool]] = [versions.c.status == STATUS_READY]
        if model:
            conds.append(models.c.name == model)
        for k, v in sorted(tags.items()):
            conds.append(
                exists().where(
                    version_tags.c.version_id == versions.c.id,
                    version_tags.c.key == k,
                    version_tags.c.value == v,
                )
            )
        for name, comparator, value in metric_filters:
            cmp = (
                version_metrics.c.value >= value
                if comparator == COMPARATOR_GE
                else (version_metrics.c.value <= value)
            )
            conds.append(
                exists().where(
                    version_metrics.c.version_id == versions.c.id, version_metrics.c.name == name, cmp
                )
            )
        if created_after_us is not None:
            conds.append(versions.c.created_at_us >= created_after_us)
        if created_before_us is not None:
            conds.append(versions.c.created_at_us < created_before_us)
        if alias:
            conds.append(
                exists().where(
                    aliases.c.model_id == versions.c.model_id,
                    aliases.c.name == alias,
                    aliases.c.version == versions.c.version,
                )
            )
        if gates_passed_only:
            g = gate_results.alias("g")
            g2 = gate_results.alias("g2")
            newest_id = (
                select(func.max(g2.c.id))
                .where(g2.c.version_id == g.c.version_id, g2.c.name == g.c.name)
                .scalar_subquery()
            )
            conds.append(exists().where(gate_results.c.version_id == versions.c.id))
            conds.append(
                ~exists().where(g.c.version_id == versions.c.id, g.c.passed.is_(False), g.c.id == newest_id)
            )
        if before_id:
            conds.append(versions.c.id < before_id)
        stmt = _version_select().where(and_(*conds)).order_by(versions.c.id.desc()).limit(limit)
        with read_tx(self.engine) as conn:
            return _load_versions(conn, conn.execute(stmt).all())

    def append_gates(self, model: str, version: int, gates: Sequence[GateRow], actor: str) -> VersionRow:
        """Adds results for gates the version has none for (recorded results are immutable)."""
        with write_tx(self.engine) as conn:
            row = _model_row(conn, model, lock=True)
            vid = _live_version(conn, row.id, model, version)
            recorded = set(
                conn.execute(select(gate_results.c.name).where(gate_results.c.version_id == vid)).scalars()
            )
            again = sorted(g.name for g in gates if g.name in recorded)
            if again:
                raise GatesImmutableError(
                    f"version {version} of model {model!r} already has results for {', '.join(again)}; "
                    "recorded gate results are immutable"
                )
            self._insert_gates(conn, vid, gates, now_us())
            summary = ", ".join(
                f"{g.name}={g.value:g} {'>=' if g.comparator == COMPARATOR_GE else '<='} {g.threshold:g} "
                f"({'pass' if g.passed else 'fail'})"
                for g in sorted(gates, key=lambda g: g.name)
            )
            _audit(conn, "gates.append", model, actor, reason=summary, version=version)
            return _get_version_row(conn, model, version)

    def delete_version(self, model: str, version: int, reason: str, actor: str) -> AuditRow:
        with write_tx(self.engine) as conn:
            row = _model_row(conn, model, lock=True)
            v_id = _live_version(conn, row.id, model, version)
            pointing = (
                conn.execute(
                    select(aliases.c.name).where(aliases.c.model_id == row.id, aliases.c.version == version)
                )
                .scalars()
                .all()
            )
            if pointing:
                raise FailedPreconditionError(
                    f"version {version} of model {model!r} is the target of aliases: {', '.join(pointing)}"
                )
            conn.execute(update(versions).where(versions.c.id == v_id).values(status=STATUS_DELETED))
            return _audit(conn, "version.delete", model, actor, reason=reason, version=version)

    def set_wandb_status(self, model: str, version: int, status: str) -> None:
        with write_tx(self.engine) as conn:
            row = _model_row(conn, model)
            conn.execute(
                update(versions)
                .where(versions.c.model_id == row.id, versions.c.version == version)
                .values(wandb_link_status=status)
            )

    # ----- aliases ----------------------------------------------------------------------------

    def _check_target(self, conn: Connection, model: str, alias: str, version: int) -> VersionRow:
        target = _get_version_row(conn, model, version)
        if target.status == STATUS_DELETED:
            raise FailedPreconditionError(f"version {version} of model {model!r} is deleted")
        if alias == PRODUCTION:
            found = _policy_of(conn, model)
            refused = pol.problems(found.policy, target.gates, target.lineage_json, target.reference_profile)
            if refused:
                raise GatesFailedError(
                    f"version {version} of model {model!r} cannot become {PRODUCTION} under "
                    f"{'the default' if found.is_default else 'its'} promotion policy: {'; '.join(refused)}"
                )
        return target

    # ----- promotion policies -------------------------------------------------------------------

    def get_policy(self, model: str) -> PolicyRow:
        with read_tx(self.engine) as conn:
            return _policy_of(conn, model)

    def check_policy(self, model: str, version: int) -> tuple[PolicyRow, list[str]]:
        """The policy in force and what keeps ``version`` from ``production`` (empty: nothing)."""
        with read_tx(self.engine) as conn:
            found = _policy_of(conn, model)
            target = _get_version_row(conn, model, version)
            refused = pol.problems(found.policy, target.gates, target.lineage_json, target.reference_profile)
            if target.status == STATUS_DELETED:
                refused.insert(0, "the version is deleted")
            return found, refused

    def set_policy(self, model: str, policy: Policy, reason: str, actor: str) -> tuple[PolicyRow, AuditRow]:
        """Replaces the model's policy. A hand-off turned on (or changed to another mode) applies to
        versions registered from now on: ``after_version`` is the model's newest version now; a
        hand-off left in its mode keeps its ``after_version``."""
        with write_tx(self.engine) as conn:
            row = _model_row(conn, model, lock=True)  # serialised with alias moves of this model
            before = _policy_of(conn, model).policy.hand_off
            if policy.hand_off.on:
                after = (
                    before.after_version if before.mode == policy.hand_off.mode else int(row.latest_version)
                )
                policy = replace(policy, hand_off=replace(policy.hand_off, after_version=after))
            else:
                policy = replace(policy, hand_off=HandOff())
            t = now_us()
            values = {"policy_json": policy.to_json(), "updated_at_us": t, "updated_by": actor}
            done = conn.execute(
                update(promotion_policies).where(promotion_policies.c.model_id == row.id).values(**values)
            )
            if not done.rowcount:
                conn.execute(insert(promotion_policies).values(model_id=row.id, **values))
            summary = policy_summary(policy)
            audit = _audit(
                conn, "policy.set", model, actor, reason=f"{summary}; {reason}" if reason else summary
            )
            return PolicyRow(model, policy, t, actor), audit

    def _move(
        self,
        conn: Connection,
        model_row: Any,
        alias: str,
        current: int,
        version: int,
        action: str,
        reason: str,
        actor: str,
    ) -> AuditRow:
        t = now_us()
        if version == 0:
            conn.execute(
                sa_delete(aliases).where(aliases.c.model_id == model_row.id, aliases.c.name == alias)
            )
        elif current:
            conn.execute(
                update(aliases)
                .where(aliases.c.model_id == model_row.id, aliases.c.name == alias)
                .values(version=version, updated_at_us=t)
            )
        else:
            conn.execute(
                insert(aliases).values(model_id=model_row.id, name=alias, version=version, updated_at_us=t)
            )
        return _audit(
            conn,
            action,
            model_row.name,
            actor,
            reason=reason,
            version=version,
            alias=alias,
            from_version=current,
            to_version=version,
        )

    @staticmethod
    def _current(conn: Connection, model_id: int, alias: str) -> int:
        value = conn.execute(
            select(aliases.c.version).where(aliases.c.model_id == model_id, aliases.c.name == alias)
        ).scalar_one_or_none()
        return int(value) if value is not None else 0

    def set_alias(
        self, model: str, alias: str, version: int, expected: int | None, reason: str, actor: str
    ) -> AuditRow:
        with write_tx(self.engine) as conn:
            row = _model_row(conn, model, lock=True)  # serialises alias moves of this model
            current = self._current(conn, row.id, alias)
            if expected is not None and current != expected:
                raise AbortedError(
                    f"alias {alias!r} of model {model!r} points at version {current}, "
                    f"expected {expected}: someone else moved it; re-read and retry"
                )
            self._check_target(conn, model, alias, version)
            return self._move(conn, row, alias, current, version, "alias.set", reason, actor)

    def rollback_alias(self, model: str, alias: str, reason: str, actor: str) -> AuditRow:
        with write_tx(self.engine) as conn:
            row = _model_row(conn, model, lock=True)
            current = self._current(conn, row.id, alias)
            if current == 0:
                raise FailedPreconditionError(f"alias {alias!r} of model {model!r} is not set")
            stack: list[int] = []
            history = conn.execute(
                select(audit_log.c.action, audit_log.c.to_version)
                .where(
                    audit_log.c.model == model,
                    audit_log.c.alias == alias,
                    audit_log.c.action.in_(ALIAS_ACTIONS),
                )
                .order_by(audit_log.c.id)
            )
            for action, to_version in history:
                if action == "alias.set":
                    stack.append(int(to_version))
                elif action == "alias.rollback":
                    # drop the version rolled away from, and anything skipped above the target
                    if stack:
                        stack.pop()
                    while stack and stack[-1] != to_version:
                        stack.pop()
                    if not stack:
                        stack.append(int(to_version))
                else:
                    stack.clear()
            deleted = set(
                conn.execute(
                    select(versions.c.version).where(
                        versions.c.model_id == row.id, versions.c.status == STATUS_DELETED
                    )
                ).scalars()
            )
            previous = [v for v in stack[:-1] if v not in deleted and v != current]
            if not previous:
                raise FailedPreconditionError(
                    f"alias {alias!r} of model {model!r} has no previous target to roll back to"
                )
            target = previous[-1]
            self._check_target(conn, model, alias, target)
            return self._move(conn, row, alias, current, target, "alias.rollback", reason, actor)

    def delete_alias(self, model: str, alias: str, reason: str, actor: str) -> AuditRow:
        with write_tx(self.engine) as conn:
            row = _model_row(conn, model, lock=True)
            current = self._current(conn, row.id, alias)
            if current == 0:
                raise NotFoundError(f"alias {alias!r} of model {model!r} not found")
            return self._move(conn, row, alias, current, 0, "alias.delete", reason, actor)

    # ----- audit and events ---------------------------------------------------------------------

    def list_audit(self, model: str, after_id: int, limit: int, alias_only: bool = False) -> list[AuditRow]:
        stmt = select(audit_log).where(audit_log.c.id > after_id).order_by(audit_log.c.id).limit(limit)
        if model:
            stmt = stmt.where(audit_log.c.model == model)
        if alias_only:
            stmt = stmt.where(audit_log.c.action.in_(ALIAS_ACTIONS))
        with read_tx(self.engine) as conn:
            return [AuditRow(**r._mapping) for r in conn.execute(stmt)]

    def last_event_id(self) -> int:
        with read_tx(self.engine) as conn:
            return int(
                conn.execute(
                    select(registry_state.c.last_event_id).where(registry_state.c.id == 1)
                ).scalar_one()
            )


def policy_summary(policy: Policy) -> str:
    """One line: the gates with their rules, the required lineage and the hand-off."""
    gates = ", ".join(f"{g.name} {g.rule()}" for g in policy.gates) or "no gates"
    return (
        f"gates: {gates}; lineage: {', '.join(policy.required_lineage) or 'none'}; "
        f"hand-off: {policy.hand_off.describe()}"
    )


def _policy_of(conn: Connection, model: str) -> PolicyRow:
    row = _model_row(conn, model)
    found = conn.execute(
        select(promotion_policies).where(promotion_policies.c.model_id == row.id)
    ).one_or_none()
    if found is None:
        return PolicyRow(model, DEFAULT_POLICY, 0, "")
    return PolicyRow(model, Policy.from_json(found.policy_json), int(found.updated_at_us), found.updated_by)


def _live_version(conn: Connection, model_id: int, model: str, version: int) -> int:
    """The row id of a version that exists and is not deleted (NOT_FOUND / FAILED_PRECONDITION)."""
    found = conn.execute(
        select(versions.c.id, versions.c.status).where(
            versions.c.model_id == model_id, versions.c.version == version
        )
    ).one_or_none()
    if found is None:
        raise NotFoundError(f"version {version} of model {model!r} not found")
    if found.status == STATUS_DELETED:
        raise FailedPreconditionError(f"version {version} of model {model!r} is deleted")
    return int(found.id)
