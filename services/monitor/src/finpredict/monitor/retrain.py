"""The retraining trigger: starts the training pipeline as a background subprocess, once per
incident, and reads the version it registered from its output.

At most one job runs per model: a trigger while one runs (an alert or ``TriggerRetraining``) is
answered with that job. The command (``FINPREDICT_MONITOR_RETRAIN_COMMAND``) runs with
``FINPREDICT_TRIGGER`` set to ``alert:<id>`` (or ``manual:<reason>`` / ``schedule:<date>``), which the
pipeline's register stage writes into the new version's ``lineage.trigger``. The version id is
taken from the register stage's line ``[register] <model> version <n> registered``.

Before the command starts, an optional ``prepare`` step runs (the monitor's: it writes the
production snapshot of the window ending at the trigger's time, so that a run on unchanged code
and params still trains on new data); what it returns fills the command's ``{window_start}``,
``{window_end}`` and ``{snapshot}`` placeholders, and a failure of it fails the job, with the
reason in the job's log.

Each job ends as a registered version or a failure with its reason (``Job.error``: the failed
preparation, the command that could not start, its exit status with the last line it printed, or
a run that registered nothing). Finished jobs are appended to ``<work_dir>/jobs.jsonl`` and read
back at start-up (the latest :data:`MAX_FINISHED_JOBS`), so ``finpredict retrain list`` shows them
across restarts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shlex
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from finpredict.common.fsio import write_atomic
from finpredict.monitor import metrics as m

log = logging.getLogger("finpredict.monitor.retrain")

MAX_FINISHED_JOBS = 100
REGISTERED = re.compile(r"\[register\] (\S+) version (\d+) registered")
MAX_ERROR = 500
JOBS_FILE = "jobs.jsonl"


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


@dataclass
class Job:
    id: str
    model: str
    trigger: str
    log_path: Path
    pid: int = 0
    returncode: int | None = None
    version: int = 0
    at: datetime | None = None  # the (event) time of the trigger: an alert's start, a day's 00:00
    window: tuple[datetime, datetime] | None = None  # the snapshot's window, when the trigger sets it
    error: str = ""  # why it failed
    prepared: dict[str, str] | None = None  # what the prepare step returned (window, rows)
    started_at: datetime | None = None  # wall clock
    finished_at: datetime | None = None

    @property
    def failed(self) -> bool:
        return self.returncode is not None and not self.version

    def to_json(self) -> dict[str, Any]:
        """The finished job as one line of the jobs file."""
        return {
            "id": self.id,
            "model": self.model,
            "trigger": self.trigger,
            "log_path": str(self.log_path),
            "returncode": self.returncode,
            "version": self.version,
            "error": self.error,
            "prepared": self.prepared,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Job:
        return cls(
            id=str(d["id"]),
            model=str(d["model"]),
            trigger=str(d["trigger"]),
            log_path=Path(d["log_path"]),
            returncode=int(d["returncode"]),
            version=int(d["version"]),
            error=str(d.get("error", "")),
            prepared=d.get("prepared"),
            started_at=_time(d.get("started_at")),
            finished_at=_time(d.get("finished_at")),
        )


# A step before the command: returns placeholder values (window_start, window_end, snapshot) and
# what the job shows of its data (rows).
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
        self.jobs: dict[str, Job] = {j.id: j for j in self._load()}
        self._tasks: set[asyncio.Task[None]] = set()

    def _load(self) -> list[Job]:
        """The finished jobs of earlier runs of the monitor (the latest ones); an unreadable line is
        skipped and logged."""
        path = self.work_dir / JOBS_FILE
        try:
            lines = path.read_text().splitlines()
        except FileNotFoundError:
            return []
        jobs = []
        for n, line in enumerate(lines, 1):
            try:
                jobs.append(Job.from_json(json.loads(line)))
            except (ValueError, KeyError, TypeError) as exc:
                log.warning(
                    "skipping an unreadable retraining job record", extra={"line": n, "error": str(exc)}
                )
        if len(lines) > 2 * MAX_FINISHED_JOBS:  # keep the file short
            text = "".join(json.dumps(j.to_json()) + "\n" for j in jobs[-MAX_FINISHED_JOBS:])
            write_atomic(path, text.encode())
        return jobs[-MAX_FINISHED_JOBS:]

    def _finish(self, job: Job, error: str = "", notify: bool = True) -> None:
        """Records the end of ``job`` (in the jobs file) and tells ``on_done`` (``notify``)."""
        job.finished_at = datetime.now(UTC)
        if job.returncode is None:
            job.returncode = -1
        if not job.version:
            job.error = (error or job.error or "the run registered no version")[:MAX_ERROR]
        try:
            self.work_dir.mkdir(parents=True, exist_ok=True)
            with (self.work_dir / JOBS_FILE).open("a") as out:
                out.write(json.dumps(job.to_json()) + "\n")
        except OSError:
            log.exception("recording a finished retraining job failed", extra={"job": job.id})
        m.RETRAINING_FINISHED.labels("failed" if job.failed else "registered").inc()
        if not notify:
            return
        try:
            self.on_done(job)
        except Exception:  # the job is done either way; say why its bookkeeping failed
            log.exception("recording a finished retraining job failed", extra={"job": job.id})

    def _forget_old(self) -> None:
        for done in [j for j in self.jobs.values() if j.returncode is not None][:-MAX_FINISHED_JOBS]:
            del self.jobs[done.id]  # finished jobs are remembered a while, not forever

    def _new_job(self, model: str, trigger: str, at: datetime | None) -> Job:
        job_id = f"retrain-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        return Job(
            job_id, model, trigger, self.work_dir / f"{job_id}.log", at=at, started_at=datetime.now(UTC)
        )

    def record_failure(self, model: str, trigger: str, error: str) -> Job:
        """Records a run of ``model`` that did not start (a scheduled day the clock skipped); it
        was never running, so ``on_done`` is not told."""
        self._forget_old()
        job = self._new_job(model, trigger, None)
        self.jobs[job.id] = job
        self._finish(job, error, notify=False)
        return job

    @property
    def enabled(self) -> bool:
        return bool(self.command.strip())

    def running(self, model: str) -> Job | None:
        """The job running for ``model``, if any."""
        return next((j for j in self.jobs.values() if j.model == model and j.returncode is None), None)

    def start(
        self,
        model: str,
        trigger: str,
        reason: str,
        at: datetime | None = None,
        window: tuple[datetime, datetime] | None = None,
    ) -> tuple[Job, bool]:
        """Starts a job for ``model`` (triggered at event time ``at``; ``window``: the snapshot's,
        when the trigger decides it), or answers with the one running for it: at most one job per
        model at a time. Returns the job and whether it was started now."""
        if not self.enabled:
            raise RuntimeError("retraining is disabled (FINPREDICT_MONITOR_RETRAIN_COMMAND is empty)")
        current = self.running(model)
        if current is not None:
            m.RETRAINING_JOINED.labels(trigger.split(":", 1)[0]).inc()
            log.info(
                "retraining already running", extra={"job": current.id, "model": model, "trigger": trigger}
            )
            return current, False
        self._forget_old()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        job = self._new_job(model, trigger, at)
        job.window = window
        template = shlex.split(self.command)
        values = {"model": model, "alert_id": trigger, "reason": reason, **dict.fromkeys(PLACEHOLDERS, "")}
        for a in template:  # a bad placeholder fails here, at once
            a.format(**values)
        task = asyncio.create_task(self._run(job, template, values))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.jobs[job.id] = job
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
                self._finish(job, f"preparing the run failed: {exc}")
                return
            job.prepared = prepared
            values.update({k: v for k, v in prepared.items() if k in PLACEHOLDERS})
        argv = [a.format(**values) for a in template]
        with job.log_path.open("ab") as out:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *argv, stdout=out, stderr=asyncio.subprocess.STDOUT, env=env, cwd=self.cwd
                )
            except (OSError, ValueError) as exc:  # missing program, argument list too long, NUL
                log.error("retraining could not start", extra={"job": job.id, "error": str(exc)})
                self._finish(job, f"the command could not start: {exc}")
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
        last = next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
        if job.returncode != 0:
            error = f"the command exited with status {job.returncode}: {last}"
        else:
            error = f"the run registered no version: {last}"
        self._finish(job, error)

    async def stop(self) -> None:
        """Leaves running jobs alone (they are independent processes) but stops waiting."""
        for task in list(self._tasks):
            task.cancel()
