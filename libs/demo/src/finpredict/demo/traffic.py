"""The demo's client traffic: credit applications from the data-generating process, scored through
the gateway with the client SDK (``finpredict.client``), with their true outcomes reported later
through the gateway too (the SDK's ``record_outcomes``, by request id, with a token of the gateway's
``writer`` role), as a lending app would; the gateway forwards them to the monitor.

:class:`Traffic` runs three kinds of background threads until stopped:

* senders: ``ScoreBatch`` calls of fresh applications (a new business each, so sticky routing
  sends the canary's share of *applications* to the canary), closed loop;
* a latency probe: single ``Score`` calls at a steady rate, timed by the client (the p50/p99 the
  demo reports are these, per phase);
* a label feeder: once an application's label is ``label_delay_s`` old, its outcome is reported
  to the gateway (the delay of months in real lending, compressed to seconds).

Everything it saw is counted per version and variant; scores are kept per phase and variant
(for the report's stable-vs-canary distributions).
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from finpredict.client import Application, Outcome, ScoreResult, ScoringClient, ScoringError
from finpredict.client.types import FeatureInput
from finpredict.demo import replay
from finpredict.pipelines import dgp

MAX_SCORES_KEPT = 20_000  # per phase and variant


@dataclass(frozen=True)
class Pool:
    """Applications from the generator: features as a client sends them, and the true outcome."""

    name: str
    features: list[dict[str, FeatureInput]]
    defaulted: list[bool]

    def __len__(self) -> int:
        return len(self.features)


def make_pool(rows: int, seed: int, scenario: str = "none") -> Pool:
    """``rows`` applications of the pipeline's data-generating process (``scenario`` drift)."""
    df = dgp.generate(rows, seed=seed, scenario=scenario, days=30)
    frame = replay.feature_frame(df)
    features: list[dict[str, FeatureInput]] = [
        {k: v for k, v in row.items() if v is not None} for row in frame.iter_rows(named=True)
    ]
    labels = [bool(x) for x in df[dgp.LABEL].cast(pl.Boolean).to_list()]
    return Pool(scenario, features, labels)


@dataclass
class Counts:
    """What the traffic saw (read by the demo's live displays)."""

    rows: int = 0
    calls: int = 0
    by_version: Counter[int] = field(default_factory=Counter)
    by_variant: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    labels_sent: int = 0
    labels_matched: int = 0


class Traffic:
    """Scores generated applications through the gateway until stopped (a context manager)."""

    def __init__(
        self,
        gateway: str,
        token: str,
        model: str,
        pool: Pool,
        *,
        outcomes_token: str | None = None,
        batch: int = 200,
        senders: int = 2,
        probe_interval_s: float = 0.05,
        label_delay_s: float = 3.0,
        phase: str = "",
        entity_prefix: str = "biz",
    ) -> None:
        self.gateway, self.token, self.model = gateway, token, model
        self.pool = pool
        self.batch = batch
        self.phase = phase
        self.counts = Counts()
        self.latency_ms: dict[str, list[float]] = {}
        self.scores: dict[tuple[str, str], list[float]] = {}
        self.sending = threading.Event()  # cleared: the senders are paused (labels still flow)
        self.sending.set()
        self.probing = threading.Event()  # cleared: the latency probe is paused
        self.probing.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._next = 0
        self._entity_prefix = entity_prefix
        self._labels: deque[tuple[float, str, bool]] = deque()
        self._outcomes_token = outcomes_token  # None: no outcomes are reported
        self._label_delay = label_delay_s
        self.probe_interval = probe_interval_s
        self.rate: float | None = None  # applications per second of the senders (None: as fast as they can)
        self._slot = 0.0
        self._threads = [
            threading.Thread(target=self._send, name=f"traffic-{i}", daemon=True) for i in range(senders)
        ]
        self._threads.append(threading.Thread(target=self._probe, name="latency-probe", daemon=True))
        if outcomes_token is not None:
            self._threads.append(threading.Thread(target=self._feed_labels, name="labels", daemon=True))

    # ----- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.sending.set()
        self.probing.set()
        for t in self._threads:
            t.join(timeout=30)

    def pause(self) -> None:
        """Stops scoring (the calls in flight finish); labels still flow."""
        self.sending.clear()
        self.probing.clear()

    def resume(self) -> None:
        self.sending.set()
        self.probing.set()

    def flush_labels(self, timeout: float = 30.0) -> None:
        """Sends every outcome still waiting for its delay (blocks until sent or ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._labels:
                    return
            time.sleep(0.2)  # the label thread sends them; polling with a deadline

    # ----- what the demo reads -----------------------------------------------------------------

    def snapshot(self) -> Counts:
        with self._lock:
            c = self.counts
            return Counts(
                c.rows,
                c.calls,
                Counter(c.by_version),
                Counter(c.by_variant),
                Counter(c.errors),
                c.labels_sent,
                c.labels_matched,
            )

    def latencies(self, phase: str | None = None) -> list[float]:
        with self._lock:
            if phase is not None:
                return list(self.latency_ms.get(phase, []))
            return [x for xs in self.latency_ms.values() for x in xs]

    def scores_of(self, phase: str, variant: str) -> list[float]:
        with self._lock:
            return list(self.scores.get((phase, variant), []))

    # ----- the threads -------------------------------------------------------------------------

    def _take(self, n: int) -> list[tuple[Application, bool]]:
        with self._lock:
            start, self._next = self._next, self._next + n
            pool = self.pool
        out = []
        for k in range(start, start + n):
            i = k % len(pool)
            out.append((Application(f"{self._entity_prefix}-{k:08d}", pool.features[i]), pool.defaulted[i]))
        return out

    def _record(self, results: list[ScoreResult], labels: list[bool], phase: str) -> None:
        now = time.monotonic()
        with self._lock:
            c = self.counts
            c.rows += len(results)
            c.calls += 1
            for r, defaulted in zip(results, labels, strict=True):
                c.by_version[r.version] += 1
                c.by_variant[r.variant.value] += 1
                kept = self.scores.setdefault((phase, r.variant.value), [])
                if len(kept) < MAX_SCORES_KEPT:
                    kept.append(r.score)
                if self._outcomes_token is not None:
                    self._labels.append((now, r.request_id, defaulted))

    def _send(self) -> None:
        with ScoringClient(self.gateway, token=self.token, timeout=30) as client:
            while not self._stop.is_set():
                if not self.sending.is_set():
                    self._stop.wait(0.1)
                    continue
                self._pace(self.batch)
                phase = self.phase
                taken = self._take(self.batch)
                try:
                    results = client.score_batch(self.model, [a for a, _ in taken])
                except ScoringError as exc:
                    with self._lock:
                        self.counts.errors[exc.code.name] += 1
                    self._stop.wait(0.2)  # back off before the next call (rate limit, not a race)
                    continue
                self._record(results, [d for _, d in taken], phase)

    def _pace(self, n: int) -> None:
        """Holds a sender back so that all of them together keep to ``rate`` (a pacer, not a race)."""
        rate = self.rate
        if rate is None or rate <= 0:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._slot, now)
            self._slot = start + n / rate
        if start > now:
            self._stop.wait(start - now)

    def _probe(self) -> None:
        with ScoringClient(self.gateway, token=self.token, timeout=10) as client:
            while not self._stop.wait(self.probe_interval):
                if not self.probing.is_set():
                    self._stop.wait(0.1)
                    continue
                phase = self.phase
                ((app, defaulted),) = self._take(1)
                t0 = time.perf_counter()
                try:
                    result = client.score(self.model, app.entity_id, app.features)
                except ScoringError as exc:
                    with self._lock:
                        self.counts.errors[exc.code.name] += 1
                    continue
                ms = (time.perf_counter() - t0) * 1000
                with self._lock:
                    self.latency_ms.setdefault(phase, []).append(ms)
                self._record([result], [defaulted], phase)

    def _feed_labels(self) -> None:
        with ScoringClient(self.gateway, token=self._outcomes_token, timeout=60) as client:
            while True:
                stopping = self._stop.wait(1.0)
                self._send_due(client, flush=stopping)
                if stopping:
                    return

    def _send_due(self, client: ScoringClient, flush: bool) -> None:
        cutoff = time.monotonic() - (0.0 if flush else self._label_delay)
        due: list[Outcome] = []
        with self._lock:
            while self._labels and self._labels[0][0] <= cutoff:
                _, rid, defaulted = self._labels.popleft()
                due.append(Outcome(rid, defaulted))
        if not due:
            return
        try:
            recorded = client.record_outcomes(due)  # observed now, by the gateway's clock
        except ScoringError as exc:
            with self._lock:
                self.counts.errors[f"outcomes:{exc.code.name}"] += 1
            return
        with self._lock:
            self.counts.labels_sent += recorded.total
            self.counts.labels_matched += recorded.matched


def wait_rows(traffic: Traffic, rows: int, timeout: float) -> int:
    """Blocks until the traffic has scored ``rows`` more applications (or ``timeout`` passes)."""
    start = traffic.snapshot().rows
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = traffic.snapshot().rows - start
        if done >= rows:
            return done
        time.sleep(0.2)  # polling a condition with a deadline
    return traffic.snapshot().rows - start


def share(counter: Mapping[Any, int], key: Any) -> float:
    total = sum(counter.values())
    return counter.get(key, 0) / total if total else 0.0
