//! Streaming windows: mergeable histogram accumulators and drift reports.

use crate::error::DriftError;
use crate::matrix::Matrix;
use crate::profile::{Profile, FORMAT_VERSION};
use crate::stats::{js_shares, kl_shares, psi_shares, shares_u64};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

const WINDOW_MAGIC: &[u8; 8] = b"DRIFTWIN";

/// Bucket counts of any number of batches against one profile, in
/// O(features x buckets) memory. Windows over the same profile merge by adding counts, so a
/// day's window is the merge of its hours (exactly: counts are integers).
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    profile: Arc<Profile>,
    counts: Vec<Vec<u64>>,
    n_rows: u64,
}

#[derive(Serialize, Deserialize)]
struct WindowDoc {
    format_version: u32,
    profile: Profile,
    n_rows: u64,
    counts: Vec<Vec<u64>>,
}

/// Drift of one feature.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FeatureDrift {
    pub name: String,
    /// PSI of the current window against the reference.
    pub psi: f64,
    /// KL(current || reference).
    pub kl: f64,
    /// Jensen-Shannon divergence of current and reference (natural log).
    pub js: f64,
    pub missing_share_reference: f64,
    pub missing_share_current: f64,
}

/// Drift of every feature of a window against its profile.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DriftReport {
    pub features: Vec<FeatureDrift>,
    /// Index of the feature with the largest PSI (the first one on ties).
    pub worst: usize,
    pub n_reference: u64,
    pub n_current: u64,
}

impl DriftReport {
    pub fn worst_feature(&self) -> &FeatureDrift {
        &self.features[self.worst]
    }
}

impl Window {
    /// An empty window over `profile`.
    pub fn new(profile: impl Into<Arc<Profile>>) -> Window {
        let profile = profile.into();
        let counts = profile
            .features
            .iter()
            .map(|f| vec![0; f.n_buckets()])
            .collect();
        Window {
            profile,
            counts,
            n_rows: 0,
        }
    }

    pub fn profile(&self) -> &Arc<Profile> {
        &self.profile
    }

    /// Per-feature bucket counts (value buckets, then missing).
    pub fn counts(&self) -> &[Vec<u64>] {
        &self.counts
    }

    pub fn n_rows(&self) -> u64 {
        self.n_rows
    }

    /// Counts a batch into the window.
    pub fn add(&mut self, m: &Matrix<'_>) -> Result<(), DriftError> {
        let c = self.profile.count(m)?;
        for (a, b) in self.counts.iter_mut().zip(c) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.n_rows += m.n_rows() as u64;
        Ok(())
    }

    /// Adds the counts of `other` (which must be over an equal profile).
    pub fn merge(&mut self, other: &Window) -> Result<(), DriftError> {
        if !Arc::ptr_eq(&self.profile, &other.profile) && self.profile != other.profile {
            return Err(DriftError::ProfileMismatch(format!(
                "cannot merge windows over different profiles (fingerprints {} and {})",
                self.profile.fingerprint(),
                other.profile.fingerprint()
            )));
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self.n_rows += other.n_rows;
        Ok(())
    }

    /// Drift of the window against its profile's reference counts.
    pub fn report(&self) -> Result<DriftReport, DriftError> {
        if self.n_rows == 0 {
            return Err(DriftError::empty("window (no rows added)"));
        }
        let mut features = Vec::with_capacity(self.counts.len());
        for (f, cur) in self.profile.features.iter().zip(&self.counts) {
            let e = shares_u64(&f.reference_counts, "reference counts")?;
            let a = shares_u64(cur, "window counts")?;
            let missing = |c: &[u64]| {
                *c.last().expect("missing bucket") as f64 / c.iter().sum::<u64>() as f64
            };
            features.push(FeatureDrift {
                name: f.name.clone(),
                psi: psi_shares(&e, &a),
                kl: kl_shares(&a, &e),
                js: js_shares(&a, &e),
                missing_share_reference: missing(&f.reference_counts),
                missing_share_current: missing(cur),
            });
        }
        let mut worst = 0;
        for (i, f) in features.iter().enumerate() {
            if f.psi > features[worst].psi {
                worst = i;
            }
        }
        Ok(DriftReport {
            features,
            worst,
            n_reference: self.profile.n_rows,
            n_current: self.n_rows,
        })
    }

    fn doc(&self) -> WindowDoc {
        WindowDoc {
            format_version: FORMAT_VERSION,
            profile: (*self.profile).clone(),
            n_rows: self.n_rows,
            counts: self.counts.clone(),
        }
    }

    /// JSON with the profile embedded, so a window can be decoded on its own.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.doc()).expect("a window always serialises")
    }

    pub fn from_json(s: &str) -> Result<Window, DriftError> {
        let bad = |reason: String| DriftError::Serialization {
            what: "window".into(),
            reason,
        };
        let d: WindowDoc = serde_json::from_str(s).map_err(|e| bad(e.to_string()))?;
        if d.format_version != FORMAT_VERSION {
            return Err(bad(format!(
                "format version {} is not supported",
                d.format_version
            )));
        }
        d.profile.validate()?;
        if d.counts.len() != d.profile.features.len() {
            return Err(bad(format!(
                "{} count vectors for {} features",
                d.counts.len(),
                d.profile.features.len()
            )));
        }
        for (f, c) in d.profile.features.iter().zip(&d.counts) {
            if c.len() != f.n_buckets() || c.iter().sum::<u64>() != d.n_rows {
                return Err(bad(format!(
                    "counts of feature {:?} do not match the profile/n_rows",
                    f.name
                )));
            }
        }
        Ok(Window {
            profile: Arc::new(d.profile),
            counts: d.counts,
            n_rows: d.n_rows,
        })
    }

    /// `b"DRIFTWIN"`, then the JSON document.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = WINDOW_MAGIC.to_vec();
        out.extend_from_slice(self.to_json().as_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Window, DriftError> {
        let body =
            b.strip_prefix(WINDOW_MAGIC.as_slice())
                .ok_or_else(|| DriftError::Serialization {
                    what: "window bytes".into(),
                    reason: "missing the b\"DRIFTWIN\" header (not a drift_core window)".into(),
                })?;
        let s = std::str::from_utf8(body).map_err(|e| DriftError::Serialization {
            what: "window bytes".into(),
            reason: e.to_string(),
        })?;
        Window::from_json(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Order;
    use crate::profile::FitOptions;

    #[test]
    fn merged_hours_equal_the_day() {
        let data: Vec<f64> = (0..3000)
            .map(|i| ((i * 7919) % 1000) as f64 / 10.0)
            .collect();
        let m = Matrix::new(&data, 1000, 3, Order::RowMajor).unwrap();
        let p = Arc::new(Profile::fit(&m, &FitOptions::default()).unwrap());
        let mut day = Window::new(p.clone());
        day.add(&m).unwrap();
        let mut merged = Window::new(p.clone());
        for chunk in data.chunks(3 * 250) {
            let mut hour = Window::new(p.clone());
            hour.add(&Matrix::new(chunk, chunk.len() / 3, 3, Order::RowMajor).unwrap())
                .unwrap();
            merged.merge(&hour).unwrap();
        }
        assert_eq!(merged, day);
        let r = day.report().unwrap();
        assert!(r.features.iter().all(|f| f.psi.abs() < 1e-12));
        assert_eq!(Window::from_bytes(&day.to_bytes()).unwrap(), day);
        assert_eq!(
            Window::new(p).report().unwrap_err().kind(),
            crate::ErrorKind::Empty
        );
    }
}
