//! `drift_core`: drift statistics for finpredict.
//!
//! A pure Rust crate (no PyO3): the Python binding lives in `bindings/python` and only
//! converts types, releases the GIL and maps [`DriftError`] to Python exceptions. The
//! conventions below are documented once, here and in the crate README.
//!
//! * **Bins**: with finite, strictly increasing edges `e_0 < ... < e_{k-1}` there are
//!   `k + 1` value bins `(-inf, e_0)`, `[e_0, e_1)`, ..., `[e_{k-1}, +inf)`: left-closed, and
//!   the outer bins are open, so values beyond the reference range (and +/-inf) still count.
//! * **Missing**: NaN goes to a separate missing bucket, the last bucket of every feature; it
//!   takes part in PSI/KL/JS like any other bucket, so a jump of the missing rate is drift.
//! * **Edges** are fitted on the reference only ([`binning`]): quantiles with linear
//!   interpolation (numpy's default), or equal width; duplicate edges merged.
//! * **Categorical** features: one bucket per reference category, then "unseen", then missing.
//! * **Epsilon** ([`stats`]): the share of an empty bucket is replaced by 1e-4, everywhere.

pub mod binning;
pub mod error;
pub mod histogram;
pub mod kernel;
pub mod matrix;
pub mod memory;
pub mod pool;
pub mod profile;
pub mod stats;
pub mod window;

pub use binning::Binning;
pub use error::{DriftError, ErrorKind};
pub use histogram::{histogram_counts, validate_edges, Histogram};
pub use matrix::{Matrix, Order};
pub use profile::{Feature, FeatureKind, FitOptions, Profile};
pub use stats::{js, kl, psi, EPSILON};
pub use window::{DriftReport, FeatureDrift, Window};
