//! Histogram counts of values against bin edges.

use crate::error::DriftError;

/// Counts of one batch of values against one set of bin edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    /// `edges.len() + 1` value-bin counts, see the crate-level binning convention.
    pub counts: Vec<u64>,
    /// Values that were NaN.
    pub missing: u64,
}

/// Checks that edges are finite and strictly increasing.
pub fn validate_edges(edges: &[f64]) -> Result<(), DriftError> {
    for (i, &e) in edges.iter().enumerate() {
        if !e.is_finite() {
            return Err(DriftError::NonFiniteEdge { index: i, value: e });
        }
        if i > 0 && e <= edges[i - 1] {
            return Err(DriftError::UnsortedEdges {
                index: i,
                value: e,
                prev_index: i - 1,
                prev: edges[i - 1],
            });
        }
    }
    Ok(())
}

/// Counts `values` into the `edges.len() + 1` left-closed bins plus the missing bucket.
///
/// The bin of a finite value `x` is the number of edges `e` with `x >= e`, which is what a
/// left-closed binning with open outer bins means; `+inf` lands in the last bin and `-inf`
/// in the first.
pub fn histogram_counts(values: &[f64], edges: &[f64]) -> Result<Histogram, DriftError> {
    validate_edges(edges)?;
    let mut counts = vec![0u64; edges.len() + 1];
    let mut missing = 0u64;
    for &x in values {
        if x.is_nan() {
            missing += 1;
        } else {
            // partition_point gives the number of edges <= x, i.e. the bin index.
            let bin = edges.partition_point(|&e| e <= x);
            counts[bin] += 1;
        }
    }
    Ok(Histogram { counts, missing })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_closed_bins_with_open_outer_bins() {
        let edges = [0.0, 1.0, 2.0];
        let values = [
            -5.0,
            0.0,
            0.5,
            1.0,
            1.999,
            2.0,
            100.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        let h = histogram_counts(&values, &edges).unwrap();
        // (-inf,0): -5, -inf | [0,1): 0, 0.5 | [1,2): 1, 1.999 | [2,inf): 2, 100, inf
        assert_eq!(h.counts, vec![2, 2, 2, 3]);
        assert_eq!(h.missing, 1);
    }

    #[test]
    fn no_edges_is_one_bin() {
        let h = histogram_counts(&[1.0, 2.0, f64::NAN], &[]).unwrap();
        assert_eq!(h.counts, vec![2]);
        assert_eq!(h.missing, 1);
    }

    #[test]
    fn refuses_non_finite_edges() {
        let err = histogram_counts(&[1.0], &[0.0, f64::NAN]).unwrap_err();
        assert!(matches!(err, DriftError::NonFiniteEdge { index: 1, value } if value.is_nan()));
        assert!(err.to_string().contains("edge 1"));
    }

    #[test]
    fn refuses_unsorted_edges() {
        let err = histogram_counts(&[1.0], &[0.0, 2.0, 1.0]).unwrap_err();
        assert!(matches!(err, DriftError::UnsortedEdges { index: 2, .. }));
    }
}
