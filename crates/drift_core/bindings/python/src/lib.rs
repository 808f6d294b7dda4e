//! The private `drift_core._drift_core` extension module: a thin PyO3 layer over the pure
//! `drift_core` crate. It converts inputs, releases the GIL for the computation and maps
//! `drift_core::DriftError` to `drift_core.DriftCoreError` (a `ValueError`).

use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

create_exception!(
    _drift_core,
    DriftCoreError,
    PyValueError,
    "Invalid input to drift_core."
);

fn to_py_err(err: drift_core::DriftError) -> PyErr {
    DriftCoreError::new_err(err.to_string())
}

/// Counts float64 `values` into the `len(edges) + 1` left-closed bins defined by `edges`.
///
/// Returns `(counts, missing)`: a uint64 array of bin counts and the number of NaN values.
#[pyfunction]
fn histogram_counts<'py>(
    py: Python<'py>,
    values: PyReadonlyArray1<'py, f64>,
    edges: PyReadonlyArray1<'py, f64>,
) -> PyResult<(Bound<'py, PyArray1<u64>>, u64)> {
    let values = values
        .as_slice()
        .map_err(|_| DriftCoreError::new_err("values must be a contiguous 1-D float64 array"))?;
    let edges: Vec<f64> = edges.as_array().to_vec();
    let hist = py
        .detach(|| drift_core::histogram_counts(values, &edges))
        .map_err(to_py_err)?;
    Ok((hist.counts.into_pyarray(py), hist.missing))
}

#[pymodule]
fn _drift_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("DriftCoreError", m.py().get_type::<DriftCoreError>())?;
    m.add_function(wrap_pyfunction!(histogram_counts, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
