"""Where the launcher finds the project and its run dir: discovered from the current directory,
or set through the environment; a clear error naming the variable when there is no project."""

from __future__ import annotations

from pathlib import Path

import pytest

from finpredict.common.config import ConfigError, load_settings
from finpredict.stack.settings import StackSettings, find_project_root


def make_project(root: Path) -> Path:
    (root / "infra" / "prometheus").mkdir(parents=True)
    (root / "dvc.yaml").write_text("stages: {}\n")
    return root


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FINPREDICT_PROJECT_ROOT", raising=False)
    monkeypatch.delenv("FINPREDICT_RUN_DIR", raising=False)


def test_the_project_is_found_from_a_folder_inside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_project(tmp_path / "checkout")
    inside = root / "services" / "monitor"
    inside.mkdir(parents=True)
    monkeypatch.chdir(inside)
    settings = load_settings(StackSettings)
    assert settings.project_root == root.resolve()
    assert settings.run_dir == root.resolve() / ".run"


def test_a_folder_with_only_one_marker_is_not_the_project(tmp_path: Path) -> None:
    root = make_project(tmp_path / "checkout")
    half = root / "sub"
    (half / "infra" / "prometheus").mkdir(parents=True)  # no dvc.yaml beside it
    assert find_project_root(half) == root.resolve()


def test_the_environment_sets_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no project here: the variable is enough
    monkeypatch.setenv("FINPREDICT_PROJECT_ROOT", str(tmp_path / "elsewhere"))
    settings = load_settings(StackSettings)
    assert settings.project_root == tmp_path / "elsewhere"
    assert settings.run_dir == tmp_path / "elsewhere" / ".run"
    monkeypatch.setenv("FINPREDICT_RUN_DIR", str(tmp_path / "runs"))
    assert load_settings(StackSettings).run_dir == tmp_path / "runs"


def test_no_project_is_an_error_naming_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="FINPREDICT_PROJECT_ROOT") as err:
        load_settings(StackSettings)
    assert str(tmp_path.resolve()) in str(err.value)
