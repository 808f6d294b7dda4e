//! The reference profile: per-feature edges or categories and reference counts.

use crate::binning::{distinct_finite, fit_edges, validate_n_bins, Binning};
use crate::error::DriftError;
use crate::histogram::validate_edges;
use crate::kernel::{count_column, count_matrix, ColumnPlan};
use crate::matrix::{Matrix, Order};
use crate::pool::pool;
use crate::window::Window;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Version of the serialised profile/window format.
pub const FORMAT_VERSION: u32 = 1;
const PROFILE_MAGIC: &[u8; 8] = b"DRIFTPRF";

/// How a feature is bucketed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FeatureKind {
    /// `edges.len() + 1` value bins (left-closed, open outer bins), then missing.
    Numeric { edges: Vec<f64> },
    /// One bucket per category value, then "unseen", then missing. When `labels` is set the
    /// category values are the codes `0, 1, ..., labels.len() - 1` of those labels.
    Categorical {
        categories: Vec<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        labels: Option<Vec<String>>,
    },
}

/// One feature of a profile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Feature {
    pub name: String,
    #[serde(flatten)]
    pub kind: FeatureKind,
    /// Reference counts per bucket (value buckets, then missing last).
    pub reference_counts: Vec<u64>,
}

impl Feature {
    /// Number of buckets including the missing bucket.
    pub fn n_buckets(&self) -> usize {
        match &self.kind {
            FeatureKind::Numeric { edges } => edges.len() + 2,
            FeatureKind::Categorical { categories, .. } => categories.len() + 2,
        }
    }

    pub(crate) fn plan(&self) -> ColumnPlan<'_> {
        match &self.kind {
            FeatureKind::Numeric { edges } => ColumnPlan::Numeric(edges),
            FeatureKind::Categorical { categories, .. } => ColumnPlan::Categorical(categories),
        }
    }

    /// Human-readable bucket names, e.g. `[-inf, 0.5)`, `cat=3`, `unseen`, `missing`.
    pub fn bucket_labels(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.n_buckets());
        match &self.kind {
            FeatureKind::Numeric { edges } => {
                let mut lo = "-inf".to_string();
                for e in edges {
                    out.push(format!("[{lo}, {e})"));
                    lo = e.to_string();
                }
                out.push(format!("[{lo}, +inf)"));
            }
            FeatureKind::Categorical { categories, labels } => {
                match labels {
                    Some(l) => out.extend(l.iter().cloned()),
                    None => out.extend(categories.iter().map(|c| c.to_string())),
                }
                out.push("<unseen>".to_string());
            }
        }
        out.push("<missing>".to_string());
        out
    }

    fn validate(&self, index: usize) -> Result<(), DriftError> {
        let bad = |reason: String| DriftError::Serialization {
            what: "profile".into(),
            reason: format!("feature {index} ({:?}): {reason}", self.name),
        };
        match &self.kind {
            FeatureKind::Numeric { edges } => validate_edges(edges)?,
            FeatureKind::Categorical { categories, labels } => {
                validate_edges(categories).map_err(|e| bad(format!("categories: {e}")))?;
                if let Some(l) = labels {
                    let codes: Vec<f64> = (0..l.len()).map(|i| i as f64).collect();
                    if *categories != codes {
                        return Err(bad("labelled categories must be the codes 0..n".into()));
                    }
                }
            }
        }
        if self.reference_counts.len() != self.n_buckets() {
            return Err(bad(format!(
                "{} reference counts for {} buckets",
                self.reference_counts.len(),
                self.n_buckets()
            )));
        }
        Ok(())
    }
}

/// Options of [`Profile::fit`].
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Feature names (default `f0, f1, ...`).
    pub feature_names: Option<Vec<String>>,
    /// Indices of categorical columns.
    pub categorical: Vec<usize>,
    /// Labels of categorical columns whose values are codes `0..n` (from a data frame).
    pub labels: BTreeMap<usize, Vec<String>>,
    pub n_bins: usize,
    pub binning: Binning,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            feature_names: None,
            categorical: Vec::new(),
            labels: BTreeMap::new(),
            n_bins: 10,
            binning: Binning::Quantile,
        }
    }
}

/// Rows per tile of the column copy done when fitting row-major data.
const TRANSPOSE_TILE: usize = 256;

/// A reference profile: what "no drift" looks like, fitted once on reference data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub format_version: u32,
    pub n_bins: usize,
    pub binning: Binning,
    /// Rows of the reference data.
    pub n_rows: u64,
    pub features: Vec<Feature>,
}

impl Profile {
    /// Fits a profile on reference data (see the crate docs for the conventions).
    pub fn fit(m: &Matrix<'_>, opts: &FitOptions) -> Result<Profile, DriftError> {
        validate_n_bins(opts.n_bins)?;
        let n_cols = m.n_cols();
        if n_cols == 0 {
            return Err(DriftError::Shape("reference data has no columns".into()));
        }
        if m.n_rows() == 0 {
            return Err(DriftError::empty("reference data (0 rows)"));
        }
        let names = match &opts.feature_names {
            Some(n) if n.len() != n_cols => {
                return Err(DriftError::Shape(format!(
                    "{} feature names for {n_cols} columns",
                    n.len()
                )))
            }
            Some(n) => n.clone(),
            None => (0..n_cols).map(|j| format!("f{j}")).collect(),
        };
        {
            let mut seen = std::collections::HashSet::new();
            for n in &names {
                if !seen.insert(n) {
                    return Err(DriftError::InvalidArgument(format!(
                        "duplicate feature name {n:?}"
                    )));
                }
            }
        }
        let mut is_cat = vec![false; n_cols];
        for &j in opts.categorical.iter().chain(opts.labels.keys()) {
            if j >= n_cols {
                return Err(DriftError::InvalidArgument(format!(
                    "categorical column index {j} is out of range for {n_cols} columns"
                )));
            }
            is_cat[j] = true;
        }
        // one column at a time: fit its edges (or categories), then count it
        let fit_column = |j: usize, col: &[f64]| -> Result<(FeatureKind, Vec<u64>), DriftError> {
            let kind = if let Some(l) = opts.labels.get(&j) {
                FeatureKind::Categorical {
                    categories: (0..l.len()).map(|i| i as f64).collect(),
                    labels: Some(l.clone()),
                }
            } else if is_cat[j] {
                FeatureKind::Categorical {
                    categories: distinct_finite(col),
                    labels: None,
                }
            } else {
                FeatureKind::Numeric {
                    edges: fit_edges(col, opts.n_bins, opts.binning)?,
                }
            };
            let plan = match &kind {
                FeatureKind::Numeric { edges } => ColumnPlan::Numeric(edges),
                FeatureKind::Categorical { categories, .. } => ColumnPlan::Categorical(categories),
            };
            let counts = count_column(col, &plan);
            Ok((kind, counts))
        };
        let fitted: Vec<(FeatureKind, Vec<u64>)> = match m.order() {
            Order::ColMajor => pool().install(|| {
                (0..n_cols)
                    .into_par_iter()
                    .map(|j| fit_column(j, m.col_slice(j).expect("col-major")))
                    .collect::<Result<_, _>>()
            })?,
            Order::RowMajor if n_cols == 1 => vec![fit_column(0, m.data())?],
            Order::RowMajor => {
                // One pass transposes the matrix into column-major order (fitting needs
                // contiguous columns; this temporary copy of the reference is the memory cost
                // of fitting C-ordered data). Each task copies a tile of rows sequentially
                // into cache (the hardware prefetcher streams it), then writes it out column
                // by column: sequential writes, no cache-set aliasing between columns.
                let n = m.n_rows();
                let data = m.data();
                let mut cols = crate::memory::huge_vec(n * n_cols);
                cols.resize(n * n_cols, 0.0);
                let n_tasks = (crate::pool::num_threads() * 4)
                    .min(n.div_ceil(TRANSPOSE_TILE))
                    .max(1);
                let chunk = n.div_ceil(n_tasks).div_ceil(TRANSPOSE_TILE) * TRANSPOSE_TILE;
                let mut parts: Vec<Vec<&mut [f64]>> =
                    (0..n_tasks).map(|_| Vec::with_capacity(n_cols)).collect();
                for col in cols.chunks_mut(n) {
                    for (t, part) in col.chunks_mut(chunk).enumerate() {
                        parts[t].push(part);
                    }
                }
                pool().install(|| {
                    parts
                        .into_par_iter()
                        .enumerate()
                        .for_each(|(t, mut parts)| {
                            let mut tile = vec![0.0f64; TRANSPOSE_TILE * n_cols];
                            let r0 = t * chunk;
                            let len = parts.first().map_or(0, |p| p.len());
                            for i0 in (0..len).step_by(TRANSPOSE_TILE) {
                                let i1 = (i0 + TRANSPOSE_TILE).min(len);
                                let rows = &mut tile[..(i1 - i0) * n_cols];
                                rows.copy_from_slice(&data[(r0 + i0) * n_cols..(r0 + i1) * n_cols]);
                                for (j, part) in parts.iter_mut().enumerate() {
                                    for (d, row) in
                                        part[i0..i1].iter_mut().zip(rows.chunks_exact(n_cols))
                                    {
                                        *d = row[j];
                                    }
                                }
                            }
                        })
                });
                let t = Matrix::new(&cols, n, n_cols, Order::ColMajor)?;
                pool().install(|| {
                    (0..n_cols)
                        .into_par_iter()
                        .map(|j| fit_column(j, t.col_slice(j).expect("col-major")))
                        .collect::<Result<_, _>>()
                })?
            }
        };
        Ok(Profile {
            format_version: FORMAT_VERSION,
            n_bins: opts.n_bins,
            binning: opts.binning,
            n_rows: m.n_rows() as u64,
            features: names
                .into_iter()
                .zip(fitted)
                .map(|(name, (kind, reference_counts))| Feature {
                    name,
                    kind,
                    reference_counts,
                })
                .collect(),
        })
    }

    pub fn n_features(&self) -> usize {
        self.features.len()
    }

    pub fn feature_names(&self) -> Vec<String> {
        self.features.iter().map(|f| f.name.clone()).collect()
    }

    /// Index of the feature called `name`.
    pub fn feature_index(&self, name: &str) -> Result<usize, DriftError> {
        self.features
            .iter()
            .position(|f| f.name == name)
            .ok_or_else(|| {
                DriftError::InvalidArgument(format!("no feature named {name:?} in the profile"))
            })
    }

    /// Bucket counts of a batch, per feature (value buckets, then missing).
    pub fn count(&self, m: &Matrix<'_>) -> Result<Vec<Vec<u64>>, DriftError> {
        if m.n_cols() != self.n_features() {
            return Err(DriftError::FeatureCountMismatch {
                what: "the batch".into(),
                got: m.n_cols(),
                expected: self.n_features(),
            });
        }
        if m.n_rows() == 0 {
            return Err(DriftError::empty("batch (0 rows)"));
        }
        let plans: Vec<ColumnPlan<'_>> = self.features.iter().map(Feature::plan).collect();
        Ok(count_matrix(m, &plans))
    }

    /// The histograms of a batch as a new window over this profile.
    pub fn histograms(&self, m: &Matrix<'_>) -> Result<Window, DriftError> {
        let mut w = Window::new(self.clone());
        w.add(m)?;
        Ok(w)
    }

    /// Checks internal consistency (used after decoding).
    pub fn validate(&self) -> Result<(), DriftError> {
        if self.format_version != FORMAT_VERSION {
            return Err(DriftError::Serialization {
                what: "profile".into(),
                reason: format!(
                    "format version {} is not supported (expected {FORMAT_VERSION})",
                    self.format_version
                ),
            });
        }
        if self.features.is_empty() {
            return Err(DriftError::Serialization {
                what: "profile".into(),
                reason: "no features".into(),
            });
        }
        for (i, f) in self.features.iter().enumerate() {
            f.validate(i)?;
            let total: u64 = f.reference_counts.iter().sum();
            if total != self.n_rows {
                return Err(DriftError::Serialization {
                    what: "profile".into(),
                    reason: format!(
                        "feature {i} ({:?}): reference counts sum to {total}, not n_rows = {}",
                        f.name, self.n_rows
                    ),
                });
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a profile always serialises")
    }

    pub fn from_json(s: &str) -> Result<Profile, DriftError> {
        let p: Profile = serde_json::from_str(s).map_err(|e| DriftError::Serialization {
            what: "profile JSON".into(),
            reason: e.to_string(),
        })?;
        p.validate()?;
        Ok(p)
    }

    /// `b"DRIFTPRF"`, then the UTF-8 JSON document (floats round-trip exactly).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = PROFILE_MAGIC.to_vec();
        out.extend_from_slice(self.to_json().as_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Profile, DriftError> {
        let body =
            b.strip_prefix(PROFILE_MAGIC.as_slice())
                .ok_or_else(|| DriftError::Serialization {
                    what: "profile bytes".into(),
                    reason: "missing the b\"DRIFTPRF\" header (not a drift_core profile)".into(),
                })?;
        let s = std::str::from_utf8(body).map_err(|e| DriftError::Serialization {
            what: "profile bytes".into(),
            reason: e.to_string(),
        })?;
        Profile::from_json(s)
    }

    /// A stable 64-bit FNV-1a fingerprint of the JSON form, as 16 hex digits.
    pub fn fingerprint(&self) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.to_json().bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_count_and_roundtrip() {
        let n = 1000;
        let mut data = Vec::new();
        for i in 0..n {
            data.push(i as f64);
            data.push(if i % 10 == 0 {
                f64::NAN
            } else {
                (i % 3) as f64
            });
        }
        let m = Matrix::new(&data, n, 2, Order::RowMajor).unwrap();
        let opts = FitOptions {
            categorical: vec![1],
            ..FitOptions::default()
        };
        let p = Profile::fit(&m, &opts).unwrap();
        assert_eq!(
            p.features[0].reference_counts,
            vec![100, 100, 100, 100, 100, 100, 100, 100, 100, 100, 0]
        );
        match &p.features[1].kind {
            FeatureKind::Categorical { categories, .. } => {
                assert_eq!(categories, &vec![0.0, 1.0, 2.0])
            }
            FeatureKind::Numeric { .. } => panic!("categorical expected"),
        }
        assert_eq!(p.features[1].reference_counts.iter().sum::<u64>(), 1000);
        assert_eq!(p.features[1].reference_counts[4], 100);
        let back = Profile::from_bytes(&p.to_bytes()).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            Profile::from_json(&p.to_json()).unwrap().fingerprint(),
            p.fingerprint()
        );
        assert!(Profile::from_bytes(b"nope").is_err());
    }

    #[test]
    fn fit_errors() {
        let d = [1.0, 2.0];
        let m = Matrix::new(&d, 1, 2, Order::RowMajor).unwrap();
        let opts = FitOptions {
            feature_names: Some(vec!["a".into()]),
            ..FitOptions::default()
        };
        assert_eq!(
            Profile::fit(&m, &opts).unwrap_err().kind(),
            crate::ErrorKind::Shape
        );
        let empty = Matrix::new(&[], 0, 2, Order::RowMajor).unwrap();
        assert_eq!(
            Profile::fit(&empty, &FitOptions::default())
                .unwrap_err()
                .kind(),
            crate::ErrorKind::Empty
        );
        let p = Profile::fit(&m, &FitOptions::default()).unwrap();
        let m3 = Matrix::new(&[1.0, 2.0, 3.0], 1, 3, Order::RowMajor).unwrap();
        let e = p.count(&m3).unwrap_err();
        assert!(
            e.to_string()
                .contains("has 3 features but the profile has 2"),
            "{e}"
        );
    }
}
