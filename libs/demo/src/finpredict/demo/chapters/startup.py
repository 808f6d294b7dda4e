"""Chapter 1: the platform (on embedded defaults, or the cluster profile), fresh data, the training
workspaces."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.table import Table

from finpredict.demo.platform import Platform
from finpredict.demo.workspace import Workspace

if TYPE_CHECKING:
    from finpredict.demo.story import Story


def start_stack(story: Story) -> None:
    cfg, st = story.cfg, story.cfg.stack
    running = [name for name in st.targets()]
    if running:
        story.say(f"stopping the stack already running from {st.run_dir} ({', '.join(running)})")
        st.down()
    if cfg.fresh_platform:
        st.wipe_data()
        story.say(f"a fresh platform: registry, gateway and monitor data in {st.data}")
    (cfg.work_dir / "wandb").mkdir(parents=True, exist_ok=True)
    # Training workspaces: clones of this repository (the lineage records its commit).
    for role in ("main", "broken"):
        story.workspaces[role] = Workspace.create(
            cfg.work_dir / f"pipeline-{role}",
            dvc_cache=cfg.dvc_cache,
            dvc_remote=cfg.dvc_remote,
            project_root=st.root,
        )
    retrain = story.workspaces["main"].retrain_command(
        {**cfg.next_params, "data.scenario": "recession", "data.seed": 44}
    )
    wandb = cfg.work_dir / "wandb"
    # The recession is replayed on a simulated clock in the days after today (so that the
    # monitor's windows of today's live traffic and of the replay never mix): the monitor, which
    # refuses times ahead of the wall clock by default, accepts that far ahead here.
    replay_ahead_days = cfg.replay_days - cfg.replay_first_day + 3
    monitor_env = {
        "FINPREDICT_MONITOR_MAX_FUTURE_SKEW_S": str(replay_ahead_days * 86_400),
        "FINPREDICT_MONITOR_RETRAIN_COMMAND": retrain,
        "FINPREDICT_MONITOR_RETRAIN_WORKDIR": str(story.workspaces["main"].path),
        "WANDB_MODE": cfg.wandb_mode,
        "WANDB_DIR": str(wandb),
        "WANDB_DATA_DIR": str(wandb / "data"),
        "WANDB_CACHE_DIR": str(wandb / "cache"),
        "WANDB_CONFIG_DIR": str(wandb / "config"),
    }
    if st.profile == "cluster":
        story.say(
            "starting the cluster profile: PostgreSQL, an S3 server, a two-node Ray cluster, the model "
            "server's Serve app on it, two gateways sharing their state (a minute or two)"
        )
    else:
        story.say("starting: the model server starts a local Ray and deploys its Serve app (about a minute)")
    with story.con.status("starting the services ..."):
        st.up(env={"monitor": monitor_env})
    if (remote := st.dvc_remote()) is not None:  # the platform's S3 server is the DVC remote
        url, options = remote
        for workspace in story.workspaces.values():
            workspace.set_remote(url, options)
        story.say(f"DVC remote: {url} on the platform's S3 server ({options['endpointurl']})")
    story.platform = Platform(st)
    story.result.targets = dict(story.p.targets)
    table = Table("component", "address", "what", title="the platform on loopback", title_justify="left")
    cluster = "postgres" in story.p.targets
    stores = "PostgreSQL, artifacts in S3" if cluster else "SQLite, local artifact store"
    what = {
        "postgres": "the registry's database and the gateways' shared state",
        "s3": "S3 server (moto): registry artifacts, DVC remote",
        "ray-head": "Ray head node (GCS); the model server deploys here",
        "ray-worker": "a second Ray node, joined to the head",
        "registry": f"versions, aliases, lineage, gates, audit ({stores})",
        "model-server": "control port; Serve gRPC ingress below",
        "serve": "Ray Serve gRPC ingress: multiplexed XGBoost models",
        "monitor": "prediction/outcome logs, drift, alerts, retraining trigger",
        "gateway": "scoring API, canary rollouts, Open Inference Protocol",
        "gateway-2": "a second gateway replica (shared rollout state, one controller)",
        "console": "web console: models, lineage, rollouts, drift, decisions (sign in with FINPREDICT_TOKEN)",
        "alertmanager": "alert routing (monitor + Prometheus rules)",
        "prometheus": "metrics of every service, SLO rules -> Prometheus UI",
    }
    for name, target in story.p.targets.items():
        table.add_row(name, target, what.get(name, ""))
    story.con.print(table)
    if "prometheus" not in story.p.targets:
        story.say("[yellow]Prometheus/Alertmanager are not installed here (`task setup`); going on without")
    story.add("start the stack", f"{len(story.p.targets)} components healthy on loopback")
