"""Where the repository is: the harnesses read its files (manifests, Dockerfiles, dvc.yaml)."""

from __future__ import annotations

from pathlib import Path


def _repo_root() -> Path:
    """The workspace root above this (editable, never packaged) install: the first folder up with
    the workspace's pyproject.toml."""
    for folder in Path(__file__).resolve().parents:
        pyproject = folder / "pyproject.toml"
        if pyproject.is_file() and "[tool.uv.workspace]" in pyproject.read_text():
            return folder
    raise RuntimeError(f"{__file__} is not inside the finpredict workspace (the kit runs from a checkout)")


REPO_ROOT = _repo_root()
