//! The private `drift_core._drift_core` extension module: a thin PyO3 layer over the pure
//! `drift_core` crate. It converts inputs (borrowing numpy buffers without copying), releases
//! the GIL for every computation and maps `drift_core::DriftError` to a hierarchy of
//! exceptions rooted at `drift_core.DriftCoreError` (a `ValueError`). No panic crosses the
//! boundary: every failure is a `DriftError`.

use drift_core::{
    DriftError, DriftReport, ErrorKind, FeatureDrift, FeatureKind, FitOptions, Matrix, Order,
    Profile, Window,
};
use numpy::{
    IntoPyArray, PyArray1, PyArrayDescrMethods, PyArrayMethods, PyReadonlyArray1, PyUntypedArray,
    PyUntypedArrayMethods,
};
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple};
use std::collections::BTreeMap;
use std::sync::Arc;

mod records;

create_exception!(
    drift_core,
    DriftCoreError,
    PyValueError,
    "Invalid input to drift_core."
);
create_exception!(
    drift_core,
    ShapeError,
    DriftCoreError,
    "Wrong number of dimensions or wrong length."
);
create_exception!(
    drift_core,
    DtypeError,
    DriftCoreError,
    "Input is not float64 (and copying was not allowed)."
);
create_exception!(
    drift_core,
    LayoutError,
    DriftCoreError,
    "Input is not C- or F-contiguous (and copying was not allowed)."
);
create_exception!(
    drift_core,
    ProfileMismatchError,
    DriftCoreError,
    "Batch or window does not match the profile."
);
create_exception!(
    drift_core,
    EmptyInputError,
    DriftCoreError,
    "Input has no rows."
);
create_exception!(
    drift_core,
    InvalidEdgesError,
    DriftCoreError,
    "Bin edges are non-finite or unsorted."
);
create_exception!(
    drift_core,
    InvalidArgumentError,
    DriftCoreError,
    "Invalid argument."
);
create_exception!(
    drift_core,
    SerializationError,
    DriftCoreError,
    "Bytes or JSON that do not decode."
);

fn to_py_err(err: DriftError) -> PyErr {
    let msg = err.to_string();
    match err.kind() {
        ErrorKind::Shape => ShapeError::new_err(msg),
        ErrorKind::Dtype => DtypeError::new_err(msg),
        ErrorKind::Layout => LayoutError::new_err(msg),
        ErrorKind::ProfileMismatch => ProfileMismatchError::new_err(msg),
        ErrorKind::Empty => EmptyInputError::new_err(msg),
        ErrorKind::InvalidEdges => InvalidEdgesError::new_err(msg),
        ErrorKind::InvalidArgument => InvalidArgumentError::new_err(msg),
        ErrorKind::Serialization => SerializationError::new_err(msg),
    }
}

// ------------------------------------------------------------------------------------------
// Input conversion

fn is_polars(obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let module: String = obj.get_type().getattr("__module__")?.extract()?;
    Ok(module == "polars" || module.starts_with("polars."))
}

/// A float64 ndarray (1-D or 2-D, C- or F-contiguous) ready to be borrowed.
struct Checked<'py> {
    array: Bound<'py, PyUntypedArray>,
    n_rows: usize,
    n_cols: usize,
    order: Order,
}

/// Checks (and, only with `allow_copy`, converts) an ndarray input.
fn check_array<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    what: &str,
    allow_copy: bool,
) -> PyResult<Checked<'py>> {
    let np = py.import("numpy")?;
    let mut obj = data.clone();
    if obj.cast::<PyUntypedArray>().is_err() {
        if !allow_copy {
            return Err(DtypeError::new_err(format!(
                "wrong dtype: {what} must be a numpy.ndarray of float64 or a polars DataFrame, got {} \
                 (pass allow_copy=True to convert it)",
                obj.get_type().name()?
            )));
        }
        obj = np.call_method1("asarray", (obj, "float64"))?;
    }
    let mut arr = obj.cast::<PyUntypedArray>()?.clone();
    let ndim = arr.ndim();
    if ndim != 1 && ndim != 2 {
        return Err(ShapeError::new_err(format!(
            "wrong shape: {what} must be 1-D (one feature) or 2-D (rows x features), got {ndim}-D with shape {:?}",
            arr.shape()
        )));
    }
    let is_f64 = arr.dtype().is_equiv_to(&numpy::dtype::<f64>(py));
    if !is_f64 {
        if !allow_copy {
            return Err(DtypeError::new_err(format!(
                "wrong dtype: {what} must be float64, got {} (pass allow_copy=True to convert it)",
                arr.dtype()
            )));
        }
        let conv = np.call_method1("ascontiguousarray", (arr, "float64"))?;
        arr = conv.cast::<PyUntypedArray>()?.clone();
    }
    if !arr.is_c_contiguous() && !arr.is_fortran_contiguous() {
        if !allow_copy {
            return Err(LayoutError::new_err(format!(
                "{what} is not contiguous (C or Fortran order; shape {:?}, strides {:?}); borrowing it \
                 would need a copy: pass allow_copy=True or use numpy.ascontiguousarray",
                arr.shape(),
                arr.strides()
            )));
        }
        let conv = np.call_method1("ascontiguousarray", (arr,))?;
        arr = conv.cast::<PyUntypedArray>()?.clone();
    }
    let shape = arr.shape().to_vec();
    let (n_rows, n_cols) = if ndim == 1 {
        (shape[0], 1)
    } else {
        (shape[0], shape[1])
    };
    // 1-D arrays and single columns are both orders; prefer the row-major path for 2-D.
    let order = if ndim == 1 || (!arr.is_c_contiguous() && arr.is_fortran_contiguous()) {
        Order::ColMajor
    } else {
        Order::RowMajor
    };
    Ok(Checked {
        array: arr,
        n_rows,
        n_cols,
        order,
    })
}

/// Runs `f` on the borrowed matrix with the GIL released.
fn with_matrix<'py, T: Send>(
    py: Python<'py>,
    c: &Checked<'py>,
    f: impl FnOnce(&Matrix<'_>) -> Result<T, DriftError> + Send,
) -> PyResult<T> {
    let ro;
    let ro2;
    let slice: &[f64] = if c.array.ndim() == 1 {
        ro = c.array.cast::<numpy::PyArray1<f64>>()?.readonly();
        ro.as_slice()
            .map_err(|e| LayoutError::new_err(e.to_string()))?
    } else {
        ro2 = c.array.cast::<numpy::PyArray2<f64>>()?.readonly();
        ro2.as_slice()
            .map_err(|e| LayoutError::new_err(e.to_string()))?
    };
    let m = Matrix::new(slice, c.n_rows, c.n_cols, c.order).map_err(to_py_err)?;
    py.detach(|| f(&m)).map_err(to_py_err)
}

/// Converts a scoring batch (ndarray or polars frame) for `profile`.
fn batch_for<'py>(
    py: Python<'py>,
    data: &Bound<'py, PyAny>,
    profile: &Profile,
    allow_copy: bool,
) -> PyResult<Checked<'py>> {
    if is_polars(data)? {
        let labels: Vec<Option<Vec<String>>> = profile
            .features
            .iter()
            .map(|f| match &f.kind {
                FeatureKind::Categorical { labels, .. } => labels.clone(),
                FeatureKind::Numeric { .. } => None,
            })
            .collect();
        let frames = py.import("drift_core._frames")?;
        let arr = frames.call_method1("encode_frame", (data, profile.feature_names(), labels))?;
        return check_array(py, &arr, "batch", false);
    }
    check_array(py, data, "batch", allow_copy)
}

/// What `drift_core._frames.fit_frame` returns: (matrix, names, numeric categorical
/// columns, labels of the string-like columns).
type FrameForFit<'py> = (
    Bound<'py, PyAny>,
    Vec<String>,
    Vec<usize>,
    BTreeMap<usize, Vec<String>>,
);

/// A feature given by index or name.
fn feature_index(profile: &Profile, feature: &Bound<'_, PyAny>) -> PyResult<usize> {
    if let Ok(name) = feature.cast::<PyString>() {
        return profile.feature_index(name.to_str()?).map_err(to_py_err);
    }
    let i: isize = feature.extract().map_err(|_| {
        InvalidArgumentError::new_err(
            "invalid argument: a feature is given by its index (int) or name (str)",
        )
    })?;
    let n = profile.n_features() as isize;
    if i < 0 || i >= n {
        return Err(InvalidArgumentError::new_err(format!(
            "invalid argument: feature index {i} is out of range for {n} features"
        )));
    }
    Ok(i as usize)
}

// ------------------------------------------------------------------------------------------
// Profile

/// A reference profile: per-feature bin edges (or categories) and reference counts.
#[pyclass(name = "Profile", module = "drift_core", frozen)]
struct PyProfile {
    inner: Arc<Profile>,
}

#[pymethods]
impl PyProfile {
    /// Fits a profile on reference data (2-D float64 ndarray, 1-D ndarray or polars DataFrame).
    #[staticmethod]
    #[pyo3(signature = (data, *, feature_names=None, categorical=None, n_bins=10, binning="quantile", allow_copy=false))]
    fn fit<'py>(
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        feature_names: Option<Vec<String>>,
        categorical: Option<Vec<Bound<'py, PyAny>>>,
        n_bins: i64,
        binning: &str,
        allow_copy: bool,
    ) -> PyResult<Self> {
        let binning = drift_core::Binning::parse(binning).map_err(to_py_err)?;
        if n_bins < 1 {
            return Err(to_py_err(DriftError::InvalidArgument(format!(
                "n_bins must be between 1 and {}, got {n_bins}",
                drift_core::binning::MAX_BINS
            ))));
        }
        let mut opts = FitOptions {
            n_bins: n_bins as usize,
            binning,
            ..FitOptions::default()
        };
        let checked;
        let names: Vec<String>;
        if is_polars(data)? {
            if feature_names.is_some() {
                return Err(InvalidArgumentError::new_err(
                    "invalid argument: feature_names cannot be given with a DataFrame (its column names are used)",
                ));
            }
            let cat_names: Vec<String> = match &categorical {
                Some(c) => c
                    .iter()
                    .map(|x| x.extract::<String>())
                    .collect::<PyResult<_>>()
                    .map_err(|_| {
                        InvalidArgumentError::new_err(
                            "invalid argument: categorical must list column names for a DataFrame",
                        )
                    })?,
                None => Vec::new(),
            };
            let frames = py.import("drift_core._frames")?;
            let res = frames.call_method1("fit_frame", (data, cat_names))?;
            let (arr, n, cats, labels): FrameForFit<'py> = res.extract()?;
            checked = check_array(py, &arr, "reference data", false)?;
            names = n;
            opts.categorical = cats;
            opts.labels = labels;
        } else {
            checked = check_array(py, data, "reference data", allow_copy)?;
            names = match feature_names {
                Some(n) => n,
                None => (0..checked.n_cols).map(|j| format!("f{j}")).collect(),
            };
            if let Some(c) = &categorical {
                for x in c {
                    let j = if let Ok(s) = x.cast::<PyString>() {
                        let s = s.to_str()?;
                        names.iter().position(|n| n == s).ok_or_else(|| {
                            InvalidArgumentError::new_err(format!(
                                "invalid argument: categorical feature {s:?} is not among the feature names"
                            ))
                        })?
                    } else {
                        x.extract::<usize>().map_err(|_| {
                            InvalidArgumentError::new_err(
                                "invalid argument: categorical lists column indices or names",
                            )
                        })?
                    };
                    opts.categorical.push(j);
                }
            }
        }
        opts.feature_names = Some(names);
        let p = with_matrix(py, &checked, |m| Profile::fit(m, &opts))?;
        Ok(PyProfile { inner: Arc::new(p) })
    }

    /// Scores a batch against the profile: histograms, then the drift report.
    #[pyo3(signature = (data, *, allow_copy=false))]
    fn score<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        allow_copy: bool,
    ) -> PyResult<PyDriftReport> {
        let c = batch_for(py, data, &self.inner, allow_copy)?;
        let p = self.inner.clone();
        let r = with_matrix(py, &c, move |m| {
            let mut w = Window::new(p);
            w.add(m)?;
            w.report()
        })?;
        Ok(PyDriftReport { inner: r })
    }

    /// The histograms of a batch, as a new window over this profile.
    #[pyo3(signature = (data, *, allow_copy=false))]
    fn histograms<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        allow_copy: bool,
    ) -> PyResult<PyWindow> {
        let c = batch_for(py, data, &self.inner, allow_copy)?;
        let p = self.inner.clone();
        let w = with_matrix(py, &c, move |m| {
            let mut w = Window::new(p);
            w.add(m)?;
            Ok(w)
        })?;
        Ok(PyWindow { inner: w })
    }

    /// An empty streaming window over this profile.
    fn window(&self) -> PyWindow {
        PyWindow {
            inner: Window::new(self.inner.clone()),
        }
    }

    #[getter]
    fn feature_names(&self) -> Vec<String> {
        self.inner.feature_names()
    }

    #[getter]
    fn n_features(&self) -> usize {
        self.inner.n_features()
    }

    #[getter]
    fn n_rows(&self) -> u64 {
        self.inner.n_rows
    }

    #[getter]
    fn n_bins(&self) -> usize {
        self.inner.n_bins
    }

    #[getter]
    fn binning(&self) -> &'static str {
        self.inner.binning.as_str()
    }

    #[getter]
    fn fingerprint(&self) -> String {
        self.inner.fingerprint()
    }

    fn is_categorical(&self, feature: &Bound<'_, PyAny>) -> PyResult<bool> {
        let j = feature_index(&self.inner, feature)?;
        Ok(matches!(
            self.inner.features[j].kind,
            FeatureKind::Categorical { .. }
        ))
    }

    /// Bin edges of a numeric feature (None for a categorical one).
    fn edges<'py>(
        &self,
        py: Python<'py>,
        feature: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyArray1<f64>>>> {
        let j = feature_index(&self.inner, feature)?;
        Ok(match &self.inner.features[j].kind {
            FeatureKind::Numeric { edges } => Some(edges.clone().into_pyarray(py)),
            FeatureKind::Categorical { .. } => None,
        })
    }

    /// Categories of a categorical feature (labels for a DataFrame string column, else the
    /// float values); None for a numeric one.
    fn categories<'py>(
        &self,
        py: Python<'py>,
        feature: &Bound<'py, PyAny>,
    ) -> PyResult<Option<Bound<'py, PyList>>> {
        let j = feature_index(&self.inner, feature)?;
        Ok(match &self.inner.features[j].kind {
            FeatureKind::Numeric { .. } => None,
            FeatureKind::Categorical {
                labels: Some(l), ..
            } => Some(PyList::new(py, l)?),
            FeatureKind::Categorical { categories, .. } => Some(PyList::new(py, categories)?),
        })
    }

    /// Names of the buckets of a feature, in count order (the last is "<missing>").
    fn bucket_labels(&self, feature: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
        let j = feature_index(&self.inner, feature)?;
        Ok(self.inner.features[j].bucket_labels())
    }

    fn reference_counts<'py>(
        &self,
        py: Python<'py>,
        feature: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let j = feature_index(&self.inner, feature)?;
        Ok(self.inner.features[j]
            .reference_counts
            .clone()
            .into_pyarray(py))
    }

    /// Reference shares per bucket (counts / rows; the epsilon rule is applied only when scoring).
    fn reference_proportions<'py>(
        &self,
        py: Python<'py>,
        feature: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let j = feature_index(&self.inner, feature)?;
        let n = self.inner.n_rows as f64;
        let v: Vec<f64> = self.inner.features[j]
            .reference_counts
            .iter()
            .map(|&c| c as f64 / n)
            .collect();
        Ok(v.into_pyarray(py))
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyProfile {
            inner: Arc::new(Profile::from_bytes(data).map_err(to_py_err)?),
        })
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    #[staticmethod]
    fn from_json(data: &str) -> PyResult<Self> {
        Ok(PyProfile {
            inner: Arc::new(Profile::from_json(data).map_err(to_py_err)?),
        })
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyProfile>()
            .is_ok_and(|o| *o.get().inner == *self.inner)
    }

    fn __hash__(&self) -> u64 {
        u64::from_str_radix(&self.inner.fingerprint(), 16).unwrap_or(0)
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let f = slf.get_type().getattr("from_bytes")?;
        Ok((f, PyTuple::new(py, [slf.get().to_bytes(py)])?))
    }

    fn __repr__(&self) -> String {
        format!(
            "Profile(n_features={}, n_rows={}, binning={:?}, n_bins={}, fingerprint={:?})",
            self.inner.n_features(),
            self.inner.n_rows,
            self.inner.binning.as_str(),
            self.inner.n_bins,
            self.inner.fingerprint()
        )
    }
}

// ------------------------------------------------------------------------------------------
// Window

/// A streaming window: bucket counts of any number of batches against one profile.
#[pyclass(name = "Window", module = "drift_core")]
struct PyWindow {
    inner: Window,
}

#[pymethods]
impl PyWindow {
    #[new]
    fn new(profile: &Bound<'_, PyProfile>) -> Self {
        PyWindow {
            inner: Window::new(profile.get().inner.clone()),
        }
    }

    /// Counts a batch (same columns as the profile) into the window.
    #[pyo3(signature = (data, *, allow_copy=false))]
    fn add<'py>(
        &mut self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        allow_copy: bool,
    ) -> PyResult<()> {
        let c = batch_for(py, data, self.inner.profile(), allow_copy)?;
        let w = &mut self.inner;
        with_matrix(py, &c, move |m| w.add(m))
    }

    /// Adds the counts of another window over the same profile.
    fn merge(slf: &Bound<'_, Self>, other: &Bound<'_, Self>) -> PyResult<()> {
        let o = other.borrow().inner.clone();
        slf.borrow_mut().inner.merge(&o).map_err(to_py_err)
    }

    /// An independent copy of the window as it is now.
    fn snapshot(&self) -> Self {
        PyWindow {
            inner: self.inner.clone(),
        }
    }

    /// Empties the window (keeps the profile).
    fn clear(&mut self) {
        self.inner = Window::new(self.inner.profile().clone());
    }

    #[getter]
    fn n_rows(&self) -> u64 {
        self.inner.n_rows()
    }

    #[getter]
    fn profile(&self) -> PyProfile {
        PyProfile {
            inner: self.inner.profile().clone(),
        }
    }

    /// Bucket counts of one feature (value buckets, then missing).
    fn counts<'py>(
        &self,
        py: Python<'py>,
        feature: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<u64>>> {
        let j = feature_index(self.inner.profile(), feature)?;
        Ok(self.inner.counts()[j].clone().into_pyarray(py))
    }

    /// Bucket counts of every feature.
    fn all_counts<'py>(&self, py: Python<'py>) -> Vec<Bound<'py, PyArray1<u64>>> {
        self.inner
            .counts()
            .iter()
            .map(|c| c.clone().into_pyarray(py))
            .collect()
    }

    /// Shares of one feature's buckets (counts / rows; no epsilon).
    fn proportions<'py>(
        &self,
        py: Python<'py>,
        feature: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray1<f64>>> {
        let j = feature_index(self.inner.profile(), feature)?;
        if self.inner.n_rows() == 0 {
            return Err(to_py_err(DriftError::Empty {
                what: "window (no rows added)".into(),
            }));
        }
        let n = self.inner.n_rows() as f64;
        Ok(self.inner.counts()[j]
            .iter()
            .map(|&c| c as f64 / n)
            .collect::<Vec<_>>()
            .into_pyarray(py))
    }

    /// Drift of the window against its profile.
    fn report(&self, py: Python<'_>) -> PyResult<PyDriftReport> {
        let w = &self.inner;
        let r = py.detach(|| w.report()).map_err(to_py_err)?;
        Ok(PyDriftReport { inner: r })
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.inner.to_bytes())
    }

    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyWindow {
            inner: Window::from_bytes(data).map_err(to_py_err)?,
        })
    }

    fn to_json(&self) -> String {
        self.inner.to_json()
    }

    #[staticmethod]
    fn from_json(data: &str) -> PyResult<Self> {
        Ok(PyWindow {
            inner: Window::from_json(data).map_err(to_py_err)?,
        })
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<PyWindow>()
            .is_ok_and(|o| o.borrow().inner == self.inner)
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let f = slf.get_type().getattr("from_bytes")?;
        let b = slf.borrow().to_bytes(py);
        Ok((f, PyTuple::new(py, [b])?))
    }

    fn __repr__(&self) -> String {
        format!(
            "Window(n_rows={}, n_features={}, profile={:?})",
            self.inner.n_rows(),
            self.inner.profile().n_features(),
            self.inner.profile().fingerprint()
        )
    }
}

// ------------------------------------------------------------------------------------------
// Reports

/// Drift of one feature.
#[pyclass(name = "FeatureDrift", module = "drift_core", frozen, get_all)]
#[derive(Clone)]
struct PyFeatureDrift {
    name: String,
    psi: f64,
    kl: f64,
    js: f64,
    missing_share_reference: f64,
    missing_share_current: f64,
}

impl From<&FeatureDrift> for PyFeatureDrift {
    fn from(f: &FeatureDrift) -> Self {
        PyFeatureDrift {
            name: f.name.clone(),
            psi: f.psi,
            kl: f.kl,
            js: f.js,
            missing_share_reference: f.missing_share_reference,
            missing_share_current: f.missing_share_current,
        }
    }
}

#[pymethods]
impl PyFeatureDrift {
    fn __repr__(&self) -> String {
        format!(
            "FeatureDrift(name={:?}, psi={:.6}, kl={:.6}, js={:.6}, missing_share_reference={:.6}, missing_share_current={:.6})",
            self.name, self.psi, self.kl, self.js, self.missing_share_reference, self.missing_share_current
        )
    }
}

/// Drift of every feature of a batch or window against a profile.
#[pyclass(name = "DriftReport", module = "drift_core", frozen)]
struct PyDriftReport {
    inner: DriftReport,
}

#[pymethods]
impl PyDriftReport {
    #[getter]
    fn features(&self) -> Vec<PyFeatureDrift> {
        self.inner
            .features
            .iter()
            .map(PyFeatureDrift::from)
            .collect()
    }

    /// The feature with the largest PSI.
    #[getter]
    fn worst(&self) -> PyFeatureDrift {
        self.inner.worst_feature().into()
    }

    #[getter]
    fn feature_names(&self) -> Vec<String> {
        self.inner.features.iter().map(|f| f.name.clone()).collect()
    }

    #[getter]
    fn psi<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner
            .features
            .iter()
            .map(|f| f.psi)
            .collect::<Vec<_>>()
            .into_pyarray(py)
    }

    #[getter]
    fn kl<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner
            .features
            .iter()
            .map(|f| f.kl)
            .collect::<Vec<_>>()
            .into_pyarray(py)
    }

    #[getter]
    fn js<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        self.inner
            .features
            .iter()
            .map(|f| f.js)
            .collect::<Vec<_>>()
            .into_pyarray(py)
    }

    #[getter]
    fn n_reference(&self) -> u64 {
        self.inner.n_reference
    }

    #[getter]
    fn n_current(&self) -> u64 {
        self.inner.n_current
    }

    /// Names of the features whose PSI exceeds `psi_threshold` (strictly), worst first.
    #[pyo3(signature = (psi_threshold=0.25))]
    fn drifted(&self, psi_threshold: f64) -> Vec<String> {
        let mut v: Vec<&FeatureDrift> = self
            .inner
            .features
            .iter()
            .filter(|f| f.psi > psi_threshold)
            .collect();
        v.sort_by(|a, b| b.psi.total_cmp(&a.psi));
        v.into_iter().map(|f| f.name.clone()).collect()
    }

    fn __getitem__(&self, feature: &Bound<'_, PyAny>) -> PyResult<PyFeatureDrift> {
        if let Ok(name) = feature.cast::<PyString>() {
            let name = name.to_str()?;
            return self
                .inner
                .features
                .iter()
                .find(|f| f.name == name)
                .map(PyFeatureDrift::from)
                .ok_or_else(|| pyo3::exceptions::PyKeyError::new_err(name.to_string()));
        }
        let i: usize = feature.extract()?;
        self.inner
            .features
            .get(i)
            .map(PyFeatureDrift::from)
            .ok_or_else(|| pyo3::exceptions::PyIndexError::new_err(i))
    }

    fn __len__(&self) -> usize {
        self.inner.features.len()
    }

    /// A JSON-ready dict: {"n_reference", "n_current", "worst", "features": [...]}.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("n_reference", self.inner.n_reference)?;
        d.set_item("n_current", self.inner.n_current)?;
        d.set_item("worst", &self.inner.worst_feature().name)?;
        let feats = PyList::empty(py);
        for f in &self.inner.features {
            let fd = PyDict::new(py);
            fd.set_item("name", &f.name)?;
            fd.set_item("psi", f.psi)?;
            fd.set_item("kl", f.kl)?;
            fd.set_item("js", f.js)?;
            fd.set_item("missing_share_reference", f.missing_share_reference)?;
            fd.set_item("missing_share_current", f.missing_share_current)?;
            feats.append(fd)?;
        }
        d.set_item("features", feats)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let w = self.inner.worst_feature();
        format!(
            "DriftReport(n_features={}, n_current={}, worst={:?}, worst_psi={:.6})",
            self.inner.features.len(),
            self.inner.n_current,
            w.name,
            w.psi
        )
    }
}

// ------------------------------------------------------------------------------------------
// Free functions

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
        .map_err(|_| LayoutError::new_err("values must be a contiguous 1-D float64 array"))?;
    let edges: Vec<f64> = edges.as_array().to_vec();
    let hist = py
        .detach(|| drift_core::histogram_counts(values, &edges))
        .map_err(to_py_err)?;
    Ok((hist.counts.into_pyarray(py), hist.missing))
}

/// Population stability index of `actual` against `expected` (counts or proportions).
#[pyfunction]
fn psi(expected: Vec<f64>, actual: Vec<f64>) -> PyResult<f64> {
    drift_core::psi(&expected, &actual).map_err(to_py_err)
}

/// Kullback-Leibler divergence KL(p || q) (counts or proportions).
#[pyfunction]
fn kl(p: Vec<f64>, q: Vec<f64>) -> PyResult<f64> {
    drift_core::kl(&p, &q).map_err(to_py_err)
}

/// Jensen-Shannon divergence of `p` and `q` (natural log).
#[pyfunction]
fn js(p: Vec<f64>, q: Vec<f64>) -> PyResult<f64> {
    drift_core::js(&p, &q).map_err(to_py_err)
}

/// Number of worker threads of drift_core's own pool (DRIFT_CORE_NUM_THREADS).
#[pyfunction]
fn num_threads() -> usize {
    drift_core::pool::num_threads()
}

#[pymodule]
fn _drift_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("DriftCoreError", py.get_type::<DriftCoreError>())?;
    m.add("ShapeError", py.get_type::<ShapeError>())?;
    m.add("DtypeError", py.get_type::<DtypeError>())?;
    m.add("LayoutError", py.get_type::<LayoutError>())?;
    m.add(
        "ProfileMismatchError",
        py.get_type::<ProfileMismatchError>(),
    )?;
    m.add("EmptyInputError", py.get_type::<EmptyInputError>())?;
    m.add("InvalidEdgesError", py.get_type::<InvalidEdgesError>())?;
    m.add(
        "InvalidArgumentError",
        py.get_type::<InvalidArgumentError>(),
    )?;
    m.add("SerializationError", py.get_type::<SerializationError>())?;
    m.add_class::<PyProfile>()?;
    m.add_class::<PyWindow>()?;
    m.add_class::<PyDriftReport>()?;
    m.add_class::<PyFeatureDrift>()?;
    m.add_function(wrap_pyfunction!(histogram_counts, m)?)?;
    m.add_function(wrap_pyfunction!(psi, m)?)?;
    m.add_function(wrap_pyfunction!(kl, m)?)?;
    m.add_function(wrap_pyfunction!(js, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(records::decode_prediction_batch, m)?)?;
    m.add("EPSILON", drift_core::EPSILON)?;
    m.add("NUM_THREADS_ENV", drift_core::pool::NUM_THREADS_ENV)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
