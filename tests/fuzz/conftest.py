"""Fuzz tests: hypothesis-generated protobuf messages sent to real registry and monitor servers."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
