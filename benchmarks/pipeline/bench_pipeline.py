"""Pipeline benchmark: wall time and peak memory of the training pipeline at 100k and 1M rows.

For each size a throw-away git + DVC repository runs the project's ``dvc.yaml`` stage by stage
(``dvc repro --single-item <stage>``; W&B offline, DVC analytics off) through ``profile``
(``register`` only talks to the registry and is not part of the compute). Each stage runs
under ``_measure.py``, which reports its wall time and the peak resident memory of the
largest process it started (``RUSAGE_CHILDREN.ru_maxrss``: DVC or the stage process).
The comparison figure is a second, cached ``dvc repro`` of the same pipeline (DVC skips every
stage), i.e. what a re-run with nothing changed costs.

Threads: XGBoost and polars get ``nthread``/``POLARS_MAX_THREADS`` = 2 (the target machine has
2 cores); ``--cpus 0,1`` pins the whole run to two CPUs with ``taskset`` when available.

    python benchmarks/pipeline/bench_pipeline.py [--rows 100000 1000000] [--cpus 0,1]

Writes ``benchmarks/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "pipeline.json"
MEASURE = Path(__file__).with_name("_measure.py")
STAGES = ["ingest", "validate", "features", "train", "evaluate", "profile"]
COPIED = [
    "dvc.yaml",
    "params.yaml",
    "data/external",
    "pipelines/src/finpredict/pipelines",
    "libs/features/src/finpredict/features",
]


def measured(cmd: list[str], cwd: Path, env: dict[str, str], cpus: str | None) -> dict[str, Any]:
    prefix = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    proc = subprocess.run(
        [*prefix, sys.executable, str(MEASURE), *cmd], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        print(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", file=sys.stderr)
        return {"failed": True, "exit": proc.returncode, "tail": proc.stdout[-1500:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def setup_repo(path: Path, rows: int) -> dict[str, str]:
    for rel in COPIED:
        src, dst = ROOT / rel, path / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst)
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["data"]["rows"] = rows
    params["train"]["nthread"] = 2
    params["evaluate"]["nthread"] = 2
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "FINPREDICT_REGISTRY"))}
    env.update(
        {
            "PATH": str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", ""),
            "DVC_NO_ANALYTICS": "1",
            "WANDB_MODE": "offline",
            "WANDB_DIR": str(path / "wandb"),
            "WANDB_DATA_DIR": str(path / "wandb" / "data"),
            "POLARS_MAX_THREADS": "2",
            "OMP_NUM_THREADS": "2",
        }
    )
    for cmd in (["git", "init", "-q", "."], [sys.executable, "-m", "dvc", "init", "-q"]):
        subprocess.run(cmd, cwd=path, env=env, check=True, capture_output=True)
    return env


def bench_size(rows: int, cpus: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-pipeline-{rows}-") as tmp:
        repo = Path(tmp)
        env = setup_repo(repo, rows)
        stages = {}
        t0 = time.perf_counter()
        for stage in STAGES:
            stages[stage] = measured(
                [sys.executable, "-m", "dvc", "repro", "--single-item", stage], repo, env, cpus
            )
            print(
                f"  {rows:>9} rows  {stage:<9} {stages[stage]['wall_s']:8.1f} s  "
                f"{stages[stage]['peak_rss_mib']:8.0f} MiB",
                flush=True,
            )
        total = time.perf_counter() - t0
        cached = measured([sys.executable, "-m", "dvc", "repro", "profile"], repo, env, cpus)
        metrics = json.loads((repo / "reports" / "metrics.json").read_text())
        gates = json.loads((repo / "reports" / "gates.json").read_text())
        raw_mib = (repo / "data" / "raw" / "loans.parquet").stat().st_size / 2**20
        return {
            "rows": rows,
            "wall_s": round(total, 2),
            "peak_rss_mib": max(s.get("peak_rss_mib", 0.0) for s in stages.values()),
            "all_stages_succeeded": not any(s.get("failed") for s in stages.values()),
            "stages": stages,
            "cached_rerun": cached,
            "snapshot_parquet_mib": round(raw_mib, 2),
            "gates_passed": gates["passed"],
            "metrics": {
                k: metrics[k]
                for k in ("auc_roc", "ece", "latency_p99_ms", "demographic_parity_diff", "n_trees")
            },
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--cpus", default="0,1", help="CPUs to pin to with taskset ('' = no pinning)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = []
    for rows in args.rows:
        print(f"== {rows} rows", flush=True)
        results.append(bench_size(rows, args.cpus or None))
    load = os.getloadavg()
    doc = {
        "benchmark": "pipeline",
        "description": "training pipeline (dvc repro ingest..profile) wall time and peak memory per size",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus_pinned": args.cpus or None,
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_end": [round(x, 2) for x in load],
            "note": "shared machine: other workloads ran concurrently, so times are upper bounds",
        },
        "baseline": "cached_rerun: the same dvc repro with nothing changed (every stage skipped)",
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
