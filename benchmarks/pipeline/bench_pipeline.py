"""Pipeline benchmark: wall time and peak memory of the training pipeline at 100k and 1M rows.

For each size a throw-away git + DVC repository (:func:`finpredict.testkit.pipeline.make_repo`,
the project's ``dvc.yaml`` and ``params.yaml``) runs stage by stage
(``dvc repro --single-item <stage>``; W&B offline, DVC analytics off) through ``profile``
(``register`` only talks to the registry and is not part of the compute). Each stage runs
under ``_measure.py``, which reports its wall time (DVC's start-up, hashing and caching
included), the CPU time of DVC and the stage process (user + system: what other jobs on a
shared machine do not inflate much) and the peak resident memory of the largest process it
started (``RUSAGE_CHILDREN.ru_maxrss``: DVC or the stage process). On Ray the workers' CPU
time is not counted (they are the cluster's processes). The comparison figure is a second,
cached ``dvc repro`` of the same pipeline (DVC skips every stage), i.e. what a re-run with
nothing changed costs.

``--ray`` (on the largest size) then trains again with ``train.backend: ray`` on a two-node Ray
cluster on loopback (one CPU per node, one worker each) and evaluates that model: the AUC of the
distributed run against the single-process one, and the train stage's time on Ray.

Threads: XGBoost and polars get ``nthread``/``POLARS_MAX_THREADS`` = 2 (the target machine has
2 cores); ``--cpus 0,1`` pins the whole run to two CPUs with ``taskset`` when available.
Bytecode is compiled once per benchmark run into a temporary ``PYTHONPYCACHEPREFIX`` (the
images compile it at build time, ``UV_COMPILE_BYTECODE=1``), even where the environment sets
``PYTHONDONTWRITEBYTECODE``. The
load average before and after each size is recorded: on a shared machine the figures are upper
bounds. When the results file exists, its figures are kept under ``previous``.

    python -m benchmarks.pipeline.bench_pipeline [--rows 100000 1000000] [--cpus 0,1] [--ray] [--repeats 3]

Each size runs ``--repeats`` times (default 3), sizes interleaved; the file reports each size's
median run by wall time and lists every run's wall and CPU time.

Writes ``benchmarks/results/pipeline.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.benchkit import REPO, Disturbance, load_average, machine_info
from finpredict.testkit.pipeline import PipelineRepo, make_repo
from finpredict.testkit.serving import ray_cluster

RESULTS = REPO / "benchmarks" / "results" / "pipeline.json"
MEASURE = Path(__file__).with_name("_measure.py")
STAGES = ["ingest", "validate", "features", "train", "evaluate", "profile"]
THREADS = 2
TARGET_WALL_S = 90.0  # 1M rows on 2 cores
TARGET_AUC_DELTA = 0.005  # distributed vs single-process
METRICS = ("auc_roc", "ece", "compute_p99_ms", "demographic_parity_diff", "n_trees")


def measured(repo: PipelineRepo, stage: str, cpus: str | None, single: bool = True) -> dict[str, Any]:
    """``dvc repro --single-item stage`` (not ``single``: ``stage`` and everything before it)."""
    prefix = ["taskset", "-c", cpus] if cpus and shutil.which("taskset") else []
    cmd = [sys.executable, "-m", "dvc", "repro", *(["--single-item"] if single else []), stage]
    proc = subprocess.run(
        [*prefix, sys.executable, str(MEASURE), *cmd],
        cwd=repo.path,
        env=repo.env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}", file=sys.stderr)
        return {"failed": True, "exit": proc.returncode, "tail": proc.stdout[-1500:], "wall_s": float("nan")}
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def setup_repo(path: Path, rows: int, pycache: Path) -> PipelineRepo:
    repo = make_repo(
        path,
        rows,
        extra_env={
            "POLARS_MAX_THREADS": str(THREADS),
            "OMP_NUM_THREADS": str(THREADS),
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONPYCACHEPREFIX": str(pycache),
        },
    )
    repo.env.pop("PYTHONDONTWRITEBYTECODE", None)
    params = repo.params()
    params["train"]["nthread"] = THREADS
    params["evaluate"]["nthread"] = THREADS
    repo.set_params(params)
    return repo


def bench_size(rows: int, cpus: str | None, on_ray: bool, pycache: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-pipeline-{rows}-") as tmp:
        repo = setup_repo(Path(tmp) / "repo", rows, pycache)
        load_before = load_average()
        stages = {}
        t0 = time.perf_counter()
        for stage in STAGES:
            stages[stage] = measured(repo, stage, cpus)
            print(
                f"  {rows:>9} rows  {stage:<9} {stages[stage]['wall_s']:8.1f} s  "
                f"{stages[stage].get('peak_rss_mib', 0):8.0f} MiB",
                flush=True,
            )
        total = time.perf_counter() - t0
        load_after = load_average()
        cached = measured(repo, STAGES[-1], cpus, single=False)
        metrics = repo.read_json("reports/metrics.json")
        result: dict[str, Any] = {
            "rows": rows,
            "wall_s": round(total, 2),
            "cpu_s": round(sum(s.get("cpu_s", 0.0) for s in stages.values()), 2),
            "load_average_before": load_before,
            "load_average_after": load_after,
            "peak_rss_mib": max(s.get("peak_rss_mib", 0.0) for s in stages.values()),
            "all_stages_succeeded": not any(s.get("failed") for s in stages.values()),
            "stages": stages,
            "cached_rerun": cached,
            "snapshot_parquet_mib": round((repo.path / "data/raw/loans.parquet").stat().st_size / 2**20, 2),
            "gates_passed": repo.read_json("reports/gates.json")["passed"],
            "metrics": {k: metrics[k] for k in METRICS},
            "training": training_summary(repo),
        }
        if on_ray:
            result["ray"] = bench_ray(repo, cpus, metrics["auc_roc"])
        return result


def training_summary(repo: PipelineRepo) -> dict[str, Any]:
    training = repo.read_json("models/model/manifest.json")["training"]
    return {k: training.get(k) for k in ("backend", "train_seconds", "n_trees", "train_rows", "ray")}


def bench_ray(repo: PipelineRepo, cpus: str | None, local_auc: float) -> dict[str, Any]:
    """The train stage again on a two-node loopback Ray cluster, then evaluate: AUC vs local."""
    params = repo.params()
    params["train"]["backend"] = "ray"
    repo.set_params(params)
    with ray_cluster({}, num_cpus=1, workers=1, worker_cpus=1) as cluster:
        repo.env["FINPREDICT_TRAIN_RAY_ADDRESS"] = cluster.address
        train = measured(repo, "train", cpus)
    print(f"  ray train {train['wall_s']:8.1f} s", flush=True)
    evaluate = measured(repo, "evaluate", cpus)
    metrics = repo.read_json("reports/metrics.json")
    delta = abs(metrics["auc_roc"] - local_auc)
    return {
        "cluster": "two nodes on loopback (ray start --head / --address), 1 CPU each, one worker per node",
        "train_stage": train,
        "evaluate_stage": evaluate,
        "training": training_summary(repo),
        "metrics": {k: metrics[k] for k in METRICS},
        "auc_delta_vs_single_process": round(delta, 5),
    }


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median wall time (its stages and metrics as measured), with every run's
    wall and CPU time, and the Ray comparison wherever it ran."""
    ordered = sorted(runs, key=lambda r: r["wall_s"])
    chosen = dict(ordered[(len(ordered) - 1) // 2])
    chosen["wall_s_runs"] = [r["wall_s"] for r in runs]
    chosen["cpu_s_runs"] = [r["cpu_s"] for r in runs]
    chosen["load_average_runs"] = [r["load_average_before"] for r in runs]
    for r in runs:
        if "ray" in r:
            chosen["ray"] = r["ray"]
    return chosen


def previous_figures(path: Path) -> dict[str, Any] | None:
    """The headline figures of the results file being replaced (the run before this one)."""
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    return {
        "date": old.get("date"),
        "machine": old.get("machine"),
        "results": [
            {
                "rows": r["rows"],
                "wall_s": r["wall_s"],
                "stages_wall_s": {name: s.get("wall_s") for name, s in r["stages"].items()},
                "auc_roc": r["metrics"]["auc_roc"],
                "n_trees": r["metrics"]["n_trees"],
            }
            for r in old.get("results", [])
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--cpus", default="0,1", help="CPUs to pin to with taskset ('' = no pinning)")
    parser.add_argument("--ray", action="store_true", help="also train the largest size on Ray")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each size, interleaved")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs: dict[int, list[dict[str, Any]]] = {rows: [] for rows in args.rows}
    disturbance = Disturbance()
    disturbance.start()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-pycache-") as pycache:
        for repeat in range(args.repeats):
            for rows in args.rows:  # interleaved: a disturbance hits every size, not one
                print(f"== {rows} rows, run {repeat + 1}/{args.repeats}", flush=True)
                on_ray = args.ray and rows == max(args.rows) and repeat == args.repeats - 1
                runs[rows].append(bench_size(rows, args.cpus or None, on_ray, Path(pycache)))
    results = [median_run(runs[rows]) for rows in args.rows]
    largest = results[-1]
    met: dict[str, bool] = {
        f"{largest['rows']}_rows_wall_s_le_{TARGET_WALL_S:g}": largest["wall_s"] <= TARGET_WALL_S
    }
    if "ray" in largest:
        met[f"ray_auc_delta_le_{TARGET_AUC_DELTA:g}"] = (
            largest["ray"]["auc_delta_vs_single_process"] <= TARGET_AUC_DELTA
        )
    doc = {
        "benchmark": "pipeline",
        "description": "training pipeline (dvc repro ingest..profile) wall time and peak memory per size",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            **machine_info(),
            "cpus_pinned": args.cpus or None,
            **disturbance.stop(),  # the cores other processes kept busy meanwhile (see also each
            # size's load averages)
        },
        "settings": {
            "threads": THREADS,
            "stages": STAGES,
            "repeats": args.repeats,
            "headline": "each size's median run by wall time (wall_s_runs lists every run, in order)",
            "bytecode": "compiled once per benchmark run (PYTHONPYCACHEPREFIX in a temp dir), as the "
            "images do (UV_COMPILE_BYTECODE=1); without it every stage process and DVC recompile "
            "every module they import",
        },
        "baseline": "cached_rerun: the same dvc repro with nothing changed (every stage skipped)",
        "targets": {"wall_s_max": TARGET_WALL_S, "auc_delta_max": TARGET_AUC_DELTA},
        "met": met,
        "results": results,
        "previous": previous_figures(args.out),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
