"""Fault-injection tests of the registry and the monitor: kill -9 under load, a full disk, a slow
network. Each asserts what the client sees, what the service counts, and that it recovers."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
