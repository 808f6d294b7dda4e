"""Chapters 2 and 4: train versions through the DVC pipeline in the demo's workspaces, show their
gates, promote v1; the next month's v2 and a candidate trained on a broken feed."""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import grpc
import polars as pl
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2
from finpredict.demo.platform import MODEL
from finpredict.demo.workspace import TrainingRun, Workspace
from finpredict.pipelines import dgp
from finpredict.pipelines.common import default_dataset_schema

if TYPE_CHECKING:
    from finpredict.demo.story import Story

STAGES = ["ingest", "validate", "features", "train", "evaluate", "profile", "register"]
STAGE_LINE = re.compile(r"(?:Running stage|Stage) '([^']+)'")
BROKEN_FEATURE = "debt_service_coverage"  # the broken candidate's training feed sends it in percent


def train(
    story: Story,
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

    run = ws.repro(story.training_env(trigger), on_line=on_line)
    progress.update(
        task,
        completed=len(STAGES),
        stage=f"v{run.version} registered" if run.ok else f"FAILED (exit {run.rc})",
    )
    story.result.trainings[role] = run
    if not run.ok:
        raise RuntimeError(f"training {role} failed (dvc repro exit {run.rc}):\n{run.tail()}")
    story.result.versions[role] = run.version
    return run


def training_progress(story: Story) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<12}"),
        BarColumn(bar_width=24),
        TextColumn("[cyan]{task.fields[stage]}"),
        TimeElapsedColumn(),
        console=story.con,
    )


def gate_table(story: Story, version: int, title: str) -> Table:
    mv = story.p.version(version)
    table = Table("gate", "value", "rule", "passed", title=title, title_justify="left")
    for g in mv.gate_results:
        rule = (
            ">= " if g.comparator == types_pb2.COMPARATOR_GREATER_OR_EQUAL else "<= "
        ) + f"{g.threshold:g}"
        table.add_row(g.name, f"{g.value:.4f}", rule, "[green]yes" if g.passed else "[red]NO")
    return table


def train_v1(story: Story) -> None:
    try:
        story.p.registry.CreateModel(
            registry_pb2.CreateModelRequest(name=MODEL, description="SME credit default (probability)"),
            metadata=story.p.admin,
            timeout=30,
        )
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:  # type: ignore[attr-defined]
            raise
    story.say(
        "dvc repro in a clone of this repository (W&B offline); a version trained before is "
        "checked out of the DVC cache instead of retrained"
    )
    with training_progress(story) as progress:
        run = train(story, "v1", story.workspaces["main"], story.cfg.v1_params, "manual", progress)
    v1 = run.version
    story.con.print(gate_table(story, v1, f"{MODEL} v{v1}: quality gates"))
    lineage = story.p.registry.GetLineage(
        registry_pb2.GetLineageRequest(model=MODEL, version=v1), metadata=story.p.admin, timeout=30
    ).lineage
    data = ", ".join(f"{k} md5 {v[:10]}" for k, v in sorted(lineage.data_md5.items())[:2])
    story.say(
        f"lineage: git {lineage.git_commit[:12]}, {data}, "
        f"dvc.lock sha256 {lineage.dvc_lock_sha256[:12]}, "
        f"W&B run {lineage.wandb_run_path or '-'} ({lineage.wandb_link_status or 'offline'})"
    )
    current = story.p.production()
    story.p.registry.SetAlias(
        registry_pb2.SetAliasRequest(
            model=MODEL,
            alias="production",
            version=v1,
            expected_version=current,
            reason="demo: v1, every gate passed",
        ),
        metadata=story.p.admin,
        timeout=30,
    )
    story.result.production["v1"] = story.p.production()
    story.say(f"production -> v{v1} (compare-and-set against v{current}, written to the audit log)")
    story.add(
        "train v1 (DVC, W&B offline) and promote",
        f"v{v1} gates passed, production -> v{v1}",
        f"{run.seconds:.0f} s ({', '.join(run.stages) or 'all from the DVC cache'})",
    )


def train_next(story: Story) -> None:
    cfg = story.cfg
    story.say(
        "the next month's applications arrive: v2 trains on them; so does a candidate trained on a "
        "snapshot whose upstream feed silently switched the debt service coverage ratio to percent "
        "(125 for 1.25; the schema's range was widened so that it validates)"
    )
    story.v2_train_started = time.time()
    with training_progress(story) as progress:
        train(story, "v2", story.workspaces["main"], {**cfg.next_params, "data.seed": 43}, "manual", progress)
        train(story, "broken", story.workspaces["broken"], broken_snapshot(story), "manual", progress)
    for role, what in (("v2", "the next month's model"), ("broken", "a candidate, DSCR in percent")):
        run = story.result.trainings[role]
        gates = ", ".join(f"{g['name']}={g['value']:.3f}" for g in run.gates)
        story.add(f"train {what}", f"v{run.version} registered, gates passed", f"{run.seconds:.0f} s")
        cached = [st for st in STAGES if st not in run.stages]
        how = f"ran {', '.join(run.stages) or 'nothing'}" + (
            f"; {', '.join(cached)} from the DVC cache" if cached else ""
        )
        story.say(f"{what}: v{run.version} in {run.seconds:.0f} s ({how}); {gates}")


def broken_snapshot(story: Story) -> dict[str, object]:
    """The next month's snapshot as a silently changed upstream feed delivered it: the debt
    service coverage ratio in percent (125 for 1.25), with the dataset schema's range widened
    so that it validates. The pipeline and its gates are the real ones; only the data is wrong."""
    rows = int(str(story.cfg.next_params.get("data.rows", 20_000)))
    frame = dgp.generate(rows, seed=45).with_columns(pl.col(BROKEN_FEATURE) * 100.0)
    schema = default_dataset_schema(1000).to_dict()
    for feature in schema["features"]:
        if feature["name"] == BROKEN_FEATURE:
            feature["max"] = float(feature["max"]) * 100.0
    overrides = story.workspaces["broken"].write_snapshot(frame, schema)
    return {**story.cfg.next_params, **overrides}
