"""Bring your own data: a CSV snapshot plus a schema file goes through ingest and validation."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import polars as pl
import pytest
import yaml

from finpredict.pipelines.common import default_dataset_schema, run_stage
from finpredict.pipelines.dgp import generate

ROOT = Path(__file__).resolve().parents[2]


def run(
    module: str, cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str, str]:
    """Runs a stage's entry point in-process, as ``python -m`` would (exit status, stdout, stderr)."""
    monkeypatch.chdir(cwd)
    stage = importlib.import_module(f"finpredict.pipelines.{module}")
    code = 0
    try:
        run_stage(module, lambda: stage.main([]))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_csv_snapshot_with_schema_file_is_ingested_and_validated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update(
        {"source": "file", "file": "data/external/book.csv", "schema_file": "data/external/schema.yaml"}
    )
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ext = tmp_path / "data" / "external"
    ext.mkdir(parents=True)
    df = generate(1200, seed=8)
    df.with_columns(pl.col("application_ts").dt.to_string()).write_csv(ext / "book.csv")
    schema = default_dataset_schema().to_dict()
    schema["min_rows"] = 1000
    (ext / "schema.yaml").write_text(yaml.safe_dump(schema, sort_keys=False))

    code, out, err = run("ingest", tmp_path, monkeypatch, capsys)
    assert code == 0, err
    assert "read 1200 rows from data/external/book.csv" in out
    snapshot = pl.read_parquet(tmp_path / "data/raw/loans.parquet")
    assert snapshot.height == 1200
    assert json.loads((tmp_path / "data/raw/dataset_schema.json").read_text())["min_rows"] == 1000

    code, out, err = run("validate", tmp_path, monkeypatch, capsys)
    assert code == 0, err
    report = json.loads((tmp_path / "reports/validation.json").read_text())
    assert report["valid"] is True
    assert report["rows"] == 1200


def test_missing_schema_file_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"].update({"source": "file", "file": "nope.csv", "schema_file": "data/external/none.yaml"})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    code, _, err = run("ingest", tmp_path, monkeypatch, capsys)
    assert code == 2
    assert "data/external/none.yaml: schema file not found" in err
