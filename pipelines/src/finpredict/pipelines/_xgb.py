"""Imports XGBoost without its optional scikit-learn wrapper.

``xgboost`` imports scikit-learn (and with it scipy) when it is installed, only to offer its
sklearn-style estimators, which the pipeline does not use; that import costs seconds in every
stage process. The pipeline uses the core API (``xgb.train``, ``Booster``), so scikit-learn is
hidden for the duration of the import when nothing has imported it yet.

OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE`` unless set): with the default
busy-waiting, two training threads on a shared 2-core machine ran 10-50x slower.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

if "xgboost" not in sys.modules and "sklearn" not in sys.modules:
    sys.modules["sklearn"] = None  # type: ignore[assignment]
    try:
        import xgboost
    finally:
        del sys.modules["sklearn"]
else:
    import xgboost

xgb = xgboost

__all__ = ["xgb"]
