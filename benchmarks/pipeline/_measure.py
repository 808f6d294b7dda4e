"""Runs a command; prints its wall time and the peak RSS of the largest process it started (JSON)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
wall = time.perf_counter() - t0
if proc.returncode != 0:
    sys.stdout.write(proc.stdout)
    sys.exit(proc.returncode)
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"wall_s": round(wall, 2), "peak_rss_mib": round(peak_kib / 1024, 1)}))
