"""Runs every benchmark: each ``benchmarks/<topic>/bench_*.py`` module, in its own process.

Each script measures finpredict against a baseline in the same run and writes its figures as
JSON to ``benchmarks/results/<topic>.json``.  ``--only TOPIC`` runs one topic. Each runs as
``python -m benchmarks.<topic>.bench_<name>`` from the repository root, so a benchmark imports the
shared ``benchmarks.benchkit`` (and its harness from the installed ``finpredict.testkit``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
REPO = ROOT.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="run only this topic (repeatable)")
    args, rest = parser.parse_known_args()
    scripts = sorted(ROOT.glob("*/bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.parent.name in args.only]
    if not scripts:
        print("no benchmarks found", file=sys.stderr)
        return 1
    failed = []
    for script in scripts:
        module = ".".join(script.relative_to(REPO).with_suffix("").parts)
        print(f"==> {module}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", module, *rest], cwd=REPO)
        print(f"<== {script.name}: exit {rc} in {time.perf_counter() - t0:.1f}s", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
