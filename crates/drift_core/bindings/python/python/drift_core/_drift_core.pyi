import numpy as np
import numpy.typing as npt

__version__: str

class DriftCoreError(ValueError):
    """Invalid input to drift_core; the message names what was wrong."""

def histogram_counts(
    values: npt.NDArray[np.float64], edges: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.uint64], int]:
    """Counts values into len(edges) + 1 left-closed bins; returns (counts, missing)."""
