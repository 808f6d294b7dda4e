//! Large scratch buffers.

/// An empty vector with room for `len` values. On Linux the allocation is marked for
/// transparent huge pages (`madvise(MADV_HUGEPAGE)`), so filling a buffer of hundreds of
/// megabytes takes a few hundred page faults instead of tens of thousands.
pub fn huge_vec(len: usize) -> Vec<f64> {
    let v: Vec<f64> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = v.as_ptr() as usize;
        let end = start + len * std::mem::size_of::<f64>();
        let aligned = start.next_multiple_of(HUGE);
        if end > aligned + HUGE {
            let span = (end - aligned) / HUGE * HUGE;
            // SAFETY: advice on memory owned by `v` (not yet touched); it cannot fail in a way
            // that affects correctness, so the result is ignored.
            unsafe {
                libc::madvise(aligned as *mut libc::c_void, span, libc::MADV_HUGEPAGE);
            }
        }
    }
    v
}
