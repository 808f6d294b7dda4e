"""Label matching: every stored prediction by request id (and by entity and prediction time), and
outcomes attached to the hour cell of their prediction, whichever of the two arrives first.

The index is also the request-id dedup set of ingest. It holds, per version and hour, the columns
an outcome needs (score, threshold, time, whether it is labelled, and the arm that served it: the
variant with its rollout or experiment id, interned per block) in compact arrays, and two maps
from a 64-bit digest of the request id (and of entity id + prediction time) to a row
(:class:`~finpredict.monitor.digest_map.DigestMap`): about 61 bytes a prediction, dropped hour by
hour with the retention period (:meth:`prune`). The digests themselves live only in the maps (the
snapshot reads them back from there, :meth:`LabelIndex.predictions_frame`).

An outcome whose prediction is not stored yet *waits* (the gateway's prediction log may still be
on its way) for ``wait_s`` seconds of wall-clock time, then is *orphaned*: counted and dropped. A
second outcome for a request that already has one, matched or waiting (or orphaned within the
retention period), is a duplicate: the first one wins, nothing is counted twice.
"""

from __future__ import annotations

import hashlib
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import numpy as np
import polars as pl

from finpredict.monitor import metrics as m
from finpredict.monitor.digest_map import BLOCK_SHIFT, DigestMap
from finpredict.monitor.records import OutcomeIn
from finpredict.monitor.windows import VersionKey, VersionState

Result = Literal["matched", "waiting", "duplicate"]
# The arm that served a prediction: (variant, rollout id, experiment id), as logged.
Assignment = tuple[str, str, str]
ASSIGNMENT_COLUMNS = ("variant", "rollout_id", "experiment_id")
NO_ASSIGNMENT: Assignment = ("", "", "")
_ROW_BITS = BLOCK_SHIFT
_ROW_MASK = (1 << _ROW_BITS) - 1


def digest(text: str) -> int:
    """A stable 64-bit digest of a request id (or an entity key)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def entity_digest(entity_id: str, t: datetime) -> int:
    return digest(f"{entity_id}\x00{_us(t)}")


@dataclass
class Block:
    """The predictions of one version and hour, column by column (row ``i`` of every column is one
    prediction; its request-id and entity digests are the keys that map to it)."""

    key: VersionKey
    hour: datetime
    times_us: array[int] = field(default_factory=lambda: array("q"))
    scores: array[float] = field(default_factory=lambda: array("d"))
    thresholds: array[float] = field(default_factory=lambda: array("d"))
    labelled: bytearray = field(default_factory=bytearray)
    # each row's arm, as a code into ``assignments`` (the block's distinct arms; 0: none known)
    arms: array[int] = field(default_factory=lambda: array("I"))
    assignments: list[Assignment] = field(default_factory=lambda: [NO_ASSIGNMENT])
    # derived from ``assignments`` (the code of each), kept for appending
    _codes: dict[Assignment, int] = field(
        default_factory=lambda: {NO_ASSIGNMENT: 0}, init=False, repr=False, compare=False
    )

    def __len__(self) -> int:
        return len(self.labelled)

    def add_arms(self, part: pl.DataFrame) -> None:
        """Appends the arms of the rows of ``part`` (its :data:`ASSIGNMENT_COLUMNS`; one that is
        absent, as in records stored before it existed, or null reads as empty)."""
        if not any(c in part.columns for c in ASSIGNMENT_COLUMNS):
            self.arms.extend(array("I", [0]) * part.height)
            return
        keys = part.select(
            *(
                pl.col(c).cast(pl.String).fill_null("") if c in part.columns else pl.lit("").alias(c)
                for c in ASSIGNMENT_COLUMNS
            )
        )
        groups = keys.with_row_index("_row").group_by(*ASSIGNMENT_COLUMNS, maintain_order=True).agg("_row")
        if groups.height == 1:  # the usual batch: one arm
            self.arms.extend(array("I", [self._code(groups.row(0)[:3])]) * part.height)
            return
        codes = np.zeros(part.height, dtype=np.uint32)
        for *arm, rows in groups.iter_rows():
            codes[rows] = self._code(tuple(arm))
        self.arms.frombytes(codes.tobytes())

    def _code(self, arm: tuple[object, ...]) -> int:
        key: Assignment = (str(arm[0]), str(arm[1]), str(arm[2]))
        code = self._codes.get(key)
        if code is None:
            code = self._codes[key] = len(self.assignments)
            self.assignments.append(key)
        return code


@dataclass
class Waiting:
    """An outcome waiting for its prediction, since ``received`` (wall clock, epoch seconds)."""

    outcome: OutcomeIn
    received: float


class LabelIndex:
    """Predictions by request id and entity, outcomes waiting for their prediction, and the request
    ids orphaned lately."""

    def __init__(
        self,
        versions: dict[VersionKey, VersionState],
        wait_s: float = 3600.0,
        max_waiting: int = 100_000,
        remember_s: float = 30 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.versions = versions  # shared with the windows: labels go to their cells
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self.remember_s = remember_s
        self.clock = clock
        self.blocks: dict[int, Block] = {}
        self.block_of: dict[tuple[VersionKey, datetime], int] = {}
        self.ids = DigestMap()  # request-id digest -> block << 32 | row
        self.by_entity = DigestMap()  # (entity, prediction time) digest -> block << 32 | row
        self.waiting: dict[int, Waiting] = {}  # by request-id digest, oldest first
        self.waiting_entity: dict[int, Waiting] = {}  # by (entity, time) digest, oldest first
        self.orphaned: dict[int, float] = {}  # digest -> when orphaned (wall clock), oldest first
        self._next_block = 1

    def __contains__(self, request_id: str) -> bool:
        return digest(request_id) in self.ids

    def __len__(self) -> int:
        return len(self.ids)

    def known(self, request_ids: list[str]) -> list[bool]:
        """``[rid in self for rid in request_ids]``, searched as one batch."""
        return [bool(x) for x in self.ids.contains_many([digest(r) for r in request_ids])]

    # ------------------------------------------------------------------ predictions

    def block(self, key: VersionKey, hour: datetime) -> tuple[int, Block]:
        bid = self.block_of.get((key, hour))
        if bid is None:
            bid, self._next_block = self._next_block, self._next_block + 1
            self.block_of[(key, hour)] = bid
            self.blocks[bid] = Block(key, hour)
        return bid, self.blocks[bid]

    def add(self, key: VersionKey, hour: datetime, part: pl.DataFrame, rids: list[int] | None = None) -> None:
        """Indexes the stored predictions ``part`` of one version and hour (``rids``: the digests of
        its request ids, when the caller has them already)."""
        bid, b = self.block(key, hour)
        times = part["time"].dt.epoch("us").to_numpy().astype(np.int64)
        first = bid << _ROW_BITS | len(b)
        codes = range(first, first + part.height)
        b.times_us.frombytes(times.tobytes())
        b.scores.frombytes(part["score"].to_numpy().astype(np.float64).tobytes())
        b.thresholds.frombytes(part["threshold"].to_numpy().astype(np.float64).tobytes())
        b.labelled.extend(bytes(part.height))
        b.add_arms(part)
        self.ids.set_many(rids if rids is not None else [digest(r) for r in part["request_id"]], codes)
        entities = [
            (digest(f"{ent}\x00{t_us}"), code)
            for ent, t_us, code in zip(part["entity_id"], times.tolist(), codes, strict=True)
            if ent
        ]
        if entities:
            keys, entity_codes = zip(*entities, strict=True)
            self.by_entity.set_many(keys, entity_codes)

    def resolve_waiting(self, frame: pl.DataFrame) -> set[tuple[VersionKey, datetime]]:
        """Attaches the outcomes that arrived before the predictions of ``frame`` (indexed already);
        returns the (version, hour) cells labelled."""
        touched: set[tuple[VersionKey, datetime]] = set()
        if not (self.waiting or self.waiting_entity):
            return touched
        times = frame["time"].dt.epoch("us").to_list()
        for rid, ent, t_us in zip(frame["request_id"], frame["entity_id"], times, strict=True):
            rk = digest(rid)
            waiting = self.waiting.pop(rk, None)
            if waiting is None and ent:
                waiting = self.waiting_entity.pop(digest(f"{ent}\x00{t_us}"), None)
            if waiting is not None and self._attach(self.ids[rk], waiting.outcome):
                touched.add(self._cell(self.ids[rk]))
                m.OUTCOMES.labels("matched_late").inc()
        m.OUTCOMES_WAITING.set(len(self.waiting) + len(self.waiting_entity))
        return touched

    # ------------------------------------------------------------------ outcomes

    def _locate(self, o: OutcomeIn) -> tuple[int, dict[int, Waiting], int | None]:
        """An outcome's key, the waiting table it would wait in, and its prediction's row (or None)."""
        if o.request_id:
            key = digest(o.request_id)
            return key, self.waiting, self.ids.get(key)
        assert o.prediction_time is not None  # checked by records.check_outcomes
        key = entity_digest(o.entity_id, o.prediction_time)
        return key, self.waiting_entity, self.by_entity.get(key)

    def outcome_key(self, o: OutcomeIn) -> int:
        return self._locate(o)[0]

    def is_duplicate(self, o: OutcomeIn) -> bool:
        """Whether the request of ``o`` already has an outcome (matched, waiting or orphaned lately)."""
        key, table, code = self._locate(o)
        if code is None:
            return key in table or key in self.orphaned
        return bool(self.blocks[code >> _ROW_BITS].labelled[code & _ROW_MASK])

    def match(self, o: OutcomeIn) -> tuple[Result, tuple[VersionKey, datetime] | None]:
        """Attaches ``o`` to its prediction (returning the version and hour labelled), or keeps it
        waiting for a prediction not stored yet; a second outcome for a request is a duplicate."""
        key, table, code = self._locate(o)
        if code is None:
            if key in table or key in self.orphaned:
                return "duplicate", None
            table[key] = Waiting(o, self.clock())
            if len(self.waiting) + len(self.waiting_entity) > self.max_waiting:
                self._orphan_oldest()
            m.OUTCOMES_WAITING.set(len(self.waiting) + len(self.waiting_entity))
            return "waiting", None
        if not self._attach(code, o):
            return "duplicate", None
        return "matched", self._cell(code)

    def served(self, o: OutcomeIn) -> tuple[VersionKey, float, float, Assignment] | None:
        """The version, score, threshold and arm of the prediction ``o`` is matched to (None: none
        stored)."""
        code = self._locate(o)[2]
        if code is None:
            return None
        b, row = self.blocks[code >> _ROW_BITS], code & _ROW_MASK
        return b.key, b.scores[row], b.thresholds[row], b.assignments[b.arms[row]]

    def _cell(self, code: int) -> tuple[VersionKey, datetime]:
        b = self.blocks[code >> _ROW_BITS]
        return b.key, b.hour

    def _attach(self, code: int, o: OutcomeIn) -> bool:
        b, row = self.blocks[code >> _ROW_BITS], code & _ROW_MASK
        if b.labelled[row]:  # a repeated outcome for the same request: the first one wins
            return False
        b.labelled[row] = 1
        cell = self.versions[b.key].hours[b.hour]
        delay = (o.observed_at.timestamp() * 1e6 - b.times_us[row]) / 3.6e9
        cell.labels.add(b.scores[row], b.thresholds[row], o.defaulted, delay)
        return True

    def _orphan_oldest(self) -> None:
        oldest = min(
            (t for t in (self.waiting, self.waiting_entity) if t),
            key=lambda t: next(iter(t.values())).received,
        )
        key = next(iter(oldest))
        del oldest[key]
        self.orphaned[key] = self.clock()
        m.OUTCOMES.labels("orphaned").inc()

    def expire(self) -> int:
        """Orphans the outcomes that waited longer than ``wait_s``, forgets orphans older than
        ``remember_s``; returns how many were orphaned."""
        now = self.clock()
        n = 0
        for table in (self.waiting, self.waiting_entity):
            while table:
                key, w = next(iter(table.items()))
                if now - w.received < self.wait_s:
                    break
                del table[key]
                self.orphaned[key] = now
                n += 1
        while self.orphaned and now - next(iter(self.orphaned.values())) >= self.remember_s:
            del self.orphaned[next(iter(self.orphaned))]
        if n:
            m.OUTCOMES.labels("orphaned").inc(n)
        m.OUTCOMES_WAITING.set(len(self.waiting) + len(self.waiting_entity))
        return n

    # ------------------------------------------------------------------ retention

    def prune(self, horizon: datetime) -> int:
        """Forgets the predictions of hours that ended before ``horizon``; returns how many."""
        gone = 0
        dropped: set[int] = set()
        for (key, hour), bid in list(self.block_of.items()):
            if (hour.timestamp() + 3600) > horizon.timestamp():
                continue
            b = self.blocks.pop(bid)
            del self.block_of[(key, hour)]
            dropped.add(bid)
            gone += len(b)
        self.ids.discard_blocks(dropped)
        self.by_entity.discard_blocks(dropped)
        return gone

    # ------------------------------------------------------------------ snapshot

    def predictions_frame(self) -> pl.DataFrame:
        """The index as a frame (for the snapshot): a row per prediction, its digests read back
        from the maps (0: none, e.g. no entity id)."""
        blocks = list(self.blocks.items())
        sizes = [len(b) for _, b in blocks]

        def column(get: Callable[[Block], array[int] | array[float] | bytearray], dtype: type) -> np.ndarray:
            parts: list[np.ndarray] = [np.frombuffer(get(b), dtype=dtype) for _, b in blocks]
            return np.concatenate(parts) if parts else np.empty(0, dtype=dtype)

        # each row's arm: its block's code, offset to the block's arms in the table of every block's
        table = [arm for _, b in blocks for arm in b.assignments]
        first_arm = np.cumsum([0] + [len(b.assignments) for _, b in blocks], dtype=np.int64)[:-1]
        arm_rows = pl.Series(
            column(lambda b: b.arms, np.uint32).astype(np.int64) + np.repeat(first_arm, sizes)
        )
        bids = np.array([bid for bid, _ in blocks], dtype=np.uint64)  # ascending: created in order
        starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.uint64)])[:-1].astype(np.uint64)

        def keys_by_row(index: DigestMap) -> np.ndarray:
            keys, codes = index.entries()
            out = np.zeros(sum(sizes), dtype=np.uint64)
            at = np.searchsorted(bids, codes >> np.uint64(_ROW_BITS))
            at = np.minimum(at, max(len(bids) - 1, 0))
            if len(bids):
                ok = bids[at] == codes >> np.uint64(_ROW_BITS)
                out[(starts[at] + (codes & np.uint64(_ROW_MASK)))[ok].astype(np.int64)] = keys[ok]
            return out

        return pl.DataFrame(
            {
                "model": pl.Series([b.key[0] for _, b in blocks], dtype=pl.String).gather(_repeat(sizes)),
                "version": pl.Series([b.key[1] for _, b in blocks], dtype=pl.Int64).gather(_repeat(sizes)),
                "hour": pl.Series([b.hour for _, b in blocks], dtype=pl.Datetime("us", "UTC")).gather(
                    _repeat(sizes)
                ),
                "rid": keys_by_row(self.ids),
                "entity": keys_by_row(self.by_entity),
                "time_us": column(lambda b: b.times_us, np.int64),
                "score": column(lambda b: b.scores, np.float64),
                "threshold": column(lambda b: b.thresholds, np.float64),
                "labelled": column(lambda b: b.labelled, np.uint8),
                **{
                    name: pl.Series([arm[i] for arm in table], dtype=pl.String).gather(arm_rows)
                    for i, name in enumerate(ASSIGNMENT_COLUMNS)
                },
            }
        )

    def load_predictions(self, frame: pl.DataFrame) -> None:
        """Restores the index from :meth:`predictions_frame`."""
        for (model, version, hour), part in frame.partition_by(
            ["model", "version", "hour"], as_dict=True, maintain_order=True
        ).items():
            assert isinstance(hour, datetime)
            bid, b = self.block((str(model), int(str(version))), hour.astimezone(UTC))
            start = len(b)
            b.times_us.frombytes(part["time_us"].to_numpy().astype(np.int64).tobytes())
            b.scores.frombytes(part["score"].to_numpy().astype(np.float64).tobytes())
            b.thresholds.frombytes(part["threshold"].to_numpy().astype(np.float64).tobytes())
            b.labelled.extend(part["labelled"].to_numpy().astype(np.uint8).tobytes())
            b.add_arms(part)  # absent from snapshots written before the arms were kept: none known
            codes = np.arange(bid << _ROW_BITS | start, bid << _ROW_BITS | len(b), dtype=np.uint64)
            rids = part["rid"].to_numpy().astype(np.uint64)
            self.ids.update(rids[rids != 0], codes[rids != 0])
            entities = part["entity"].to_numpy().astype(np.uint64)
            self.by_entity.update(entities[entities != 0], codes[entities != 0])

    def waiting_frame(self) -> pl.DataFrame:
        """The waiting outcomes and the orphans remembered (for the snapshot)."""
        entries = [(k, w.outcome, w.received, "request") for k, w in self.waiting.items()] + [
            (k, w.outcome, w.received, "entity") for k, w in self.waiting_entity.items()
        ]
        return pl.DataFrame(
            {
                "key": pl.Series([k for k, *_ in entries] + list(self.orphaned), dtype=pl.UInt64),
                "table": [t for *_, t in entries] + ["orphaned"] * len(self.orphaned),
                "received": pl.Series(
                    [r for _, _, r, _ in entries] + list(self.orphaned.values()), dtype=pl.Float64
                ),
                "request_id": [o.request_id for _, o, _, _ in entries] + [""] * len(self.orphaned),
                "entity_id": [o.entity_id for _, o, _, _ in entries] + [""] * len(self.orphaned),
                "defaulted": [o.defaulted for _, o, _, _ in entries] + [False] * len(self.orphaned),
                "observed_at": pl.Series(
                    [o.observed_at for _, o, _, _ in entries] + [None] * len(self.orphaned),
                    dtype=pl.Datetime("us", "UTC"),
                ),
                "prediction_time": pl.Series(
                    [o.prediction_time for _, o, _, _ in entries] + [None] * len(self.orphaned),
                    dtype=pl.Datetime("us", "UTC"),
                ),
            }
        )

    def load_waiting(self, frame: pl.DataFrame) -> None:
        """Restores :meth:`waiting_frame`."""
        for row in frame.iter_rows(named=True):
            if row["table"] == "orphaned":
                self.orphaned[row["key"]] = row["received"]
                continue
            o = OutcomeIn(
                row["request_id"],
                row["entity_id"],
                row["defaulted"],
                row["observed_at"],
                row["prediction_time"],
            )
            table = self.waiting if row["table"] == "request" else self.waiting_entity
            table[row["key"]] = Waiting(o, row["received"])
        m.OUTCOMES_WAITING.set(len(self.waiting) + len(self.waiting_entity))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _us(t: datetime) -> int:
    return (t - _EPOCH) // timedelta(microseconds=1)


def _repeat(sizes: list[int]) -> pl.Series:
    """Indexes that repeat item ``i`` ``sizes[i]`` times."""
    return pl.Series(np.repeat(np.arange(len(sizes), dtype=np.int64), sizes))
