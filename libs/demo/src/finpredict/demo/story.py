"""The main job's story, step by step: one code path for ``finpredict demo`` and its end-to-end test.

:func:`run_story` walks the platform through a model's life with a narrative on a rich console:

1. start the stack on embedded defaults (registry on SQLite, local artifact store and DVC
   remote, a local Ray with the model server, gateway, monitor, Prometheus and Alertmanager), or
   on the stack's cluster profile (PostgreSQL, S3 artifacts and DVC remote, a two-node Ray, two
   gateways: the rest of the story is the same);
2. train v1 through the DVC pipeline (W&B offline), check its gates, promote it to production;
3. score generated applications through the gateway with the client SDK while their outcomes
   follow later through the gateway too (delayed labels for the monitor), then time single
   applications one at a time;
4. train v2 on the next month of data, and a candidate whose feed sent a ratio in percent;
5. roll v2 out 1 -> 5 -> 25 -> 100 % through the gateway's RolloutService while traffic flows,
   to promotion (production = v2, moved by the rollout controller);
6. roll out the broken candidate and watch the controller roll it back for the skew of its inputs
   against its own training profile (naming ``debt_service_coverage``);
7. replay a recession through the monitor: the drift alerts fire (feature PSI on 3 consecutive
   daily windows), the retraining trigger trains a new version (its lineage names the alert),
   which the platform puts into a canary by itself (the model's promotion policy hands it off);
   the demo follows that rollout to its end while recession-era traffic and its delayed labels
   flow (promoted 1 -> 5 -> 25 -> 100 %, or rolled back with the statistics that drove it);
8. summarise (versions, gates, rollouts, alerts, measured times) and write the HTML report.

The roles of the versions are ``v1``, ``v2``, ``broken`` and ``v3`` (the retrained one); their
registry numbers are whatever the registry allocates (1, 2, 3, 4 on a fresh platform).

Everything it measured is in the returned :class:`StoryResult`; :class:`StoryConfig` sizes the
story (the end-to-end test runs a shortened one on an isolated stack). :class:`Story` holds what
the chapters share (the configuration, the console, the platform, the traffic, the results);
the chapters themselves are in :mod:`finpredict.demo.chapters`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console

from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.api.rollout.v1 import rollout_pb2
from finpredict.api.serving.v1 import model_server_pb2
from finpredict.client.types import feature_values
from finpredict.demo.chapters import recession, rollouts, serving, startup, summary, training
from finpredict.demo.platform import Platform
from finpredict.demo.traffic import Pool, Traffic
from finpredict.demo.workspace import TrainingRun, Workspace
from finpredict.stack.launcher import Stack
from finpredict.stack.settings import StackSettings

PLATFORMS = {"embedded": "embedded defaults", "cluster": "the cluster profile"}


def _project_root() -> Path:
    return StackSettings().project_root


@dataclass
class StoryConfig:
    """How big the story is and where it runs."""

    stack: Stack
    work_dir: Path  # the demo's own files: training workspaces, W&B runs, report data
    report_path: Path
    console: Console = field(default_factory=Console)
    keep: bool = True  # leave the stack running at the end
    fresh_platform: bool = True  # wipe the stack's data dir first (a new registry, gateway, monitor)
    # shared: a version trained before is not retrained
    dvc_cache: Path | None = field(default_factory=lambda: _project_root() / ".dvc" / "cache")
    dvc_remote: Path | None = field(default_factory=lambda: _project_root() / ".dvc-remote")
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
    rollout_timeout_s: float = 300.0
    replay_first_day: int = 9
    replay_days: int = 13
    replay_shift_day: int = 10
    replay_per_hour: int = 200
    retrain_timeout_s: float = 900.0
    label_delay_s: float = 3.0
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


class Story:
    """What the chapters share: the configuration, the console, the platform's APIs, the traffic
    and the results so far, with the narrative's helpers."""

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

    def warm_up(self, version: int, pool: Pool) -> float:
        """Loads ``version`` on the model server before it takes traffic (its first call loads it
        from the registry); returns the seconds the first call took."""
        rows = [model_server_pb2.FeatureRow(features=feature_values(f)) for f in pool.features[:8]]
        t0 = time.perf_counter()
        self.p.predict(version, rows)
        return time.perf_counter() - t0

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


def run_story(cfg: StoryConfig) -> StoryResult:
    """Runs the whole story; raises on the first step that fails (after cleaning up)."""
    story = Story(cfg)
    steps: list[tuple[str, Callable[[Story], None]]] = [
        (f"Start the platform on {PLATFORMS.get(cfg.stack.profile, cfg.stack.profile)}", startup.start_stack),
        ("Train v1 through the DVC pipeline, gate it, promote it", training.train_v1),
        ("Serve v1 through the gateway, with delayed labels", serving.serve_v1),
        ("Train v2 on the next month, and a broken candidate", training.train_next),
        (f"Canary rollout of v2: {' -> '.join(f'{w:g}%' for w in cfg.steps)}", rollouts.rollout_v2),
        ("A broken candidate: automatic rollback", rollouts.rollout_broken),
        ("A recession: drift alerts through the monitor", recession.recession),
        ("The retraining trigger trains a new version", recession.retrain_v3),
        ("The retrained version's canary, to its end", rollouts.canary_v3),
        ("Summary and report", summary.summarise),
    ]
    ok = False
    try:
        for number, (title, chapter) in enumerate(steps, 1):
            with story.step(number, title):
                chapter(story)
        ok = True
    finally:
        story.finish(ok)
    return story.result
