"""Option values: durations, canary steps and experiment arms (a bad one ends the command with
exit code 2 before anything is sent), and how times and durations are shown."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re

from google.protobuf.timestamp_pb2 import Timestamp

from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.gateway.cli._common import usage

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, option: str) -> float:
    """``90s``, ``2m``, ``1.5s``, ``500ms``, ``1h`` (a bare number is seconds) → seconds > 0."""
    m = _DURATION.match(text)
    seconds = float(m.group(1)) * _UNIT_S[m.group(2) or "s"] if m else -1.0
    if not m or not math.isfinite(seconds) or seconds <= 0:
        usage(f"{option}: {text!r} is not a positive duration (use e.g. 90s, 2m, 1.5s, 500ms)")
    return seconds


def parse_steps(text: str, option: str = "--steps") -> list[float]:
    """``1,5,25,100`` (``%`` allowed) → increasing weights in (0, 100] that end at 100."""
    steps: list[float] = []
    for part in text.split(","):
        item = part.strip().removesuffix("%").strip()
        try:
            value = float(item)
        except ValueError:
            usage(f"{option}: {part.strip()!r} is not a number (use e.g. 1,5,25,100)")
        if not 0 < value <= 100:
            usage(f"{option}: {value:g} is outside (0, 100]: steps are canary weights in percent")
        steps.append(value)
    if any(b <= a for a, b in itertools.pairwise(steps)):
        usage(f"{option}: steps must increase, got {text!r}")
    if steps[-1] != 100:
        usage(f"{option}: the last step must be 100 (full traffic), got {steps[-1]:g}")
    return steps


_ARM = re.compile(r"^\s*([^=\s]+)\s*=\s*(\d+)\s*:\s*(\d+(?:\.\d*)?|\.\d+)\s*%?\s*$")


def parse_arm(text: str) -> pb.ExperimentArm:
    """``name=version:weight`` → an experiment arm."""
    m = _ARM.match(text)
    if not m:
        usage(f"--arm: {text!r} is not NAME=VERSION:WEIGHT (e.g. control=3:50)")
    version, weight = int(m.group(2)), float(m.group(3))
    if version < 1:
        usage(f"--arm: {text!r}: the version must be >= 1")
    if not 0 < weight <= 100:
        usage(f"--arm: {text!r}: the weight must be in (0, 100]")
    return pb.ExperimentArm(name=m.group(1), version=version, weight=weight)


def fmt_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def fmt_time(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
