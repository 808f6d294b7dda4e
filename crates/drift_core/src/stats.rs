//! PSI, KL and Jensen-Shannon divergence with one epsilon rule for empty buckets.
//!
//! **Epsilon rule** (the only one, used by every statistic and every caller): a count or
//! proportion vector is first normalised by its sum; then the share of every *empty*
//! bucket (exactly zero) is replaced by [`EPSILON`] = 1e-4, without renormalising. Non-empty
//! shares are never changed. A bucket empty on both sides therefore contributes exactly 0.
//! Logarithms are natural.

use crate::error::DriftError;

/// The share given to an empty bucket.
pub const EPSILON: f64 = 1e-4;

/// Normalises a count/proportion vector and applies the epsilon rule.
pub fn shares(v: &[f64], what: &str) -> Result<Vec<f64>, DriftError> {
    if v.is_empty() {
        return Err(DriftError::empty(format!(
            "{what} (a vector with no buckets)"
        )));
    }
    for (i, &x) in v.iter().enumerate() {
        if !x.is_finite() || x < 0.0 {
            return Err(DriftError::InvalidArgument(format!(
                "{what}[{i}] is {x}; counts and proportions must be finite and >= 0"
            )));
        }
    }
    let total: f64 = v.iter().sum();
    if total <= 0.0 {
        return Err(DriftError::empty(format!("{what} (all buckets are zero)")));
    }
    Ok(v.iter()
        .map(|&x| if x == 0.0 { EPSILON } else { x / total })
        .collect())
}

/// Same as [`shares`] for integer counts.
pub fn shares_u64(v: &[u64], what: &str) -> Result<Vec<f64>, DriftError> {
    let total: u64 = v.iter().sum();
    if v.is_empty() || total == 0 {
        return Err(DriftError::empty(what.to_string()));
    }
    let t = total as f64;
    Ok(v.iter()
        .map(|&x| if x == 0 { EPSILON } else { x as f64 / t })
        .collect())
}

fn same_len(a: &[f64], b: &[f64], an: &str, bn: &str) -> Result<(), DriftError> {
    if a.len() != b.len() {
        return Err(DriftError::Shape(format!(
            "{an} has {} buckets but {bn} has {}",
            a.len(),
            b.len()
        )));
    }
    Ok(())
}

/// PSI from shares already passed through the epsilon rule: `sum (a - e) * ln(a / e)`.
pub fn psi_shares(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| (a - e) * (a / e).ln())
        .sum()
}

/// KL(p || q) from shares already passed through the epsilon rule: `sum p * ln(p / q)`.
pub fn kl_shares(p: &[f64], q: &[f64]) -> f64 {
    p.iter().zip(q).map(|(&p, &q)| p * (p / q).ln()).sum()
}

/// Jensen-Shannon divergence (natural log, so in `[0, ln 2]`) from shares already passed
/// through the epsilon rule: `KL(p || m) / 2 + KL(q || m) / 2` with `m = (p + q) / 2`.
pub fn js_shares(p: &[f64], q: &[f64]) -> f64 {
    p.iter()
        .zip(q)
        .map(|(&p, &q)| {
            let m = 0.5 * (p + q);
            0.5 * p * (p / m).ln() + 0.5 * q * (q / m).ln()
        })
        .sum()
}

/// Population stability index of `actual` against `expected` (counts or proportions).
pub fn psi(expected: &[f64], actual: &[f64]) -> Result<f64, DriftError> {
    same_len(expected, actual, "expected", "actual")?;
    Ok(psi_shares(
        &shares(expected, "expected")?,
        &shares(actual, "actual")?,
    ))
}

/// Kullback-Leibler divergence KL(p || q) (counts or proportions).
pub fn kl(p: &[f64], q: &[f64]) -> Result<f64, DriftError> {
    same_len(p, q, "p", "q")?;
    Ok(kl_shares(&shares(p, "p")?, &shares(q, "q")?))
}

/// Jensen-Shannon divergence of `p` and `q` (counts or proportions).
pub fn js(p: &[f64], q: &[f64]) -> Result<f64, DriftError> {
    same_len(p, q, "p", "q")?;
    Ok(js_shares(&shares(p, "p")?, &shares(q, "q")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_distributions_score_zero() {
        let v = [10.0, 0.0, 30.0];
        assert_eq!(psi(&v, &v).unwrap(), 0.0);
        assert_eq!(kl(&v, &v).unwrap(), 0.0);
        assert!(js(&v, &v).unwrap().abs() < 1e-15);
    }

    #[test]
    fn counts_and_proportions_agree() {
        let c = [1.0, 2.0, 7.0];
        let p = [0.1, 0.2, 0.7];
        let q = [5.0, 3.0, 2.0];
        assert!((psi(&c, &q).unwrap() - psi(&p, &q).unwrap()).abs() < 1e-15);
    }

    #[test]
    fn psi_by_hand() {
        // e = (0.5, 0.5), a = (0.25, 0.75)
        let want = (0.25 - 0.5) * (0.25f64 / 0.5).ln() + (0.75 - 0.5) * (0.75f64 / 0.5).ln();
        assert!((psi(&[1.0, 1.0], &[1.0, 3.0]).unwrap() - want).abs() < 1e-15);
    }

    #[test]
    fn epsilon_only_for_empty_buckets() {
        let s = shares(&[0.0, 3.0, 1.0], "v").unwrap();
        assert_eq!(s, vec![EPSILON, 0.75, 0.25]);
    }

    #[test]
    fn errors_name_the_problem() {
        let e = psi(&[1.0], &[1.0, 2.0]).unwrap_err();
        assert!(e.to_string().contains("1 buckets"), "{e}");
        let e = kl(&[-1.0, 2.0], &[1.0, 2.0]).unwrap_err();
        assert!(e.to_string().contains("p[0] is -1"), "{e}");
        let e = js(&[0.0, 0.0], &[1.0, 2.0]).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Empty);
    }
}
