"""finpredict drift statistics: reference profiles, histograms, PSI / KL / JS, streaming windows.

The computation lives in the Rust crate ``drift_core`` (``crates/drift_core``); this package
re-exports its PyO3 binding ``drift_core._drift_core`` (typed by ``_drift_core.pyi``).
Conventions (binning, missing values, quantile interpolation, epsilon) are documented in
``crates/drift_core/README.md``. In short:

* ``k`` finite, strictly increasing edges define ``k + 1`` left-closed bins
  ``(-inf, e0), [e0, e1), ..., [e(k-1), +inf)``; edges are fitted on the reference only
  (quantiles, numpy's ``linear`` interpolation, ties merged; or equal width).
* NaN / null values go to a missing bucket (the last bucket of every feature), which counts
  in PSI / KL / JS; categorical features have one bucket per reference category + "unseen".
* Empty buckets get the share ``EPSILON = 1e-4``; PSI = sum((a - e) * ln(a / e)),
  KL(current || reference), JS with natural logarithms.

Typical use::

    profile = Profile.fit(reference)            # ndarray (rows x features) or polars DataFrame
    report = profile.score(batch)               # report.psi, report.worst, report.drifted(0.25)
    hour = profile.window(); hour.add(batch)    # streaming: merge hours into a day
"""

from drift_core._drift_core import (
    EPSILON,
    NUM_THREADS_ENV,
    DriftCoreError,
    DriftReport,
    DtypeError,
    EmptyInputError,
    FeatureDrift,
    InvalidArgumentError,
    InvalidEdgesError,
    LayoutError,
    Profile,
    ProfileMismatchError,
    SerializationError,
    ShapeError,
    Window,
    __version__,
    decode_prediction_batch,
    histogram_counts,
    js,
    kl,
    num_threads,
    psi,
)

__all__ = [
    "EPSILON",
    "NUM_THREADS_ENV",
    "DriftCoreError",
    "DriftReport",
    "DtypeError",
    "EmptyInputError",
    "FeatureDrift",
    "InvalidArgumentError",
    "InvalidEdgesError",
    "LayoutError",
    "Profile",
    "ProfileMismatchError",
    "SerializationError",
    "ShapeError",
    "Window",
    "__version__",
    "decode_prediction_batch",
    "histogram_counts",
    "js",
    "kl",
    "num_threads",
    "psi",
]
