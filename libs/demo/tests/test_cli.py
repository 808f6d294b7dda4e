"""The root command line mounts the packages' top-level verbs, and the demo's commands keep
their flags."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from typer.testing import CliRunner

from finpredict.cli.__main__ import build_app
from finpredict.common.config import load_settings
from finpredict.demo.workspace import Workspace, pipeline_sources
from finpredict.stack.settings import StackSettings

WIDE = {"COLUMNS": "200", "NO_COLOR": "1"}


def test_help_lists_the_top_level_verbs() -> None:
    result = CliRunner().invoke(build_app(), ["--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    listed = {
        line.split()[1] for line in result.output.splitlines() if line.startswith("│ ") and line.split()[1:]
    }
    assert {"up", "down", "status", "demo", "replay", "train", "models", "drift"} <= listed


def test_demo_keeps_its_flags() -> None:
    result = CliRunner().invoke(build_app(), ["demo", "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    for flag in ("--keep", "--no-keep", "--report"):
        assert flag in result.output


def test_replay_keeps_its_flags() -> None:
    result = CliRunner().invoke(build_app(), ["replay", "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    for flag in ("--target", "--scenario", "--shift-day", "--label-delay-hours", "--write-profile"):
        assert flag in result.output


def test_the_retraining_command_sets_params_in_its_workspace(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("data:\n  seed: 1\n  rows: 10\n")
    ws = Workspace(tmp_path)
    argv = shlex.split(ws.retrain_command({"data.seed": 44, "data.scenario": "recession"}))
    assert argv[:3] == [sys.executable, "-m", "finpredict.demo.workspace"]
    assert argv[3:] == ["repro", "--workspace", str(tmp_path), "--set", "data.seed=44", "--set",
                        "data.scenario=recession"]  # fmt: skip
    ws.set_params({"data.seed": 44, "train.depth": 3})
    assert ws.params() == {"data": {"seed": 44, "rows": 10}, "train": {"depth": 3}}


def test_a_workspace_gets_every_source_the_pipeline_depends_on() -> None:
    root = load_settings(StackSettings).project_root
    sources = pipeline_sources(root)
    assert sources[:3] == ["dvc.yaml", "dvc.lock", "params.yaml"]
    assert "libs/features/src/finpredict/features" in sources
    assert "pipelines/src/finpredict/pipelines/train.py" in sources
    assert "data/raw/loans.parquet" not in sources  # a stage's output, produced in the workspace
    assert "models/model" not in sources
    missing = [s for s in sources if s not in {"dvc.lock", "data/external"} and not (root / s).exists()]
    assert not missing, missing
