"""W&B tracking: offline by default, online only when ``WANDB_API_KEY`` is set.

Only functions that work offline are used (``init``, ``config``, ``log``, ``summary``,
``wandb.Table``/``wandb.plot.*``, ``log_artifact``); never ``use_artifact``, ``link_artifact``,
``wandb.Api()`` or ``artifact.wait()``. The run folder lives under ``WANDB_DIR`` (default
``<repo>/wandb``) and artifacts are staged under ``WANDB_DATA_DIR`` (default
``<repo>/wandb/data``); ``wandb sync <run folder>`` uploads an offline run later. The variables
are read once into :class:`~finpredict.pipelines.config.WandbSettings`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finpredict.common.config import env_var_name, load_settings
from finpredict.pipelines.config import WandbSettings


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    run_path: str
    run_dir: str
    mode: str
    link_status: str


def _prepare_env(root: Path, settings: WandbSettings) -> Path:
    """Creates W&B's folders (inside the project unless set) and hands them, quiet and without its
    own git capture, to W&B, which reads its environment; returns the run folder."""
    folders = {
        "dir": settings.dir or root / "wandb",
        "data_dir": settings.data_dir or root / "wandb" / "data",
        "cache_dir": settings.cache_dir or root / "wandb" / "cache",
        "config_dir": settings.config_dir or root / "wandb" / "config",
    }
    for field, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[env_var_name(WandbSettings, field)] = str(folder)
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_DISABLE_GIT", "true")
    return folders["dir"]


def log_run(
    *,
    project: str,
    entity: str | None,
    config: dict[str, Any],
    metrics: dict[str, float],
    curves: dict[str, dict[str, list[float]]],
    confusion: dict[str, int],
    model_files: list[Path],
    model_name: str,
    tags: list[str],
    root: Path | None = None,
) -> TrackedRun:
    """Logs one training run (params, metrics, plots, the model artifact) and finishes it."""
    settings = load_settings(WandbSettings)
    run_dir = _prepare_env((root or Path.cwd()).resolve(), settings)
    import wandb  # heavy import, only in the stage that tracks

    mode = settings.effective_mode()
    run = wandb.init(
        project=project,
        entity=entity or None,
        config=config,
        job_type="train",
        tags=tags,
        mode=mode,  # type: ignore[arg-type]
        dir=str(run_dir),
        settings=wandb.Settings(
            silent=True, disable_git=True, x_disable_stats=True, x_disable_meta=True, console="off"
        ),
    )
    try:
        run.log(metrics)
        for key, value in metrics.items():
            run.summary[key] = value
        for name, curve in curves.items():
            x_name, y_name = list(curve)[:2]
            table = wandb.Table(
                columns=[x_name, y_name], data=list(zip(curve[x_name], curve[y_name], strict=True))
            )
            run.log({f"{name}_table": table, name: wandb.plot.line(table, x_name, y_name, title=name)})
        cm = wandb.Table(
            columns=["actual", "predicted", "count"],
            data=[
                ["default", "default", confusion["tp"]],
                ["default", "repaid", confusion["fn"]],
                ["repaid", "default", confusion["fp"]],
                ["repaid", "repaid", confusion["tn"]],
            ],
        )
        run.log({"confusion_matrix_table": cm})
        artifact = wandb.Artifact(name=model_name, type="model", metadata={"metrics": metrics})
        for path in model_files:
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact)
        entity_name = run.entity or entity or ""
        run_path = f"{entity_name}/{run.project}/{run.id}" if entity_name else f"{run.project}/{run.id}"
        tracked = TrackedRun(
            run_id=run.id,
            run_path=run_path,
            run_dir=str(Path(run.dir).parent),
            mode=mode,
            link_status="pending" if mode == "offline" else "",
        )
    finally:
        run.finish()
    return tracked
