//! Times fitting and counting on a synthetic 1M x 45 matrix:
//! `MODE=fit_c|fit_f|count_c|count_f|all cargo run --release --example kernel_timing`.
use drift_core::{FitOptions, Matrix, Order, Profile};
use std::time::Instant;

fn main() {
    let mode = std::env::var("MODE").unwrap_or_else(|_| "all".into());
    let on = |m: &str| mode == "all" || mode == m;
    let (n, f) = (1_000_000usize, 45usize);
    let mut s = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<f64> = (0..n * f)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect();
    let m = Matrix::new(&data, n, f, Order::RowMajor).unwrap();
    let mut cm = vec![0.0; data.len()];
    for (j, col) in cm.chunks_mut(n).enumerate() {
        for (r, d) in col.iter_mut().enumerate() {
            *d = data[r * f + j];
        }
    }
    let mf = Matrix::new(&cm, n, f, Order::ColMajor).unwrap();
    let p = Profile::fit(&mf, &FitOptions::default()).unwrap();
    let reps = 3;
    for _ in 0..reps {
        if on("sum") {
            let t = Instant::now();
            let s: f64 = data.iter().sum();
            println!("sum (1 thread): {:?} ({s})", t.elapsed());
        }
        if on("fit_c") {
            let t = Instant::now();
            let q = Profile::fit(&m, &FitOptions::default()).unwrap();
            println!("fit C: {:?} ({})", t.elapsed(), q == p);
        }
        if on("fit_f") {
            let t = Instant::now();
            let q = Profile::fit(&mf, &FitOptions::default()).unwrap();
            println!("fit F: {:?} ({})", t.elapsed(), q == p);
        }
        if on("count_c") {
            let t = Instant::now();
            let c = p.count(&m).unwrap();
            println!("count C: {:?} ({})", t.elapsed(), c[0][0]);
        }
        if on("count_f") {
            let t = Instant::now();
            let c = p.count(&mf).unwrap();
            println!("count F: {:?} ({})", t.elapsed(), c[0][0]);
        }
    }
}
