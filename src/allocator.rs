//! The global allocator: the system's, keeping a few freed blocks of the size a TLS
//! record's plaintext takes, for the next record.
//!
//! rustls (0.23) copies every TLS record it decrypts into a new `Vec`, in its buffered and
//! its unbuffered API alike, and frees it once read. musl's allocator gives a group of that
//! size back to the kernel when its one block is freed: at 1 Hz, one `mmap`, one `munmap` and
//! a page fault every raw tick (strace and gdb, `docs/performance.md`). Here every request
//! above [`SMALL`] and up to [`BLOCK`] bytes is served with a whole [`BLOCK`], so that any
//! such block fits any such request, and up to [`KEPT`] freed blocks are kept for the next
//! ones. A page of a block that is never written is never mapped in, so the larger block
//! costs address space, not memory.
//!
//! `unsafe`: a global allocator is an `unsafe` trait. What each function relies on is said
//! where it does.

use std::alloc::{GlobalAlloc, Layout, System};
use std::ptr::null_mut;
use std::sync::atomic::{AtomicPtr, Ordering};

/// Requests up to this size go to the system as they are: its small groups hold many blocks.
const SMALL: usize = 1024;
/// The size of every kept block: a TLS record's largest plaintext (16 KiB) and some.
const BLOCK: usize = 17 * 1024;
/// The alignment of every kept block; a request asking for more goes to the system.
const ALIGN: usize = 16;
/// How many freed blocks are kept.
const KEPT: usize = 4;

const BLOCK_LAYOUT: Layout = match Layout::from_size_align(BLOCK, ALIGN) {
    Ok(l) => l,
    Err(_) => panic!("BLOCK and ALIGN make a layout"),
};

/// The system allocator, with freed blocks of TLS-record size kept for reuse.
pub struct Allocator {
    kept: [AtomicPtr<u8>; KEPT],
}

impl Allocator {
    pub const fn new() -> Allocator {
        Allocator {
            kept: [const { AtomicPtr::new(null_mut()) }; KEPT],
        }
    }
}

impl Default for Allocator {
    fn default() -> Allocator {
        Allocator::new()
    }
}

/// Whether a request is served with a whole [`BLOCK`]. It depends on the layout only, so
/// `alloc`, `realloc` and `dealloc` agree on every block.
fn pooled(layout: Layout) -> bool {
    layout.size() > SMALL && layout.size() <= BLOCK && layout.align() <= ALIGN
}

// SAFETY: blocks come from `System`: a pooled one always with `BLOCK_LAYOUT`, which fits
// every pooled layout, and goes back to `System` with it; any other with the caller's own
// layout. A kept block is owned by exactly one slot (atomic swap and compare-exchange), so
// no block is handed out twice.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !pooled(layout) {
            // SAFETY: the caller's layout, as `GlobalAlloc::alloc` requires it.
            return unsafe { System.alloc(layout) };
        }
        for slot in &self.kept {
            let block = slot.swap(null_mut(), Ordering::Acquire);
            if !block.is_null() {
                return block;
            }
        }
        // SAFETY: `BLOCK_LAYOUT` has a non-zero size.
        unsafe { System.alloc(BLOCK_LAYOUT) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !pooled(layout) {
            // SAFETY: as in `alloc`; the system's zeroed memory is left untouched (calloc).
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: as in `alloc`; the block holds at least `layout.size()` bytes.
        unsafe {
            let block = self.alloc(layout);
            if !block.is_null() {
                block.write_bytes(0, layout.size());
            }
            block
        }
    }

    unsafe fn dealloc(&self, block: *mut u8, layout: Layout) {
        if !pooled(layout) {
            // SAFETY: allocated by `System` with this layout.
            return unsafe { System.dealloc(block, layout) };
        }
        for slot in &self.kept {
            let empty = null_mut();
            if slot
                .compare_exchange(empty, block, Ordering::Release, Ordering::Relaxed)
                .is_ok()
            {
                return;
            }
        }
        // SAFETY: a pooled block was allocated by `System` with `BLOCK_LAYOUT`.
        unsafe { System.dealloc(block, BLOCK_LAYOUT) }
    }

    unsafe fn realloc(&self, block: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc::realloc` requires `new_size`, rounded up to the alignment,
        // not to overflow `isize`.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (pooled(layout), pooled(new)) {
            // The block holds `BLOCK` bytes, whatever the request.
            (true, true) => block,
            // SAFETY: a block the system allocated with this layout.
            (false, false) => unsafe { System.realloc(block, layout, new_size) },
            // SAFETY: from one kind to the other: a new block, the bytes both hold copied,
            // the old block given back with the layout it was taken with.
            _ => unsafe {
                let moved = self.alloc(new);
                if !moved.is_null() {
                    moved.copy_from_nonoverlapping(block, layout.size().min(new_size));
                    self.dealloc(block, layout);
                }
                moved
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize) -> Layout {
        Layout::from_size_align(size, 8).unwrap()
    }

    #[test]
    fn which_requests_take_a_block() {
        #[rustfmt::skip]
        let cases = [
            (layout(16), false),
            (layout(SMALL), false),
            (layout(SMALL + 1), true),
            (layout(2774), true),
            (layout(BLOCK), true),
            (layout(BLOCK + 1), false),
            (layout(128 * 1024), false),
            (Layout::from_size_align(4096, 4096).unwrap(), false),
        ];
        for (l, want) in cases {
            assert_eq!(pooled(l), want, "{l:?}");
        }
    }

    #[test]
    fn a_freed_block_is_the_next_one_taken() {
        let a = Allocator::new();
        unsafe {
            let first = a.alloc(layout(2774));
            assert!(!first.is_null());
            first.write_bytes(7, 2774);
            a.dealloc(first, layout(2774));
            // Another size of the same range: the same block, all of it usable.
            let again = a.alloc(layout(BLOCK));
            assert_eq!(again, first);
            again.write_bytes(1, BLOCK);
            let zeroed = a.alloc_zeroed(layout(4000));
            assert_ne!(zeroed, again, "a block is handed out once");
            assert!((0..4000).all(|i| *zeroed.add(i) == 0));
            a.dealloc(zeroed, layout(4000));
            a.dealloc(again, layout(BLOCK));
        }
    }

    #[test]
    fn realloc_keeps_the_bytes_across_kinds() {
        let a = Allocator::new();
        unsafe {
            let mut p = a.alloc(layout(100));
            for i in 0..100 {
                *p.add(i) = i as u8;
            }
            // small → block → a larger block request → the system again → small
            for (from, to) in [(100, 3000), (3000, 9000), (9000, 40_000), (40_000, 50)] {
                p = a.realloc(p, layout(from), to);
                assert!(!p.is_null());
                assert!((0..50).all(|i| *p.add(i) == i as u8), "{from} -> {to}");
            }
            a.dealloc(p, layout(50));
        }
    }

    #[test]
    fn more_freed_blocks_than_kept_go_back_to_the_system() {
        let a = Allocator::new();
        unsafe {
            let blocks: Vec<*mut u8> = (0..KEPT + 2).map(|_| a.alloc(layout(5000))).collect();
            for b in &blocks {
                a.dealloc(*b, layout(5000));
            }
            let kept = a
                .kept
                .iter()
                .filter(|s| !s.load(Ordering::Relaxed).is_null());
            assert_eq!(kept.count(), KEPT);
            let taken: Vec<*mut u8> = (0..KEPT).map(|_| a.alloc(layout(5000))).collect();
            assert!(taken.iter().all(|t| blocks.contains(t)));
            for t in taken {
                a.dealloc(t, layout(5000));
            }
        }
    }
}
