"""Security tests: roles, paths that try to escape the stores, secrets in logs, the audit policy."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
