//! Heap counters: a counting global allocator whose counters live in this library.
//!
//! A global allocator can only be chosen by the final binary, so this crate defines the
//! allocator *type* ([`CountingAlloc`]) and its counters, and each binary or bench target that
//! wants heap figures declares it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: connhealth_bench::alloc::CountingAlloc = connhealth_bench::alloc::CountingAlloc;
//! ```
//!
//! Without that line [`snapshot`] returns `None` and the heap columns of the reports say
//! "n/a"; everything else still works.
//!
//! Counting must not change what it measures: one shared atomic counter updated by every thread
//! on every allocation made a 256-way fan-out 10–15 % slower on two cores (cache-line
//! contention). So each thread counts in thread-local cells and adds its counts to the shared
//! totals only every [`FLUSH_BYTES`] of net change or [`FLUSH_CALLS`] calls. Totals read by
//! [`snapshot`] therefore lag by at most that much per thread, and the peak is the peak of the
//! flushed totals: exact to within `threads × FLUSH_BYTES` (a few MiB, against peaks of tens to
//! thousands of MiB in the scale curve).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// A thread's net heap change that makes it add its counts to the shared totals.
pub const FLUSH_BYTES: i64 = 256 * 1024;
/// Allocation calls after which a thread adds its counts to the shared totals.
pub const FLUSH_CALLS: u64 = 512;

/// A global allocator that forwards to [`System`] and counts bytes and calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAlloc;

/// Bytes handed out, ever (a growing `realloc` counts its growth).
static ALLOCATED: AtomicU64 = AtomicU64::new(0);
/// `alloc`/`alloc_zeroed`/`realloc` calls, ever.
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Bytes live now (as flushed).
static LIVE: AtomicI64 = AtomicI64::new(0);
/// The highest `LIVE` since the last [`reset_peak`].
static PEAK: AtomicI64 = AtomicI64::new(0);

/// One thread's counts not yet added to the totals. `const`-initialized `Cell`s without a
/// destructor: reading them never allocates and works during thread teardown.
struct Pending {
    allocated: Cell<u64>,
    calls: Cell<u64>,
    live: Cell<i64>,
}

thread_local! {
    static PENDING: Pending = const {
        Pending {
            allocated: Cell::new(0),
            calls: Cell::new(0),
            live: Cell::new(0),
        }
    };
}

#[inline]
fn count(grown: u64, live_delta: i64, calls: u64) {
    let counted = PENDING.try_with(|p| {
        p.allocated.set(p.allocated.get() + grown);
        p.calls.set(p.calls.get() + calls);
        p.live.set(p.live.get() + live_delta);
        if p.live.get().abs() >= FLUSH_BYTES || p.calls.get() >= FLUSH_CALLS {
            flush(p);
        }
    });
    if counted.is_err() {
        // No thread-local storage any more (thread teardown): count directly.
        add(grown, live_delta, calls);
    }
}

fn flush(p: &Pending) {
    add(
        p.allocated.replace(0),
        p.live.replace(0),
        p.calls.replace(0),
    );
}

fn add(grown: u64, live_delta: i64, calls: u64) {
    ALLOCATED.fetch_add(grown, Relaxed);
    CALLS.fetch_add(calls, Relaxed);
    let now = LIVE.fetch_add(live_delta, Relaxed) + live_delta;
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged and returns
// its result unchanged; the only additions are updates of thread-local cells and relaxed
// atomics, none of which allocate or touch the memory being managed.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            count(layout.size() as u64, layout.size() as i64, 1);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            count(layout.size() as u64, layout.size() as i64, 1);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is; `ptr` was allocated by `System` through this allocator.
        unsafe { System.dealloc(ptr, layout) };
        count(0, -(layout.size() as i64), 0);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded as is.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            let delta = new_size as i64 - layout.size() as i64;
            count(delta.max(0) as u64, delta, 1);
        }
        p
    }
}

/// The heap counters at one moment (each thread's last [`FLUSH_BYTES`] / [`FLUSH_CALLS`] not
/// yet included).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AllocSnapshot {
    /// Bytes allocated since the process started (growth by `realloc` included).
    pub allocated_bytes: u64,
    /// Allocation calls (`alloc`, `alloc_zeroed`, `realloc`) since the process started.
    pub allocations: u64,
    /// Bytes live now.
    pub live_bytes: u64,
    /// The most bytes live at once since the last [`reset_peak`].
    pub peak_live_bytes: u64,
}

/// Whether [`CountingAlloc`] is this process's global allocator.
pub fn installed() -> bool {
    let before = PENDING.try_with(|p| p.calls.get()).unwrap_or(0) + CALLS.load(Relaxed);
    let probe = std::hint::black_box(Box::new(0u64));
    drop(probe);
    PENDING.try_with(|p| p.calls.get()).unwrap_or(0) + CALLS.load(Relaxed) != before
}

/// The counters now, or `None` when [`CountingAlloc`] is not the global allocator. This
/// thread's pending counts are added first.
pub fn snapshot() -> Option<AllocSnapshot> {
    if !installed() {
        return None;
    }
    let _ = PENDING.try_with(flush);
    Some(AllocSnapshot {
        allocated_bytes: ALLOCATED.load(Relaxed),
        allocations: CALLS.load(Relaxed),
        live_bytes: LIVE.load(Relaxed).max(0) as u64,
        peak_live_bytes: PEAK.load(Relaxed).max(0) as u64,
    })
}

/// Start a new peak: the peak becomes what is live now (this thread's pending counts are
/// added first).
pub fn reset_peak() {
    let _ = PENDING.try_with(flush);
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}
