"""Alert delivery: Alertmanager (API v2) and the ``WatchAlerts`` subscribers.

A state change is posted at once; firing alerts are re-posted every ``resend_s`` (Alertmanager
drops an alert whose ``endsAt`` passes, so firing alerts carry ``endsAt = now + 4 * resend_s``,
as Prometheus does), never on every evaluation. A resolved alert is posted with ``endsAt`` set.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from finpredict.monitor import metrics as m
from finpredict.monitor.evaluation import AlertRecord

log = logging.getLogger("finpredict.monitor.alerting")

ALERTNAME_PREFIX = "FinpredictModel"


def alertname(rule: str) -> str:
    """``feature_psi_3d`` -> ``FinpredictModelFeaturePsi3d``."""
    return ALERTNAME_PREFIX + "".join(part.capitalize() for part in rule.split("_"))


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def to_alertmanager(alert: AlertRecord, now: datetime, resend_s: float) -> dict[str, Any]:
    labels = {
        "alertname": alertname(alert.rule),
        "rule": alert.rule,
        "severity": alert.severity,
        "service": "monitor",
        "team": "ml",  # production routing: ml-tickets, or PagerDuty when critical
        "model": alert.model,
        "version": str(alert.version),
    }
    if alert.features:
        labels["feature"] = ",".join(alert.features)
    starts = min(alert.started_at, now)
    if alert.firing:
        ends = now + timedelta(seconds=4 * resend_s)
    else:
        ends = max(min(alert.resolved_at or now, now), starts + timedelta(seconds=1))
    return {
        "labels": labels,
        "annotations": {
            "summary": alert.summary,
            "value": f"{alert.value:.6g}",
            "threshold": f"{alert.threshold:.6g}",
            "alert_id": alert.id,
            "event_time": _iso(alert.started_at),
        },
        "startsAt": _iso(starts),
        "endsAt": _iso(ends),
        "generatorURL": f"finpredict://monitor/alerts/{alert.id}",
    }


class AlertmanagerClient:
    """Posts alerts to Alertmanager's ``/api/v2/alerts``; retries on the next resend."""

    def __init__(self, url: str, resend_s: float) -> None:
        self.url = url.rstrip("/") + "/api/v2/alerts"
        self.resend_s = resend_s
        self._queue: asyncio.Queue[list[AlertRecord]] = asyncio.Queue()
        self._last_post: dict[str, datetime] = {}
        self._task: asyncio.Task[None] | None = None
        self._firing: dict[str, AlertRecord] = {}
        self._retry_resolved: dict[str, AlertRecord] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def changed(self, alerts: list[AlertRecord]) -> None:
        """Queues state changes for immediate delivery."""
        for a in alerts:
            if a.firing:
                self._firing[a.id] = a
            else:
                self._firing.pop(a.id, None)
        if alerts:
            self._queue.put_nowait(list(alerts))

    def track(self, alerts: list[AlertRecord]) -> None:
        """Alerts that were firing when the process started (re-posted on the next resend)."""
        for a in alerts:
            if a.firing:
                self._firing[a.id] = a

    async def _post(self, alerts: list[AlertRecord]) -> None:
        now = datetime.now(UTC)
        body = json.dumps([to_alertmanager(a, now, self.resend_s) for a in alerts]).encode()

        def send() -> None:
            req = urllib.request.Request(self.url, data=body, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                resp.read()

        try:
            await asyncio.to_thread(send)
        except (urllib.error.URLError, OSError) as exc:
            m.ALERTMANAGER_POSTS.labels("error").inc()
            log.warning("alertmanager post failed", extra={"error": str(exc), "alerts": len(alerts)})
            for a in alerts:  # resolved ones too: re-sent on the next resend tick
                self._last_post.pop(a.id, None)
                if not a.firing:
                    self._retry_resolved[a.id] = a
            return
        m.ALERTMANAGER_POSTS.labels("ok").inc()
        for a in alerts:
            self._last_post[a.id] = now
            self._retry_resolved.pop(a.id, None)

    async def _run(self) -> None:
        while True:
            try:
                batch = await asyncio.wait_for(self._queue.get(), timeout=self.resend_s)
            except TimeoutError:
                batch = []
            if batch:
                await self._post(batch)
            now = datetime.now(UTC)
            due = [
                a
                for a in self._firing.values()
                if (now - self._last_post.get(a.id, datetime.min.replace(tzinfo=UTC))).total_seconds()
                >= self.resend_s
            ]
            due += list(self._retry_resolved.values())
            if due:
                await self._post(due)


class Subscriber:
    """One ``WatchAlerts`` stream: a bounded queue of alert changes; ``overflowed`` once it fell
    further behind than the queue holds (it is then dropped and told why)."""

    def __init__(self, size: int) -> None:
        self.queue: asyncio.Queue[AlertRecord | None] = asyncio.Queue(maxsize=size + 1)  # + the end mark
        self.size = size
        self.overflowed = False

    def offer(self, alert: AlertRecord) -> bool:
        """Queues ``alert``; False (and the subscriber ended) when the queue is full."""
        if self.queue.qsize() >= self.size:
            self.overflowed = True
            self.end()
            return False
        self.queue.put_nowait(alert)
        return True

    def end(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class Watchers:
    """Fans alert changes out to ``WatchAlerts`` streams, each with a queue of ``queue_size``."""

    def __init__(self, queue_size: int = 1000) -> None:
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self.queue_size)
        self._subscribers.add(sub)
        m.WATCHERS.set(len(self._subscribers))
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)
        m.WATCHERS.set(len(self._subscribers))

    def publish(self, alerts: list[AlertRecord]) -> None:
        for sub in list(self._subscribers):
            for a in alerts:
                if not sub.offer(a):
                    m.WATCHERS_DROPPED.inc()
                    log.warning("WatchAlerts subscriber dropped: too far behind", extra={"queue": sub.size})
                    self.unsubscribe(sub)
                    break

    def close(self) -> None:
        for sub in self._subscribers:
            sub.end()
