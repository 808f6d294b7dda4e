//! The one error type of the crate; the binding maps each [`ErrorKind`] to a subclass of
//! `drift_core.DriftCoreError` (itself a `ValueError`).

use thiserror::Error;

/// The family of an error, used by the binding to pick the Python exception class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Wrong number of dimensions, wrong length, zero columns.
    Shape,
    /// The input does not hold float64 values.
    Dtype,
    /// The input is not contiguous (C or Fortran order) and copying was not allowed.
    Layout,
    /// A batch or window does not match the profile it is scored against.
    ProfileMismatch,
    /// An input had no rows (or a count vector summed to zero).
    Empty,
    /// Bin edges that are NaN, infinite or not strictly increasing.
    InvalidEdges,
    /// Any other invalid argument (number of bins, binning name, negative counts, ...).
    InvalidArgument,
    /// Bytes or JSON that do not decode to a valid profile or window.
    Serialization,
}

/// Everything that can go wrong in `drift_core`. Messages name the offending input.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum DriftError {
    /// Bin edges contain NaN or an infinity.
    #[error("bin edges must be finite: edge {index} is {value}")]
    NonFiniteEdge { index: usize, value: f64 },
    /// Bin edges are not strictly increasing.
    #[error("bin edges must be strictly increasing: edge {index} ({value}) <= edge {prev_index} ({prev})")]
    UnsortedEdges {
        index: usize,
        value: f64,
        prev_index: usize,
        prev: f64,
    },
    /// The input has no rows.
    #[error("{what} is empty")]
    Empty { what: String },
    /// Wrong shape of an input.
    #[error("wrong shape: {0}")]
    Shape(String),
    /// Wrong dtype of an input (raised by the binding).
    #[error("wrong dtype: {0}")]
    Dtype(String),
    /// Non-contiguous input where copying was not allowed (raised by the binding).
    #[error("{0}")]
    Layout(String),
    /// The number of features of a batch differs from the profile.
    #[error("feature-count mismatch: {what} has {got} features but the profile has {expected}")]
    FeatureCountMismatch {
        what: String,
        got: usize,
        expected: usize,
    },
    /// Two windows (or a window and a profile) do not share the same profile.
    #[error("profile mismatch: {0}")]
    ProfileMismatch(String),
    /// Any other invalid argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Bytes or JSON that do not decode.
    #[error("cannot decode {what}: {reason}")]
    Serialization { what: String, reason: String },
}

impl DriftError {
    /// The family of the error (one Python exception class per family).
    pub fn kind(&self) -> ErrorKind {
        match self {
            DriftError::NonFiniteEdge { .. } | DriftError::UnsortedEdges { .. } => {
                ErrorKind::InvalidEdges
            }
            DriftError::Empty { .. } => ErrorKind::Empty,
            DriftError::Shape(_) => ErrorKind::Shape,
            DriftError::Dtype(_) => ErrorKind::Dtype,
            DriftError::Layout(_) => ErrorKind::Layout,
            DriftError::FeatureCountMismatch { .. } | DriftError::ProfileMismatch(_) => {
                ErrorKind::ProfileMismatch
            }
            DriftError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            DriftError::Serialization { .. } => ErrorKind::Serialization,
        }
    }

    pub(crate) fn empty(what: impl Into<String>) -> Self {
        DriftError::Empty { what: what.into() }
    }
}
