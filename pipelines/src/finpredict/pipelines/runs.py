"""What makes two training runs the same run: the run fingerprint, and how a run is named.

A run's fingerprint is the sha256 of three things (canonical JSON):

* its **params** (``params.yaml``), less what does not change the model it produces: the
  ``wandb`` section (where it is tracked) and ``register.trigger`` (why it ran);
* its **data**: the DVC md5 of every ``data/`` path in ``dvc.lock`` (the snapshot, its schema,
  the feature splits, ``data/external``);
* its **code version**: the sha256 of the sources of the packages the stages run
  (``finpredict.pipelines``, ``finpredict.features``, ``finpredict.metrics``) and of the
  versions of the libraries that shape the model (XGBoost, numpy, polars). The git commit is not
  part of it (a commit that changes no training code trains the same model); it is recorded in
  the lineage beside it.

The register stage stores the fingerprint in the version's lineage and as the version tag
``run_fingerprint`` (so ``SearchVersions`` finds it; the code version is the tag
``code_version``), and registers nothing when a version with
the same fingerprint exists: it reuses that run. A run is named by its W&B run id, or ``v<N>``
(its version) when it was not tracked.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Mapping
from importlib.metadata import packages_distributions
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from finpredict.api.registry.v1 import registry_pb2

FINGERPRINT_TAG = "run_fingerprint"
CODE_VERSION_TAG = "code_version"
CODE_PACKAGES = ("finpredict.pipelines", "finpredict.features", "finpredict.metrics")
CODE_LIBRARIES = ("xgboost", "numpy", "polars")  # import names
# params that do not change the trained model: tracking, and why the run started
UNTRACKED_SECTIONS = ("wandb",)
UNTRACKED_KEYS = (("register", "trigger"),)


def training_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The params that shape the model: ``params`` without tracking and trigger settings."""
    out = {k: v for k, v in params.items() if k not in UNTRACKED_SECTIONS}
    for section, key in UNTRACKED_KEYS:
        if isinstance(out.get(section), Mapping):
            out[section] = {k: v for k, v in out[section].items() if k != key}
    return out


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {name} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def code_version() -> str:
    """sha256 of the training code: every ``.py`` file of :data:`CODE_PACKAGES` (path and bytes,
    in a fixed order) and the installed versions of :data:`CODE_LIBRARIES`."""
    h = hashlib.sha256()
    for package in CODE_PACKAGES:
        root = _package_dir(package)
        for path in sorted(root.rglob("*.py")):
            h.update(f"{package}/{path.relative_to(root).as_posix()}\0".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    providers = packages_distributions()  # import name -> distributions (xgboost: xgboost-cpu)
    for library in CODE_LIBRARIES:
        for dist in sorted(providers.get(library, [])):
            h.update(f"{library}:{dist}=={dist_version(dist)}\0".encode())
    return h.hexdigest()


def fingerprint(params: Mapping[str, Any], data_md5: Mapping[str, str], code: str) -> str:
    """The run fingerprint of ``params`` (all of them; what does not count is left out here),
    the data md5s (path -> md5) and the code version."""
    doc = {"params": training_params(params), "data_md5": dict(data_md5), "code": code}
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_id(version: registry_pb2.ModelVersion) -> str:
    """The name of the run that produced a registered version: its W&B run id, else ``v<N>``."""
    return version.lineage.wandb_run_id or f"v{version.version}"
