"""The demo's training workspaces: throw-away clones of the project checkout in which the demo (and
the monitor's retraining trigger) train model versions through the real DVC pipeline
(``dvc.yaml``, ``params.yaml``, W&B offline), without touching the project's own ``data/``,
``models/``, ``reports/``, ``params.yaml`` or ``dvc.lock``.

A workspace is ``git clone --shared`` of the project (so the lineage records the project's
commit) with the pipeline's files copied over from the working tree (uncommitted changes
included: the stages run the installed, i.e. working-tree, code). Its DVC cache can be the
project's (``.dvc/cache``: a version trained before is checked out instead of retrained) and
its DVC remote any folder (the project's ``.dvc-remote`` in the demo) or, on the cluster profile,
a bucket of the platform's S3 server.

The command line is what the monitor's retraining trigger runs (``FINPREDICT_MONITOR_RETRAIN_COMMAND``):

    python -m finpredict.demo.workspace repro --workspace .run/demo/pipeline-main \\
        --set data.scenario=recession --set data.seed=44

It sets the params, runs ``dvc repro`` with the output on stdout (the monitor reads the register
stage's ``[register] <model> version <n> registered`` line from it) and pushes to the remote.
The registry address, token and trigger come from the environment, as for ``finpredict train``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the lock)

from finpredict.stack.settings import StackSettings

# The pipeline's definition; with the stages' own sources (see pipeline_sources), copied from the
# working tree.
PIPELINE_FILES = ["dvc.yaml", "dvc.lock", "params.yaml"]
STAGE = re.compile(r"Running stage '([^']+)'")
REGISTERED = re.compile(r"\[register\] (\S+) version (\d+) registered")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


@dataclass
class TrainingRun:
    """What one ``dvc repro`` did."""

    rc: int
    seconds: float
    stages: list[str]
    output: str
    version: int = 0
    registration: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0 and self.version > 0

    def tail(self, lines: int = 25) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


@dataclass
class Workspace:
    """One training workspace (a clone of the project with its own ``params.yaml``)."""

    path: Path
    env: dict[str, str] = field(default_factory=dict)
    dvc_cache: Path | None = None  # shared with other workspaces (None: the workspace's own)

    @classmethod
    def create(
        cls,
        path: Path,
        *,
        dvc_cache: Path | None = None,
        dvc_remote: Path | None = None,
        env: Mapping[str, str] | None = None,
        project_root: Path | None = None,
    ) -> Workspace:
        """A fresh workspace at ``path`` (whatever was there is removed), cloned from
        ``project_root`` (default: :class:`StackSettings`' project root)."""
        root = project_root if project_root is not None else StackSettings().project_root
        shutil.rmtree(path, ignore_errors=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        clone = subprocess.run(
            ["git", "clone", "--quiet", "--shared", "--no-checkout", str(root), str(path)],
            capture_output=True,
            text=True,
        )
        if clone.returncode == 0:
            tracked = _tracked(root, [".dvc", ".dvcignore", ".gitignore"])
            _git(path, "checkout", "--quiet", "HEAD", "--", *tracked)
        else:  # not a git checkout (e.g. an unpacked archive): a repository of its own
            path.mkdir(parents=True, exist_ok=True)
            _git(path, "init", "--quiet")
        for rel in pipeline_sources(root):
            src, dst = root / rel, path / rel
            if src.is_dir():
                shutil.rmtree(dst, ignore_errors=True)
                shutil.copytree(src, dst, ignore=IGNORE)
            elif src.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)
        dvc_dir = path / ".dvc"
        dvc_dir.mkdir(exist_ok=True)
        if not (dvc_dir / "config").exists():
            (dvc_dir / "config").write_text("[core]\n    analytics = false\n    check_update = false\n")
        for name in (".gitignore",):
            if not (dvc_dir / name).exists():
                (dvc_dir / name).write_text("/config.local\n/tmp\n/cache\n")
        workspace = cls(path, dict(env or {}), dvc_cache)
        workspace.set_remote(str((dvc_remote or path / ".dvc-remote").resolve()))
        return workspace

    def set_remote(self, url: str, options: Mapping[str, str] | None = None) -> None:
        """Makes ``url`` (a folder, or ``s3://bucket/prefix`` with ``options`` such as
        ``endpointurl`` and the credentials) the workspace's default DVC remote (the project's
        ``local``, overridden in the git-ignored ``.dvc/config.local``, beside the shared cache)."""
        local = []
        if self.dvc_cache is not None:
            local += ["[cache]", f"    dir = {self.dvc_cache.resolve()}"]
        local += ["[core]", "    remote = local", "['remote \"local\"']", f"    url = {url}"]
        local += [f"    {key} = {value}" for key, value in (options or {}).items()]
        config = self.path / ".dvc" / "config.local"
        config.write_text("\n".join(local) + "\n")
        config.chmod(0o600)  # it may hold credentials

    def params(self) -> dict[str, Any]:
        loaded: dict[str, Any] = yaml.safe_load((self.path / "params.yaml").read_text())
        return loaded

    def set_params(self, overrides: Mapping[str, object]) -> None:
        """Sets dotted params (``{"data.seed": 43}``), keeping the file's comments out of it."""
        params = self.params()
        for dotted, value in overrides.items():
            node = params
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        (self.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def write_snapshot(self, frame: Any, schema: Mapping[str, Any]) -> dict[str, object]:
        """Puts a data snapshot and its dataset schema where ``data.source: file`` reads them
        (``data/external/``, a dependency of the ingest stage); returns the params that use it."""
        external = self.path / "data" / "external"
        external.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(external / "loans.parquet")
        (external / "schema.yaml").write_text(yaml.safe_dump(dict(schema), sort_keys=False))
        return {
            "data.source": "file",
            "data.file": "data/external/loans.parquet",
            "data.schema_file": "data/external/schema.yaml",
        }

    def command_env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        env = {**os.environ, **self.env, **(extra or {})}
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["DVC_NO_ANALYTICS"] = "1"
        env.setdefault("WANDB_MODE", "offline")
        return env

    def repro(
        self,
        env: Mapping[str, str] | None = None,
        on_line: Callable[[str], None] | None = None,
        push: bool = True,
    ) -> TrainingRun:
        """Runs ``dvc repro`` (then ``dvc push``); ``on_line`` sees every output line as it comes."""
        full_env = self.command_env(env)
        t0 = time.perf_counter()
        lines: list[str] = []
        with _popen([sys.executable, "-m", "dvc", "repro"], self.path, full_env) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                lines.append(line)
                if on_line is not None:
                    on_line(line.rstrip("\n"))
            rc = proc.wait()
        if rc == 0 and push:
            pushed = subprocess.run(
                [sys.executable, "-m", "dvc", "push", "-q"],
                cwd=self.path,
                env=full_env,
                capture_output=True,
                text=True,
            )
            if pushed.returncode != 0:
                lines.append(f"[demo] warning: dvc push failed: {pushed.stdout}{pushed.stderr}\n")
        output = "".join(lines)
        run = TrainingRun(rc, time.perf_counter() - t0, STAGE.findall(output), output)
        found = REGISTERED.findall(output)
        if rc == 0 and found:
            run.version = int(found[-1][1])
            run.registration = _read_json(self.path / "reports" / "registration.json")
        run.gates = list(_read_json(self.path / "reports" / "gates.json").get("gates", []))
        run.metrics = _read_json(self.path / "reports" / "metrics.json")
        return run

    def retrain_command(self, overrides: Mapping[str, object]) -> str:
        """The command line that retrains in this workspace with ``overrides`` (for the monitor)."""
        argv = [sys.executable, "-m", "finpredict.demo.workspace", "repro", "--workspace", str(self.path)]
        for key, value in overrides.items():
            argv += ["--set", f"{key}={value}"]
        return shlex.join(argv)


def pipeline_sources(root: Path) -> list[str]:
    """What the pipeline in ``root`` reads besides the installed code: its definition and every
    stage dependency that no stage produces (the stages' code, ``data/external``), read from
    ``dvc.yaml`` so that a new dependency of a stage comes along."""
    stages: dict[str, dict[str, Any]] = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    produced = {
        str(next(iter(item))) if isinstance(item, dict) else str(item)
        for stage in stages.values()
        for key in ("outs", "metrics", "plots")
        for item in stage.get(key, [])
    }
    deps = [str(dep) for stage in stages.values() for dep in stage.get("deps", [])]
    return [*PIPELINE_FILES, *dict.fromkeys(dep for dep in deps if dep not in produced)]


def _tracked(root: Path, paths: list[str]) -> list[str]:
    out = subprocess.run(
        ["git", "-C", str(root), "ls-files", "--", *paths], capture_output=True, text=True, check=False
    )
    return sorted({line for line in out.stdout.splitlines() if line})


def _git(path: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "advice.detachedHead=false", *args], cwd=path, check=True, capture_output=True
    )


@contextmanager
def _popen(argv: list[str], cwd: Path, env: Mapping[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        argv, cwd=cwd, env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def _read_json(path: Path) -> dict[str, Any]:
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _value(text: str) -> object:
    parsed: object = yaml.safe_load(text)
    return parsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train in a demo workspace (dvc repro + push).")
    sub = parser.add_subparsers(dest="command", required=True)
    repro = sub.add_parser("repro", help="set params, run dvc repro, push")
    repro.add_argument("--workspace", type=Path, required=True)
    repro.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a dotted param")
    args = parser.parse_args(argv)
    ws = Workspace(args.workspace)
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item}: expected KEY=VALUE")
        overrides[key] = _value(value)
    if overrides:
        ws.set_params(overrides)
    run = ws.repro(on_line=lambda line: print(line, flush=True))
    print(f"[demo] dvc repro exited {run.rc} after {run.seconds:.0f} s; stages: {', '.join(run.stages)}")
    return run.rc


if __name__ == "__main__":
    sys.exit(main())
