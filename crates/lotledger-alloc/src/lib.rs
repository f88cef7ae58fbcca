//! mimalloc's settings for the `lotledger` binary, and its transparent huge pages.
//!
//! The workspace forbids `unsafe`; setting one of mimalloc's options is a C call, so it lives
//! here, alone and audited.
//!
//! **Purge delay.** mimalloc gives freed memory back to the OS (`MADV_DONTNEED`) once it has been
//! unused for `purge_delay` milliseconds (1 000 by default in mimalloc 3). Ingest frees each
//! batch's maps and rows and allocates the next batch's a moment later. With the default the
//! freed spans were purged in between, and the next batch faulted them in again: each fault of
//! a transparent huge page zeroes 2 MiB. A `perf record` of W1 on SQLite put 7.8 % of its
//! samples in the kernel's page clearing, all of it under those faults. With a delay of 10 s,
//! W1's page faults fell from ~30 000 to ~620, its CPU time ×1.03–1.07 and its wall time
//! ×1.04–1.07 (BENCHMARKS.md, issue 10, twelfth session). Memory freed for good (after a burst) still goes back to the OS, 10 s
//! later. An operator's own `MIMALLOC_PURGE_DELAY` wins.
//!
//! **Transparent huge pages, for ingest.** mimalloc madvises its arenas `MADV_HUGEPAGE`, so on
//! a kernel whose THP mode is `madvise` (or `always`) the first touch of every 2 MiB span
//! zeroes all of it. Ingest grows and drops a batch's vectors and maps all the time: a `perf
//! record` of W1 on SQLite put 10 % of the ingest process's samples in the kernel's page
//! clearing. [`no_huge_pages`] turns THP off for the process (`PR_SET_THP_DISABLE`); `ingest`
//! calls it (and the bench's W1 child, which is the ingest path). W1's peak memory fell by
//! 10–16 % in all 12 alternated pairs; its speed moved ×0.88–1.27 (median ×1.06), within this
//! machine's noise. `serve` under W6's load ran ×0.71–0.98 slower without huge pages in 5
//! pairs, so the server keeps them (BENCHMARKS.md, issue 10, sixteenth session). An
//! operator's `MIMALLOC_ALLOW_THP` wins.

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc 2 and 3's `mi_option_e` (the bindings do not name it).
const PURGE_DELAY: mi_option_t = 15;

/// The purge delay this binary asks for, in milliseconds.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// The environment variable through which mimalloc reads the purge delay at startup.
pub const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

/// The environment variable through which mimalloc reads whether it may use transparent huge
/// pages; when set, [`no_huge_pages`] leaves the choice to it.
pub const ALLOW_THP_VAR: &str = "MIMALLOC_ALLOW_THP";

/// Asks the kernel for no transparent huge pages in this process from now on (Linux's
/// `PR_SET_THP_DISABLE`: new faults get 4 KiB pages, madvised or not; child processes inherit
/// it), unless the operator set [`ALLOW_THP_VAR`]. Returns whether THP is now off for the
/// process. Elsewhere than Linux, does nothing and returns `false`.
pub fn no_huge_pages() -> bool {
    if std::env::var_os(ALLOW_THP_VAR).is_some() {
        return huge_pages_disabled();
    }
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)` sets one flag of the calling
        // process's memory descriptor; it reads no memory of ours and cannot fail in a way
        // that matters (an old kernel answers EINVAL, and THP stays as it was).
        #[allow(unsafe_code)]
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
        };
    }
    huge_pages_disabled()
}

/// Whether transparent huge pages are off for this process (`PR_GET_THP_DISABLE`).
pub fn huge_pages_disabled() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0)` only reads the calling process's
        // flag and returns it.
        #[allow(unsafe_code)]
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        flag == 1
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Applies the settings above. Call first thing in `main`; later calls change nothing more.
pub fn tune() {
    if std::env::var_os(PURGE_DELAY_VAR).is_none() {
        set_purge_delay(PURGE_DELAY_MS);
    }
}

/// mimalloc's current purge delay, in milliseconds.
pub fn purge_delay_ms() -> i64 {
    // SAFETY: `mi_option_get` reads one entry of mimalloc's static option table; any option
    // index below `_mi_option_last` is valid, and 15 is.
    #[allow(unsafe_code)]
    let value = unsafe { mi_option_get(PURGE_DELAY) };
    // `c_long` is `i64` here but `i32` on other targets.
    #[allow(clippy::useless_conversion)]
    i64::from(value)
}

fn set_purge_delay(ms: i64) {
    let value = std::os::raw::c_long::try_from(ms).unwrap_or(std::os::raw::c_long::MAX);
    // SAFETY: `mi_option_set` stores one integer in mimalloc's static option table (thread-safe
    // by design: options may be changed at any time); the index is valid, as above.
    #[allow(unsafe_code)]
    unsafe {
        mi_option_set(PURGE_DELAY, value)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The index is mimalloc's purge delay: nothing else in its table defaults to 1 000 ms; and
    /// `tune` sets it. One test, since both read the same process-wide table.
    #[test]
    fn tune_sets_the_purge_delay() {
        if std::env::var_os(PURGE_DELAY_VAR).is_some() {
            eprintln!("{PURGE_DELAY_VAR} is set: skipping");
            return;
        }
        assert_eq!(purge_delay_ms(), 1_000, "mimalloc 3's default purge delay");
        tune();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
    }

    /// A test process starts with huge pages allowed; `no_huge_pages` turns them off for it,
    /// as the kernel reports in `/proc/self/status` (Linux only).
    #[cfg(target_os = "linux")]
    #[test]
    fn no_huge_pages_turns_them_off_for_the_process() {
        if std::env::var_os(ALLOW_THP_VAR).is_some() {
            eprintln!("{ALLOW_THP_VAR} is set: skipping");
            return;
        }
        if huge_pages_disabled() {
            eprintln!("this process started with huge pages off: nothing to show");
            return;
        }
        let status = || std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        assert!(status().contains("THP_enabled:\t1"), "{}", status());
        assert!(no_huge_pages());
        assert!(huge_pages_disabled());
        assert!(status().contains("THP_enabled:\t0"), "{}", status());
    }
}
