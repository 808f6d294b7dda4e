//! The one error type of the crate; the binding maps it to `drift_core.DriftCoreError`.

use thiserror::Error;

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
    Empty { what: &'static str },
}
