//! A tiny allocator for the `no_std` release build.
//!
//! std's dlmalloc costs a few KB of the package's size budget; a payment page
//! makes a handful of short-lived allocations (strings copied from JS, boxed
//! futures), so power-of-two size classes with one free list per class are
//! plenty: a freed block is reused by the next allocation of its class, and
//! fresh blocks come from a bump pointer over pages taken with `memory.grow`.

use core::alloc::{GlobalAlloc, Layout};
use core::arch::wasm32::memory_grow;
use core::cell::UnsafeCell;

/// Out of memory: trap (a rejected allocation could not be reported anyway).
/// Never returning null also lets the compiler drop the callers' null checks
/// and, with them, the formatting code of `handle_alloc_error`.
fn oom() -> ! {
    core::arch::wasm32::unreachable()
}

const PAGE: usize = 65536;
/// Blocks are at least 8 bytes (the free-list link) and 8-aligned.
const MIN_CLASS: u32 = 3;
const CLASSES: usize = 31;

struct State {
    /// Head of the free list of each class (0 = empty); a free block's first
    /// word is the address of the next free block of its class.
    free: [usize; CLASSES],
    /// Next unused byte, and the end of the memory taken so far.
    top: usize,
    end: usize,
}

pub struct Heap(UnsafeCell<State>);

// SAFETY: wasm32 without the `atomics` feature has a single thread (checked in
// lib.rs), so there is never concurrent access.
unsafe impl Sync for Heap {}

impl Heap {
    pub const fn new() -> Self {
        Heap(UnsafeCell::new(State {
            free: [0; CLASSES],
            top: 0,
            end: 0,
        }))
    }
}

/// Size class of a layout: the smallest `k` with `2^k >= max(size, align, 8)`.
fn class(layout: &Layout) -> u32 {
    let size = layout.size().max(layout.align()).max(1 << MIN_CLASS);
    usize::BITS - (size - 1).leading_zeros()
}

unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded (see `Sync` above) and never re-entered.
        let st = unsafe { &mut *self.0.get() };
        let k = class(&layout) as usize;
        let Some(slot) = st.free.get_mut(k) else {
            oom();
        };
        if layout.align() <= 8 && *slot != 0 {
            let head = *slot;
            // SAFETY: `head` is a block of this class that was freed, and its
            // first word holds the next link.
            *slot = unsafe { *(head as *const usize) };
            return head as *mut u8;
        }
        let size = 1usize << k;
        let align = layout.align().max(8);
        let mut start = (st.top + align - 1) & !(align - 1);
        if start + size > st.end {
            let pages = (size + align).div_ceil(PAGE);
            let prev = memory_grow(0, pages);
            if prev == usize::MAX {
                oom();
            }
            let base = prev * PAGE;
            if base != st.end {
                // Someone else grew memory in between: start afresh.
                st.top = base;
            }
            st.end = base + pages * PAGE;
            start = (st.top + align - 1) & !(align - 1);
        }
        st.top = start + size;
        if start == 0 {
            oom();
        }
        start as *mut u8
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // Over-aligned blocks are not recycled (a reused block would not be
        // guaranteed their alignment); this crate never makes any.
        if layout.align() > 8 {
            return;
        }
        // SAFETY: single-threaded (see `Sync` above).
        let st = unsafe { &mut *self.0.get() };
        if let Some(slot) = st.free.get_mut(class(&layout) as usize) {
            // SAFETY: `ptr` is a live block of this class (at least 8 bytes,
            // 8-aligned) that the caller gives back.
            unsafe { *(ptr as *mut usize) = *slot };
            *slot = ptr as usize;
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `layout.align()` is a valid alignment.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if layout.align() <= 8 && class(&new) == class(&layout) {
            return ptr;
        }
        // SAFETY: as for `GlobalAlloc::realloc`'s default implementation
        // (`alloc` never returns null).
        unsafe {
            let out = self.alloc(new);
            core::ptr::copy_nonoverlapping(ptr, out, layout.size().min(new_size));
            self.dealloc(ptr, layout);
            out
        }
    }
}
