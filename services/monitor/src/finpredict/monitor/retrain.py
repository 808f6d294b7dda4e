"""The retraining trigger: starts the training pipeline as a background subprocess, once per
incident, and reads the version it registered from its output.

At most one job runs per model: a trigger while one runs (an alert or ``TriggerRetraining``) is
answered with that job. The command (``FINPREDICT_MONITOR_RETRAIN_COMMAND``) runs with
``FINPREDICT_TRIGGER`` set to ``alert:<id>`` (or ``manual:<reason>`` / ``schedule``), which the
pipeline's register stage writes into the new version's ``lineage.trigger``. The version id is
taken from the register stage's line ``[register] <model> version <n> registered``.

Before the command starts, an optional ``prepare`` step runs (the monitor's: it writes the
production snapshot of the window ending at the trigger's time, so that a run on unchanged code
and params still trains on new data); what it returns fills the command's ``{window_start}``,
``{window_end}`` and ``{snapshot}`` placeholders, and a failure of it fails the job, with the
reason in the job's log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from finpredict.monitor import metrics as m

log = logging.getLogger("finpredict.monitor.retrain")

MAX_FINISHED_JOBS = 100
REGISTERED = re.compile(r"\[register\] (\S+) version (\d+) registered")


@dataclass
class Job:
    id: str
    model: str
    trigger: str
    log_path: Path
    pid: int = 0
    returncode: int | None = None
    version: int = 0
    at: datetime | None = None  # the (event) time of the trigger: an alert's start


# A step before the command: returns placeholder values (window_start, window_end, snapshot).
Prepare = Callable[[Job], Awaitable[dict[str, str]]]
PLACEHOLDERS = ("window_start", "window_end", "snapshot")


class Retrainer:
    """Starts retraining runs; ``on_done(job)`` is called when one finishes."""

    def __init__(
        self,
        command: str,
        work_dir: Path,
        on_done: Callable[[Job], None],
        cwd: Path | None = None,
        prepare: Prepare | None = None,
    ) -> None:
        self.command = command
        self.work_dir = work_dir
        self.cwd = cwd
        self.on_done = on_done
        self.prepare = prepare
        self.jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def enabled(self) -> bool:
        return bool(self.command.strip())

    def running(self, model: str) -> Job | None:
        """The job running for ``model``, if any."""
        return next((j for j in self.jobs.values() if j.model == model and j.returncode is None), None)

    def start(self, model: str, trigger: str, reason: str, at: datetime | None = None) -> tuple[Job, bool]:
        """Starts a job for ``model`` (triggered at event time ``at``), or answers with the one
        running for it: at most one job per model at a time. Returns the job and whether it was
        started now."""
        if not self.enabled:
            raise RuntimeError("retraining is disabled (FINPREDICT_MONITOR_RETRAIN_COMMAND is empty)")
        current = self.running(model)
        if current is not None:
            m.RETRAINING_JOINED.labels(trigger.split(":", 1)[0]).inc()
            log.info(
                "retraining already running", extra={"job": current.id, "model": model, "trigger": trigger}
            )
            return current, False
        for done in [j for j in self.jobs.values() if j.returncode is not None][:-MAX_FINISHED_JOBS]:
            del self.jobs[done.id]  # finished jobs are remembered a while, not forever
        job_id = f"retrain-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        job = Job(job_id, model, trigger, self.work_dir / f"{job_id}.log", at=at)
        template = shlex.split(self.command)
        values = {"model": model, "alert_id": trigger, "reason": reason, **dict.fromkeys(PLACEHOLDERS, "")}
        for a in template:  # a bad placeholder fails here, at once
            a.format(**values)
        task = asyncio.create_task(self._run(job, template, values))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.jobs[job_id] = job
        m.RETRAINING_RUNS.labels(trigger.split(":", 1)[0]).inc()
        return job, True

    async def _run(self, job: Job, template: list[str], values: dict[str, str]) -> None:
        env = {**os.environ, "FINPREDICT_TRIGGER": job.trigger, "FINPREDICT_RETRAIN_MODEL": job.model}
        if self.prepare is not None:
            try:
                prepared = await self.prepare(job)
            except Exception as exc:  # the job fails with the reason; the monitor goes on
                log.exception("preparing the retraining run failed", extra={"job": job.id})
                job.log_path.write_text(f"[retrain] preparing the run failed: {exc}\n")
                job.returncode = -1
                self.on_done(job)
                return
            values.update({k: v for k, v in prepared.items() if k in PLACEHOLDERS})
        argv = [a.format(**values) for a in template]
        with job.log_path.open("ab") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=self.cwd
                )
            except (OSError, ValueError) as exc:  # missing program, argument list too long, NUL
                log.error("retraining could not start", extra={"job": job.id, "error": str(exc)})
                job.returncode = -1
                self.on_done(job)
                return
            job.pid = proc.pid
            log.info("retraining started", extra={"job": job.id, "pid": proc.pid, "trigger": job.trigger})
            job.returncode = await proc.wait()
        text = job.log_path.read_text(errors="replace")
        found = REGISTERED.findall(text)
        if job.returncode == 0 and found:
            job.version = int(found[-1][1])
        log.info(
            "retraining finished",
            extra={"job": job.id, "returncode": job.returncode, "version": job.version},
        )
        try:
            self.on_done(job)
        except Exception:  # the job is done either way; say why its bookkeeping failed
            log.exception("recording a finished retraining job failed", extra={"job": job.id})

    async def stop(self) -> None:
        """Leaves running jobs alone (they are independent processes) but stops waiting."""
        for task in list(self._tasks):
            task.cancel()
