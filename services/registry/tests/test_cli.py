"""``finpredict models ...`` against a real registry."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from finpredict.api.registry.v1 import registry_pb2 as pb
from finpredict.registry.cli import app
from finpredict.testkit.registry import (
    ADMIN_TOKEN,
    READER_TOKEN,
    WRITER_TOKEN,
    Registry,
    create_model,
    gate,
    promotable,
    register,
    running_registry,
)


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry("sqlite", tmp_path_factory.mktemp("cli"), None) as r:
        yield r


def run(reg: Registry, *args: str, token: str = ADMIN_TOKEN) -> tuple[int, str]:
    env = {"FINPREDICT_REGISTRY_TARGET": reg.target, "FINPREDICT_TOKEN": token, "COLUMNS": "250"}
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.output


def test_cli_list_show_promote_rollback_history_lineage(reg: Registry) -> None:
    admin = reg.client()
    model = create_model(admin, "cli")
    register(admin, model, b"one", **promotable(metrics={"auc_roc": 0.81}))
    lineage = pb.Lineage(
        git_commit="f" * 40, trigger="manual", data_md5={"data/x.csv": "d" * 32}, dvc_lock_sha256="e" * 64
    )
    register(admin, model, b"two", **promotable(metrics={"auc_roc": 0.83}, lineage=lineage))
    register(admin, model, b"three", **promotable(gate_results=[gate("auc_roc", 0.5, 0.7)]))

    code, text = run(reg, "list")
    assert code == 0
    assert model in text
    code, text = run(reg, "list", model)
    assert code == 0
    assert "auc_roc=0.83" in text
    assert "failed: auc_roc" in text

    assert run(reg, "promote", model, "1", "--reason", "first")[0] == 0
    code, text = run(reg, "promote", model, "2", "--expect", "1", "--reason", "better auc")
    assert code == 0
    assert "production 1 → 2" in text

    code, text = run(reg, "promote", model, "3")
    assert code == 1
    assert "FAILED_PRECONDITION" in text
    assert "auc_roc" in text
    code, text = run(reg, "promote", model, "1", "--expect", "7")
    assert code == 1
    assert "ABORTED" in text
    assert "hint" in text

    code, text = run(reg, "rollback", model, "--reason", "incident 12")
    assert code == 0
    assert "rollback" in text
    assert "production 2 → 1" in text

    code, text = run(reg, "show", model, "--alias", "production")
    assert code == 0
    assert f"{model} v1" in text
    assert "production" in text
    assert "passed" in text
    code, text = run(reg, "history", model, "--alias", "production")
    assert code == 0
    assert text.index("first") < text.index("better auc") < text.index("incident 12")
    assert "alias.rollback" in text
    assert "alice" in text
    code, text = run(reg, "lineage", model, "2")
    assert code == 0
    assert "f" * 40 in text
    assert "data/x.csv" in text
    assert "manual" in text
    admin.close()


@pytest.mark.parametrize(
    ("args", "token", "code", "needle"),
    [
        (("list",), "", 2, "FINPREDICT_TOKEN"),
        (("list",), "wrong-token-12345", 1, "UNAUTHENTICATED"),
        (("promote", "cli-none", "1"), READER_TOKEN, 1, "PERMISSION_DENIED"),
        (("show", "no-such-model", "1"), READER_TOKEN, 1, "NOT_FOUND"),
        (("show", "m"), READER_TOKEN, 2, "exactly one of VERSION or --alias"),
    ],
)
def test_cli_errors_are_clear(
    reg: Registry, args: tuple[str, ...], token: str, code: int, needle: str
) -> None:
    got_code, text = run(reg, *args, token=token)
    assert got_code == code, text
    assert needle in text


def test_cli_unreachable_registry_gives_a_hint() -> None:
    env = {"FINPREDICT_REGISTRY_TARGET": "127.0.0.1:1", "FINPREDICT_TOKEN": ADMIN_TOKEN, "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["list"], env=env)
    assert result.exit_code == 1
    assert "UNAVAILABLE" in result.output
    assert "FINPREDICT_REGISTRY_TARGET" in result.output


def test_cli_policy_shows_checks_and_sets_the_promotion_policy(reg: Registry) -> None:
    admin = reg.client()
    model = create_model(admin, "clipol")
    lax = [gate("auc_roc", 0.75, 0.7)]
    register(admin, model, b"lax", **promotable(gate_results=lax))
    admin.close()

    code, text = run(reg, "policy", "show", model, "--version", "1", token=READER_TOKEN)
    assert code == 0, text
    assert "the registry's default" in text
    for rule in ("auc_roc", ">= 0.82", "ece", "compute_p99_ms", "<= 50", "demographic_parity_diff"):
        assert rule in text
    assert "required lineage: git_commit, data_md5, dvc_lock_sha256, reference_profile" in text
    assert "may not become production" in text
    assert "auc_roc=0.75 (the registry requires >= 0.82)" in text
    assert "missing required gate(s): ece, compute_p99_ms, demographic_parity_diff" in text
    assert "hand-off: off" in text

    code, text = run(reg, "policy", "set", model, "--gate", "auc_roc>=0.7", token=WRITER_TOKEN)
    assert code == 1
    assert "PERMISSION_DENIED" in text
    code, text = run(reg, "policy", "set", model, "--gate", "auc_roc=0.7")
    assert code == 2
    assert "NAME>=THRESHOLD" in text
    code, text = run(
        reg, "policy", "set", model, "--gate", "auc_roc>=0.7", "--require", "data_md5", "--reason", "pilot"
    )
    assert code == 0, text
    assert "set " in text
    assert "by alice" in text
    assert "required lineage: data_md5" in text
    code, text = run(reg, "policy", "show", model, "--version", "1")
    assert "may become production" in text
    assert run(reg, "promote", model, "1")[0] == 0
    code, text = run(reg, "history", model)
    assert "policy.set" in text
    assert "pilot" in text

    code, text = run(reg, "policy", "set", model, "--hand-off", "canary", "--canary-steps", "5,100",
                     "--canary-limit", "max_score_psi=0.5")  # fmt: skip
    assert code == 0, text
    for needle in ("hand-off: canary: a version after v1", "steps 5%, 100%", "max_score_psi 0.5"):
        assert needle in text, text
    assert "required lineage: data_md5" in text  # unnamed parts are kept
    code, text = run(reg, "policy", "set", model, "--canary-steps", "5,100")
    assert code == 2
    assert "--hand-off canary" in text
    code, text = run(reg, "policy", "set", model, "--hand-off", "canary", "--canary-limit", "max_psi=1")
    assert code == 2
    assert "max_score_psi" in text
