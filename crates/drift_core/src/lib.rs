//! `drift_core`: drift statistics for finpredict.
//!
//! A pure Rust crate (no PyO3): the Python binding lives in `bindings/python` and only
//! converts types, releases the GIL and maps [`DriftError`] to Python exceptions.
//!
//! Binning convention (written down once, used everywhere): with sorted, finite,
//! strictly increasing edges `e_0 < e_1 < ... < e_{k-1}` there are `k + 1` value bins,
//! `(-inf, e_0)`, `[e_0, e_1)`, ..., `[e_{k-1}, +inf)`: bins are left-closed and the outer
//! bins are open, so values beyond the reference range still count. NaN values go to a
//! separate missing bucket and never into a value bin.

pub mod error;
pub mod histogram;

pub use error::DriftError;
pub use histogram::{histogram_counts, validate_edges, Histogram};
