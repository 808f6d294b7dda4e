"""Stage ``validate``: checks the collected data of the snapshot against the declared schema.

The expectations are a pandera (polars) schema built from the dataset schema:

* every input feature column exists, with its type (numbers: any numeric column, checked as
  ``Float64``; categories: ``String``), its range ``[min, max]`` (finite), integer-valued
  features hold whole numbers, categories belong to the declared set;
* nullability: a non-nullable column has no missing value (NaN counts as missing), a nullable
  one has a null rate of at most its ``max_null_rate``;
* the label is 0/1 and never missing, the protected attribute and timestamp are never missing,
  the id column (when declared) is unique;
* the row count is at least ``min_rows``.

All failures are collected (``lazy=True``); any failure stops the pipeline with a report that
names the file, the column, the rule, the number of offending rows and sample offending rows
(row index and value). The report is also written to ``reports/validation.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError as PanderaSchemaError
from pandera.errors import SchemaErrors

from finpredict.pipelines.common import (
    RAW_DATA,
    RAW_SCHEMA,
    VALIDATION_REPORT,
    DatasetSchema,
    PipelineError,
    md5_file,
    run_stage,
    write_json,
)
from finpredict.pipelines.ingest import read_table

SAMPLE_ROWS = 5


def _max_null_rate(rate: float) -> pa.Check:
    def check(data: Any) -> pl.LazyFrame:
        return data.lazyframe.select(pl.col(data.key).is_null().mean() <= rate)  # type: ignore[no-any-return]

    return pa.Check(check, name=f"max_null_rate({rate:g})", element_wise=False)


def _integer_valued() -> pa.Check:
    def check(data: Any) -> pl.LazyFrame:
        c = pl.col(data.key)
        return data.lazyframe.select(c.is_null() | (c.floor() == c))  # type: ignore[no-any-return]

    return pa.Check(check, name="integer_valued")


def _finite() -> pa.Check:
    def check(data: Any) -> pl.LazyFrame:
        c = pl.col(data.key)
        return data.lazyframe.select(c.is_null() | c.is_finite())  # type: ignore[no-any-return]

    return pa.Check(check, name="finite")


def build_schema(ds: DatasetSchema) -> pa.DataFrameSchema:
    """The pandera schema (types, ranges, categories, null rates, row count) of a dataset schema."""
    columns: dict[str, pa.Column] = {}
    for spec in ds.features.features:
        if spec.kind == "categorical":
            checks = [pa.Check.isin(list(spec.categories))]
            dtype: Any = pl.String
        else:
            checks = [_finite()]
            if spec.min is not None and spec.max is not None:
                checks.append(pa.Check.in_range(spec.min, spec.max))
            elif spec.min is not None:
                checks.append(pa.Check.ge(spec.min))
            elif spec.max is not None:
                checks.append(pa.Check.le(spec.max))
            if spec.kind == "integer":
                checks.append(_integer_valued())
            dtype = pl.Float64
        if spec.nullable:
            checks.append(_max_null_rate(spec.max_null_rate))
        columns[spec.name] = pa.Column(dtype, checks=checks, nullable=spec.nullable)
    columns[ds.label] = pa.Column(pl.Float64, checks=[pa.Check.isin([0.0, 1.0])], nullable=False)
    columns[ds.protected_attribute] = pa.Column(pl.String, nullable=False)
    columns[ds.timestamp] = pa.Column(None, nullable=False)
    if ds.id_column:
        columns[ds.id_column] = pa.Column(None, nullable=False, unique=True)
    min_rows = ds.min_rows

    def enough_rows(data: Any) -> pl.LazyFrame:
        return data.lazyframe.select(pl.len() >= min_rows)  # type: ignore[no-any-return]

    return pa.DataFrameSchema(columns, checks=[pa.Check(enough_rows, name=f"min_rows({min_rows})")])


def normalise(df: pl.DataFrame, ds: DatasetSchema) -> pl.DataFrame:
    """Casts numeric columns of numeric features (and the label) to Float64 with NaN as null.

    Non-numeric columns are left alone, so a column of the wrong type fails the dtype rule.
    """
    numeric = [f.name for f in ds.features.features if f.kind != "categorical"] + [ds.label]
    exprs = []
    for name in numeric:
        if name in df.columns and (df[name].dtype.is_numeric() or df[name].dtype == pl.Boolean):
            exprs.append(pl.col(name).cast(pl.Float64).fill_nan(None))
    return df.with_columns(exprs) if exprs else df


def _fmt(v: object) -> str:
    s = str(v)
    return s if len(s) <= 60 else s[:57] + "..."


def failure_report(exc: SchemaErrors, df: pl.DataFrame, ds: DatasetSchema) -> list[dict[str, Any]]:
    """One entry per (column, rule): how many rows fail and sample offending rows."""
    fc = exc.failure_cases
    issues: list[dict[str, Any]] = []
    wrong_type = set(fc.filter(pl.col("check").str.starts_with("dtype("))["column"].to_list())
    for (column, check), group in fc.group_by(["column", "check"], maintain_order=True):
        col = column if column is not None else "<table>"
        if column in wrong_type and not str(check).startswith("dtype("):
            continue  # value rules cannot run on a column of the wrong type
        entry: dict[str, Any] = {"column": col, "rule": str(check), "n_failures": group.height}
        if check == "column_in_dataframe":
            entry["column"] = str(group["failure_case"][0])
            entry["rule"] = "column_present"
            entry["message"] = f"column {entry['column']!r} is missing"
            entry["n_failures"] = df.height
        elif str(check).startswith("dtype("):
            entry["message"] = f"column {col!r} has type {group['failure_case'][0]}, expected {check}"
            entry["n_failures"] = df.height
        elif str(check).startswith("max_null_rate") and column in df.columns:
            rate = df[column].is_null().mean()
            entry["message"] = f"column {col!r} null rate {rate:.4f} exceeds {check}"
            entry["observed"] = rate
        elif str(check).startswith("min_rows"):
            entry["message"] = f"the table has {df.height} rows, fewer than {check}"
            entry["observed"] = df.height
        else:
            samples = []
            for row in group.head(SAMPLE_ROWS).iter_rows(named=True):
                idx = row["index"]
                sample: dict[str, Any] = {"row": idx, "value": _fmt(row["failure_case"])}
                if ds.id_column and ds.id_column in df.columns and idx is not None and idx < df.height:
                    sample["id"] = _fmt(df[ds.id_column][int(idx)])
                samples.append(sample)
            entry["samples"] = samples
            entry["message"] = f"column {col!r} breaks rule {check} in {group.height} row(s)"
        issues.append(entry)
    return issues


def validate_frame(df: pl.DataFrame, ds: DatasetSchema) -> list[dict[str, Any]]:
    """Validates ``df``; returns the list of issues (empty when the data is valid)."""
    schema = build_schema(ds)
    norm = normalise(df, ds)
    try:
        schema.validate(norm, lazy=True)
    except SchemaErrors as exc:
        return failure_report(exc, norm, ds)
    except PanderaSchemaError as exc:  # pragma: no cover - lazy mode collects, kept for safety
        return [{"column": "<table>", "rule": "schema", "n_failures": 0, "message": str(exc)}]
    return []


def format_report(path: Path, issues: list[dict[str, Any]]) -> str:
    lines = [f"{path}: {len(issues)} validation rule(s) failed"]
    for it in issues:
        lines.append(f"  - column {it['column']!r}, rule {it['rule']}: {it['message']}")
        for s in it.get("samples", []):
            extra = f" (id {s['id']})" if "id" in s else ""
            lines.append(f"      row {s['row']}{extra}: {s['value']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=RAW_DATA)
    parser.add_argument("--schema", type=Path, default=RAW_SCHEMA)
    parser.add_argument("--report", type=Path, default=VALIDATION_REPORT)
    args = parser.parse_args(argv)
    ds = DatasetSchema.load(args.schema)
    df = read_table(args.data)
    issues = validate_frame(df, ds)
    report: dict[str, Any] = {
        "file": str(args.data),
        "md5": md5_file(args.data),
        "rows": df.height,
        "columns": df.width,
        "valid": not issues,
        "issues": issues,
        "null_rates": {
            f.name: df[f.name].null_count() / max(df.height, 1)
            for f in ds.features.features
            if f.name in df.columns and f.nullable
        },
    }
    if issues:
        # The report goes next to the expected output, which DVC will not record as valid.
        write_json(args.report.with_name(args.report.stem + ".failed.json"), report)
        args.report.unlink(missing_ok=True)
        raise PipelineError(format_report(args.data, issues))
    write_json(args.report, report)
    print(f"[validate] {args.data}: {df.height} rows, {df.width} columns, all rules passed", file=sys.stdout)


if __name__ == "__main__":
    run_stage("validate", main)
