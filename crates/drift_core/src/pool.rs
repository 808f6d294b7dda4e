//! The crate's own rayon thread pool (never the global one, so that a host application's
//! rayon work and ours do not compete for the same workers).

use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::OnceLock;

/// Environment variable read once, at first use, for the number of worker threads.
pub const NUM_THREADS_ENV: &str = "DRIFT_CORE_NUM_THREADS";

static POOL: OnceLock<ThreadPool> = OnceLock::new();

/// Number of threads from `DRIFT_CORE_NUM_THREADS` (a positive integer), else the number of
/// available cores. An unparsable or zero value falls back to the number of cores.
pub fn configured_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::env::var(NUM_THREADS_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(cores)
}

/// The pool, built on first use.
pub fn pool() -> &'static ThreadPool {
    POOL.get_or_init(|| {
        ThreadPoolBuilder::new()
            .num_threads(configured_threads())
            .thread_name(|i| format!("drift-core-{i}"))
            .build()
            .expect("building the drift_core thread pool")
    })
}

/// Number of worker threads of the pool.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}
