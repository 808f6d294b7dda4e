"""A throw-away git + DVC repository running the project's real ``dvc.yaml`` (never the project's .git)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the lock)

from finpredict.testkit.paths import REPO_ROOT
from finpredict.testkit.s3 import S3Server

ROOT = REPO_ROOT
COPIED = [
    "dvc.yaml",
    "params.yaml",
    "data/external",
    "data/production",
    "pipelines/src/finpredict/pipelines",
    "libs/features/src/finpredict/features",
    "libs/metrics/src/finpredict/metrics",
]
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


@dataclass
class Result:
    rc: int
    out: str

    @property
    def stages_run(self) -> list[str]:
        return re.findall(r"Running stage '([^']+)'", self.out)


@dataclass
class PipelineRepo:
    path: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 240) -> Result:
        proc = subprocess.run(
            list(args),
            cwd=self.path,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return Result(proc.returncode, proc.stdout + proc.stderr)

    def dvc(self, *args: str, timeout: float = 240) -> Result:
        return self.run(sys.executable, "-m", "dvc", *args, timeout=timeout)

    def git(self, *args: str) -> Result:
        return self.run("git", "-c", "user.name=test", "-c", "user.email=test@example.invalid", *args)

    def params(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "params.yaml").read_text())  # type: ignore[no-any-return]

    def set_params(self, params: dict[str, Any]) -> None:
        (self.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def read_json(self, rel: str) -> Any:
        import json

        return json.loads((self.path / rel).read_text())


def make_repo(path: Path, rows: int, extra_env: dict[str, str] | None = None) -> PipelineRepo:
    path.mkdir(parents=True, exist_ok=True)
    for rel in COPIED:
        src, dst = ROOT / rel, path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=IGNORE)
        else:
            shutil.copy2(src, dst)
    (path / ".gitignore").write_text("wandb/\n/reports/\n/remote/\n")
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["data"]["rows"] = rows
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "DVC_", "FINPREDICT_REGISTRY"))}
    env.update(
        {
            "PATH": bin_dir + os.pathsep + env.get("PATH", ""),
            "DVC_NO_ANALYTICS": "1",
            "WANDB_MODE": "offline",
            "WANDB_DIR": str(path / "wandb"),
            "WANDB_DATA_DIR": str(path / "wandb" / "data"),
            "WANDB_CACHE_DIR": str(path / "wandb" / "cache"),
            "WANDB_CONFIG_DIR": str(path / "wandb" / "config"),
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(path.parent),
            **(extra_env or {}),
        }
    )
    repo = PipelineRepo(path, env)
    for cmd in (("git", "init", "-q", "."),):
        assert repo.run(*cmd).rc == 0
    assert repo.dvc("init", "-q").rc == 0
    for args in (
        ("config", "core.analytics", "false"),
        ("config", "core.check_update", "false"),
        ("remote", "add", "-d", "local", str(path / "remote")),
    ):
        res = repo.dvc(*args)
        assert res.rc == 0, res.out
    res = repo.git("add", "-A")
    assert res.rc == 0, res.out
    res = repo.git("commit", "-q", "-m", "pipeline under test")
    assert res.rc == 0, res.out
    return repo


def use_s3_remote(repo: PipelineRepo, s3: S3Server, bucket: str, prefix: str = "dvc") -> str:
    """Makes ``s3://<bucket>/<prefix>`` on the test S3 server the repository's default DVC remote
    (``dvc-s3``; the credentials go into the repository's environment, as boto reads them);
    commits the change and returns the remote's URL."""
    repo.env.update(s3.dvc_env())
    url = f"s3://{bucket}/{prefix}"
    for args in (
        ("remote", "add", "--force", "--default", "s3", url),
        ("remote", "modify", "s3", "endpointurl", s3.endpoint_url),
    ):
        res = repo.dvc(*args)
        assert res.rc == 0, res.out
    res = repo.git("commit", "-q", "-am", "DVC remote on S3")
    assert res.rc == 0, res.out
    return url
