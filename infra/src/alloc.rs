//! The global allocator of Warren's binaries: jemalloc, or the system's (glibc malloc) when the
//! process starts with `WARREN_ALLOCATOR=system`. One binary serves both, so that memory can be
//! compared allocator against allocator (warren-bench's memory scenario) and an operator can
//! switch without a rebuild if jemalloc ever misbehaves somewhere.
//!
//! The choice is made at the first allocation, before `main`, and never changes: every block is
//! freed by the allocator that gave it. With jemalloc, [`configure`] starts its background
//! purging threads, so a worker that goes idle after a burst hands unused pages back to the
//! system after jemalloc's decay time instead of at its next allocation (warren-bench's memory
//! scenario: back to within 3.4 MiB of idle 30 s after an image load; docs/benchmarks.md).

// A `GlobalAlloc` is unsafe by definition; this module only forwards each call, unchanged, to
// one of two allocators chosen once.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU8, Ordering};

use tikv_jemallocator::Jemalloc;

const UNDECIDED: u8 = 0;
const JEMALLOC: u8 = 1;
const SYSTEM: u8 = 2;

static CHOICE: AtomicU8 = AtomicU8::new(UNDECIDED);

/// jemalloc unless `WARREN_ALLOCATOR=system`; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct Switchable;

#[inline]
fn choice() -> u8 {
    match CHOICE.load(Ordering::Relaxed) {
        UNDECIDED => decide(),
        c => c,
    }
}

#[cold]
fn decide() -> u8 {
    // Reading the variable must not allocate (this runs inside the allocator), hence getenv.
    // SAFETY: the name is a NUL-terminated literal; the value is read at once, before any
    // thread of ours could set the environment.
    let system = unsafe {
        let value = libc::getenv(c"WARREN_ALLOCATOR".as_ptr());
        !value.is_null() && std::ffi::CStr::from_ptr(value).to_bytes() == b"system"
    };
    let picked = if system { SYSTEM } else { JEMALLOC };
    match CHOICE.compare_exchange(UNDECIDED, picked, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => picked,
        Err(first) => first,
    }
}

// SAFETY: every method forwards to an allocator that upholds the contract itself; the choice
// never changes after the first call, so blocks are always returned to their allocator.
unsafe impl GlobalAlloc for Switchable {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { if choice() == SYSTEM { System.alloc(layout) } else { Jemalloc.alloc(layout) } }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { if choice() == SYSTEM { System.alloc_zeroed(layout) } else { Jemalloc.alloc_zeroed(layout) } }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe { if choice() == SYSTEM { System.dealloc(ptr, layout) } else { Jemalloc.dealloc(ptr, layout) } }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged (see the impl).
        unsafe {
            if choice() == SYSTEM {
                System.realloc(ptr, layout, new_size)
            } else {
                Jemalloc.realloc(ptr, layout, new_size)
            }
        }
    }
}

/// Call early in `main`. With jemalloc, starts its background threads, which purge unused dirty
/// pages after jemalloc's decay time (10 s) even when the process allocates nothing. Returns a
/// description for the start-up log.
pub fn configure() -> String {
    if choice() == SYSTEM {
        return "system".to_owned();
    }
    match tikv_jemalloc_ctl::background_thread::write(true) {
        Ok(()) => "jemalloc (background purging)".to_owned(),
        Err(e) => format!("jemalloc (background purging unavailable: {e})"),
    }
}
