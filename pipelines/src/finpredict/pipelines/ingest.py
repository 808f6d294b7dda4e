"""Stage ``ingest``: writes the data snapshot ``data/raw/loans.parquet`` and its dataset schema.

``data.source: synthetic`` (default) runs the documented generator (:mod:`finpredict.pipelines.dgp`)
with ``data.rows``, ``data.seed`` and ``data.scenario``. ``data.source: file`` reads the user's
Parquet or CSV file ``data.file`` and schema ``data.schema_file`` (YAML/JSON, the format of
:meth:`DatasetSchema.to_dict`), both under ``data/external/`` so DVC tracks them as a dependency.
The snapshot is copied as is; validation is the next stage's job.

Usage: ``python -m finpredict.pipelines.ingest [--rows N --seed S --scenario NAME --out PATH]``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from finpredict.pipelines import dgp
from finpredict.pipelines.common import (
    RAW_DATA,
    RAW_SCHEMA,
    DatasetSchema,
    PipelineError,
    default_dataset_schema,
    load_params,
    param_number,
    run_stage,
    section,
    write_json,
)


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
    args = parser.parse_args(argv)
    params = load_params()
    data = section(params, "data")
    min_rows = param_number(params, ("validation", "min_rows"), int, 1000)
    source = str(data.get("source", "synthetic"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
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
    elif source == "file":
        src = Path(str(data.get("file", "")))
        schema_path = Path(str(data.get("schema_file", "")))
        schema = DatasetSchema.load(schema_path)
        df = read_table(src)
        print(f"[ingest] read {df.height} rows from {src} (schema {schema_path})")
    else:
        raise PipelineError(f"params.yaml data.source: expected 'synthetic' or 'file', got {source!r}")
    df.write_parquet(args.out, compression="zstd", statistics=True)
    write_json(args.schema_out, schema.to_dict())
    print(f"[ingest] wrote {args.out}")


if __name__ == "__main__":
    run_stage("ingest", main)
