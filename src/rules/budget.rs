//! A heap budget for the jq worker process: the binary's global allocator wrapped so that,
//! once a limit is set, an allocation that would take the live heap past it ends the process
//! at once with [`OVER_BUDGET`], which the pool reports as "used more than its memory
//! budget". A program like `[range(1e9)]` then costs the budget, not the machine.
//!
//! The gateway process never sets a limit and pays one relaxed load per allocation. An
//! rlimit cannot do this job: the allocator reserves address space far beyond what it uses,
//! so an address-space or data limit either fails early or does not bound the heap.

use std::alloc::{GlobalAlloc, Layout};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

/// The exit code of a worker that went over its budget.
pub const OVER_BUDGET: i32 = 86;

/// 0: no limit (the gateway); otherwise the bytes the heap may hold.
static LIMIT: AtomicUsize = AtomicUsize::new(0);
/// Bytes allocated since the limit was set, less those freed (memory allocated before
/// counts as freed when it is, so this may dip below zero by that much).
static USED: AtomicIsize = AtomicIsize::new(0);

/// Limits this process's heap to `bytes` from now on.
pub fn limit(bytes: usize) {
    USED.store(0, Ordering::Relaxed);
    LIMIT.store(bytes.max(1), Ordering::Relaxed);
}

pub struct Budgeted<A>(pub A);

fn signed(n: usize) -> isize {
    isize::try_from(n).unwrap_or(isize::MAX)
}

/// Counts `size` more bytes, or ends the process when that goes past the limit. Leaving
/// with `_exit` allocates nothing and runs no destructor, so it is safe from inside the
/// allocator.
fn charge(size: usize) {
    let limit = LIMIT.load(Ordering::Relaxed);
    if limit == 0 {
        return;
    }
    let used = USED.fetch_add(signed(size), Ordering::Relaxed) + signed(size);
    if used > signed(limit) {
        // SAFETY: `_exit` takes an integer, touches no memory of ours and does not return.
        unsafe { libc::_exit(OVER_BUDGET) }
    }
}

fn refund(size: usize) {
    if LIMIT.load(Ordering::Relaxed) != 0 {
        USED.fetch_sub(signed(size), Ordering::Relaxed);
    }
}

// SAFETY: every call is passed through to `A` unchanged; the wrapper only counts sizes.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Budgeted<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: the caller's contract for `layout` is passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        charge(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        refund(layout.size());
        // SAFETY: `ptr` came from `A` with this `layout`, as the caller guarantees.
        unsafe { self.0.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            charge(new_size - layout.size());
        } else {
            refund(layout.size() - new_size);
        }
        // SAFETY: as for `dealloc` and `alloc`.
        unsafe { self.0.realloc(ptr, layout, new_size) }
    }
}
