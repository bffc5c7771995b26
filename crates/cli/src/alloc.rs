//! The binary's allocator and the one setting it is given.
//!
//! mimalloc gives freed pages back to the OS (glibc kept a fleet's worth of freed connections
//! resident). But it gives them back only a while after they were freed (`purge_delay`,
//! 1,000 ms by default in mimalloc 3), and a delayed purge runs only when the allocator is
//! next busy: `serve` frees a poll's transient reads at the end of the poll and then rests
//! for minutes, so what the poll freed stayed resident until the next poll. Purging at once
//! (`purge_delay = 0`) measured, at 366,928 connections (`serve-rss.sh 20000`, BENCHMARKS.md):
//! resident memory's median 1.13–1.15 → 1.01–1.02 KB per connection and its peak (VmHWM)
//! 1.46–1.48 → 1.27 KB, and a one-shot `check` of that fleet max RSS 631–794 → 495–501 MB with
//! less system time (freed pages are reused rather than new ones faulted in); the dashboard's
//! routes kept their p99.

/// The allocator of every `connhealth` command.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, the same in mimalloc 2 and
/// 3; `libmimalloc-sys` names the options around it but not this one).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Make the allocator purge freed memory at once, unless `MIMALLOC_PURGE_DELAY` in the
/// environment asks for something else (mimalloc read it at start-up). Call first in `main`,
/// before any thread is started (setting an option is not thread-safe).
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: `mi_option_set` takes two integers and only stores the value in mimalloc's
    // option table; it is called before any other thread exists, as mimalloc requires.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allocator's current `purge_delay`, in milliseconds.
    fn purge_delay() -> i64 {
        // SAFETY: reads an integer from mimalloc's option table.
        #[allow(unsafe_code)]
        let ms = unsafe { libmimalloc_sys::mi_option_get(PURGE_DELAY) };
        #[allow(clippy::useless_conversion)] // c_long is i32 on some targets
        i64::from(ms)
    }

    /// Option 15 is the purge delay: before `configure`, it holds mimalloc 3's default for it
    /// (1,000 ms; no other option of that table defaults to 1,000), so a shifted table would
    /// fail here rather than quietly set another option; after, it is 0.
    #[test]
    fn configure_sets_the_purge_delay_and_nothing_else() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        assert_eq!(
            purge_delay(),
            1000,
            "option {PURGE_DELAY} is not purge_delay"
        );
        configure();
        assert_eq!(purge_delay(), 0);
    }
}
