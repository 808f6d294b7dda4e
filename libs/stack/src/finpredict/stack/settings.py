"""Where the local platform lives: the project checkout and the run dir, read once from the environment.

The launcher reads the project's monitoring configs (``infra/prometheus``, ``infra/alertmanager``)
and keeps its files (logs, ready files, pid files, the local tokens) in the run dir. Installed,
it cannot find the checkout from its own location, so the project root is
``FINPREDICT_PROJECT_ROOT`` or, by default, the nearest folder from the current directory upward
that holds ``infra/prometheus`` and ``dvc.yaml``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from finpredict.common.config import ConfigError

PROJECT_ROOT_ENV = "FINPREDICT_PROJECT_ROOT"
# What marks a finpredict checkout (the launcher's configs and the training pipeline).
PROJECT_MARKERS = ("infra/prometheus", "dvc.yaml")


def find_project_root(start: Path | None = None) -> Path:
    """The nearest folder from ``start`` (default: the current directory) upward that holds
    :data:`PROJECT_MARKERS`; a :class:`ConfigError` naming ``FINPREDICT_PROJECT_ROOT`` if none does."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if all((folder / marker).exists() for marker in PROJECT_MARKERS):
            return folder
    raise ConfigError(
        f"no finpredict project found from {here} upward (a folder holding {' and '.join(PROJECT_MARKERS)}): "
        f"run from the checkout or set {PROJECT_ROOT_ENV}"
    )


class StackSettings(BaseSettings):
    """Settings of the local platform launcher (``finpredict up | down | status``) and the demo."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_", extra="ignore", frozen=True)

    project_root: Path = Field(
        default_factory=find_project_root,
        description="The finpredict checkout (its `infra/` configs, `dvc.yaml`); default: the nearest "
        "folder from the current directory upward that holds `infra/prometheus` and `dvc.yaml`.",
    )
    run_dir: Path = Field(
        default_factory=lambda data: Path(data["project_root"]) / ".run",
        description="Where `finpredict up`/`down`/`status` and the demo keep logs, ready files, pids "
        "and secrets (default: `<project root>/.run`).",
    )
