"""Deployment tests: Dockerfiles, Kubernetes manifests (rendered, schema-validated, policy-checked),
the RayService's Serve config, and the CI/CD workflows. Offline once `task infra:tools` has run."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
