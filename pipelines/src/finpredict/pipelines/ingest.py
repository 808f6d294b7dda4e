"""Stage ``ingest``: writes the data snapshot ``data/raw/loans.parquet`` and its dataset schema.

``data.source: synthetic`` (default) runs the documented generator (:mod:`finpredict.pipelines.dgp`)
with ``data.rows``, ``data.seed`` and ``data.scenario``. ``data.source: file`` reads the user's
Parquet or CSV file ``data.file`` and schema ``data.schema_file`` (YAML/JSON, the format of
:meth:`DatasetSchema.to_dict`), both under ``data/external/`` so DVC tracks them as a dependency.
``data.source: production`` reads the snapshot of labelled production predictions
``data.production.snapshot`` (under ``data/production/``; see
:mod:`finpredict.pipelines.production`), written by ``finpredict drift export`` or the monitor's
retraining trigger, checked against the feature schema and the window of
``data.production.window_start`` / ``window_end`` (when set).
The snapshot is copied as is; validation is the next stage's job.

Besides the dataset and its schema the stage writes ``data/raw/source.json``: the source, the
rows and, for a file or a production snapshot, its path and md5 (DVC's file md5) and, for
production, the window, the counts left out and the label coverage; the register stage puts it
into the version's lineage (``training_data``).

Usage: ``python -m finpredict.pipelines.ingest [--rows N --seed S --scenario NAME --out PATH]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import polars as pl

from finpredict.pipelines import dgp, production
from finpredict.pipelines.common import (
    RAW_DATA,
    RAW_SCHEMA,
    SOURCE_FILE,
    DatasetSchema,
    PipelineError,
    default_dataset_schema,
    load_params,
    md5_file,
    param_number,
    run_stage,
    section,
    write_json,
)

SOURCES = ("synthetic", "file", "production")


def read_table(path: Path) -> pl.DataFrame:
    """Reads a Parquet or CSV file, with a clear error naming the file."""
    if not path.exists():
        raise PipelineError(f"{path}: data file not found")
    try:
        if path.suffix.lower() == ".csv":
            return pl.read_csv(path, infer_schema_length=10000, try_parse_dates=True)
        return pl.read_parquet(path)
    except Exception as exc:
        raise PipelineError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, help="override data.rows")
    parser.add_argument("--seed", type=int, help="override data.seed")
    parser.add_argument("--scenario", choices=dgp.SCENARIOS, help="override data.scenario")
    parser.add_argument("--out", type=Path, default=RAW_DATA)
    parser.add_argument("--schema-out", type=Path, default=RAW_SCHEMA)
    parser.add_argument("--source-out", type=Path, default=SOURCE_FILE)
    args = parser.parse_args(argv)
    params = load_params()
    data = section(params, "data")
    min_rows = param_number(params, ("validation", "min_rows"), int, 1000)
    source = str(data.get("source", "synthetic"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    source_record: dict[str, Any]
    if source == "synthetic":
        rows = args.rows if args.rows is not None else param_number(params, ("data", "rows"), int)
        seed = args.seed if args.seed is not None else param_number(params, ("data", "seed"), int)
        scenario = args.scenario or str(data.get("scenario", "none"))
        try:
            df = dgp.generate(rows, seed=seed, scenario=scenario)
        except ValueError as exc:
            raise PipelineError(f"params.yaml data: {exc}") from None
        schema = default_dataset_schema(min_rows)
        print(f"[ingest] generated {df.height} rows (seed {seed}, scenario {scenario!r})")
        source_record = {"source": source, "rows": df.height}
    elif source == "file":
        src = Path(str(data.get("file", "")))
        schema_path = Path(str(data.get("schema_file", "")))
        schema = DatasetSchema.load(schema_path)
        df = read_table(src)
        print(f"[ingest] read {df.height} rows from {src} (schema {schema_path})")
        source_record = {
            "source": source,
            "rows": df.height,
            "snapshot_path": str(src),
            "snapshot_md5": md5_file(src),
        }
    elif source == "production":
        prod = data.get("production") or {}
        if not isinstance(prod, dict):
            raise PipelineError("params.yaml data.production: expected a mapping")
        src = Path(str(prod.get("snapshot", "")))
        schema = default_dataset_schema(min_rows)
        df, source_record = production.ingest(
            src, schema, str(prod.get("window_start") or ""), str(prod.get("window_end") or "")
        )
        r = source_record
        print(
            f"[ingest] read {df.height} production rows from {src}: window [{r['window_start']}, "
            f"{r['window_end']}), {r['excluded_unmatured']} unmatured and {r['excluded_unlabelled']} "
            f"unlabelled left out, label coverage {float(r['label_coverage']):.1%}"
        )
    else:
        raise PipelineError(f"params.yaml data.source: expected one of {', '.join(SOURCES)}, got {source!r}")
    df.write_parquet(args.out, compression="zstd", statistics=True)
    write_json(args.schema_out, schema.to_dict())
    write_json(args.source_out, source_record)
    print(f"[ingest] wrote {args.out}")


if __name__ == "__main__":
    run_stage("ingest", main)
