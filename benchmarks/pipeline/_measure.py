"""Runs a command; prints its wall time, the CPU time (user + system) of every process it started
and waited for, and the peak RSS of the largest of them (JSON)."""

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
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(
    json.dumps(
        {
            "wall_s": round(wall, 2),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        }
    )
)
