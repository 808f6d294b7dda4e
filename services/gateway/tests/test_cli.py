"""``finpredict rollout ...`` and ``finpredict score`` against a real registry and gateway (no Ray)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from typer.testing import Result

from finpredict.gateway.cli import (
    BATCH_ROWS,
    outcomes_app,
    parse_duration,
    read_applications,
    rollout_app,
    score_app,
)
from finpredict.gateway.cli.outcomes import BATCH_OUTCOMES
from finpredict.testkit.cli import (
    ADMIN_TOKEN,
    READER_TOKEN,
    WRITER_TOKEN,
    CliStack,
    cli_stack,
    fake_scoring,
    invoke,
)
from finpredict.testkit.models import train_small_model

UNREACHABLE = "127.0.0.1:1"
APPLICATION = {
    "annual_revenue": 120000.0,
    "debt": 30000.0,
    "owner_income": None,
    "years_in_business": 4,
    "late_payments_12m": 1,
    "sector": "retail",
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliStack]:
    trained = (train_small_model(seed=1, rounds=5), train_small_model(seed=2, rounds=6))
    with cli_stack(tmp_path_factory.mktemp("gateway-cli"), trained) as stack:
        yield stack


def rollout(gw: CliStack, *args: str, token: str = ADMIN_TOKEN) -> Result:
    return invoke(rollout_app, list(args), gw.target, token)


def started_id(result: Result) -> str:
    assert result.exit_code == 0, result.output
    m = re.search(r"rollout ([0-9a-f]{12})", result.output)
    assert m, result.output
    return m.group(1)


def assert_clean(result: Result, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    for needle in needles:
        assert needle in result.output, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception


# ----- rollout ---------------------------------------------------------------------------------


def test_rollout_start_status_pause_resume_abort(gw: CliStack) -> None:
    model = gw.model()
    result = rollout(gw, "start", "--model", model, "--version", "2", "--steps", "1, 50%, 100",
                     "--interval", "1h", "--min-requests", "50", "--max-score-psi", "0.3")  # fmt: skip
    rid = started_id(result)
    assert f"{model} v1 → v2" in result.output
    assert "PROGRESSING" in result.output
    assert f"status --id {rid}" in result.output

    text = rollout(gw, "status", "--model", model)
    assert_clean(text, 0, rid, model, "v1", "v2", "PROGRESSING", "▶ 1%", "50%", "every 1h",
                 "score PSI ≤ 0.3", "started", "by ops")  # fmt: skip
    # per-variant metrics of the open window, and the decisions with the last one's reason
    for needle in ("stable", "canary", "requests", "error rate", "p99 ms", "mean score"):
        assert needle in text.output
    assert "last decision: start: ops started" in text.output

    as_json = rollout(gw, "status", "--id", rid, "--json")
    assert as_json.exit_code == 0, as_json.output
    doc = json.loads(as_json.output)
    assert doc["id"] == rid
    assert doc["model"] == model
    assert (doc["stable_version"], doc["candidate_version"]) == (1, 2)
    assert doc["state"] == "ROLLOUT_STATE_PROGRESSING"
    assert doc["steps"] == [1.0, 50.0, 100.0]
    assert doc["weight"] == 1.0
    assert doc["analysis_interval"] == "3600s"
    assert doc["min_requests_per_step"] == 50
    assert doc["thresholds"]["max_score_psi"] == 0.3
    assert [m["variant"] for m in doc["metrics"]] == ["stable", "canary"]

    # a second rollout of the same model is refused while this one runs
    again = rollout(gw, "start", "--model", model, "--version", "2")
    assert_clean(again, 1, "FAILED_PRECONDITION", "already has an active rollout", "hint:")

    assert_clean(rollout(gw, "pause", "--id", rid, "--reason", "change freeze"), 0, "PAUSED", "change freeze")
    assert_clean(rollout(gw, "status", "--id", rid), 0, "PAUSED", "ops: change freeze")
    assert_clean(rollout(gw, "resume", "--id", rid), 0, "PROGRESSING", "resume by ops")
    listed = rollout(gw, "list", "--model", model)
    assert_clean(listed, 0, rid, "PROGRESSING", "1/3", "1%")
    assert_clean(rollout(gw, "abort", "--id", rid, "--reason", "bad idea"), 0, "ABORTED", "weight 0%")

    # an ended rollout cannot be paused; watching it returns at once
    assert_clean(rollout(gw, "pause", "--id", rid), 1, "FAILED_PRECONDITION", "has ended", "hint:")
    assert_clean(rollout(gw, "status", "--id", rid, "--watch"), 0, "ABORTED", "last decision: abort")
    listed_json = rollout(gw, "list", "--model", model, "--json")
    assert [r["state"] for r in json.loads(listed_json.output)] == ["ROLLOUT_STATE_ABORTED"]


def test_status_wait_exits_3_on_an_aborted_rollout_and_0_on_a_promoted_one(gw: CliStack) -> None:
    model = gw.model()
    rid = started_id(rollout(gw, "start", "--model", model, "--version", "2", "--interval", "10m"))
    assert rollout(gw, "abort", "--id", rid).exit_code == 0
    t0 = time.monotonic()
    waited = rollout(gw, "status", "--model", model, "--wait")
    assert_clean(waited, 3, "ABORTED", f"rollout {rid} ended")
    assert time.monotonic() - t0 < 5
    waited_json = rollout(gw, "status", "--id", rid, "--wait", "--json", token=READER_TOKEN)
    assert waited_json.exit_code == 3
    assert json.loads(waited_json.output)["state"] == "ROLLOUT_STATE_ABORTED"

    # promote skips the remaining steps and moves `production` in the registry
    rid = started_id(rollout(gw, "start", "--model", model, "--version", "2", "--interval", "10m"))
    assert_clean(rollout(gw, "promote", "--id", rid, "--reason", "looks good"), 0, "PROMOTED")
    assert gw.admin.production(model) == 2
    assert_clean(rollout(gw, "status", "--id", rid, "--wait"), 0, "PROMOTED", "production -> version 2")


def test_shadow_and_experiment(gw: CliStack) -> None:
    model = gw.model()
    assert_clean(rollout(gw, "shadow", "--model", model, "--version", "2", "--percent", "10"), 0,
                 f"mirroring 10% of {model} traffic to v2")  # fmt: skip
    assert_clean(rollout(gw, "shadow", "--model", model, "--version", "0"), 0, "off")
    started = rollout(
        gw, "experiment", "start", "--model", model, "--arm", "control=1:70", "--arm", "new=2:30"
    )
    assert_clean(started, 0, "control", "new", "70%", "30%")
    exp_id = re.search(r"experiment (\S+) on", started.output)
    assert exp_id, started.output
    refused = rollout(gw, "start", "--model", model, "--version", "2")
    assert_clean(refused, 1, "FAILED_PRECONDITION", "experiment", "experiment stop")
    # its statistics before any traffic: nothing to judge yet, so the recommendation is to go on
    running = rollout(gw, "experiment", "status", "--model", model)
    assert_clean(running, 0, "running", "new against control", "default rate", "recommendation: continue")
    shown = rollout(gw, "experiment", "status", "--id", exp_id.group(1), "--json")
    assert_clean(shown, 0)
    doc = json.loads(shown.output)
    assert doc["statistics"]["versions"] == {"control": 1, "new": 2}
    assert doc["statistics"]["comparisons"][0]["recommendation"] == "continue"
    assert_clean(rollout(gw, "experiment", "stop", "--id", exp_id.group(1)), 0, "stopped")
    assert_clean(rollout(gw, "experiment", "stop", "--id", exp_id.group(1)), 1, "NOT_FOUND")
    # a stopped experiment keeps its statistics (by id); the model has no running one any more
    assert_clean(rollout(gw, "experiment", "status", "--id", exp_id.group(1)), 0, "stopped")
    assert_clean(rollout(gw, "experiment", "status", "--model", model), 1, "NOT_FOUND")
    assert_clean(rollout(gw, "experiment", "status"), 2, "exactly one of --model or --id")


@pytest.mark.parametrize(
    ("args", "token", "code", "needles"),
    [
        (("list",), "", 2, ("no token", "FINPREDICT_TOKEN")),
        (("list",), "not-a-token-0123456789", 1, ("UNAUTHENTICATED", "hint:", "FINPREDICT_TOKEN")),
        (
            ("start", "--model", "m", "--version", "2"),
            READER_TOKEN,
            1,
            ("PERMISSION_DENIED", "hint:", "admin role"),
        ),
        (("status", "--id", "feedfacecafe"), READER_TOKEN, 1, ("NOT_FOUND", "feedfacecafe")),
        (("abort", "--id", "feedfacecafe"), ADMIN_TOKEN, 1, ("NOT_FOUND", "hint:", "rollout list")),
        (
            ("start", "--model", "m", "--version", "2", "--steps", "1,x,100"),
            ADMIN_TOKEN,
            2,
            ("--steps", "'x' is not a number"),
        ),
        (
            ("start", "--model", "m", "--version", "2", "--steps", "5,1,100"),
            ADMIN_TOKEN,
            2,
            ("--steps", "must increase"),
        ),
        (
            ("start", "--model", "m", "--version", "2", "--steps", "1,5,50"),
            ADMIN_TOKEN,
            2,
            ("--steps", "must be 100"),
        ),
        (
            ("start", "--model", "m", "--version", "2", "--steps", "0,100"),
            ADMIN_TOKEN,
            2,
            ("--steps", "outside (0, 100]"),
        ),
        (
            ("start", "--model", "m", "--version", "2", "--interval", "5x"),
            ADMIN_TOKEN,
            2,
            ("--interval", "'5x' is not a positive duration"),
        ),
        (("start", "--model", "m", "--version", "2", "--interval", "0s"), ADMIN_TOKEN, 2, ("--interval",)),
        (
            ("start", "--model", "m", "--version", "2", "--max-score-psi", "-1"),
            ADMIN_TOKEN,
            2,
            ("--max-score-psi",),
        ),
        (("status",), ADMIN_TOKEN, 2, ("exactly one of --model or --id",)),
        (("status", "--id", "x", "--wait", "--timeout", "soon"), ADMIN_TOKEN, 2, ("--timeout",)),
        (
            ("experiment", "start", "--model", "m", "--arm", "a=1"),
            ADMIN_TOKEN,
            2,
            ("--arm", "NAME=VERSION:WEIGHT"),
        ),
        (
            ("experiment", "start", "--model", "m", "--arm", "a=1:50", "--arm", "b=2:40"),
            ADMIN_TOKEN,
            2,
            ("add up to 90",),
        ),
    ],
)
def test_rollout_errors_are_clear(
    gw: CliStack, args: tuple[str, ...], token: str, code: int, needles: tuple[str, ...]
) -> None:
    assert_clean(rollout(gw, *args, token=token), code, *needles)


def test_unreachable_gateway_gives_a_hint() -> None:
    result = invoke(rollout_app, ["list"], UNREACHABLE, ADMIN_TOKEN)
    assert_clean(result, 1, "UNAVAILABLE", "hint:", "FINPREDICT_GATEWAY_TARGET")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90.0), ("2m", 120.0), ("1.5s", 1.5), ("500ms", 0.5), ("1h", 3600.0), ("45", 45.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--interval") == seconds


@pytest.mark.parametrize("text", ["", "5x", "-1s", "0s", "1.2.3s", "ms", "inf"])
def test_bad_durations_exit_2(text: str) -> None:
    with pytest.raises(typer.Exit) as exc:
        parse_duration(text, "--interval")
    assert exc.value.exit_code == 2


# ----- score -----------------------------------------------------------------------------------


def score(target: str, *args: str, token: str = READER_TOKEN) -> Result:
    return invoke(score_app, list(args), target, token)


@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        (
            "apps.jsonl",
            '{"entity_id": "a", "debt": 1}\n\n{"entity_id": "b", "debt": }\n',
            ("apps.jsonl, line 3", "not valid JSON"),
        ),
        ("apps.jsonl", '{"entity_id": "a", "debt": [1, 2]}\n', ("apps.jsonl, line 1, key 'debt'", "a list")),
        (
            "apps.jsonl",
            '{"entity_id": "a"}\n{"debt": 2}\n',
            ("apps.jsonl, line 2, key 'entity_id'", "required"),
        ),
        ("apps.jsonl", '{"entity_id": "a"}\n[1]\n', ("apps.jsonl, line 2", "expected a JSON object")),
        (
            "apps.csv",
            "entity_id,debt,sector\na,1,retail\nb,2,tech,extra\n",
            ("apps.csv, line 3", "4 fields, but the header has 3"),
        ),
        (
            "apps.csv",
            "entity_id,debt\na,1\n,2\n",
            ("apps.csv, line 3, column 'entity_id'", "empty entity id"),
        ),
        ("apps.csv", "id,debt\na,1\n", ("apps.csv, line 1", "no 'entity_id' column")),
        ("apps.csv", "", ("apps.csv", "empty file")),
        ("apps.txt", "x", ("apps.txt", "unknown file type")),
    ],
)
def test_score_bad_file_names_file_and_line(
    tmp_path: Path, name: str, content: str, needles: tuple[str, ...]
) -> None:
    path = tmp_path / name
    path.write_text(content)
    # an unreachable target: the file is checked before any RPC
    assert_clean(score(UNREACHABLE, "--model", "m", "--file", str(path)), 2, *needles)


def test_score_usage_errors(tmp_path: Path) -> None:
    assert_clean(score(UNREACHABLE, "--model", "m"), 2, "exactly one of --features")
    assert_clean(score(UNREACHABLE, "--model", "m", "--features", "{"), 2, "--features", "not valid JSON")
    assert_clean(score(UNREACHABLE, "--model", "m", "--features", '{"debt": 1}'), 2, "--entity-id")
    assert_clean(score(UNREACHABLE, "--model", "m", "--file", str(tmp_path / "none.csv")), 2, "cannot read")
    no_token = score(UNREACHABLE, "--model", "m", "--entity-id", "e", "--features", "{}", token="")
    assert_clean(no_token, 2, "FINPREDICT_TOKEN")


def test_score_without_model_server_is_unavailable_with_a_hint(gw: CliStack, tmp_path: Path) -> None:
    model = gw.model()
    one = score(gw.target, "--model", model, "--entity-id", "cust-1", "--features", json.dumps(APPLICATION))
    assert_clean(one, 1, "UNAVAILABLE", "model server", "hint:", "FINPREDICT_GATEWAY_MODEL_SERVER_TARGET")

    path = tmp_path / "apps.csv"
    path.write_text(
        "entity_id,annual_revenue,debt,owner_income,years_in_business,late_payments_12m,sector\n"
        "c-1,120000,30000,,4,1,retail\nc-2,90000,1000,50000,12,0,tech\n"
    )
    batch = score(gw.target, "--model", model, "--file", str(path), "--explain", "--json")
    assert_clean(batch, 1, "UNAVAILABLE", "hint:")

    # the gateway validates before it calls the model server; the hint points back at the file
    path.write_text("entity_id,debt\nc-1,-5\n")
    bad = score(gw.target, "--model", model, "--file", str(path))
    assert_clean(bad, 1, "INVALID_ARGUMENT", f"{path}, line 2")


def test_file_values_become_numbers_categories_and_missing(tmp_path: Path) -> None:
    csv_path = tmp_path / "apps.csv"
    csv_path.write_text("entity_id,debt,sector,owner_income\n\ne-1, 12.5 ,retail,\ne-2,1e3,tech,null\n")
    jsonl_path = tmp_path / "apps.jsonl"
    jsonl_path.write_text(
        '{"entity_id": "e-1", "debt": 12.5, "sector": "retail", "owner_income": null}\n'
        '{"entity_id": 2, "debt": 1000, "sector": "tech", "owner_income": ""}\n'
    )
    for path, lines in ((csv_path, [3, 4]), (jsonl_path, [1, 2])):
        rows = read_applications(path)
        assert [r.line for r in rows] == lines
        first = rows[0].application
        assert first.entity_id == "e-1"
        assert first.features["debt"].number == 12.5
        assert first.features["sector"].category == "retail"
        assert first.features["owner_income"].WhichOneof("kind") is None
        assert rows[1].application.features["debt"].number == 1000.0
        assert rows[1].application.features["owner_income"].WhichOneof("kind") is None
    assert read_applications(jsonl_path)[1].application.entity_id == "2"


def test_score_file_in_batches_as_json_lines_and_a_table(tmp_path: Path) -> None:
    n = 2 * BATCH_ROWS + 3
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"entity_id": f"e-{i}", "debt": i * 100.0}) + "\n" for i in range(n)))
    with fake_scoring() as (target, fake):
        lines = score(target, "--model", "credit", "--file", str(path), "--json")
        assert lines.exit_code == 0, lines.output
        assert [len(b) for b in fake.batches] == [BATCH_ROWS, BATCH_ROWS, 3]
        docs = [json.loads(line) for line in lines.output.splitlines()]
        assert [d["entity_id"] for d in docs] == [f"e-{i}" for i in range(n)]
        assert docs[0]["model"] == {"name": "credit", "version": 7}
        assert docs[-1]["decision"] == "DECISION_DECLINE"

        one = score(target, "--model", "credit", "--entity-id", "cust-9", "--features",
                    '{"debt": 80000, "sector": "tech"}', "--top-k", "2")  # fmt: skip
        assert_clean(one, 0, "cust-9", "0.8000", "decline", "v7", "canary", "R00 debt (+0.500)", "R01 debt")
        assert fake.batches[-1][0].features["sector"].category == "tech"


# ----- outcomes --------------------------------------------------------------------------------


def test_outcomes_record_sends_the_file_in_chunks_and_sums_the_answers(tmp_path: Path) -> None:
    n = BATCH_OUTCOMES * 2 + 7
    rows = [
        f"r{i},{'true' if i % 3 else 0},2026-01-{1 + i % 28:02d}T10:00:00+02:00,biz-{i}" for i in range(n)
    ]
    file = tmp_path / "outcomes.csv"
    file.write_text("\n".join(["request_id,defaulted,observed_at,entity_id", *rows, "r5,true,,"]) + "\n")
    with fake_scoring() as (target, fake):
        result = invoke(outcomes_app, ["record", str(file)], target, WRITER_TOKEN)
    assert result.exit_code == 0, result.output
    assert [len(b) for b in fake.outcome_batches] == [BATCH_OUTCOMES, BATCH_OUTCOMES, 8]
    assert (
        f"recorded {n + 1} outcomes from {file}: {n} matched, 0 waiting for their prediction, 1 duplicates"
        in (" ".join(result.output.split()))
    )
    first, last = fake.outcomes["r0"], fake.outcomes[f"r{n - 1}"]
    assert (first.defaulted, first.entity_id) == (False, "biz-0")
    assert first.observed_at.ToJsonString() == "2026-01-01T08:00:00Z"
    assert (last.defaulted, last.entity_id) == (True, f"biz-{n - 1}")
    assert not fake.outcome_batches[-1][-1].HasField("observed_at")  # empty: the gateway's clock
