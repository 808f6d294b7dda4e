"""Rollout analysis under peeking: false rollbacks of good candidates, detection of broken ones.

Synthetic rollouts (no servers) through ``finpredict.gateway.stats.evaluate``, analysed at every
interval (see ``finpredict.gateway.stats.simulate`` for the population and the candidates):

* ``identical``: a candidate identical to stable. The rollback share must stay below alpha
  (0.05) however often the analysis looks; the bound reported is the 99 % quantile of
  Bin(rollouts, alpha).
* ``unit_shift`` (debt_service_coverage in percent in training), ``halved_odds`` (calibration
  off by a factor 2 in odds, in training too), ``auc_loss`` (about 2 AUC points lost, same
  score distribution), ``miscalibrated`` (scores pushed toward 0.5, same ranking), ``slow`` (the
  same model 3x slower: its single-application calls against the 50 ms SLO and 1.5x stable's
  p99): the detection rate and the median canary requests (and look) to detection.
* The naive baseline: the same checks with each sequential test replaced by the fixed-sample
  z-test at the same alpha share, re-run at every look (``StatLimits(boundary="fixed")``).

Two schedules: ``canary`` (1 % -> 5 % -> 25 %, 24 looks of 5,000 requests, labels two looks
late) and ``long`` (a 50/50 split for 30 looks, where label-only defects become visible).

Writes ``benchmarks/results/rollout_analysis.json``. Run from the repository root:
``uv run --locked python -m benchmarks.rollouts.bench_sequential`` (``--quick``: 50 rollouts;
``--kinds miscalibrated``: run only these candidates and merge their rows into the existing file,
the update recorded under ``updates``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.benchkit import REPO, Disturbance, load_average, machine_info
from finpredict.gateway.stats.limits import StatLimits
from finpredict.gateway.stats.simulate import KINDS, Kind, SimResult, SimSettings, simulate, truth

OUT = REPO / "benchmarks" / "results" / "rollout_analysis.json"
SCHEDULES = {
    "canary": ((0.01,) * 2 + (0.05,) * 4 + (0.25,) * 18, KINDS),
    "long": ((0.5,) * 30, ("identical", "auc_loss")),
}


def binomial_quantile(n: int, p: float, q: float) -> int:
    """The smallest k with P(Bin(n, p) <= k) >= q."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q:
            return k
    return n


def _median(values: list[int]) -> float | None:
    return float(sorted(values)[len(values) // 2]) if values else None


def summarise(result: SimResult) -> dict[str, Any]:
    stopped = result.stopped
    looks = [int(x) + 1 for x in result.look[stopped]]
    return {
        "rollouts": int(stopped.size),
        "stopped": int(stopped.sum()),
        "rate": round(result.stop_rate, 4),
        "halted_on_sample_ratio": int(result.halted.sum()),
        "median_canary_requests_to_stop": result.median_samples if stopped.any() else None,
        "median_look_to_stop": _median(looks),
        "checks": dict(result.checks),
    }


def run(kind: Kind, settings: SimSettings, limits: StatLimits) -> dict[str, Any]:
    t0 = time.perf_counter()
    row = summarise(simulate(kind, settings, limits))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(f"  {kind:<12} {limits.boundary:<8} {row}", flush=True)
    return row


def detection(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "detection_rate": row["rate"],
        "median_canary_requests_to_detection": row["median_canary_requests_to_stop"],
        "median_look_to_detection": row["median_look_to_stop"],
        "checks": row["checks"],
    }


def update(out: Path, kinds: list[Kind], rollouts: int) -> None:
    """Runs only ``kinds`` (sequential tests) and merges their rows into the results file ``out``."""
    doc = json.loads(out.read_text())
    limits = StatLimits()
    load_before = load_average()
    t0 = time.perf_counter()
    for name, (weights, scheduled) in SCHEDULES.items():
        wanted = [k for k in kinds if k in scheduled]
        if not wanted:
            continue
        settings = SimSettings(rollouts=rollouts, requests_per_look=5000, weights=weights, seed=20261123)
        print(f"schedule {name}: {len(weights)} looks", flush=True)
        results = doc["results"][name]
        for kind in wanted:
            row = run(kind, settings, limits)
            results["raw"]["sequential"][kind] = row
            if kind != "identical":
                results["detection"][kind] = detection(row)
    for kind in kinds:
        doc["candidates_truth"][kind] = truth(kind)
    doc.setdefault("updates", []).append(
        {
            "kinds": kinds,
            "date_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "seconds": round(time.perf_counter() - t0, 1),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        }
    )
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"-> {out} (updated: {', '.join(kinds)})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50 rollouts per case")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--kinds", default="", help="comma-separated candidates to run alone, merged into --out"
    )
    args = parser.parse_args(argv)
    rollouts = 50 if args.quick else 200
    if args.kinds:
        asked = {k.strip() for k in args.kinds.split(",") if k.strip()}
        unknown = sorted(asked - set(KINDS))
        if unknown:
            parser.error(f"--kinds: unknown {unknown}; known: {', '.join(KINDS)}")
        update(args.out, [k for k in KINDS if k in asked], rollouts)
        return
    limits, naive = StatLimits(), StatLimits(boundary="fixed")
    load_before = load_average()
    disturbance = Disturbance()
    disturbance.start()
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    for name, (weights, kinds) in SCHEDULES.items():
        settings = SimSettings(rollouts=rollouts, requests_per_look=5000, weights=weights, seed=20261123)
        print(f"schedule {name}: {len(weights)} looks", flush=True)
        sequential = {kind: run(kind, settings, limits) for kind in kinds}
        baseline = {kind: run(kind, settings, naive) for kind in ("identical", "auc_loss") if kind in kinds}
        good = sequential["identical"]
        results[name] = {
            "settings": asdict(settings),
            "false_rollback": {
                "rate": good["rate"],
                "count": good["stopped"],
                "rollouts": rollouts,
                "binomial_99_bound": binomial_quantile(rollouts, limits.alpha, 0.99),
                "within_bound": good["stopped"] <= binomial_quantile(rollouts, limits.alpha, 0.99),
            },
            "detection": {kind: detection(row) for kind, row in sequential.items() if kind != "identical"},
            "naive_fixed_retest": {
                "false_rollback_rate": baseline["identical"]["rate"],
                "detection_rate": {k: v["rate"] for k, v in baseline.items() if k != "identical"},
                "note": "the same checks, each sequential test a fixed-sample z-test at the same alpha "
                "share, re-run at every look",
            },
            "raw": {"sequential": sequential, "naive": baseline},
        }
    doc = {
        "benchmark": "rollout_analysis",
        "date_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {
            **machine_info(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            **disturbance.stop(),  # the cores other processes kept busy meanwhile
        },
        "seconds": round(time.perf_counter() - t0, 1),
        "limits": {k: v for k, v in asdict(limits).items()},
        "candidates_truth": {kind: truth(kind) for kind in KINDS},
        "method": (
            "normal-mixture SPRT / confidence sequences (Johari et al. 2017; Howard et al. 2021), "
            "alpha 0.05 split over the gating tests by Bonferroni; see finpredict.gateway.stats"
        ),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
