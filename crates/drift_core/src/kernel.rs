//! The counting kernel: bucket counts of every feature of a matrix in one pass.
//!
//! For a numeric feature with edges `e_0 < ... < e_{k-1}`, the kernel counts, for every edge,
//! how many values satisfy `x >= e_l` (an ordered comparison, so NaN never counts) plus how
//! many values are NaN. Bin counts follow by differences: with `m` non-missing values,
//! `bin_0 = m - ge_0`, `bin_l = ge_{l-1} - ge_l`, `bin_k = ge_{k-1}`. This is branch-free and
//! vectorises: on x86-64 with AVX2 (detected at run time) 4 values are compared per
//! instruction; elsewhere a scalar loop with the same semantics is used.
//!
//! * C order: rows are processed in blocks of [`BLOCK`] rows (the block stays in L1), and
//!   each SIMD lane is one feature: lane `i` compares feature `j + i` of a row against that
//!   feature's own edge table, so no gather or transpose is needed.
//! * Fortran order (and 1-D input): each column is contiguous; lanes are 4 consecutive rows
//!   compared against one broadcast edge.
//!
//! Work is split into row ranges (and columns, in Fortran order) run on the crate's own
//! rayon pool; the partial counts are summed.

use crate::matrix::Matrix;
use crate::pool::pool;
use rayon::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// Rows per block in the C-order kernel (64 rows x 45 features x 8 bytes = 23 KiB).
pub const BLOCK: usize = 64;
const LANES: usize = 4;
const MAX_GROUP: usize = 8;
/// Values per block in the column kernel (16 KiB).
const COL_BLOCK: usize = 2048;
/// Minimum number of rows per parallel task.
const MIN_TASK_ROWS: usize = 4096;

/// How one feature is counted.
#[derive(Debug, Clone, Copy)]
pub enum ColumnPlan<'a> {
    /// Numeric feature: finite, strictly increasing edges.
    Numeric(&'a [f64]),
    /// Categorical feature: finite, strictly increasing category values.
    Categorical(&'a [f64]),
}

impl ColumnPlan<'_> {
    /// Number of buckets including the missing bucket.
    pub fn n_buckets(&self) -> usize {
        match self {
            ColumnPlan::Numeric(e) => e.len() + 2,
            ColumnPlan::Categorical(c) => c.len() + 2,
        }
    }
}

/// Index of `x` (not NaN) among sorted `categories`, or `categories.len()` (unseen).
#[inline]
pub fn category_index(categories: &[f64], x: f64) -> usize {
    let i = categories.partition_point(|&c| c < x);
    if i < categories.len() && categories[i] == x {
        i
    } else {
        categories.len()
    }
}

/// Partial counts of one task.
#[derive(Clone)]
struct Partial {
    /// Lane-major accumulators `[chunk * levels + level][lane]`, see [`Layout`].
    ge: Vec<[i64; LANES]>,
    nan: Vec<[i64; LANES]>,
    /// Category buckets (categories + unseen) of categorical features; empty otherwise.
    cat: Vec<Vec<u64>>,
}

impl Partial {
    fn new(lay: &Layout, plans: &[ColumnPlan<'_>]) -> Self {
        Partial {
            ge: vec![[0; LANES]; lay.n_chunks() * lay.levels],
            nan: vec![[0; LANES]; lay.n_chunks()],
            cat: plans
                .iter()
                .map(|p| match p {
                    ColumnPlan::Categorical(c) => vec![0; c.len() + 1],
                    ColumnPlan::Numeric(_) => Vec::new(),
                })
                .collect(),
        }
    }

    fn add(mut self, other: Partial) -> Partial {
        for (a, b) in self.ge.iter_mut().zip(&other.ge) {
            for lane in 0..LANES {
                a[lane] += b[lane];
            }
        }
        for (a, b) in self.nan.iter_mut().zip(&other.nan) {
            for lane in 0..LANES {
                a[lane] += b[lane];
            }
        }
        for (a, b) in self.cat.iter_mut().zip(&other.cat) {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        self
    }
}

// ---------------------------------------------------------------------------------------
// The inner kernels. `ptr` points at the first of `count` groups of 4 values, successive
// groups `step` values apart; lane i of every group is compared against `edges[l][i]`, and
// the counts are added to `ge[l][i]` (and NaNs to `nan[i]` when `NAN`).

#[inline(always)]
unsafe fn kernel_scalar<const N: usize, const NAN: bool>(
    ptr: *const f64,
    step: usize,
    count: usize,
    edges: &[[f64; LANES]; N],
    ge: &mut [[i64; LANES]; N],
    nan: &mut [i64; LANES],
) {
    for i in 0..count {
        let p = ptr.add(i * step);
        for lane in 0..LANES {
            let x = *p.add(lane);
            for l in 0..N {
                ge[l][lane] += i64::from(x >= edges[l][lane]);
            }
            if NAN {
                nan[lane] += i64::from(x.is_nan());
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn kernel_avx2<const N: usize, const NAN: bool>(
    ptr: *const f64,
    step: usize,
    count: usize,
    edges: &[[f64; LANES]; N],
    ge: &mut [[i64; LANES]; N],
    nan: &mut [i64; LANES],
) {
    use std::arch::x86_64::*;
    let mut e = [_mm256_setzero_pd(); N];
    let mut acc = [_mm256_setzero_si256(); N];
    for l in 0..N {
        e[l] = _mm256_loadu_pd(edges[l].as_ptr());
    }
    let mut acc_nan = _mm256_setzero_si256();
    for i in 0..count {
        let x = _mm256_loadu_pd(ptr.add(i * step));
        for l in 0..N {
            // all-ones (-1) where x >= e, ordered: false for NaN
            let m = _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_GE_OQ>(x, e[l]));
            acc[l] = _mm256_sub_epi64(acc[l], m);
        }
        if NAN {
            let m = _mm256_castpd_si256(_mm256_cmp_pd::<_CMP_UNORD_Q>(x, x));
            acc_nan = _mm256_sub_epi64(acc_nan, m);
        }
    }
    for l in 0..N {
        let old = _mm256_loadu_si256(ge[l].as_ptr().cast());
        _mm256_storeu_si256(ge[l].as_mut_ptr().cast(), _mm256_add_epi64(old, acc[l]));
    }
    if NAN {
        let old = _mm256_loadu_si256(nan.as_ptr().cast());
        _mm256_storeu_si256(nan.as_mut_ptr().cast(), _mm256_add_epi64(old, acc_nan));
    }
}

/// Hints the CPU to start loading `values` into cache (one hint per 64-byte line).
#[inline]
fn prefetch(values: &[f64]) {
    #[cfg(target_arch = "x86_64")]
    for line in values.chunks(8) {
        // SAFETY: a prefetch is only a hint; it never faults, and the pointer is in bounds.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                line.as_ptr().cast(),
            );
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = values;
}

static SIMD_ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns the SIMD kernel off (or back on), e.g. to test the portable kernel; both give
/// identical counts.
pub fn set_simd_enabled(enabled: bool) {
    SIMD_ENABLED.store(enabled, Ordering::Relaxed);
}

/// Whether the AVX2 kernel is used (detected once; `false` off x86-64, or when
/// [`set_simd_enabled`] turned it off).
pub fn simd_available() -> bool {
    if !SIMD_ENABLED.load(Ordering::Relaxed) {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static AVX2: OnceLock<bool> = OnceLock::new();
        *AVX2.get_or_init(|| is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs the kernel for `edges.len()` levels (at most [`MAX_GROUP`]), adding into `ge` and,
/// when `count_nan`, into `nan`.
///
/// # Safety
/// When `count > 0`, `ptr.add((count - 1) * step + 3)` must be in bounds of one allocation.
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    simd: bool,
    ptr: *const f64,
    step: usize,
    count: usize,
    edges: &[[f64; LANES]],
    ge: &mut [[i64; LANES]],
    nan: &mut [i64; LANES],
    count_nan: bool,
) {
    macro_rules! go {
        ($n:literal) => {{
            let e: &[[f64; LANES]; $n] = edges.try_into().expect("group size");
            let g: &mut [[i64; LANES]; $n] = ge.try_into().expect("group size");
            #[cfg(target_arch = "x86_64")]
            if simd {
                if count_nan {
                    kernel_avx2::<$n, true>(ptr, step, count, e, g, nan);
                } else {
                    kernel_avx2::<$n, false>(ptr, step, count, e, g, nan);
                }
                return;
            }
            let _ = simd;
            if count_nan {
                kernel_scalar::<$n, true>(ptr, step, count, e, g, nan);
            } else {
                kernel_scalar::<$n, false>(ptr, step, count, e, g, nan);
            }
        }};
    }
    match edges.len() {
        0 => go!(0),
        1 => go!(1),
        2 => go!(2),
        3 => go!(3),
        4 => go!(4),
        5 => go!(5),
        6 => go!(6),
        7 => go!(7),
        8 => go!(8),
        n => unreachable!("level group of {n} > {MAX_GROUP}"),
    }
}

/// Splits `levels` into balanced groups of at most [`MAX_GROUP`]; `[(0, 0)]` when none.
fn level_groups(levels: usize) -> Vec<(usize, usize)> {
    if levels == 0 {
        return vec![(0, 0)];
    }
    let n_groups = levels.div_ceil(MAX_GROUP);
    let size = levels.div_ceil(n_groups);
    (0..levels)
        .step_by(size)
        .map(|l0| (l0, size.min(levels - l0)))
        .collect()
}

fn numeric_edges<'a>(plan: &ColumnPlan<'a>) -> &'a [f64] {
    match plan {
        ColumnPlan::Numeric(e) => e,
        ColumnPlan::Categorical(_) => &[],
    }
}

/// Shape of the C-order computation. Chunk `c` is the 4 features starting at column
/// `starts[c]`; with at least 4 features the last chunk overlaps the previous one (it starts
/// at `n_cols - 4`) so rows need no padding, and lanes of already-covered features get NaN
/// edges (`x >= NaN` is always false) and are ignored. With fewer than 4 features, rows are
/// padded with NaN to 4 (`stride`). Edge table and accumulators are indexed
/// `[chunk * levels + level][lane]`.
struct Layout {
    n_cols: usize,
    /// Values per row in the block buffer.
    stride: usize,
    starts: Vec<usize>,
    levels: usize,
    table: Vec<[f64; LANES]>,
    /// (chunk, lane) that counts each feature.
    lane_of: Vec<(usize, usize)>,
}

impl Layout {
    fn new(plans: &[ColumnPlan<'_>]) -> Self {
        let n_cols = plans.len();
        let stride = n_cols.max(LANES);
        let starts: Vec<usize> = (0..n_cols.div_ceil(LANES))
            .map(|c| (c * LANES).min(stride - LANES))
            .collect();
        let levels = plans
            .iter()
            .map(|p| numeric_edges(p).len())
            .max()
            .unwrap_or(0);
        let mut table = vec![[f64::NAN; LANES]; starts.len() * levels];
        let mut lane_of = vec![(usize::MAX, 0); n_cols];
        for (c, &start) in starts.iter().enumerate() {
            for (j, plan) in plans.iter().enumerate().skip(start).take(LANES) {
                let lane = j - start;
                if lane_of[j].0 == usize::MAX {
                    lane_of[j] = (c, lane);
                    for (l, &e) in numeric_edges(plan).iter().enumerate() {
                        table[c * levels + l][lane] = e;
                    }
                }
            }
        }
        Layout {
            n_cols,
            stride,
            starts,
            levels,
            table,
            lane_of,
        }
    }

    fn n_chunks(&self) -> usize {
        self.starts.len()
    }
}

// ---------------------------------------------------------------------------------------

fn row_major_task(
    m: &Matrix<'_>,
    plans: &[ColumnPlan<'_>],
    lay: &Layout,
    r0: usize,
    r1: usize,
) -> Partial {
    let n_cols = lay.n_cols;
    let stride = lay.stride;
    let data = m.data();
    let simd = simd_available();
    let groups = level_groups(lay.levels);
    let mut p = Partial::new(lay, plans);
    // Each block of rows is first copied sequentially (one memcpy the hardware prefetcher
    // streams) into an L1-sized buffer; the strided per-lane reads then hit L1.
    let mut buf = vec![f64::NAN; BLOCK * stride];
    let mut b = r0;
    while b < r1 {
        let be = (b + BLOCK).min(r1);
        let nr = be - b;
        let src = &data[b * n_cols..be * n_cols];
        if stride == n_cols {
            buf[..nr * n_cols].copy_from_slice(src);
        } else {
            for (dst, row) in buf.chunks_exact_mut(stride).zip(src.chunks_exact(n_cols)) {
                dst[..n_cols].copy_from_slice(row);
            }
        }
        // ask for the next block while this one is counted
        let next = &data[be * n_cols..(be + BLOCK).min(r1) * n_cols];
        let per_chunk = next.len().div_ceil(8 * lay.n_chunks()).max(1) * 8;
        let mut ahead = next.chunks(per_chunk);
        for (c, &start) in lay.starts.iter().enumerate() {
            if let Some(part) = ahead.next() {
                prefetch(part);
            }
            for &(l0, nl) in &groups {
                let at = c * lay.levels + l0;
                // SAFETY: the last read is buf[(nr - 1) * stride + start ..][..4], inside buf
                // because start + 4 <= stride.
                unsafe {
                    run(
                        simd,
                        buf.as_ptr().add(start),
                        stride,
                        nr,
                        &lay.table[at..at + nl],
                        &mut p.ge[at..at + nl],
                        &mut p.nan[c],
                        l0 == 0,
                    );
                }
            }
        }
        // categorical features (their lanes above only counted NaN)
        for (j, plan) in plans.iter().enumerate() {
            if let ColumnPlan::Categorical(cats) = plan {
                let counts = &mut p.cat[j];
                for row in buf[..nr * stride].chunks_exact(stride) {
                    let x = row[j];
                    if !x.is_nan() {
                        counts[category_index(cats, x)] += 1;
                    }
                }
            }
        }
        b = be;
    }
    p
}

/// Counts of a contiguous column slice: (ge per edge, nan, category buckets).
fn column_task(values: &[f64], plan: &ColumnPlan<'_>) -> (Vec<i64>, i64, Vec<u64>) {
    match plan {
        ColumnPlan::Categorical(cats) => {
            let mut counts = vec![0u64; cats.len() + 1];
            let mut nan = 0i64;
            for &x in values {
                if x.is_nan() {
                    nan += 1;
                } else {
                    counts[category_index(cats, x)] += 1;
                }
            }
            (Vec::new(), nan, counts)
        }
        ColumnPlan::Numeric(edges) => {
            let simd = simd_available();
            let groups = level_groups(edges.len());
            let table: Vec<[f64; LANES]> = edges.iter().map(|&e| [e; LANES]).collect();
            let mut ge = vec![[0i64; LANES]; edges.len()];
            let mut nan = [0i64; LANES];
            let n_vec = values.len() / LANES;
            // blocks stay in L1 while every level group scans them
            for start in (0..n_vec).step_by(COL_BLOCK / LANES) {
                let count = (COL_BLOCK / LANES).min(n_vec - start);
                for &(l0, nl) in &groups {
                    // SAFETY: the last read is values[(start + count) * 4 - 4 ..][..4].
                    unsafe {
                        run(
                            simd,
                            values.as_ptr().add(start * LANES),
                            LANES,
                            count,
                            &table[l0..l0 + nl],
                            &mut ge[l0..l0 + nl],
                            &mut nan,
                            l0 == 0,
                        );
                    }
                }
            }
            let mut ge: Vec<i64> = ge.iter().map(|g| g.iter().sum()).collect();
            let mut nan: i64 = nan.iter().sum();
            for &x in &values[n_vec * LANES..] {
                if x.is_nan() {
                    nan += 1;
                } else {
                    for (l, &e) in edges.iter().enumerate() {
                        ge[l] += i64::from(x >= e);
                    }
                }
            }
            (ge, nan, Vec::new())
        }
    }
}

/// Bucket counts of one contiguous column (value buckets, then missing), single-threaded.
pub fn count_column(values: &[f64], plan: &ColumnPlan<'_>) -> Vec<u64> {
    let (ge, nan, cat) = column_task(values, plan);
    finish(values.len(), plan, &ge, nan, &cat)
}

fn finish(n_rows: usize, plan: &ColumnPlan<'_>, ge: &[i64], nan: i64, cat: &[u64]) -> Vec<u64> {
    let mut out = Vec::with_capacity(plan.n_buckets());
    match plan {
        ColumnPlan::Numeric(edges) => {
            let non_missing = n_rows as i64 - nan;
            let mut prev = non_missing;
            for &g in &ge[..edges.len()] {
                out.push((prev - g) as u64);
                prev = g;
            }
            out.push(prev as u64);
        }
        ColumnPlan::Categorical(_) => out.extend_from_slice(cat),
    }
    out.push(nan as u64);
    out
}

/// Bucket counts of every feature of `m` (value buckets, then the missing bucket last).
///
/// `plans.len()` must equal `m.n_cols()`; edges and categories must be valid (finite,
/// strictly increasing): the profile guarantees both.
pub fn count_matrix(m: &Matrix<'_>, plans: &[ColumnPlan<'_>]) -> Vec<Vec<u64>> {
    assert_eq!(plans.len(), m.n_cols(), "one plan per column");
    let n_rows = m.n_rows();
    let n_cols = m.n_cols();
    let threads = crate::pool::num_threads();
    if m.col_slice(0).is_none() {
        let lay = Layout::new(plans);
        let n_tasks = (threads * 4).min(n_rows.div_ceil(MIN_TASK_ROWS)).max(1);
        let chunk = n_rows.div_ceil(n_tasks).div_ceil(BLOCK) * BLOCK;
        let total = if n_tasks == 1 {
            row_major_task(m, plans, &lay, 0, n_rows)
        } else {
            pool().install(|| {
                (0..n_tasks)
                    .into_par_iter()
                    .map(|t| {
                        let r0 = (t * chunk).min(n_rows);
                        let r1 = ((t + 1) * chunk).min(n_rows);
                        row_major_task(m, plans, &lay, r0, r1)
                    })
                    .reduce(|| Partial::new(&lay, plans), Partial::add)
            })
        };
        return (0..n_cols)
            .map(|j| {
                let (c, lane) = lay.lane_of[j];
                let ge: Vec<i64> = (0..numeric_edges(&plans[j]).len())
                    .map(|l| total.ge[c * lay.levels + l][lane])
                    .collect();
                finish(n_rows, &plans[j], &ge, total.nan[c][lane], &total.cat[j])
            })
            .collect();
    }
    // column-contiguous: tasks are (column, row range)
    let chunks_per_col = (threads * 4)
        .div_ceil(n_cols)
        .min(n_rows.div_ceil(MIN_TASK_ROWS))
        .max(1);
    let chunk = n_rows.div_ceil(chunks_per_col).max(1);
    let run_task = |j: usize, c: usize| {
        let col = m.col_slice(j).expect("column-contiguous matrix");
        let r0 = (c * chunk).min(n_rows);
        let r1 = ((c + 1) * chunk).min(n_rows);
        column_task(&col[r0..r1], &plans[j])
    };
    let parts: Vec<(Vec<i64>, i64, Vec<u64>)> = if n_cols * chunks_per_col == 1 {
        vec![run_task(0, 0)]
    } else {
        pool().install(|| {
            (0..n_cols * chunks_per_col)
                .into_par_iter()
                .map(|t| run_task(t / chunks_per_col, t % chunks_per_col))
                .collect()
        })
    };
    (0..n_cols)
        .map(|j| {
            let mut ge = vec![0i64; numeric_edges(&plans[j]).len()];
            let mut nan = 0i64;
            let mut cat = match plans[j] {
                ColumnPlan::Categorical(c) => vec![0u64; c.len() + 1],
                ColumnPlan::Numeric(_) => Vec::new(),
            };
            for (g, n, c) in &parts[j * chunks_per_col..(j + 1) * chunks_per_col] {
                for (a, b) in ge.iter_mut().zip(g) {
                    *a += b;
                }
                nan += n;
                for (a, b) in cat.iter_mut().zip(c) {
                    *a += b;
                }
            }
            finish(n_rows, &plans[j], &ge, nan, &cat)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::histogram_counts;
    use crate::matrix::Order;

    fn naive(values: &[f64], plan: &ColumnPlan<'_>) -> Vec<u64> {
        match plan {
            ColumnPlan::Numeric(e) => {
                let h = histogram_counts(values, e).unwrap();
                let mut v = h.counts;
                v.push(h.missing);
                v
            }
            ColumnPlan::Categorical(c) => {
                let mut v = vec![0u64; c.len() + 2];
                for &x in values {
                    if x.is_nan() {
                        v[c.len() + 1] += 1;
                    } else {
                        v[category_index(c, x)] += 1;
                    }
                }
                v
            }
        }
    }

    /// A small deterministic generator (xorshift) for test data.
    fn data(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed | 1;
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match i % 17 {
                    0 => f64::NAN,
                    1 => f64::INFINITY,
                    2 => f64::NEG_INFINITY,
                    3 => 2.0,
                    _ => ((s >> 11) as f64 / (1u64 << 53) as f64) * 10.0 - 2.0,
                }
            })
            .collect()
    }

    #[test]
    fn kernels_match_naive_counts_in_both_orders() {
        let edges: Vec<Vec<f64>> = (0..11)
            .map(|j| {
                (0..(j % 11))
                    .map(|l| l as f64 - 1.0 + 0.5 * (j % 3) as f64)
                    .collect()
            })
            .collect();
        let cats = [0.0, 2.0, 5.0];
        for &(n_rows, n_cols) in &[
            (1usize, 11usize),
            (5, 11),
            (1000, 11),
            (20_000, 11),
            (300, 2),
        ] {
            let mut plans: Vec<ColumnPlan<'_>> = (0..n_cols)
                .map(|j| ColumnPlan::Numeric(&edges[j]))
                .collect();
            plans[1] = ColumnPlan::Categorical(&cats);
            let rm = data(n_rows * n_cols, n_rows as u64 + 7);
            let mrm = Matrix::new(&rm, n_rows, n_cols, Order::RowMajor).unwrap();
            // the same matrix in column-major order
            let mut cm = vec![0.0; rm.len()];
            for r in 0..n_rows {
                for j in 0..n_cols {
                    cm[j * n_rows + r] = rm[r * n_cols + j];
                }
            }
            let mcm = Matrix::new(&cm, n_rows, n_cols, Order::ColMajor).unwrap();
            let a = count_matrix(&mrm, &plans);
            let b = count_matrix(&mcm, &plans);
            for j in 0..n_cols {
                let col = &cm[j * n_rows..(j + 1) * n_rows];
                let want = naive(col, &plans[j]);
                assert_eq!(a[j], want, "row-major, {n_rows}x{n_cols}, feature {j}");
                assert_eq!(b[j], want, "col-major, {n_rows}x{n_cols}, feature {j}");
            }
        }
    }

    #[test]
    fn level_groups_are_balanced() {
        assert_eq!(level_groups(0), vec![(0, 0)]);
        assert_eq!(level_groups(9), vec![(0, 5), (5, 4)]);
        assert_eq!(level_groups(8), vec![(0, 8)]);
        assert_eq!(level_groups(19), vec![(0, 7), (7, 7), (14, 5)]);
    }
}
