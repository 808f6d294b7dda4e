"""Where the sequential request path spends its CPU: py-spy on the gateway, the Serve proxy and the
Serve replicas while one request at a time goes through the gateway.

py-spy (in the workspace's dev group) samples each process's Python stacks without pausing it
(``--nonblocking``, idle threads left out); :func:`summarise_raw` turns its collapsed stacks into
the share of samples of each function, by self time (the innermost frame) and by inclusive time
(anywhere on the stack), plus the share of a few request-path concerns (:data:`CONCERNS`).
py-spy cannot tell a thread blocked in native code (Ray's core worker loop, a thread pool's queue,
epoll) from one running it, so those frames hold waits as well as work: compare shares with each
other, and take CPU per request from the benchmark's /proc figures (``gateway.json``).
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

PY_SPY = Path(sys.executable).parent / "py-spy"
# A frame of py-spy's raw output: "function (path/to/module.py:line)"
_FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")
# Request-path concerns, each a set of substrings of "function (file)" frames anywhere on a stack.
CONCERNS: Mapping[str, tuple[str, ...]] = {
    "validation": ("validate_application", "check_record", "check_predict_request"),
    "protobuf map to records": ("row_records",),
    "polars feature frame": ("records_to_frame", "to_matrix", "polars"),
    "xgboost predict": ("inplace_predict", "xgboost"),
    "tracing (opentelemetry)": ("opentelemetry",),
    "prometheus metrics": ("prometheus_client", "ray/util/metrics", "metrics.py"),
    "prediction log": ("prediction_log",),
    "grpc": ("grpc",),
    "ray serve machinery": ("ray/serve",),
    "ray core": ("ray/_private", "ray/_raylet", "_raylet"),
    "logging": ("logging/__init__", "logging.py"),
    "asyncio event loop": ("asyncio/",),
}


def start(pid: int, seconds: float, out: Path, rate: int = 250) -> subprocess.Popen[bytes]:
    """``py-spy record`` of ``pid`` for ``seconds`` into ``out`` (collapsed stacks)."""
    cmd = [
        str(PY_SPY), "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))),
        "--rate", str(rate), "--format", "raw", "--nonblocking", "--output", str(out),
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    file = m.group("file")
    short = "/".join(file.split("/")[-2:]) if file else ""
    return f"{m.group('fn')} ({short})"


def summarise_raw(path: Path, top: int = 15) -> dict[str, Any]:
    """Shares of samples (%) by function, self and inclusive, and by :data:`CONCERNS`."""
    total = 0
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    concern: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f and not f.startswith("process ")]
        names = [_name(f) for f in frames]
        if names:
            own[names[-1]] += n
        for name in set(names):
            incl[name] += n
        for label, needles in CONCERNS.items():
            if any(any(k in f for k in needles) for f in frames):
                concern[label] += n

    def pct(c: Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in c.most_common(top)} if total else {}

    return {
        "samples": total,
        "self_pct": pct(own),
        "inclusive_pct": pct(incl),
        "concerns_pct": {k: round(100 * concern[k] / total, 1) for k in CONCERNS} if total else {},
    }


def record(pids: Mapping[str, int], seconds: float, out_dir: Path) -> dict[str, subprocess.Popen[bytes]]:
    """Starts one recorder per named pid; :func:`collect` waits for them."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return {name: start(pid, seconds, out_dir / f"{name}.txt") for name, pid in pids.items()}


def collect(procs: Mapping[str, subprocess.Popen[bytes]], out_dir: Path, timeout: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, proc in procs.items():
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
        raw = out_dir / f"{name}.txt"
        out[name] = (
            summarise_raw(raw)
            if raw.exists()
            else {"error": f"py-spy exited {proc.returncode}: {err.decode(errors='replace')[-300:]}"}
        )
    return out
