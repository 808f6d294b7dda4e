"""Scheduled retraining: one run per model and day, on the matured, labelled records of the days
before (trigger ``schedule:<date>``).

The run of day ``D`` trains on the predictions of the window ``[D - maturity - days, D - maturity)``
(``days``: ``FINPREDICT_MONITOR_RETRAIN_SCHEDULE_WINDOW_DAYS``, 1 by default; ``maturity``:
``FINPREDICT_MONITOR_LABEL_MATURITY_DAYS``) with the outcomes observed by ``D`` 00:00 UTC: the
predictions whose outcome window ended during those days. The window depends only on the date,
so a rerun of a day (``finpredict retrain run --schedule --date D``) trains on the same records.
A window without a matured, labelled record fails the run, with the counts in its reason: a run
is never a silent no-op.

Two callers start the runs, through :meth:`Scheduler.start`: the monitor's own scheduler
(``FINPREDICT_MONITOR_RETRAIN_SCHEDULE``, ``model=HH:MM`` in UTC; off by default) on each move of
its clock (:meth:`Scheduler.due`, so a replay's simulated clock drives it as the wall clock does
in production), and ``ScheduleRetraining`` (``finpredict retrain run --schedule``, what the
cluster's CronJob calls). A day whose run succeeded or is running is answered with that run; a
failed day runs again. While another run of the model is running, a due day waits for it (at
most one run per model at a time). Days the clock skipped (the monitor was down, a replay jumped)
are recorded as failed runs naming the day, so each missing day is visible and can be rerun.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the settings import this module for parse_schedule alone
    from finpredict.monitor.retrain import Job, Retrainer

log = logging.getLogger("finpredict.monitor.schedule")

PREFIX = "schedule:"
MAX_MISSED = 31  # days recorded as missed after a jump of the clock; older ones are only logged


def parse_schedule(text: str) -> dict[str, time]:
    """``model=HH:MM[,model=HH:MM ...]`` as times of day (UTC) by model; a ValueError naming the
    entry that is not of that form."""
    times: dict[str, time] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        model, sep, at = entry.partition("=")
        try:
            if not sep or not model.strip():
                raise ValueError
            hour, minute = (int(x) for x in at.strip().split(":"))
            times[model.strip()] = time(hour, minute)
        except ValueError:
            raise ValueError(f"{entry!r}: expected model=HH:MM (a time of day in UTC)") from None
    return times


def trigger_date(trigger: str) -> date | None:
    """The day of a ``schedule:<date>`` trigger, else None."""
    if not trigger.startswith(PREFIX):
        return None
    try:
        return date.fromisoformat(trigger.removeprefix(PREFIX))
    except ValueError:
        return None


class Scheduler:
    """Starts the scheduled runs of :class:`Retrainer` jobs."""

    def __init__(
        self, retrainer: Retrainer, times: dict[str, time], window: timedelta, maturity: timedelta
    ) -> None:
        self.retrainer = retrainer
        self.times = times
        self.window_length = window
        self.maturity = maturity

    def window(self, day: date) -> tuple[datetime, datetime, datetime]:
        """The run of ``day``: its window's start and end, and its ``as_of`` (``day`` 00:00 UTC)."""
        as_of = datetime.combine(day, time(), UTC)
        end = as_of - self.maturity
        return end - self.window_length, end, as_of

    def _runs(self, model: str, day: date) -> list[Job]:
        trigger = f"{PREFIX}{day.isoformat()}"
        return [j for j in self.retrainer.jobs.values() if j.model == model and j.trigger == trigger]

    def start(self, model: str, day: date) -> tuple[Job, bool]:
        """Starts the run of ``model`` for ``day``, or answers with the day's run that succeeded
        or is running, or with another run of the model that is running (the day's run then
        waits). Returns the job and whether it was started now."""
        done = [j for j in self._runs(model, day) if not j.failed]
        if done:
            return done[-1], False
        running = self.retrainer.running(model)
        if running is not None:
            return running, False
        start, end, as_of = self.window(day)
        reason = f"scheduled run of {day.isoformat()}: window [{start.isoformat()}, {end.isoformat()})"
        return self.retrainer.start(
            model, f"{PREFIX}{day.isoformat()}", reason, at=as_of, window=(start, end)
        )

    def last_day(self, model: str) -> date | None:
        """The latest day with a scheduled run of ``model`` (any outcome)."""
        days = [trigger_date(j.trigger) for j in self.retrainer.jobs.values() if j.model == model]
        return max((d for d in days if d is not None), default=None)

    def due(self, clock: datetime) -> list[Job]:
        """Starts the runs that the monitor's ``clock`` has made due (and records the days it
        skipped); returns the jobs started."""
        started = []
        for model, at in self.times.items():
            today = clock.date() if clock.time() >= at else clock.date() - timedelta(days=1)
            last = self.last_day(model)
            if last is not None and last >= today:
                continue
            if self.retrainer.running(model) is not None:
                continue  # one run per model at a time: the day waits for the running one
            if last is not None:
                self._record_missed(model, last, today, clock)
            job, now = self.start(model, today)
            if now:
                log.info("scheduled retraining started", extra={"job": job.id, "model": model})
                started.append(job)
        return started

    def _record_missed(self, model: str, last: date, today: date, clock: datetime) -> None:
        missed = [last + timedelta(days=n) for n in range(1, (today - last).days)]
        if len(missed) > MAX_MISSED:
            log.warning(
                "scheduled retraining: days skipped by the clock, not recorded",
                extra={
                    "model": model,
                    "from": missed[0].isoformat(),
                    "to": missed[-MAX_MISSED - 1].isoformat(),
                },
            )
        for day in missed[-MAX_MISSED:]:
            self.retrainer.record_failure(
                model,
                f"{PREFIX}{day.isoformat()}",
                f"missed: the monitor's clock moved from {last.isoformat()} to {clock.isoformat()} past this "
                f"day's run (the monitor was down, or a replay jumped); rerun it with `finpredict retrain "
                f"run --model {model} --schedule --date {day.isoformat()}`",
            )
