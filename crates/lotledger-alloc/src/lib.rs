//! mimalloc's settings for the `lotledger` binary.
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

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc 2 and 3's `mi_option_e` (the bindings do not name it).
const PURGE_DELAY: mi_option_t = 15;

/// The purge delay this binary asks for, in milliseconds.
pub const PURGE_DELAY_MS: i64 = 10_000;

/// The environment variable through which mimalloc reads the purge delay at startup.
pub const PURGE_DELAY_VAR: &str = "MIMALLOC_PURGE_DELAY";

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
}
