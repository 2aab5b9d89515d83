//! The allocator settings of a training process: mimalloc (the `vlmflow` binary's and the
//! benches' global allocator), told to keep the memory it frees.
//!
//! Why: a training step frees and allocates the same large buffers every step. By default
//! mimalloc hands freed memory back to the OS after a few milliseconds, and the next step
//! faults it in again, the kernel zeroing each 2 MiB huge page: 22,000 faults and 15% of the
//! CPU time of 8 `lm` steps (`benches/vlm_step.rs`), about 400 when kept. The cost is that
//! the process holds on to its peak memory until it exits.

use std::ffi::{c_int, c_long};

pub use mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc.h's `mi_option_e` (the same index in mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: c_int, value: c_long);
    #[cfg(test)]
    fn mi_option_get(option: c_int) -> c_long;
}

/// Never return freed memory to the OS (`MIMALLOC_PURGE_DELAY=-1`). A user's own
/// `MIMALLOC_PURGE_DELAY` wins.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one option by value; mimalloc reads it whenever it considers purging.
        unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_set_is_the_purge_delay() {
        // Its default in the bundled mimalloc 3 is 1000 ms; its neighbours' are 1 and 0.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one option by value.
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, 1000);
        keep_freed_memory();
        assert_eq!(unsafe { mi_option_get(MI_OPTION_PURGE_DELAY) }, -1);
    }
}
