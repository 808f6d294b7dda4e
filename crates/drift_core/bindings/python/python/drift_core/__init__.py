"""finpredict drift statistics.

The computation lives in the Rust crate ``drift_core`` (``crates/drift_core``); this package
re-exports its PyO3 binding ``drift_core._drift_core`` with type stubs.

Binning convention: ``k`` finite, strictly increasing edges define ``k + 1`` left-closed bins
``(-inf, e0), [e0, e1), ..., [e(k-1), +inf)``; NaN values are counted in a separate missing
bucket.
"""

from drift_core._drift_core import DriftCoreError, __version__, histogram_counts

__all__ = ["DriftCoreError", "__version__", "histogram_counts"]
