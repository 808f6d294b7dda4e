"""Bad files and arguments given to the command lines: a message naming the file (and line where
it applies), a non-zero exit, never a traceback.

* ``finpredict drift report`` reads a reference profile and the monitor's Parquet logs;
* ``finpredict models ...`` reads no file, but takes numbers and names that go on the wire;
* ``finpredict outcomes record`` reads the user's CSV/Parquet file of outcomes;
* the pipeline stages (``python -m finpredict.pipelines.<stage>``, what ``dvc repro`` runs) read
  ``params.yaml``, the user's Parquet/CSV snapshot and its schema file.

Everything runs in-process (typer's runner, the stages' ``run_stage``), so an exception escaping a
command is the traceback a user would see.
"""

from __future__ import annotations

import importlib
import io
import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import example, given
from hypothesis import strategies as st
from typer.testing import CliRunner

from finpredict.demo import replay as rp
from finpredict.gateway.cli import outcomes_app
from finpredict.monitor.cli import app as drift_app
from finpredict.pipelines.common import default_dataset_schema, run_stage
from finpredict.registry.cli import app as models_app
from finpredict.testkit.fuzz import fuzz_settings

ROOT = Path(__file__).resolve().parents[2]
WIDE = {"COLUMNS": "400", "NO_COLOR": "1"}  # one line per message, whatever the path length
PARQUET_MAGIC = b"PAR1"


def _crashed(result: Any) -> bool:
    return result.exception is not None and not isinstance(result.exception, SystemExit)


def _one_line(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


# ----- finpredict drift report ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def profile_bytes() -> bytes:
    return bytes(rp.reference_profile(n_rows=1000).to_bytes())


def _drift_report(data_dir: Path, profile: Path, out: Path) -> Any:
    args = ["report", "--model", "m", "--version", "1", "--data-dir", str(data_dir)]
    return CliRunner().invoke(drift_app, [*args, "--profile", str(profile), "--out", str(out)], env=WIDE)


def test_drift_report_names_an_unreadable_profile(tmp_path: Path, profile_bytes: bytes) -> None:
    @fuzz_settings()
    @given(st.binary(max_size=300))
    @example(b"")
    @example(profile_bytes[: len(profile_bytes) // 2])  # truncated
    @example(b"DRIFTPRF" + b"\xff" * 40)  # right header, garbage after it
    def run(content: bytes) -> None:
        profile = tmp_path / "profile.bin"
        profile.write_bytes(content)
        result = _drift_report(tmp_path / "data", profile, tmp_path / "out.html")
        assert not _crashed(result), result.exception
        assert result.exit_code == 2, result.output
        assert str(profile) in _one_line(result.output)

    run()


def test_drift_report_names_an_unreadable_parquet_log(tmp_path: Path, profile_bytes: bytes) -> None:
    profile = tmp_path / "profile.bin"
    profile.write_bytes(profile_bytes)
    hour = tmp_path / "data" / "predictions" / "model=m" / "version=1" / "hour=20250101T00"
    hour.mkdir(parents=True)

    @fuzz_settings()
    @given(st.binary(max_size=300).map(lambda b: PARQUET_MAGIC + b + PARQUET_MAGIC))
    @example(b"")
    @example(PARQUET_MAGIC)
    def run(content: bytes) -> None:
        bad = hour / "0001.parquet"
        bad.write_bytes(content)
        result = _drift_report(tmp_path / "data", profile, tmp_path / "out.html")
        assert not _crashed(result), result.exception
        assert result.exit_code == 2, result.output
        assert str(bad) in _one_line(result.output)

    run()


def test_drift_report_names_an_unwritable_output(tmp_path: Path, profile_bytes: bytes) -> None:
    profile = tmp_path / "profile.bin"
    profile.write_bytes(profile_bytes)
    hour = tmp_path / "data" / "predictions" / "model=m" / "version=1" / "hour=20250101T00"
    hour.mkdir(parents=True)
    stream = rp.generate(rp.Scenario(days=1, per_hour=5))
    frame = stream.rename({c: f"f.{c}" for c in stream.columns if c not in rp.META}).with_columns(
        pl.lit("m").alias("model"), pl.lit(1).cast(pl.Int64).alias("version"), pl.lit(5.0).alias("latency_ms")
    )
    frame.write_parquet(hour / "0001.parquet")
    out = tmp_path / "no-such-dir" / "report.html"
    result = _drift_report(tmp_path / "data", profile, out)
    assert not _crashed(result), result.exception
    assert result.exit_code == 2, result.output
    assert str(out) in _one_line(result.output)


# ----- finpredict models ---------------------------------------------------------------------------


def _models(*args: str) -> Any:
    env = {**WIDE, "FINPREDICT_REGISTRY_TARGET": "127.0.0.1:1", "FINPREDICT_TOKEN": "fuzz-token-0123456789"}
    return CliRunner().invoke(models_app, list(args), env=env)


@pytest.mark.parametrize(
    "args",
    [
        ("show", "m", str(2**63)),
        ("show", "m", "-1"),
        ("lineage", "m", "99999999999999999999999"),
        ("promote", "m", str(2**64)),
        ("promote", "m", "1", "--expect", str(2**63)),
        ("promote", "m", "1", "--expect", "-5"),
        ("history", "m", "--limit", "0"),
    ],
)
def test_models_numbers_out_of_range_are_usage_errors(args: tuple[str, ...]) -> None:
    result = _models(*args)
    assert not _crashed(result), result.exception
    assert result.exit_code == 2, result.output
    assert "Invalid value" in result.output or "No such option" in result.output


@fuzz_settings()
@given(
    command=st.sampled_from(["show", "lineage", "promote", "rollback", "history", "list"]),
    name=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80),
    version=st.integers(-(2**70), 2**70).map(str),
)
def test_models_any_names_and_numbers_never_crash(command: str, name: str, version: str) -> None:
    args = {
        "show": ["show", name, version],
        "lineage": ["lineage", name, version],
        "promote": ["promote", name, version, "--alias", name or "x"],
        "rollback": ["rollback", name, "--alias", name or "x"],
        "history": ["history", name],
        "list": ["list", name],
    }[command]
    result = _models(*args)
    assert not _crashed(result), (args, result.exception)
    assert result.exit_code != 0, result.output  # nothing listens on the target


# ----- finpredict outcomes record ------------------------------------------------------------------


def _outcomes(file: Path) -> Any:
    env = {**WIDE, "FINPREDICT_GATEWAY_TARGET": "127.0.0.1:1", "FINPREDICT_TOKEN": "t"}  # nothing listens
    return CliRunner().invoke(outcomes_app, ["record", str(file)], env=env)


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("o.csv", b"", "empty file"),
        ("o.csv", b"request_id,defaulted\n", "no outcomes in the file"),
        ("o.csv", b"request_id\nr1\n", "line 1: no 'defaulted' column"),
        ("o.csv", b"request_id,defaulted,score\nr1,1,0.3\n", "line 1: unknown column 'score'"),
        ("o.csv", b"request_id,defaulted,defaulted\nr1,1,1\n", "column 'defaulted': appears twice"),
        ("o.csv", b"request_id,defaulted\nr1,1\n\nr2,yes\n", "line 4, column 'defaulted': expected 0, 1"),
        ("o.csv", b"request_id,defaulted\nr1,1\n,0\n", "line 3, column 'request_id': required"),
        ("o.csv", b"request_id,defaulted\nr1,1,x\n", "line 2: 3 fields, but the header has 2"),
        ("o.csv", b"request_id,defaulted,observed_at\nr1,1,yesterday\n", "line 2, column 'observed_at'"),
        ("o.csv", b"request_id,defaulted\nr1,1\nr1,0\n", "line 3, column 'defaulted': request 'r1'"),
        ("o.csv", b"request_id,defaulted\nr1,\xff\n", "not UTF-8"),
        ("o.parquet", PARQUET_MAGIC + b"\x00" * 32 + PARQUET_MAGIC, "not a readable Parquet file"),
        ("o.json", b"{}", "unknown file type '.json'"),
    ],
)
def test_outcomes_names_the_bad_file_and_line(tmp_path: Path, name: str, content: bytes, needle: str) -> None:
    file = tmp_path / name
    file.write_bytes(content)
    result = _outcomes(file)
    assert not _crashed(result), result.exception
    assert result.exit_code == 2, result.output
    assert str(file) in _one_line(result.output), result.output
    assert needle in _one_line(result.output), result.output


def test_outcomes_parquet_rows_are_named(tmp_path: Path) -> None:
    file = tmp_path / "o.parquet"
    pl.DataFrame({"request_id": ["r1", "r2", "r3"], "defaulted": [1, 0, 2]}).write_parquet(file)
    result = _outcomes(file)
    assert result.exit_code == 2, result.output
    assert f"{file}, row 3, column 'defaulted': expected 0, 1, true or false, got 2" in _one_line(
        result.output
    )


def test_outcomes_any_file_is_sent_or_refused_naming_it(tmp_path: Path) -> None:
    """Whatever the file holds: refused naming it (exit 2), or valid and sent (exit 1: nothing
    listens on the target); never a traceback."""
    near_valid = st.lists(
        st.tuples(
            st.text(max_size=12),
            st.sampled_from(["0", "1", "true", "False", "yes", ""]),
            st.one_of(st.just(""), st.just("2026-01-15T09:30:00Z"), st.text(max_size=25)),
        ),
        max_size=5,
    ).map(lambda rows: ("request_id,defaulted,observed_at\n" + "\n".join(",".join(r) for r in rows)).encode())

    @fuzz_settings()
    @given(
        suffix=st.sampled_from([".csv", ".parquet"]),
        content=st.one_of(
            st.binary(max_size=200),
            st.binary(max_size=200).map(lambda b: PARQUET_MAGIC + b + PARQUET_MAGIC),
            st.text(max_size=200).map(str.encode),
            near_valid,
        ),
    )
    def run(suffix: str, content: bytes) -> None:
        file = tmp_path / f"outcomes{suffix}"
        file.write_bytes(content)
        result = _outcomes(file)
        assert not _crashed(result), result.exception
        if result.exit_code == 2:
            assert str(file) in _one_line(result.output), result.output
        else:
            assert result.exit_code == 1, result.output
            assert "UNAVAILABLE" in result.output

    run()


# ----- the pipeline stages -------------------------------------------------------------------------


def _stage(
    module: str, cwd: Path, files: dict[str, bytes], monkeypatch: pytest.MonkeyPatch
) -> tuple[int, str]:
    """Runs a stage as ``python -m`` would, in ``cwd`` with ``files``; (exit status, stderr)."""
    for rel, content in files.items():
        (cwd / rel).parent.mkdir(parents=True, exist_ok=True)
        (cwd / rel).write_bytes(content)
    monkeypatch.chdir(cwd)
    stage = importlib.import_module(f"finpredict.pipelines.{module}")
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.setattr("sys.stdout", io.StringIO())
    try:
        run_stage(module, lambda: stage.main([]))
    except SystemExit as exc:
        return int(exc.code or 0), err.getvalue()
    return 0, err.getvalue()


def _params(**data: Any) -> bytes:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(data)
    return yaml.safe_dump(params).encode()


SCHEMA_YAML = yaml.safe_dump(default_dataset_schema(min_rows=1).to_dict(), sort_keys=False).encode()
FILE_SOURCE = {"source": "file", "file": "data/external/book.csv", "schema_file": "data/external/schema.yaml"}


@pytest.mark.parametrize(
    ("files", "needles"),
    [
        pytest.param(
            {"params.yaml": b"- just\n- a list\n"}, ["params.yaml", "mapping"], id="params-not-a-mapping"
        ),
        pytest.param(
            {"params.yaml": b"validation: {min_rows: 1}\n"}, ["params.yaml", "'data'"], id="params-no-data"
        ),
        pytest.param(
            {"params.yaml": _params(scenario="no-such-scenario")},
            ["params.yaml", "scenario"],
            id="bad-scenario",
        ),
        pytest.param(
            {"params.yaml": b"data:\n  source: synthetic\n  rows: [1,\n"},
            ["params.yaml: line 3 ", "invalid YAML"],
            id="params-yaml-syntax",
        ),
        pytest.param(
            {"params.yaml": _params(rows="many")},
            ["params.yaml: line", "data.rows", "expected an integer, got 'many'"],
            id="rows-not-a-number",
        ),
        pytest.param(
            {"params.yaml": _params(**FILE_SOURCE), "data/external/schema.yaml": SCHEMA_YAML},
            ["data/external/book.csv", "not found"],
            id="snapshot-missing",
        ),
        pytest.param(
            {
                "params.yaml": _params(**{**FILE_SOURCE, "file": "data/external/book.parquet"}),
                "data/external/schema.yaml": SCHEMA_YAML,
                "data/external/book.parquet": PARQUET_MAGIC + b"\x00" * 64 + PARQUET_MAGIC,
            },
            ["data/external/book.parquet", "cannot read"],
            id="parquet-corrupt",
        ),
        pytest.param(
            {
                "params.yaml": _params(**FILE_SOURCE),
                "data/external/schema.yaml": b"features: [\n  {name: x\n",
                "data/external/book.csv": b"x\n1\n",
            },
            ["data/external/schema.yaml: line 2 ", "invalid YAML"],
            id="schema-yaml-syntax",
        ),
        pytest.param(
            {
                "params.yaml": _params(**{**FILE_SOURCE, "schema_file": "data/external/schema.json"}),
                "data/external/schema.json": b'{"features": [',
                "data/external/book.csv": b"x\n1\n",
            },
            ["data/external/schema.json", "line 1"],
            id="schema-json-syntax",
        ),
        pytest.param(
            {
                "params.yaml": _params(**FILE_SOURCE),
                "data/external/schema.yaml": b"\xff\xfe\x00 not text",
                "data/external/book.csv": b"x\n1\n",
            },
            ["data/external/schema.yaml: line 1: not UTF-8"],
            id="schema-not-utf8",
        ),
    ],
)
def test_ingest_names_the_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, bytes], needles: list[str]
) -> None:
    code, err = _stage("ingest", tmp_path, files, monkeypatch)
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err  # one message naming the file, nothing else
    for needle in needles:
        assert needle in err, err


def test_ingest_any_snapshot_bytes_are_read_or_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever bytes the user's snapshot holds: it is ingested, or refused naming the file."""

    @fuzz_settings()
    @given(
        suffix=st.sampled_from([".csv", ".parquet"]),
        content=st.one_of(
            st.binary(max_size=200),
            st.binary(max_size=200).map(lambda b: PARQUET_MAGIC + b + PARQUET_MAGIC),
            st.text(max_size=200).map(str.encode),
        ),
    )
    def run(suffix: str, content: bytes) -> None:
        name = f"data/external/book{suffix}"
        files = {
            "params.yaml": _params(**{**FILE_SOURCE, "file": name}),
            "data/external/schema.yaml": SCHEMA_YAML,
            name: content,
        }
        code, err = _stage("ingest", tmp_path, files, monkeypatch)
        if code != 0:
            assert name in err, err

    run()


def test_validate_names_a_corrupt_snapshot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = {
        "params.yaml": (ROOT / "params.yaml").read_bytes(),
        "data/raw/dataset_schema.json": json.dumps(default_dataset_schema(1).to_dict()).encode(),
        "data/raw/loans.parquet": PARQUET_MAGIC + b"\x01" * 32 + PARQUET_MAGIC,
    }
    code, err = _stage("validate", tmp_path, files, monkeypatch)
    assert code != 0, err
    assert "data/raw/loans.parquet" in err, err
