"""The CI/CD workflows: they pass actionlint, implement the three triggers of the case study, and
call only public tasks that exist in the Taskfiles (the ones developers run)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from finpredict.testkit.deploy import (
    ROOT,
    WORKFLOWS,
    Obj,
    check_workflow_tasks,
    load_workflow,
    run_commands,
    taskfile_tasks,
    tool,
    triggers,
)

WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.yml"))


def _actionlint(*paths: Path) -> subprocess.CompletedProcess[str]:
    # shellcheck/pyflakes integrations off: the result must not depend on what else is installed
    return subprocess.run(
        [str(tool("actionlint")), "-no-color", "-shellcheck=", "-pyflakes=", *map(str, paths)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )


def test_workflows_pass_actionlint() -> None:
    assert WORKFLOW_FILES, "no workflows"
    proc = _actionlint(*WORKFLOW_FILES)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_fails_on_a_broken_workflow(tmp_path: Path) -> None:
    broken = WORKFLOWS / "pr.yml"
    text = broken.read_text().replace(
        "runs-on: ubuntu-24.04", "runs-on: ubuntu-24.04\n    needs: [no-such-job]", 1
    )
    text = text.replace("${{ github.event.pull_request.number }}", "${{ github.event.pull_request.numbr }}")
    planted = tmp_path / "planted.yml"
    planted.write_text(text)
    proc = _actionlint(planted)
    assert proc.returncode != 0
    assert "no-such-job" in proc.stdout


def _workflow(name: str) -> Obj:
    return load_workflow(WORKFLOWS / name)


def _commands(workflow: Obj) -> list[str]:
    return [line for _job, line in run_commands(workflow)]


def test_the_three_triggers_of_the_case_study() -> None:
    pr, main, promotion = _workflow("pr.yml"), _workflow("main.yml"), _workflow("promotion.yml")
    assert triggers(pr) == {"pull_request"}
    assert triggers(main) == {"push"}
    assert main["on"]["push"]["branches"] == ["main"]
    assert triggers(promotion) == {"repository_dispatch", "workflow_dispatch"}
    assert promotion["on"]["repository_dispatch"]["types"] == ["model-promoted"]

    # on PR: data validation, unit tests, lint
    assert {"task data:validate", "task test:quick", "task lint"} <= set(_commands(pr))
    # on merge to main: the full training pipeline, whose evaluate stage enforces the gates
    assert "task train" in _commands(main)
    # on promotion: build image, integration tests, canary deploy
    jobs = promotion["jobs"]
    assert "task infra:images" in _commands({"jobs": {"b": jobs["build-images"]}})
    assert any(
        c.startswith("task test:quick -- tests")
        for c in _commands({"jobs": {"i": jobs["integration-tests"]}})
    )
    assert set(jobs["canary"]["needs"]) == {"build-images", "integration-tests"}
    assert jobs["canary"]["environment"] == "production"


def test_promotion_drives_the_rollout_through_the_cli() -> None:
    canary = _commands({"jobs": {"c": _workflow("promotion.yml")["jobs"]["canary"]}})
    start = [
        i
        for i, c in enumerate(canary)
        if re.search(r"\bfinpredict rollout start --model \S+ --version \S+$", c)
    ]
    wait = [
        i for i, c in enumerate(canary) if re.search(r"\bfinpredict rollout status --model \S+ --wait$", c)
    ]
    deploy = [i for i, c in enumerate(canary) if c.startswith("task infra:deploy OVERLAY=prod")]
    assert len(start) == len(wait) == len(deploy) == 1
    assert deploy[0] < start[0] < wait[0]
    env = _workflow("promotion.yml")["env"]
    assert "'credit-default'" in env["MODEL"]


ALLOWED_NON_TASK = (
    "python3 -m pip install go-task-bin==3.54.0",  # the README's way to get Task
    "uv run --locked finpredict rollout ",  # the rollout CLI
    "umask ",  # kubeconfig from a secret
    'echo "$KUBECONFIG_B64" | base64 -d',
    'echo "KUBECONFIG=',
)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflows_call_only_existing_public_tasks(path: Path) -> None:
    workflow = load_workflow(path)
    assert check_workflow_tasks(workflow, taskfile_tasks()) == []
    for job, line in run_commands(workflow):
        assert line.startswith("task ") or line.startswith(ALLOWED_NON_TASK), f"{path.name} job {job}: {line}"
    for job_id, job in workflow["jobs"].items():
        assert any(line.startswith("task ") for j, line in run_commands(workflow) if j == job_id), job_id
        assert "timeout-minutes" in job, f"{job_id} has no timeout"
    assert workflow["permissions"] == {"contents": "read"}


def test_task_check_fails_on_an_unknown_or_internal_task() -> None:
    tasks = taskfile_tasks()
    assert "infra:tools" in tasks
    assert "gateway:test" in tasks
    assert tasks["setup:os"].get("internal")
    workflow = {
        "jobs": {"j": {"steps": [{"run": "task setup\ntask tset:quick\ntask setup:os && task infra:nope"}]}}
    }
    violations = check_workflow_tasks(workflow, tasks)
    assert violations == [
        "job j: `task tset:quick` is not a task in Taskfile.yml",
        "job j: `task setup:os` is internal",
        "job j: `task infra:nope` is not a task in Taskfile.yml",
    ]
