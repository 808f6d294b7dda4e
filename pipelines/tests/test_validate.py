"""Validation of collected data with pandera: every corruption is named (column, rule, rows)."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from finpredict.pipelines import validate
from finpredict.pipelines.common import DatasetSchema, default_dataset_schema, run_stage, write_json
from finpredict.pipelines.dgp import generate
from finpredict.pipelines.validate import validate_frame


@pytest.fixture(scope="module")
def clean() -> pl.DataFrame:
    return generate(2000, seed=5)


@pytest.fixture(scope="module")
def ds() -> DatasetSchema:
    return default_dataset_schema(min_rows=1000)


def issues_by_column(df: pl.DataFrame, ds: DatasetSchema) -> dict[tuple[str, str], dict[str, object]]:
    return {(i["column"], i["rule"].split("(")[0]): i for i in validate_frame(df, ds)}


def test_generated_data_passes(clean: pl.DataFrame, ds: DatasetSchema) -> None:
    assert validate_frame(clean, ds) == []


def test_wrong_type_is_named(clean: pl.DataFrame, ds: DatasetSchema) -> None:
    found = issues_by_column(clean.with_columns(pl.col("debt_to_income").cast(pl.String)), ds)
    assert list(found) == [("debt_to_income", "dtype")]
    assert "has type String" in str(found["debt_to_income", "dtype"]["message"])


def test_out_of_range_values_give_sample_rows(clean: pl.DataFrame, ds: DatasetSchema) -> None:
    bad = clean.with_columns(
        pl.when(pl.int_range(pl.len()).is_in([3, 10, 11]))
        .then(900.0)
        .otherwise(pl.col("business_bureau_score"))
        .alias("business_bureau_score")
    )
    found = issues_by_column(bad, ds)
    issue = found["business_bureau_score", "in_range"]
    assert issue["n_failures"] == 3
    samples = issue["samples"]
    assert isinstance(samples, list)
    assert [s["row"] for s in samples] == [3, 10, 11]
    assert samples[0]["value"] == "900.0"
    assert samples[0]["id"] == clean["application_id"][3]


def test_missing_column_unknown_category_and_non_integer(clean: pl.DataFrame, ds: DatasetSchema) -> None:
    bad = clean.drop("region").with_columns(
        pl.when(pl.int_range(pl.len()) == 0)
        .then(pl.lit("casino"))
        .otherwise(pl.col("sector"))
        .alias("sector"),
        pl.when(pl.int_range(pl.len()) == 1)
        .then(2.5)
        .otherwise(pl.col("open_accounts"))
        .alias("open_accounts"),
    )
    found = issues_by_column(bad, ds)
    assert ("region", "column_present") in found
    assert found["sector", "isin"]["n_failures"] == 1
    assert found["open_accounts", "integer_valued"]["n_failures"] == 1


def test_null_rate_nulls_label_and_row_count(clean: pl.DataFrame, ds: DatasetSchema) -> None:
    bad = clean.with_columns(
        pl.when(pl.int_range(pl.len()) < 500)
        .then(None)
        .otherwise(pl.col("owner_annual_income"))
        .alias("owner_annual_income"),
        pl.when(pl.int_range(pl.len()) == 4)
        .then(None)
        .otherwise(pl.col("annual_revenue"))
        .alias("annual_revenue"),
        pl.when(pl.int_range(pl.len()) == 5).then(2).otherwise(pl.col("default")).alias("default"),
    )
    found = issues_by_column(bad, ds)
    assert "null rate 0.2" in str(found["owner_annual_income", "max_null_rate"]["message"])
    assert ("annual_revenue", "not_nullable") in found
    assert ("default", "isin") in found
    small = issues_by_column(clean.head(10), ds)
    assert "fewer than min_rows(1000)" in str(small["<table>", "min_rows"]["message"])


def test_nan_counts_as_missing(clean: pl.DataFrame, ds: DatasetSchema) -> None:
    bad = clean.with_columns(
        pl.when(pl.int_range(pl.len()) == 9)
        .then(float("nan"))
        .otherwise(pl.col("credit_limit"))
        .alias("credit_limit")
    )
    assert ("credit_limit", "not_nullable") in issues_by_column(bad, ds)


def test_stage_exits_non_zero_naming_the_file(
    tmp_path: Path, clean: pl.DataFrame, ds: DatasetSchema, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "snapshot.csv"
    clean.with_columns(pl.col("application_ts").dt.to_string()).with_columns(
        pl.when(pl.int_range(pl.len()) == 2)
        .then(-5.0)
        .otherwise(pl.col("cash_balance"))
        .alias("cash_balance")
    ).write_csv(data)
    schema = tmp_path / "schema.json"
    write_json(schema, ds.to_dict())
    args = ["--data", str(data), "--schema", str(schema), "--report", str(tmp_path / "validation.json")]
    with pytest.raises(SystemExit) as exit_info:
        run_stage("validate", lambda: validate.main(args))  # what `python -m` runs
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f"{data}: 1 validation rule(s) failed" in stderr
    assert "column 'cash_balance', rule in_range(0.0, 10000000000.0)" in stderr
    assert "row 2" in stderr
    assert not (tmp_path / "validation.json").exists()
    assert (tmp_path / "validation.failed.json").exists()
