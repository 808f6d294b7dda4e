"""Unique names for what a test creates on a shared server (models, runs)."""

from __future__ import annotations

import itertools
import os

_names = itertools.count(1)


def unique(prefix: str) -> str:
    """``prefix-<pid>-<n>``: unique within this test process and across parallel ones."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"
