//! Fitting bin edges on reference values.
//!
//! * **Quantile** binning (default): the interior quantiles `q_i = i / n_bins`,
//!   `i = 1 .. n_bins - 1`, of the finite reference values, with **linear interpolation**
//!   between order statistics (Hyndman & Fan type 7, numpy's default `method="linear"`):
//!   `h = (n - 1) * q`, `lo = floor(h)`, `t = h - lo`, value `= lerp(x[lo], x[lo + 1], t)`
//!   computed exactly as numpy's `_lerp` does, so edges equal `np.quantile(x, q)` bit for bit.
//! * **Uniform** binning: `lo + i * ((hi - lo) / n_bins)` for the finite min `lo` and max
//!   `hi`, i.e. `np.linspace(lo, hi, n_bins + 1)[1:-1]`.
//!
//! In both, duplicate edges are merged (a discrete feature whose deciles tie gets fewer,
//! wider bins rather than empty zero-width ones), NaN and +/-inf are ignored for fitting
//! (infinities still count in the open outer bins when scoring), and a column without finite
//! values gets no edges (one value bin).
//!
//! Order statistics are found without sorting: a 65,536-bucket histogram of the top 16 bits
//! of an order-preserving integer key locates the bucket of every needed rank in one pass; a
//! second pass gathers the values of those few buckets, which are then selected exactly.

use crate::error::DriftError;
use serde::{Deserialize, Serialize};

/// How numeric edges are fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Binning {
    /// Interior quantiles of the reference (equal-frequency bins).
    Quantile,
    /// Equal-width bins between the finite min and max of the reference.
    Uniform,
}

impl Binning {
    /// Parses `"quantile"` or `"uniform"`.
    pub fn parse(s: &str) -> Result<Self, DriftError> {
        match s {
            "quantile" => Ok(Binning::Quantile),
            "uniform" => Ok(Binning::Uniform),
            other => Err(DriftError::InvalidArgument(format!(
                "binning must be \"quantile\" or \"uniform\", got {other:?}"
            ))),
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Binning::Quantile => "quantile",
            Binning::Uniform => "uniform",
        }
    }
}

/// Largest accepted number of bins.
pub const MAX_BINS: usize = 10_000;

/// Checks the requested number of bins.
pub fn validate_n_bins(n_bins: usize) -> Result<(), DriftError> {
    if n_bins == 0 || n_bins > MAX_BINS {
        return Err(DriftError::InvalidArgument(format!(
            "n_bins must be between 1 and {MAX_BINS}, got {n_bins}"
        )));
    }
    Ok(())
}

/// Order-preserving map of a float to an unsigned integer (total order, -0.0 < +0.0).
#[inline(always)]
fn key(x: f64) -> u64 {
    // branch-free: flip every bit of negatives, only the sign bit of positives
    let b = x.to_bits();
    let mask = (((b as i64) >> 63) as u64) | (1 << 63);
    b ^ mask
}

/// Buckets (top 16 key bits) that hold finite values: NaN and +/-inf fall outside.
const FIRST_FINITE: usize = 0x0010;
const LAST_FINITE: usize = 0xFFEF;

/// numpy's `_lerp`: `a + (b - a) * t`, or `b - (b - a) * (1 - t)` when `t >= 0.5`.
#[inline]
pub fn lerp(a: f64, b: f64, t: f64) -> f64 {
    let d = b - a;
    if t >= 0.5 {
        b - d * (1.0 - t)
    } else {
        a + d * t
    }
}

/// The sorted, de-duplicated edges: strictly increasing.
fn merge_duplicates(mut edges: Vec<f64>) -> Vec<f64> {
    edges.dedup_by(|a, b| a == b);
    edges
}

/// Bucket (top 16 bits of the order-preserving key) of a value, in `0..65536`.
#[inline(always)]
pub(crate) fn bucket(x: f64) -> usize {
    (key(x) >> 48) as usize
}

/// Number of buckets.
pub(crate) const N_BUCKETS: usize = 1 << 16;

/// Finite values counted in a bucket histogram.
pub(crate) fn finite_in(counts: &[u32]) -> usize {
    counts[FIRST_FINITE..=LAST_FINITE]
        .iter()
        .map(|&c| c as usize)
        .sum()
}

/// Which buckets hold the wanted ranks, and how to select them once gathered.
pub(crate) struct BucketPlan {
    /// Slot of every bucket; `n_slots` (a dummy) for buckets not needed.
    slot_of: Vec<u16>,
    /// (bucket, finite values before it) per slot.
    slots: Vec<(usize, usize)>,
    rank_slot: Vec<usize>,
}

impl BucketPlan {
    /// `ranks`: sorted, below the number of finite values counted in `counts`.
    pub(crate) fn new(counts: &[u32], ranks: &[usize]) -> Self {
        let mut slot_of = vec![u16::MAX; N_BUCKETS];
        let mut slots: Vec<(usize, usize)> = Vec::new();
        let mut rank_slot = Vec::with_capacity(ranks.len());
        let mut before = 0usize;
        let mut ri = 0;
        let finite = counts
            .iter()
            .enumerate()
            .take(LAST_FINITE + 1)
            .skip(FIRST_FINITE);
        for (b, &h) in finite {
            let h = h as usize;
            while ri < ranks.len() && ranks[ri] < before + h {
                if slot_of[b] == u16::MAX {
                    slot_of[b] = slots.len() as u16;
                    slots.push((b, before));
                }
                rank_slot.push(slot_of[b] as usize);
                ri += 1;
            }
            before += h;
        }
        assert_eq!(
            ri,
            ranks.len(),
            "ranks must be below the number of finite values"
        );
        let dummy = slots.len() as u16;
        for s in slot_of.iter_mut() {
            if *s == u16::MAX {
                *s = dummy;
            }
        }
        BucketPlan {
            slot_of,
            slots,
            rank_slot,
        }
    }

    pub(crate) fn n_slots(&self) -> usize {
        self.slots.len()
    }

    /// Values counted in each slot's bucket.
    pub(crate) fn slot_sizes(&self, counts: &[u32]) -> Vec<usize> {
        self.slots
            .iter()
            .map(|&(b, _)| counts[b] as usize)
            .collect()
    }

    /// The slot whose bucket holds `x`, or `n_slots()` when `x` is not needed.
    #[inline(always)]
    pub(crate) fn slot(&self, x: f64) -> usize {
        self.slot_of[bucket(x)] as usize
    }

    /// The values at `ranks` from the gathered values of every slot.
    pub(crate) fn finish(&self, mut bufs: Vec<Vec<f64>>, ranks: &[usize]) -> Vec<f64> {
        let mut out = Vec::with_capacity(ranks.len());
        let mut sorted = vec![false; bufs.len()];
        for (i, &r) in ranks.iter().enumerate() {
            let s = self.rank_slot[i];
            let local = r - self.slots[s].1;
            let buf = &mut bufs[s];
            if !sorted[s] && self.rank_slot.iter().filter(|&&t| t == s).count() > 2 {
                buf.sort_unstable_by(f64::total_cmp);
                sorted[s] = true;
            }
            if sorted[s] {
                out.push(buf[local]);
            } else {
                let (_, v, _) = buf.select_nth_unstable_by(local, f64::total_cmp);
                out.push(*v);
            }
        }
        out
    }
}

/// The bucket histogram of one column (two interleaved counters, so runs of equal buckets
/// do not serialise on one counter).
fn key_histogram(values: &[f64]) -> Vec<u32> {
    let mut h0 = vec![0u32; N_BUCKETS];
    let mut h1 = vec![0u32; N_BUCKETS];
    let mut pairs = values.chunks_exact(2);
    for p in &mut pairs {
        h0[bucket(p[0])] += 1;
        h1[bucket(p[1])] += 1;
    }
    for &x in pairs.remainder() {
        h0[bucket(x)] += 1;
    }
    for (a, b) in h0.iter_mut().zip(&h1) {
        *a += b;
    }
    h0
}

/// The (lo, hi, t) interpolation plan of the interior quantiles and the sorted distinct
/// ranks it needs, for `n` finite values (see the module docs).
pub(crate) fn quantile_plan(n: usize, n_bins: usize) -> (Vec<(usize, usize, f64)>, Vec<usize>) {
    let mut plan = Vec::with_capacity(n_bins.saturating_sub(1));
    let mut ranks = Vec::with_capacity(2 * n_bins);
    for i in 1..n_bins {
        let q = i as f64 / n_bins as f64;
        let h = (n - 1) as f64 * q;
        let lo = h.floor();
        let t = h - lo;
        let lo = (lo as usize).min(n - 1);
        let hi = (lo + 1).min(n - 1);
        plan.push((lo, hi, t));
        ranks.push(lo);
        ranks.push(hi);
    }
    ranks.sort_unstable();
    ranks.dedup();
    (plan, ranks)
}

/// Edges from the interpolation plan and the order statistics at `ranks`.
pub(crate) fn edges_from_stats(
    plan: &[(usize, usize, f64)],
    ranks: &[usize],
    stats: &[f64],
) -> Vec<f64> {
    let at = |r: usize| stats[ranks.binary_search(&r).expect("rank requested")];
    merge_duplicates(
        plan.iter()
            .map(|&(lo, hi, t)| lerp(at(lo), at(hi), t))
            .collect(),
    )
}

/// Values at the given ranks (0-based, sorted ascending, all below the number of finite
/// values) among the finite values of `values`, as if those were sorted.
pub fn order_statistics(values: &[f64], ranks: &[usize]) -> Vec<f64> {
    let counts = key_histogram(values);
    gather_and_select(values, &counts, ranks)
}

fn gather_and_select(values: &[f64], counts: &[u32], ranks: &[usize]) -> Vec<f64> {
    let plan = BucketPlan::new(counts, ranks);
    let dummy = plan.n_slots();
    let mut bufs: Vec<Vec<f64>> = plan
        .slot_sizes(counts)
        .into_iter()
        .map(Vec::with_capacity)
        .collect();
    // a well-predicted branch: most values are in buckets that are not needed
    for &x in values {
        let s = plan.slot(x);
        if s != dummy {
            bufs[s].push(x);
        }
    }
    plan.finish(bufs, ranks)
}

/// Quantile edges of the finite values of `values` (see the module docs).
pub fn quantile_edges(values: &[f64], n_bins: usize) -> Result<Vec<f64>, DriftError> {
    validate_n_bins(n_bins)?;
    if n_bins == 1 {
        return Ok(Vec::new());
    }
    if values.len() >= u32::MAX as usize {
        // beyond the 32-bit bucket counters: sort a copy of the finite values instead
        let mut sorted: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_unstable_by(f64::total_cmp);
        return Ok(edges_from_sorted(&sorted, n_bins));
    }
    let counts = key_histogram(values);
    let n = finite_in(&counts);
    if n == 0 {
        return Ok(Vec::new());
    }
    let (plan, ranks) = quantile_plan(n, n_bins);
    let stats = gather_and_select(values, &counts, &ranks);
    Ok(edges_from_stats(&plan, &ranks, &stats))
}

/// Quantile edges from already sorted finite values (the reference definition).
pub fn edges_from_sorted(sorted: &[f64], n_bins: usize) -> Vec<f64> {
    let n = sorted.len();
    if n == 0 || n_bins <= 1 {
        return Vec::new();
    }
    let edges = (1..n_bins)
        .map(|i| {
            let h = (n - 1) as f64 * (i as f64 / n_bins as f64);
            let lo = h.floor();
            let t = h - lo;
            let lo = (lo as usize).min(n - 1);
            lerp(sorted[lo], sorted[(lo + 1).min(n - 1)], t)
        })
        .collect();
    merge_duplicates(edges)
}

/// Uniform (equal-width) edges between the finite min and max of `values`.
pub fn uniform_edges(values: &[f64], n_bins: usize) -> Result<Vec<f64>, DriftError> {
    validate_n_bins(n_bins)?;
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &x in values {
        if x.is_finite() {
            lo = lo.min(x);
            hi = hi.max(x);
        }
    }
    if lo > hi || n_bins == 1 {
        return Ok(Vec::new());
    }
    let step = (hi - lo) / n_bins as f64;
    let edges: Vec<f64> = (1..n_bins).map(|i| lo + i as f64 * step).collect();
    let edges = merge_duplicates(edges);
    crate::histogram::validate_edges(&edges)?;
    Ok(edges)
}

/// Edges of one numeric column with the given binning.
pub fn fit_edges(values: &[f64], n_bins: usize, binning: Binning) -> Result<Vec<f64>, DriftError> {
    match binning {
        Binning::Quantile => quantile_edges(values, n_bins),
        Binning::Uniform => uniform_edges(values, n_bins),
    }
}

/// Distinct finite values, sorted (the categories of a categorical column).
pub fn distinct_finite(values: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_unstable_by(f64::total_cmp);
    v.dedup_by(|a, b| a == b);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted_finite(v: &[f64]) -> Vec<f64> {
        let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        s.sort_by(f64::total_cmp);
        s
    }

    #[test]
    fn order_statistics_match_sorting() {
        let mut s = 88172645463325252u64;
        let mut v: Vec<f64> = (0..50_000)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.3) * 1e3
            })
            .collect();
        v[5] = f64::NAN;
        v[7] = f64::INFINITY;
        v[9] = f64::NEG_INFINITY;
        v.extend(std::iter::repeat_n(1.0, 10_000)); // heavy ties
        let sorted = sorted_finite(&v);
        let ranks: Vec<usize> = vec![0, 1, 17, 4999, 5000, 30_000, 30_001, sorted.len() - 1];
        let got = order_statistics(&v, &ranks);
        let want: Vec<f64> = ranks.iter().map(|&r| sorted[r]).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn selection_and_sorting_give_the_same_edges() {
        let mut s = 0x2545_F491_4F6C_DD1Du64;
        for n in [1usize, 2, 3, 10, 999, 40_000] {
            let v: Vec<f64> = (0..n)
                .map(|i| {
                    s ^= s << 13;
                    s ^= s >> 7;
                    s ^= s << 17;
                    if i % 11 == 0 {
                        (i % 3) as f64
                    } else {
                        ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 1e4
                    }
                })
                .collect();
            for n_bins in [1, 2, 7, 10, 20] {
                assert_eq!(
                    quantile_edges(&v, n_bins).unwrap(),
                    edges_from_sorted(&sorted_finite(&v), n_bins)
                );
            }
        }
    }

    #[test]
    fn quantile_edges_by_hand() {
        // np.quantile([0..9.5], [0.1..0.9]) = 0.9 1.8 ... 7.2 8.15
        let v = [0., 1., 2., 3., 4., 5., 6., 7., 8., 9.5, f64::NAN];
        let e = quantile_edges(&v, 10).unwrap();
        let want = [0.9, 1.8, 2.7, 3.6, 4.5, 5.4, 6.3, 7.2, 8.15];
        for (a, b) in e.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{e:?}");
        }
    }

    #[test]
    fn ties_are_merged_and_constant_columns_get_one_edge() {
        let v: Vec<f64> = (0..100).map(|i| if i < 70 { 0.0 } else { 1.0 }).collect();
        // deciles 0.1..0.6 all tie at 0 and 0.8, 0.9 at 1 (merged); 0.7 interpolates
        // linearly between x[69] = 0 and x[70] = 1
        let t = 99.0 * 0.7 - 69.0;
        assert_eq!(quantile_edges(&v, 10).unwrap(), vec![0.0, t, 1.0]);
        assert_eq!(quantile_edges(&[3.0; 10], 10).unwrap(), vec![3.0]);
        assert_eq!(uniform_edges(&[3.0; 10], 4).unwrap(), vec![3.0]);
        assert!(quantile_edges(&[f64::NAN, f64::INFINITY], 10)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn uniform_edges_by_hand() {
        assert_eq!(
            uniform_edges(&[0.0, 10.0, 5.0], 5).unwrap(),
            vec![2.0, 4.0, 6.0, 8.0]
        );
    }

    #[test]
    fn bad_n_bins() {
        assert!(quantile_edges(&[1.0], 0)
            .unwrap_err()
            .to_string()
            .contains("n_bins"));
        assert!(Binning::parse("equal").is_err());
    }
}
