"""The main job's story, step by step: one code path for ``task demo`` and its end-to-end test.

:func:`run_story` walks the platform through a model's life with a narrative on a rich console:

1. start the stack on embedded defaults (registry on SQLite, local artifact store and DVC
   remote, a local Ray with the model server, gateway, monitor, Prometheus and Alertmanager);
2. train v1 through the DVC pipeline (W&B offline), check its gates, promote it to production;
3. score generated applications through the gateway with the client SDK while their outcomes
   reach the monitor later (delayed labels), then time single applications one at a time;
4. train v2 on the next month of data, and a candidate whose feed sent a ratio in percent;
5. roll v2 out 1 -> 5 -> 25 -> 100 % through the gateway's RolloutService while traffic flows,
   to promotion (production = v2, moved by the rollout controller);
6. roll out the broken candidate and watch the controller roll it back on its score drift;
7. replay a recession through the monitor: the drift alerts fire (feature PSI on 3 consecutive
   daily windows), the retraining trigger trains a new version (its lineage names the alert),
   which enters a canary;
8. summarise (versions, gates, rollouts, alerts, measured times) and write the HTML report.

The roles of the versions are ``v1``, ``v2``, ``broken`` and ``v3`` (the retrained one); their
registry numbers are whatever the registry allocates (1, 2, 3, 4 on a fresh platform).

Everything it measured is in the returned :class:`StoryResult`; :class:`StoryConfig` sizes the
story (the end-to-end test runs a shortened one on an isolated stack).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import demo_report as dr
import grpc
import numpy as np
import polars as pl
from demo_pipeline import TrainingRun, Workspace
from demo_traffic import Pool, Traffic, make_pool
from google.protobuf import duration_pb2
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from stack import Stack

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2, monitor_pb2_grpc
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.api.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from finpredict.api.serving.v1 import model_server_pb2, model_server_pb2_grpc
from finpredict.client.types import feature_values

ROOT = Path(__file__).resolve().parent.parent
MODEL = "credit-default"
STAGES = ["ingest", "validate", "features", "train", "evaluate", "profile", "register"]
STAGE_LINE = re.compile(r"(?:Running stage|Stage) '([^']+)'")
RETRAIN_END = re.compile(r"\[demo\] dvc repro exited (-?\d+)")  # demo_pipeline.py's last line
DAY = timedelta(days=1)
BROKEN_FEATURE = "debt_service_coverage"  # the broken candidate's training feed sends it in percent
ROLLOUT_STATE = {
    rollout_pb2.ROLLOUT_STATE_PROGRESSING: "progressing",
    rollout_pb2.ROLLOUT_STATE_PAUSED: "paused",
    rollout_pb2.ROLLOUT_STATE_PROMOTED: "promoted",
    rollout_pb2.ROLLOUT_STATE_ROLLED_BACK: "rolled back",
    rollout_pb2.ROLLOUT_STATE_ABORTED: "aborted",
}
ENDED = (
    rollout_pb2.ROLLOUT_STATE_PROMOTED,
    rollout_pb2.ROLLOUT_STATE_ROLLED_BACK,
    rollout_pb2.ROLLOUT_STATE_ABORTED,
)
VERDICT_STYLE = {"advance": "green", "promoted": "bold green", "rollback": "bold red", "wait": "yellow"}


# ---------------------------------------------------------------------------------------------
# Configuration and results
# ---------------------------------------------------------------------------------------------


@dataclass
class StoryConfig:
    """How big the story is and where it runs."""

    stack: Stack
    work_dir: Path  # the demo's own files: training workspaces, W&B runs, report data
    report_path: Path
    console: Console = field(default_factory=Console)
    keep: bool = True  # leave the stack running at the end
    fresh_platform: bool = True  # wipe the stack's data dir first (a new registry, gateway, monitor)
    dvc_cache: Path | None = ROOT / ".dvc" / "cache"  # shared: a version trained before is not retrained
    dvc_remote: Path | None = ROOT / ".dvc-remote"
    wandb_mode: str = "offline"
    v1_params: dict[str, object] = field(default_factory=dict)  # params.yaml as it is
    next_params: dict[str, object] = field(default_factory=lambda: {"data.rows": 20_000})
    pool_rows: int = 20_000
    traffic_batch: int = 200
    senders: int = 2
    v1_min_rows: int = 4_000  # applications scored by v1 before v2 rolls out
    latency_calls: int = 300  # single applications scored one at a time, timed by the client
    steps: tuple[float, ...] = (1.0, 5.0, 25.0, 100.0)
    analysis_interval_s: float = 2.0
    min_requests_per_step: int = 200
    # The seed's SLO is p99 <= 50 ms per application; the canary analysis here times 200-application
    # batches pushed as fast as 2 shared cores go, with the platform, the client and the monitor on
    # the same cores, so the demo loosens the rollout's latency limits (and says so).
    max_p99_latency_ms: float = 1000.0
    max_p99_latency_ratio: float = 4.0
    rollout_timeout_s: float = 300.0
    replay_first_day: int = 9
    replay_days: int = 13
    replay_shift_day: int = 10
    replay_per_hour: int = 200
    retrain_timeout_s: float = 900.0
    v3_canary_rows: int = 6_000
    label_delay_s: float = 3.0
    latency_gate_retries: int = 1  # re-measure when the latency gate alone fails (a busy machine)
    probe_interval_s: float = 0.02  # the single calls timed by the client: 50 a second
    serve_rate: float = 400.0  # applications per second while v1 serves (the rollouts go faster)


@dataclass
class StoryResult:
    """What happened, for the summary, the report and the end-to-end test's assertions."""

    targets: dict[str, str] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)  # role (v1, v2, broken, v3) -> version
    trainings: dict[str, TrainingRun] = field(default_factory=dict)
    rollouts: dict[str, rollout_pb2.Rollout] = field(default_factory=dict)  # role -> final state
    production: dict[str, int] = field(default_factory=dict)  # after which step -> version
    promotion_actor: str = ""
    replay_start: datetime | None = None
    shift_time: datetime | None = None
    alerts: list[monitor_pb2.Alert] = field(default_factory=list)  # firing alerts of the replay
    alertmanager_alerts: int = -1
    v3_trigger: str = ""
    retrain_alert_id: str = ""
    drift: dict[int, dict[str, float]] = field(default_factory=dict)
    commit_to_production_s: float | None = None
    time_to_detect_h: float | None = None
    psi_time_to_detect_h: float | None = None
    time_to_rollback_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    step_seconds: dict[str, float] = field(default_factory=dict)
    summary: list[tuple[str, str, str]] = field(default_factory=list)
    report_path: Path | None = None
    total_s: float = 0.0


# ---------------------------------------------------------------------------------------------
# The platform's APIs
# ---------------------------------------------------------------------------------------------


class Platform:
    """Channels and stubs to the running stack, with the tokens each caller uses."""

    def __init__(self, stack: Stack) -> None:
        t = stack.targets()
        serve = stack.serve_target()
        if serve is None:
            raise RuntimeError("the model server has no Serve gRPC port in its ready file")
        self.targets = {**t, "serve": serve}
        tokens = stack.secrets()
        self.admin_token = tokens["FINPREDICT_TOKEN"]
        self.client_token = tokens["FINPREDICT_CLIENT_TOKEN"]
        self.writer_token = tokens["FINPREDICT_REGISTRY_TOKEN"]
        self.admin: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {self.admin_token}"),)
        self._channels = [grpc.insecure_channel(self.targets[s]) for s in ("registry", "gateway", "monitor")]
        self._channels.append(grpc.insecure_channel(serve))
        reg, gw, mon, srv = self._channels
        self.registry = registry_pb2_grpc.RegistryServiceStub(reg)
        self.rollouts = rollout_pb2_grpc.RolloutServiceStub(gw)
        self.monitor = monitor_pb2_grpc.MonitorServiceStub(mon)
        self.serve = model_server_pb2_grpc.ModelServerServiceStub(srv)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()

    def version(self, version: int) -> registry_pb2.ModelVersion:
        return self.registry.GetVersion(
            registry_pb2.GetVersionRequest(model=MODEL, version=version), metadata=self.admin, timeout=30
        ).version

    def production(self) -> int:
        got = self.registry.GetModel(
            registry_pb2.GetModelRequest(name=MODEL), metadata=self.admin, timeout=30
        )
        return int(got.model.aliases.get("production", 0))

    def predict(self, version: int, rows: Sequence[model_server_pb2.FeatureRow]) -> list[float]:
        """Scores ``rows`` with ``version`` on the model server's Serve ingress (no gateway)."""
        md = (("application", "model-server"), ("multiplexed_model_id", f"{MODEL}:{version}"))
        request = model_server_pb2.PredictRequest(
            model=types_pb2.ModelRef(name=MODEL, version=version), rows=rows
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                resp = self.serve.Predict(request, metadata=md, timeout=max(deadline - time.monotonic(), 1))
            except grpc.RpcError as exc:
                # UNAVAILABLE is worth another try (as the gateway's backend does), e.g. a replica
                # whose registry connection was just reset; anything else is an answer.
                if exc.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline - 5:
                    raise
                time.sleep(1.0)  # back-off before the retry
                continue
            return [p.score for p in resp.predictions]


# ---------------------------------------------------------------------------------------------
# The story
# ---------------------------------------------------------------------------------------------


class Story:
    def __init__(self, cfg: StoryConfig) -> None:
        self.cfg = cfg
        self.con = cfg.console
        self.result = StoryResult()
        self.platform: Platform | None = None
        self.traffic: Traffic | None = None  # the traffic of the current phase
        self.traffics: list[Traffic] = []  # every traffic of the run (latencies, scores)
        self.pools: dict[str, Pool] = {}
        self.workspaces: dict[str, Workspace] = {}
        self.started = time.perf_counter()
        self.v2_train_started = 0.0

    # ----- helpers -----------------------------------------------------------------------------

    @property
    def p(self) -> Platform:
        assert self.platform is not None, "the stack is not started"
        return self.platform

    def say(self, text: str) -> None:
        self.con.print(f"  {text}", highlight=False)

    def add(self, step: str, outcome: str, measured: str = "") -> None:
        self.result.summary.append((step, outcome, measured))

    @contextmanager
    def step(self, number: int, title: str) -> Iterator[None]:
        self.con.rule(f"[bold]{number}. {title}")
        t0 = time.perf_counter()
        yield
        seconds = time.perf_counter() - t0
        self.result.step_seconds[title] = seconds
        self.con.print(f"  [dim]({seconds:.0f} s)[/dim]")

    def training_env(self, trigger: str) -> dict[str, str]:
        wandb = self.cfg.work_dir / "wandb"
        return {
            "FINPREDICT_REGISTRY_TARGET": self.p.targets["registry"],
            "FINPREDICT_REGISTRY_TOKEN": self.p.writer_token,
            "FINPREDICT_TRIGGER": trigger,
            "WANDB_MODE": self.cfg.wandb_mode,
            "WANDB_DIR": str(wandb),
            "WANDB_DATA_DIR": str(wandb / "data"),
            "WANDB_CACHE_DIR": str(wandb / "cache"),
            "WANDB_CONFIG_DIR": str(wandb / "config"),
        }

    def write_profile(self, version: int) -> None:
        """The monitor compares a version's live windows with its reference profile."""
        mv = self.p.version(version)
        path = self.cfg.stack.data / "monitor" / "profiles" / MODEL / f"{version}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(mv.reference_profile)

    def warm_up(self, version: int, pool: Pool) -> float:
        """Loads ``version`` on the model server before it takes traffic (its first call loads it
        from the registry); returns the seconds the first call took."""
        rows = [model_server_pb2.FeatureRow(features=feature_values(f)) for f in pool.features[:8]]
        t0 = time.perf_counter()
        self.p.predict(version, rows)
        return time.perf_counter() - t0

    def train(
        self,
        role: str,
        ws: Workspace,
        params: Mapping[str, object],
        trigger: str,
        progress: Progress,
    ) -> TrainingRun:
        """One ``dvc repro`` in ``ws`` with ``params``; the progress bar follows the stages."""
        if params:
            ws.set_params(params)
        task = progress.add_task(f"train {role}", total=len(STAGES), stage="starting")
        done: list[str] = []

        def on_line(line: str) -> None:
            m = STAGE_LINE.search(line)
            if m and m.group(1) not in done:
                done.append(m.group(1))
                progress.update(task, completed=len(done), stage=f"{len(done)}/{len(STAGES)} {m.group(1)}")

        run = ws.repro(self.training_env(trigger), on_line=on_line)
        for _ in range(self.cfg.latency_gate_retries):
            failed = [g for g in run.gates if not g.get("passed", True)]
            if run.ok or [g["name"] for g in failed] != ["latency_p99_ms"]:
                break
            # Only the latency gate failed: a p99 of single-row predictions measured while other
            # work shares the cores. Measure again (the earlier stages are cached); a real
            # regression fails again.
            progress.console.print(
                f"  [yellow]{role}: the latency gate measured p99 {failed[0]['value']:.0f} ms on this busy "
                "machine; measuring again[/]"
            )
            seconds = run.seconds
            run = ws.repro(self.training_env(trigger), on_line=on_line)
            run.seconds += seconds
        progress.update(
            task,
            completed=len(STAGES),
            stage=f"v{run.version} registered" if run.ok else f"FAILED (exit {run.rc})",
        )
        self.result.trainings[role] = run
        if not run.ok:
            raise RuntimeError(f"training {role} failed (dvc repro exit {run.rc}):\n{run.tail()}")
        self.result.versions[role] = run.version
        return run

    def training_progress(self) -> Progress:
        return Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<12}"),
            BarColumn(bar_width=24),
            TextColumn("[cyan]{task.fields[stage]}"),
            TimeElapsedColumn(),
            console=self.con,
        )

    def gate_table(self, version: int, title: str) -> Table:
        mv = self.p.version(version)
        table = Table("gate", "value", "rule", "passed", title=title, title_justify="left")
        for g in mv.gate_results:
            rule = (
                ">= " if g.comparator == types_pb2.COMPARATOR_GREATER_OR_EQUAL else "<= "
            ) + f"{g.threshold:g}"
            table.add_row(g.name, f"{g.value:.4f}", rule, "[green]yes" if g.passed else "[red]NO")
        return table

    def start_traffic(self, pool: Pool, phase: str, entity_prefix: str) -> Traffic:
        cfg = self.cfg
        traffic = Traffic(
            self.p.targets["gateway"],
            self.p.client_token,
            MODEL,
            pool,
            monitor=self.p.targets["monitor"],
            monitor_metadata=self.p.admin,
            batch=cfg.traffic_batch,
            senders=cfg.senders,
            label_delay_s=cfg.label_delay_s,
            probe_interval_s=cfg.probe_interval_s,
            phase=phase,
            entity_prefix=entity_prefix,
        )
        self.traffic = traffic.__enter__()
        self.traffics.append(traffic)
        return traffic

    def start_rollout(self, version: int, **thresholds: float) -> rollout_pb2.Rollout:
        cfg = self.cfg
        request = rollout_pb2.StartRolloutRequest(
            model=MODEL,
            candidate_version=version,
            steps=list(cfg.steps),
            analysis_interval=duration_pb2.Duration(
                seconds=int(cfg.analysis_interval_s), nanos=int(cfg.analysis_interval_s % 1 * 1e9)
            ),
            min_requests_per_step=cfg.min_requests_per_step,
            thresholds=rollout_pb2.AnalysisThresholds(
                max_p99_latency_ms=cfg.max_p99_latency_ms,
                max_p99_latency_ratio=cfg.max_p99_latency_ratio,
                **thresholds,
            ),
        )
        return self.p.rollouts.StartRollout(request, metadata=self.p.admin, timeout=30).rollout

    def get_rollout(self, rollout_id: str) -> rollout_pb2.Rollout:
        return self.p.rollouts.GetRollout(
            rollout_pb2.GetRolloutRequest(rollout_id=rollout_id), metadata=self.p.admin, timeout=30
        ).rollout

    def watch_rollout(
        self, rollout: rollout_pb2.Rollout, until: Callable[[rollout_pb2.Rollout], bool], timeout: float
    ) -> rollout_pb2.Rollout:
        """Shows the rollout live (step, weight, both variants' metrics, decisions) until ``until``."""
        t0 = time.monotonic()
        last = rollout
        with Live(self.render_rollout(last), console=self.con, refresh_per_second=4) as live:
            while not until(last):
                if time.monotonic() - t0 > timeout:
                    live.update(self.render_rollout(last))
                    raise TimeoutError(f"rollout {last.id} did not finish within {timeout:.0f} s")
                time.sleep(0.5)  # polling the rollout's state with a deadline
                last = self.get_rollout(rollout.id)
                live.update(self.render_rollout(last))
        self.con.line()
        return last

    def render_rollout(self, r: rollout_pb2.Rollout) -> RenderableType:
        started = r.started_at.ToDatetime(tzinfo=UTC)
        end = r.ended_at.ToDatetime(tzinfo=UTC) if r.state in ENDED else datetime.now(UTC)
        steps = " -> ".join(
            f"[bold reverse]{s:g}%[/]" if i == r.step_index and r.state not in ENDED else f"{s:g}%"
            for i, s in enumerate(r.steps)
        )
        state = ROLLOUT_STATE.get(r.state, "?")
        colour = {"promoted": "green", "rolled back": "red", "aborted": "red"}.get(state, "yellow")
        head = Text.from_markup(
            f"  rollout {r.id}: {MODEL} v{r.stable_version} -> v{r.candidate_version}   "
            f"[{colour}]{state}[/]   steps {steps}   canary weight [bold]{r.weight:g}%[/]   "
            f"t = {(end - started).total_seconds():.1f} s"
        )
        metrics = Table(
            "variant", "version", "requests", "errors", "p50 ms", "p99 ms", "mean score", box=None
        )
        for m in r.metrics:
            metrics.add_row(
                m.variant,
                f"v{m.version}",
                f"{m.requests:,}",
                f"{m.error_rate:.2%}",
                f"{m.p50_latency_ms:.1f}",
                f"{m.p99_latency_ms:.1f}",
                f"{m.mean_score:.4f}",
            )
        decisions = Table("t", "step", "verdict", "reason", box=None)
        for d in list(r.decisions)[-8:]:
            t = (d.time.ToDatetime(tzinfo=UTC) - started).total_seconds()
            style = VERDICT_STYLE.get(d.verdict, "")
            decisions.add_row(
                f"+{t:.1f} s", f"{r.steps[min(d.step_index, len(r.steps) - 1)]:g}%",
                f"[{style}]{d.verdict}[/]" if style else d.verdict, d.reason,
            )  # fmt: skip
        # The metrics are those of the current analysis window: gone once the rollout has ended.
        parts: list[RenderableType] = [head, decisions] if r.state in ENDED else [head, metrics, decisions]
        if self.traffic is not None:
            c = self.traffic.snapshot()
            mix = ", ".join(f"v{v} {n / max(c.rows, 1):.0%}" for v, n in sorted(c.by_version.items()))
            parts.append(
                Text(
                    f"  traffic: {c.rows:,} applications scored so far ({mix}); labels sent {c.labels_sent:,}"
                )
            )
        return Group(*parts)

    # ----- 1. the stack ------------------------------------------------------------------------

    def start_stack(self) -> None:
        cfg, st = self.cfg, self.cfg.stack
        running = [name for name in st.targets()]
        if running:
            self.say(f"stopping the stack already running from {st.run_dir} ({', '.join(running)})")
            st.down()
        if cfg.fresh_platform:
            shutil.rmtree(st.data, ignore_errors=True)
            self.say(f"a fresh platform: registry, gateway and monitor data in {st.data}")
        (cfg.work_dir / "wandb").mkdir(parents=True, exist_ok=True)
        # Training workspaces: clones of this repository (the lineage records its commit).
        for role in ("main", "broken"):
            self.workspaces[role] = Workspace.create(
                cfg.work_dir / f"pipeline-{role}", dvc_cache=cfg.dvc_cache, dvc_remote=cfg.dvc_remote
            )
        retrain = self.workspaces["main"].retrain_command(
            {**cfg.next_params, "data.scenario": "recession", "data.seed": 44}
        )
        wandb = cfg.work_dir / "wandb"
        monitor_env = {
            "FINPREDICT_MONITOR_RETRAIN_COMMAND": retrain,
            "FINPREDICT_MONITOR_RETRAIN_WORKDIR": str(self.workspaces["main"].path),
            "WANDB_MODE": cfg.wandb_mode,
            "WANDB_DIR": str(wandb),
            "WANDB_DATA_DIR": str(wandb / "data"),
            "WANDB_CACHE_DIR": str(wandb / "cache"),
            "WANDB_CONFIG_DIR": str(wandb / "config"),
        }
        self.say("starting: the model server starts a local Ray and deploys its Serve app (about a minute)")
        with self.con.status("starting the services ..."):
            st.up(env={"monitor": monitor_env})
        self.platform = Platform(st)
        self.result.targets = dict(self.p.targets)
        table = Table("component", "address", "what", title="the platform on loopback", title_justify="left")
        what = {
            "registry": "versions, aliases, lineage, gates, audit (SQLite, local artifact store)",
            "model-server": "control port; Serve gRPC ingress below",
            "serve": "Ray Serve gRPC ingress: multiplexed XGBoost models",
            "monitor": "prediction/outcome logs, drift, alerts, retraining trigger",
            "gateway": "scoring API, canary rollouts, Open Inference Protocol",
            "alertmanager": "alert routing (monitor + Prometheus rules)",
            "prometheus": "metrics of every service, SLO rules -> Prometheus UI",
        }
        for name, target in self.p.targets.items():
            table.add_row(name, target, what.get(name, ""))
        self.con.print(table)
        if "prometheus" not in self.p.targets:
            self.say(
                "[yellow]Prometheus/Alertmanager are not installed here (`task setup`); going on without"
            )
        self.add("start the stack", f"{len(self.p.targets)} components healthy on loopback")

    # ----- 2. v1 -------------------------------------------------------------------------------

    def train_v1(self) -> None:
        try:
            self.p.registry.CreateModel(
                registry_pb2.CreateModelRequest(name=MODEL, description="SME credit default (probability)"),
                metadata=self.p.admin,
                timeout=30,
            )
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
                raise
        self.say(
            "dvc repro in a clone of this repository (W&B offline); a version trained before is "
            "checked out of the DVC cache instead of retrained"
        )
        with self.training_progress() as progress:
            run = self.train("v1", self.workspaces["main"], self.cfg.v1_params, "manual", progress)
        v1 = run.version
        self.con.print(self.gate_table(v1, f"{MODEL} v{v1}: quality gates"))
        lineage = self.p.registry.GetLineage(
            registry_pb2.GetLineageRequest(model=MODEL, version=v1), metadata=self.p.admin, timeout=30
        ).lineage
        data = ", ".join(f"{k} md5 {v[:10]}" for k, v in sorted(lineage.data_md5.items())[:2])
        self.say(
            f"lineage: git {lineage.git_commit[:12]}, {data}, "
            f"dvc.lock sha256 {lineage.dvc_lock_sha256[:12]}, "
            f"W&B run {lineage.wandb_run_path or '-'} ({lineage.wandb_link_status or 'offline'})"
        )
        current = self.p.production()
        self.p.registry.SetAlias(
            registry_pb2.SetAliasRequest(
                model=MODEL,
                alias="production",
                version=v1,
                expected_version=current,
                reason="demo: v1, every gate passed",
            ),
            metadata=self.p.admin,
            timeout=30,
        )
        self.write_profile(v1)
        self.result.production["v1"] = self.p.production()
        self.say(f"production -> v{v1} (compare-and-set against v{current}, written to the audit log)")
        self.add(
            "train v1 (DVC, W&B offline) and promote",
            f"v{v1} gates passed, production -> v{v1}",
            f"{run.seconds:.0f} s ({', '.join(run.stages) or 'all from the DVC cache'})",
        )

    # ----- 3. traffic + next trainings ---------------------------------------------------------

    def serve_v1(self) -> None:
        cfg = self.cfg
        v1 = self.result.versions["v1"]
        with self.con.status("generating applications (the pipeline's data-generating process) ..."):
            self.pools["none"] = make_pool(cfg.pool_rows, seed=101)
            self.pools["recession"] = make_pool(cfg.pool_rows, seed=102, scenario="recession")
        self.warm_up(v1, self.pools["none"])
        self.say(
            f"a lending app scores applications through the gateway ({self.p.targets['gateway']}) with "
            f"the client SDK, about {cfg.serve_rate:,.0f} applications/s in batches of {cfg.traffic_batch} "
            "plus single calls timed by the client; "
            f"each outcome reaches the monitor {cfg.label_delay_s:g} s later (RecordOutcomes by request "
            "id: in lending, months later)"
        )
        traffic = self.start_traffic(self.pools["none"], "v1 serving", "biz")
        traffic.rate = cfg.serve_rate
        t0 = time.perf_counter()
        deadline = time.monotonic() + cfg.rollout_timeout_s
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<12}"),
            BarColumn(bar_width=24),
            TextColumn("[cyan]{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.con,
        ) as progress:
            task = progress.add_task("traffic", total=cfg.v1_min_rows, note="")
            while (c := traffic.snapshot()).rows < cfg.v1_min_rows and time.monotonic() < deadline:
                progress.update(
                    task,
                    completed=min(c.rows, cfg.v1_min_rows),
                    note=f"{c.rows:,} scored by v{v1} ({c.rows / (time.perf_counter() - t0):,.0f}/s), "
                    f"{c.labels_matched:,} outcomes matched",
                )
                time.sleep(0.3)  # refreshing the display, with a deadline
            progress.update(task, completed=cfg.v1_min_rows)
            bulk = traffic.snapshot().rows, time.perf_counter() - t0
            # Then single applications one at a time, nothing else in flight: the latency a
            # lending app sees for one decision.
            traffic.sending.clear()
            traffic.phase, traffic.probe_interval = "single calls", 0.0
            single = progress.add_task("single calls", total=cfg.latency_calls, note="")
            while (n := len(traffic.latencies("single calls"))) < cfg.latency_calls:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {n} single calls answered in {cfg.rollout_timeout_s:.0f} s")
                progress.update(single, completed=n, note="one at a time, timed by the client")
                time.sleep(0.3)  # refreshing the display, with a deadline
            progress.update(single, completed=cfg.latency_calls)
            traffic.pause()
            traffic.probe_interval = cfg.probe_interval_s
            traffic.phase = "v1 serving"
            traffic.flush_labels()
        c = traffic.snapshot()
        if c.rows < cfg.v1_min_rows:
            raise TimeoutError(
                f"only {c.rows} applications scored in {cfg.rollout_timeout_s:.0f} s: {c.errors}"
            )
        lat = traffic.latencies("single calls")
        p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
        stats = self.live_window(v1)
        quality = (
            f": accuracy {stats.accuracy:.3f}, AUC {stats.auc:.3f} on {stats.labeled:,} labels"
            if stats
            else ""
        )
        self.say(
            f"v{v1} scored {bulk[0]:,} applications at {bulk[0] / bulk[1]:,.0f}/s, then {len(lat)} one at a "
            f"time: p50 {p50:.1f} ms, p99 {p99:.1f} ms (errors: {dict(c.errors) or 'none'}); the monitor "
            f"matched {c.labels_matched:,} outcomes{quality}"
        )
        self.add(
            "serve v1 through the gateway (SDK), delayed labels",
            f"{c.rows:,} applications, {c.labels_matched:,} outcomes matched",
            f"one at a time: p50 {p50:.1f} ms, p99 {p99:.1f} ms",
        )

    def train_next(self) -> None:
        cfg = self.cfg
        self.say(
            "the next month's applications arrive: v2 trains on them; so does a candidate trained on a "
            "snapshot whose upstream feed silently switched the debt service coverage ratio to percent "
            "(125 for 1.25; the schema's range was widened so that it validates)"
        )
        self.v2_train_started = time.time()
        with self.training_progress() as progress:
            self.train(
                "v2", self.workspaces["main"], {**cfg.next_params, "data.seed": 43}, "manual", progress
            )
            self.train("broken", self.workspaces["broken"], self.broken_snapshot(), "manual", progress)
        for role, what in (("v2", "the next month's model"), ("broken", "a candidate, DSCR in percent")):
            run = self.result.trainings[role]
            gates = ", ".join(f"{g['name']}={g['value']:.3f}" for g in run.gates)
            self.add(f"train {what}", f"v{run.version} registered, gates passed", f"{run.seconds:.0f} s")
            cached = [st for st in STAGES if st not in run.stages]
            how = f"ran {', '.join(run.stages) or 'nothing'}" + (
                f"; {', '.join(cached)} from the DVC cache" if cached else ""
            )
            self.say(f"{what}: v{run.version} in {run.seconds:.0f} s ({how}); {gates}")

    def broken_snapshot(self) -> dict[str, object]:
        """The next month's snapshot as a silently changed upstream feed delivered it: the debt
        service coverage ratio in percent (125 for 1.25), with the dataset schema's range widened
        so that it validates. The pipeline and its gates are the real ones; only the data is wrong."""
        from finpredict.pipelines import dgp
        from finpredict.pipelines.common import default_dataset_schema

        rows = int(str(self.cfg.next_params.get("data.rows", 20_000)))
        frame = dgp.generate(rows, seed=45).with_columns(pl.col(BROKEN_FEATURE) * 100.0)
        schema = default_dataset_schema(1000).to_dict()
        for feature in schema["features"]:
            if feature["name"] == BROKEN_FEATURE:
                feature["max"] = float(feature["max"]) * 100.0
        overrides = self.workspaces["broken"].write_snapshot(frame, schema)
        return {**self.cfg.next_params, **overrides}

    def live_window(self, version: int) -> monitor_pb2.WindowStats | None:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        req = monitor_pb2.GetDriftReportRequest(
            model=types_pb2.ModelRef(name=MODEL, version=version), window=monitor_pb2.WINDOW_SIZE_DAILY
        )
        req.start.FromDatetime(today)
        try:
            windows = self.p.monitor.GetDriftReport(req, metadata=self.p.admin, timeout=30).windows
        except grpc.RpcError:
            return None
        labeled = [w for w in windows if w.labeled > 0]
        return labeled[-1] if labeled else None

    # ----- 4. v2 rollout -----------------------------------------------------------------------

    def rollout_v2(self) -> None:
        cfg, traffic = self.cfg, self.traffic
        assert traffic is not None
        v1, v2 = self.result.versions["v1"], self.result.versions["v2"]
        self.con.print(self.gate_table(v2, f"v{v2}: trained on the next month"))
        self.write_profile(v2)
        warm = self.warm_up(v2, self.pools["none"])
        self.say(
            f"canary analysis every {cfg.analysis_interval_s:g} s once each variant has "
            f"{cfg.min_requests_per_step} requests in the window; limits: errors +1%, score PSI 0.25, "
            f"score KL 0.1, p99 {cfg.max_p99_latency_ms:g} ms and {cfg.max_p99_latency_ratio:g}x stable "
            f"[yellow](loosened from the 50 ms SLO: the analysis times {cfg.traffic_batch}-application "
            f"batches sent as fast as this machine's cores go, shared by the whole platform and the "
            f"client)[/]; v{v2} pre-loaded on the model server ({warm * 1000:.0f} ms)"
        )
        traffic.phase = "v2 rollout"
        traffic.rate = None
        traffic.resume()
        rollout = self.start_rollout(v2)
        final = self.watch_rollout(rollout, lambda r: r.state in ENDED, cfg.rollout_timeout_s)
        self.result.rollouts["v2"] = final
        production = self.p.production()
        self.result.production["v2"] = production
        audit = self.p.registry.ListAuditLog(
            registry_pb2.ListAuditLogRequest(model=MODEL, page_size=1000), metadata=self.p.admin, timeout=30
        ).entries
        moves = [e for e in audit if e.alias == "production" and e.to_version == v2]
        self.result.promotion_actor = moves[-1].actor if moves else ""
        if final.state != rollout_pb2.ROLLOUT_STATE_PROMOTED:
            raise RuntimeError(
                f"v2's rollout ended {ROLLOUT_STATE.get(final.state)}: {final.decisions[-1].reason}"
            )
        self.result.commit_to_production_s = (
            final.ended_at.ToDatetime(tzinfo=UTC).timestamp() - self.v2_train_started
        )
        took = (final.ended_at.ToDatetime() - final.started_at.ToDatetime()).total_seconds()
        self.say(
            f"[green]promoted[/]: production v{v1} -> v{production}, moved by "
            f"'{self.result.promotion_actor}' (compare-and-set, audited) {took:.0f} s after the rollout "
            f"started; commit to production (v2's training started -> production) "
            f"{self.result.commit_to_production_s:.0f} s"
        )
        advances = sum(1 for d in final.decisions if d.verdict == "advance")
        self.add(
            f"canary rollout v{v1} -> v{v2} ({' -> '.join(f'{s:g}%' for s in cfg.steps)})",
            f"promoted after {advances} analyses; production = v{production} "
            f"(by {self.result.promotion_actor})",
            f"{took:.0f} s; commit to production {self.result.commit_to_production_s:.0f} s",
        )

    # ----- 5. the broken candidate -------------------------------------------------------------

    def rollout_broken(self) -> None:
        cfg, traffic = self.cfg, self.traffic
        assert traffic is not None
        bad = self.result.versions["broken"]
        self.say(
            f"candidate v{bad} passed its gates, on a test split as broken as its training data; in "
            "production its debt service coverage arrives as a ratio again (1.25, not 125)"
        )
        self.write_profile(bad)
        self.warm_up(bad, self.pools["none"])
        traffic.phase = "broken canary"
        rollout = self.start_rollout(bad)
        final = self.watch_rollout(rollout, lambda r: r.state in ENDED, cfg.rollout_timeout_s)
        self.result.rollouts["broken"] = final
        self.result.production["broken"] = self.p.production()
        seconds = (final.ended_at.ToDatetime() - final.started_at.ToDatetime()).total_seconds()
        reason = final.decisions[-1].reason if final.decisions else ""
        if final.state == rollout_pb2.ROLLOUT_STATE_ROLLED_BACK:
            self.result.time_to_rollback_s = seconds
            self.say(
                f"[red]rolled back[/] automatically {seconds:.1f} s after it started, at the first analysis "
                f"with {cfg.min_requests_per_step} canary requests: {reason}; production stays "
                f"v{self.result.production['broken']} (a rollback never touches the aliases)"
            )
        else:
            self.say(f"[red]the broken candidate was not rolled back[/] ({ROLLOUT_STATE.get(final.state)})")
        self.add(
            f"canary rollout of broken v{bad}",
            f"{ROLLOUT_STATE.get(final.state)}: {reason}",
            f"rolled back {seconds:.1f} s after the start" if self.result.time_to_rollback_s else "",
        )
        traffic.stop()

    # ----- 6. recession, alerts, retraining, v3 canary -----------------------------------------

    def recession(self) -> None:
        from finpredict.monitor import replay

        cfg = self.cfg
        v2 = self.result.versions["v2"]
        # The replay runs on a simulated clock; its days begin after today's live traffic so the
        # monitor's windows of the two never mix.
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = today + 2 * DAY - cfg.replay_first_day * DAY
        sc = replay.Scenario(
            days=cfg.replay_days,
            first_day=cfg.replay_first_day,
            per_hour=cfg.replay_per_hour,
            drift="recession",
            shift_day=cfg.replay_shift_day,
            threshold=self.p.version(v2).threshold,
            seed=21,
            start=start,
        )
        self.result.replay_start, self.result.shift_time = start, sc.shift_time
        days = cfg.replay_days - cfg.replay_first_day
        self.say(
            f"a recession starts on day {cfg.replay_shift_day}: "
            f"days {cfg.replay_first_day}-{cfg.replay_days - 1} "
            f"({days} simulated days, {cfg.replay_per_hour} applications an hour) are scored by production "
            f"v{v2} on the model server and replayed through the monitor on a simulated clock"
        )
        stream = replay.generate(sc)
        records = replay.to_records(stream, MODEL, v2)
        rows = [model_server_pb2.FeatureRow(features=r.features) for r in records]
        changes: dict[tuple[str, int, int], monitor_pb2.Alert] = {}
        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<22}"),
            BarColumn(bar_width=28),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
            TextColumn("[cyan]{task.fields[note]}"),
            TimeElapsedColumn(),
            console=self.con,
        ) as progress:
            scoring = progress.add_task("score on the model server", total=len(rows), note="")
            scores: list[float] = []
            for i in range(0, len(rows), 1000):
                scores.extend(self.p.predict(v2, rows[i : i + 1000]))
                progress.update(scoring, completed=len(scores))
            stream = stream.with_columns(pl.Series("score", scores))
            replaying = progress.add_task("replay through monitor", total=days, note="")
            with grpc.insecure_channel(self.p.targets["monitor"]) as channel:
                for d in range(cfg.replay_first_day, cfg.replay_days):
                    lo, hi = start + d * DAY, start + (d + 1) * DAY
                    day = stream.filter((pl.col("time") >= lo) & (pl.col("time") < hi))
                    got = replay.replay(channel, day, MODEL, v2)
                    for a in got.changes:
                        replayed = a.started_at.ToDatetime(tzinfo=UTC) >= start + cfg.replay_first_day * DAY
                        if a.model.version == v2 and a.state == monitor_pb2.ALERT_STATE_FIRING and replayed:
                            changes.setdefault((a.id, a.started_at.seconds, a.state), a)
                    fired = sorted({a.rule for a in changes.values()})
                    progress.update(
                        replaying,
                        advance=1,
                        note=f"day {d}: " + (", ".join(fired) + " firing" if fired else "quiet"),
                    )
        alerts = sorted(changes.values(), key=lambda a: (a.started_at.seconds, a.rule))
        self.result.alerts = alerts
        table = Table(
            "rule",
            "fired (simulated)",
            "after the shift",
            "feature",
            "value",
            title="alerts",
            title_justify="left",
        )
        for a in alerts:
            t = a.started_at.ToDatetime(tzinfo=UTC)
            hours = (t - sc.shift_time).total_seconds() / 3600
            table.add_row(
                a.rule,
                f"day {(t - start) / DAY:.2f}".rstrip("0").rstrip("."),
                f"{hours:+.0f} h",
                ", ".join(a.features) or "-",
                f"{a.value:.3f}",
            )
        self.con.print(table)
        after = [a for a in alerts if a.started_at.ToDatetime(tzinfo=UTC) >= sc.shift_time]
        if after:
            first = min(after, key=lambda a: a.started_at.seconds)
            self.result.time_to_detect_h = (
                first.started_at.ToDatetime(tzinfo=UTC) - sc.shift_time
            ).total_seconds() / 3600
        psi = [a for a in after if a.rule == "feature_psi_3d"]
        if psi:
            first_psi = min(psi, key=lambda a: a.started_at.seconds)
            self.result.psi_time_to_detect_h = (
                first_psi.started_at.ToDatetime(tzinfo=UTC) - sc.shift_time
            ).total_seconds() / 3600
            self.say(
                f"feature PSI > 0.25 on 3 consecutive days fired "
                f"{self.result.psi_time_to_detect_h:.0f} h after the "
                f"recession began (the case study: 3 weeks, by customer complaints), for "
                f"{len({f for a in psi for f in a.features})} features"
            )
        self.result.drift = self.drift_by_day(v2, start, cfg.replay_first_day, cfg.replay_days)
        self.result.alertmanager_alerts = self.alertmanager_count()
        if self.result.alertmanager_alerts >= 0:
            self.say(
                f"Alertmanager ({self.p.targets['alertmanager']}) holds "
                f"{self.result.alertmanager_alerts} finpredict model alerts posted by the monitor"
            )
        self.add(
            f"recession replay through the monitor ({days} simulated days)",
            f"{len(alerts)} alerts ({', '.join(sorted({a.rule for a in alerts})) or 'none'})",
            f"time to detect {self.result.time_to_detect_h:.0f} h"
            if self.result.time_to_detect_h is not None
            else "",
        )

    def drift_by_day(
        self, version: int, start: datetime, first: int, last: int
    ) -> dict[int, dict[str, float]]:
        req = monitor_pb2.GetDriftReportRequest(
            model=types_pb2.ModelRef(name=MODEL, version=version), window=monitor_pb2.WINDOW_SIZE_DAILY
        )
        req.start.FromDatetime(start + first * DAY)
        req.end.FromDatetime(start + last * DAY)
        windows = self.p.monitor.GetDriftReport(req, metadata=self.p.admin, timeout=60).windows
        out: dict[int, dict[str, float]] = {}
        for w in windows:
            day = round((w.start.ToDatetime(tzinfo=UTC) - start) / DAY)
            out[day] = {f.feature: f.psi for f in w.features if math.isfinite(f.psi)}
        return out

    def alertmanager_count(self) -> int:
        url = self.p.targets.get("alertmanager")
        if not url:
            return -1
        query = urllib.parse.urlencode({"filter": 'alertname=~"FinpredictModel.*"'})
        alerts = _get_json(f"{url}/api/v2/alerts?{query}")
        return len(alerts) if isinstance(alerts, list) else -1

    def retrain_v3(self) -> None:
        cfg = self.cfg
        v2 = self.result.versions["v2"]
        retrain_dir = cfg.stack.data / "monitor" / "retraining"
        self.say(
            "the firing drift alert started the monitor's retraining trigger: the same pipeline, on "
            "the recession months' data, in the background (FINPREDICT_TRIGGER=alert:<id>)"
        )
        deadline = time.monotonic() + cfg.retrain_timeout_s
        seen: set[str] = set()
        v3 = 0
        alert_id = ""
        with self.training_progress() as progress:
            task = progress.add_task("retrain", total=len(STAGES), stage="waiting for the trigger")
            while time.monotonic() < deadline:
                alerts = self.p.monitor.ListAlerts(
                    monitor_pb2.ListAlertsRequest(model=MODEL), metadata=self.p.admin, timeout=30
                ).alerts
                done = [a for a in alerts if a.retrained_version > 0 and a.model.version == v2]
                logs = sorted(retrain_dir.glob("*.log")) if retrain_dir.exists() else []
                if logs:
                    text = logs[-1].read_text(errors="replace")
                    for stage in STAGE_LINE.findall(text):
                        if stage not in seen:
                            seen.add(stage)
                            progress.update(
                                task, completed=len(seen), stage=f"{len(seen)}/{len(STAGES)} {stage}"
                            )
                    ended = RETRAIN_END.search(text)
                    if ended and int(ended.group(1)) != 0 and not done:
                        raise RuntimeError(
                            f"the retraining run failed; its log ({logs[-1]}):\n{text[-3000:]}"
                        )
                if done:
                    first = min(done, key=lambda a: a.started_at.seconds)
                    v3, alert_id = int(first.retrained_version), first.id
                    progress.update(task, completed=len(STAGES), stage=f"v{v3} registered")
                    break
                time.sleep(0.5)  # polling the monitor's alert list with a deadline
        if not v3:
            raise TimeoutError(
                f"no retrained version within {cfg.retrain_timeout_s:.0f} s (logs in {retrain_dir})"
            )
        self.result.versions["v3"] = v3
        lineage = self.p.registry.GetLineage(
            registry_pb2.GetLineageRequest(model=MODEL, version=v3), metadata=self.p.admin, timeout=30
        ).lineage
        self.result.v3_trigger, self.result.retrain_alert_id = lineage.trigger, alert_id
        self.con.print(self.gate_table(v3, f"v{v3}: retrained by the monitor's trigger"))
        data_md5 = next(iter(lineage.data_md5.values()), "")
        self.say(
            f"v{v3}'s lineage: trigger '{lineage.trigger}' (the alert {alert_id}), "
            f"git {lineage.git_commit[:12]}, data md5 {data_md5[:10]}"
        )
        self.add("retraining trigger", f"v{v3} registered, lineage trigger {lineage.trigger}", "")

    def canary_v3(self) -> None:
        cfg = self.cfg
        v2, v3 = self.result.versions["v2"], self.result.versions["v3"]
        self.write_profile(v3)
        self.warm_up(v3, self.pools["recession"])
        self.say(
            f"v{v3} enters a canary at {cfg.steps[0]:g}% with recession-era applications; a model "
            "retrained on a shifted population is expected to score differently from stable, so its "
            "score-drift limits are raised (PSI 1.0, KL 0.5) and errors and latency decide"
        )
        traffic = self.start_traffic(self.pools["recession"], "v3 canary", "biz-r")
        try:
            rollout = self.start_rollout(v3, max_score_psi=1.0, max_score_kl=0.5)
            target = traffic.snapshot().rows + cfg.v3_canary_rows
            final = self.watch_rollout(
                rollout,
                lambda r: r.state in ENDED or traffic.snapshot().rows >= target,
                cfg.rollout_timeout_s,
            )
        finally:
            traffic.stop()
        final = self.get_rollout(final.id)
        self.result.rollouts["v3"] = final
        state = ROLLOUT_STATE.get(final.state, "?")
        follow = (
            "it goes on with traffic (`finpredict rollout status --model credit-default --watch`)"
            if final.state not in ENDED
            else ""
        )
        self.say(f"v{v3}'s rollout is {state} at {final.weight:g}% (v{v2} stable); {follow}")
        self.add(f"canary of retrained v{v3}", f"{state} at {final.weight:g}%", "")

    # ----- 7. summary and report ---------------------------------------------------------------

    def summarise(self) -> None:
        r, cfg = self.result, self.cfg
        lat = self.latencies()
        every = lat.get("single calls", [])  # one at a time; the other phases are under load
        if every:
            r.p50_ms, r.p99_ms = float(np.percentile(every, 50)), float(np.percentile(every, 99))
        table = Table(
            "step", "outcome", "measured", title="finpredict demo: what happened", title_justify="left"
        )
        for row in r.summary:
            table.add_row(*row)
        self.con.print(table)
        figures = Table("figure", "measured here", "case study (before -> after)", title="the numbers",
                        title_justify="left")  # fmt: skip

        def fmt(value: float | None, text: str) -> str:
            return "-" if value is None else text

        detect = fmt(r.time_to_detect_h, f"{r.time_to_detect_h or 0:.0f} h")
        if r.psi_time_to_detect_h is not None:
            detect += f" (feature PSI 3 days: {r.psi_time_to_detect_h:.0f} h)"
        figures.add_row(
            "commit to production (v2: training start -> production)",
            fmt(r.commit_to_production_s, f"{r.commit_to_production_s or 0:.0f} s"),
            "3-6 weeks -> 1-2 days",
        )
        figures.add_row(
            "time to detect (simulated hours, drift start -> first alert)", detect, "3 weeks -> 4 hours"
        )
        figures.add_row(
            "time to roll back (broken canary start -> rollback)",
            fmt(r.time_to_rollback_s, f"{r.time_to_rollback_s or 0:.1f} s"),
            "manual (hours) -> automated (minutes)",
        )
        figures.add_row(
            "scoring latency through the gateway: one application at a time, timed by the client",
            fmt(r.p50_ms, f"p50 {r.p50_ms or 0:.1f} ms, p99 {r.p99_ms or 0:.1f} ms ({len(every):,} calls)"),
            "gate p99 <= 50 ms, alert p99 > 100 ms",
        )
        self.con.print(figures)
        self.observability()
        r.report_path = self.write_report(lat)
        self.say(f"HTML report: {r.report_path}")
        self.say(
            f"W&B offline runs: {cfg.work_dir / 'wandb'} (`wandb sync --view`, `wandb sync` uploads them)"
        )
        if "prometheus" in r.targets:
            self.say(
                f"Prometheus UI: {r.targets['prometheus']} "
                f"(Alertmanager: {r.targets.get('alertmanager', '-')})"
            )

    def observability(self) -> None:
        """What Prometheus scraped and which alerts reached Alertmanager (both sources)."""
        prom, am = self.result.targets.get("prometheus"), self.result.targets.get("alertmanager")
        if prom:
            up = _get_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": "up"}))
            results = up.get("data", {}).get("result", []) if isinstance(up, dict) else []
            jobs = sorted(r["metric"].get("job", "?") for r in results if r.get("value", [0, "0"])[1] == "1")
            self.say(f"Prometheus ({prom}) scrapes {len(jobs)} services: {', '.join(jobs) or '-'}")
        if am:
            alerts = _get_json(f"{am}/api/v2/alerts")
            names = (
                Counter(a["labels"].get("alertname", "?") for a in alerts) if isinstance(alerts, list) else {}
            )
            listed = ", ".join(f"{n} x{k}" if k > 1 else n for n, k in sorted(names.items())) or "none"
            self.say(f"Alertmanager ({am}) has these alerts active: {listed}")

    def latencies(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for t in self.traffics:
            for phase, xs in t.latency_ms.items():
                out.setdefault(phase, []).extend(xs)
        return out

    def write_report(self, lat: dict[str, list[float]]) -> Path:
        r, cfg = self.result, self.cfg
        versions = []
        notes = {"v1": "first model", "v2": "next month's data", "broken": "DSCR fed in percent",
                 "v3": f"retrained by the monitor ({r.v3_trigger})"}  # fmt: skip
        for role, v in r.versions.items():
            mv = self.p.version(v)
            versions.append(
                dr.VersionRow(
                    version=v,
                    created_at=mv.created_at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds"),
                    gates=[
                        dr.Gate(
                            g.name,
                            g.value,
                            g.threshold,
                            ">=" if g.comparator == types_pb2.COMPARATOR_GREATER_OR_EQUAL else "<=",
                            g.passed,
                        )
                        for g in mv.gate_results
                    ],
                    aliases=list(mv.aliases),
                    note=f"{role}: {notes.get(role, '')}",
                )
            )
        rollouts = [_report_rollout(ro) for ro in r.rollouts.values()]
        alerts = []
        if r.replay_start is not None:
            for a in r.alerts:
                day = (a.started_at.ToDatetime(tzinfo=UTC) - r.replay_start) / DAY
                alerts.append(dr.Alert(a.rule, day, a.value, a.threshold, ", ".join(a.features)))
        v2 = r.versions.get("v2", 0)
        scores = dr.ScoreSamples(
            stable=self.scores("v2 rollout", "stable"),
            canary=self.scores("v2 rollout", "canary"),
            stable_label=f"stable v{r.versions.get('v1', 0)}",
            canary_label=f"canary v{v2}",
            threshold=self.p.version(v2).threshold if v2 else None,
        )
        data = dr.DemoReport(
            model=MODEL,
            generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
            versions=versions,
            rollouts=rollouts,
            drift=r.drift,
            scores=scores,
            latency=[dr.LatencyPhase(phase, samples_ms=xs) for phase, xs in lat.items() if xs],
            alerts=alerts,
            measured=dr.Measured(
                commit_to_production_s=r.commit_to_production_s,
                time_to_detect_h=r.time_to_detect_h,
                time_to_rollback_s=r.time_to_rollback_s,
                p50_ms=r.p50_ms,
                p99_ms=r.p99_ms,
            ),
            links=dr.Links(
                wandb_dir=str(cfg.work_dir / "wandb"),
                prometheus_url=r.targets.get("prometheus", ""),
                other={k: v for k, v in r.targets.items() if k in ("alertmanager", "gateway", "registry")},
            ),
        )
        cfg.report_path.parent.mkdir(parents=True, exist_ok=True)
        cfg.report_path.with_suffix(".json").write_text(data.to_json())
        return dr.write_report(data, cfg.report_path)

    def scores(self, phase: str, variant: str) -> list[float]:
        return [x for t in self.traffics for x in t.scores_of(phase, variant)]

    # ----- 8. the end --------------------------------------------------------------------------

    def finish(self, ok: bool) -> None:
        for t in self.traffics:
            t.stop()
        if self.platform is not None:
            self.platform.close()
        if self.cfg.keep:
            if self.cfg.stack.targets():
                self.con.print(
                    "[bold]the stack is still running[/] for exploration: tokens in "
                    f"{self.cfg.stack.secrets_file} (`set -a; . {self.cfg.stack.secrets_file}; set +a`), "
                    "then e.g. `finpredict models history credit-default`, `finpredict rollout list`, "
                    "`finpredict drift alerts`; "
                    "`task down` stops it"
                )
        else:
            self.con.rule("stopping the stack")
            for name, was in self.cfg.stack.down().items():
                if was:
                    self.say(f"{name} stopped")
        self.result.total_s = time.perf_counter() - self.started
        self.con.print(f"total {self.result.total_s:.0f} s" + ("" if ok else " [red](failed)"))


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def _report_rollout(r: rollout_pb2.Rollout) -> dr.Rollout:
    started = r.started_at.ToDatetime(tzinfo=UTC)
    outcome = {
        rollout_pb2.ROLLOUT_STATE_PROMOTED: "completed",
        rollout_pb2.ROLLOUT_STATE_ROLLED_BACK: "rolled_back",
        rollout_pb2.ROLLOUT_STATE_ABORTED: "aborted",
    }.get(r.state, "running")
    decisions = []
    for d in r.decisions:
        i = min(d.step_index, len(r.steps) - 1)
        weight = {
            "advance": r.steps[min(i + 1, len(r.steps) - 1)],
            "rollback": 0.0,
            "abort": 0.0,
            "promote": 100.0,
            "promoted": 100.0,
        }.get(d.verdict, r.steps[i])
        t = (d.time.ToDatetime(tzinfo=UTC) - started).total_seconds()
        decisions.append(dr.RolloutDecision(max(t, 0.0), d.step_index, weight, d.verdict, d.reason))
    return dr.Rollout(r.id, r.model, int(r.stable_version), int(r.candidate_version), outcome, decisions)


def run_story(cfg: StoryConfig) -> StoryResult:
    """Runs the whole story; raises on the first step that fails (after cleaning up)."""
    story = Story(cfg)
    steps: list[tuple[str, Callable[[], None]]] = [
        ("Start the platform on embedded defaults", story.start_stack),
        ("Train v1 through the DVC pipeline, gate it, promote it", story.train_v1),
        ("Serve v1 through the gateway, with delayed labels", story.serve_v1),
        ("Train v2 on the next month, and a broken candidate", story.train_next),
        (f"Canary rollout of v2: {' -> '.join(f'{w:g}%' for w in cfg.steps)}", story.rollout_v2),
        ("A broken candidate: automatic rollback", story.rollout_broken),
        ("A recession: drift alerts through the monitor", story.recession),
        ("The retraining trigger trains a new version", story.retrain_v3),
        ("The retrained version enters a canary", story.canary_v3),
        ("Summary and report", story.summarise),
    ]
    ok = False
    try:
        for number, (title, fn) in enumerate(steps, 1):
            with story.step(number, title):
                fn()
        ok = True
    finally:
        story.finish(ok)
    return story.result
