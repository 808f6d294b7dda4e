"""Type stubs of the ``drift_core._drift_core`` extension module (hand-written; a test checks
that every public name here exists in the module and vice versa)."""

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias, final

import numpy as np
import numpy.typing as npt

__version__: str
EPSILON: float
NUM_THREADS_ENV: str

_Feature: TypeAlias = int | str  # a feature, by index or by name

class DriftCoreError(ValueError):
    """Invalid input to drift_core; the message names what was wrong."""

class ShapeError(DriftCoreError):
    """Wrong number of dimensions or wrong length."""

class DtypeError(DriftCoreError):
    """Input is not float64 (and copying was not allowed)."""

class LayoutError(DriftCoreError):
    """Input is not C- or F-contiguous (and copying was not allowed)."""

class ProfileMismatchError(DriftCoreError):
    """Batch or window does not match the profile (feature count, columns, profile)."""

class EmptyInputError(DriftCoreError):
    """Input has no rows (or a count vector sums to zero)."""

class InvalidEdgesError(DriftCoreError):
    """Bin edges are non-finite or not strictly increasing."""

class InvalidArgumentError(DriftCoreError):
    """Invalid argument (n_bins, binning, feature, negative counts, ...)."""

class SerializationError(DriftCoreError):
    """Bytes or JSON that do not decode to a valid profile or window."""

@final
class Profile:
    """A reference profile: per-feature bin edges (or categories) and reference counts."""

    @staticmethod
    def fit(
        data: Any,
        *,
        feature_names: Sequence[str] | None = None,
        categorical: Sequence[int | str] | None = None,
        n_bins: int = 10,
        binning: Literal["quantile", "uniform"] = "quantile",
        allow_copy: bool = False,
    ) -> Profile:
        """Fits on a float64 ndarray (rows x features, or 1-D for one feature) or a polars
        DataFrame (string/categorical/boolean columns become categorical features)."""
    def score(self, data: Any, *, allow_copy: bool = False) -> DriftReport:
        """Histograms of a batch (same columns) and its drift against the reference."""
    def histograms(self, data: Any, *, allow_copy: bool = False) -> Window:
        """The histograms of a batch, as a new window over this profile."""
    def window(self) -> Window:
        """An empty streaming window over this profile."""
    @property
    def feature_names(self) -> list[str]: ...
    @property
    def n_features(self) -> int: ...
    @property
    def n_rows(self) -> int:
        """Rows of the reference data."""
    @property
    def n_bins(self) -> int: ...
    @property
    def binning(self) -> str: ...
    @property
    def fingerprint(self) -> str:
        """A stable 64-bit hash of the profile, as 16 hex digits."""
    def is_categorical(self, feature: _Feature) -> bool: ...
    def edges(self, feature: _Feature) -> npt.NDArray[np.float64] | None:
        """Bin edges of a numeric feature; None for a categorical one."""
    def categories(self, feature: _Feature) -> list[str] | list[float] | None:
        """Categories of a categorical feature; None for a numeric one."""
    def bucket_labels(self, feature: _Feature) -> list[str]:
        """Bucket names in count order; the last is '<missing>'."""
    def reference_counts(self, feature: _Feature) -> npt.NDArray[np.uint64]: ...
    def reference_proportions(self, feature: _Feature) -> npt.NDArray[np.float64]: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> Profile: ...
    def to_json(self) -> str: ...
    @staticmethod
    def from_json(data: str) -> Profile: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

@final
class Window:
    """Mergeable bucket counts of any number of batches against one profile."""

    def __init__(self, profile: Profile) -> None: ...
    def add(self, data: Any, *, allow_copy: bool = False) -> None: ...
    def merge(self, other: Window) -> None:
        """Adds the counts of another window over an equal profile."""
    def snapshot(self) -> Window:
        """An independent copy of the window as it is now."""
    def clear(self) -> None: ...
    @property
    def n_rows(self) -> int: ...
    @property
    def profile(self) -> Profile: ...
    def counts(self, feature: _Feature) -> npt.NDArray[np.uint64]: ...
    def all_counts(self) -> list[npt.NDArray[np.uint64]]: ...
    def proportions(self, feature: _Feature) -> npt.NDArray[np.float64]: ...
    def report(self) -> DriftReport: ...
    def to_bytes(self) -> bytes: ...
    @staticmethod
    def from_bytes(data: bytes) -> Window: ...
    def to_json(self) -> str: ...
    @staticmethod
    def from_json(data: str) -> Window: ...
    def __eq__(self, other: object) -> bool: ...

@final
class FeatureDrift:
    """Drift of one feature: PSI, KL(current || reference), JS, missing shares."""

    @property
    def name(self) -> str: ...
    @property
    def psi(self) -> float: ...
    @property
    def kl(self) -> float: ...
    @property
    def js(self) -> float: ...
    @property
    def missing_share_reference(self) -> float: ...
    @property
    def missing_share_current(self) -> float: ...

@final
class DriftReport:
    """Per-feature drift of a batch or window, and the worst feature."""

    @property
    def features(self) -> list[FeatureDrift]: ...
    @property
    def worst(self) -> FeatureDrift: ...
    @property
    def feature_names(self) -> list[str]: ...
    @property
    def psi(self) -> npt.NDArray[np.float64]: ...
    @property
    def kl(self) -> npt.NDArray[np.float64]: ...
    @property
    def js(self) -> npt.NDArray[np.float64]: ...
    @property
    def n_reference(self) -> int: ...
    @property
    def n_current(self) -> int: ...
    def drifted(self, psi_threshold: float = 0.25) -> list[str]:
        """Features with PSI > psi_threshold, worst first."""
    def __getitem__(self, feature: _Feature) -> FeatureDrift: ...
    def __len__(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...

def histogram_counts(
    values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.uint64], int]:
    """Counts values into len(edges) + 1 left-closed bins; returns (counts, missing)."""

def psi(expected: Sequence[float] | npt.ArrayLike, actual: Sequence[float] | npt.ArrayLike) -> float:
    """PSI = sum((a - e) * ln(a / e)) over normalised shares, empty buckets -> EPSILON."""

def kl(p: Sequence[float] | npt.ArrayLike, q: Sequence[float] | npt.ArrayLike) -> float:
    """KL(p || q) over normalised shares, empty buckets -> EPSILON."""

def js(p: Sequence[float] | npt.ArrayLike, q: Sequence[float] | npt.ArrayLike) -> float:
    """Jensen-Shannon divergence (natural log) over normalised shares, empty buckets -> EPSILON."""

def decode_prediction_batch(data: bytes) -> dict[str, Any] | None:
    """The records of a serialized ``finpredict.monitor.v1.IngestPredictionsRequest`` as columns
    (``n``; lists of str ``request_id``, ``entity_id``, ``model``, ``variant``, ``trace_id``,
    ``rollout_id``, ``experiment_id``; int64 arrays ``version``, ``seconds``, ``nanos``; float64
    arrays ``score``, ``threshold``, ``latency_ms``; ``reason_codes``: ``(row, code, feature,
    contribution, description)`` tuples; ``features``: ``(name, column)``, a float64 array with NaN
    for missing or a list of str or None), or None when the request is left to protobuf (malformed,
    a review kind, a feature sent both as a number and as a category, a field number the reader
    does not know)."""

def num_threads() -> int:
    """Worker threads of drift_core's own pool (DRIFT_CORE_NUM_THREADS, default: cores)."""
