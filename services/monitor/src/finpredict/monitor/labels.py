"""Label matching: every stored prediction by request id (and by entity and prediction time), and
outcomes attached to the hour cell of their prediction, whichever of the two arrives first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import polars as pl

from finpredict.monitor.records import OutcomeIn
from finpredict.monitor.windows import Labeled, VersionKey, VersionState


@dataclass
class _Indexed:
    key: VersionKey
    hour: datetime
    score: float
    threshold: float
    time: datetime


class LabelIndex:
    """Predictions by request id and entity, outcomes waiting for their prediction, and the
    request ids already labelled (the first outcome of a request wins)."""

    def __init__(self, versions: dict[VersionKey, VersionState]) -> None:
        self.versions = versions  # shared with the windows: labels go to their cells
        self.index: dict[str, _Indexed] = {}
        self.by_entity: dict[tuple[str, int], str] = {}
        self.pending: dict[str, OutcomeIn] = {}  # request id -> outcome waiting for its prediction
        self.pending_entity: dict[tuple[str, int], OutcomeIn] = {}
        self.labeled_ids: set[str] = set()

    def __contains__(self, request_id: str) -> bool:
        return request_id in self.index

    def add(self, key: VersionKey, hour: datetime, part: pl.DataFrame) -> None:
        """Indexes the stored predictions ``part`` of one version and hour."""
        for rid, ent, t, score, thr in zip(
            part["request_id"],
            part["entity_id"],
            part["time"],
            part["score"],
            part["threshold"],
            strict=True,
        ):
            self.index[rid] = _Indexed(key, hour, score, thr, t)
            if ent:
                self.by_entity[(ent, _us(t))] = rid

    def resolve_pending(self, frame: pl.DataFrame) -> None:
        """Attaches the outcomes that arrived before the predictions of ``frame`` (indexed already)."""
        if not (self.pending or self.pending_entity):
            return
        for rid, ent, t in zip(frame["request_id"], frame["entity_id"], frame["time"], strict=True):
            waiting = self.pending.pop(rid, None)
            if waiting is None and ent:
                waiting = self.pending_entity.pop((ent, _us(t)), None)
            if waiting is not None:
                self._attach(rid, waiting)

    def match(self, o: OutcomeIn) -> tuple[VersionKey, datetime] | Literal["unmatched", "duplicate"]:
        """Attaches ``o`` to its prediction (returns the version and hour labelled), or keeps it
        waiting for a prediction not stored yet (``"unmatched"``). A request that already has an
        outcome, attached or waiting, keeps the first one (``"duplicate"``)."""
        rid = o.request_id
        if not rid and o.prediction_time is not None:
            rid = self.by_entity.get((o.entity_id, _us(o.prediction_time)), "")
        if not rid or rid not in self.index:
            if o.request_id:
                waiting = self.pending.setdefault(o.request_id, o)
            elif o.prediction_time is not None:
                waiting = self.pending_entity.setdefault((o.entity_id, _us(o.prediction_time)), o)
            else:
                waiting = o
            return "unmatched" if waiting is o else "duplicate"
        return self._attach(rid, o) or "duplicate"

    def _attach(self, rid: str, o: OutcomeIn) -> tuple[VersionKey, datetime] | None:
        if rid in self.labeled_ids:  # a repeated outcome for the same request: first one wins
            return None
        ix = self.index[rid]
        cell = self.versions[ix.key].hours[ix.hour]
        delay = (o.observed_at - ix.time).total_seconds() / 3600.0
        cell.labels.append(Labeled(ix.score, ix.threshold, o.defaulted, delay))
        self.labeled_ids.add(rid)
        return ix.key, ix.hour


def _us(t: datetime) -> int:
    return round(t.timestamp() * 1_000_000)
