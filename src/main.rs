//! The `scopegate` binary: see `scopegate --help` and the README.

use clap::Parser;

// A proxy allocates and frees many small, short-lived buffers per request on every worker thread;
// mimalloc's per-thread free lists make that markedly cheaper than glibc malloc (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: WordAligned = WordAligned;

/// mimalloc, asked for alignment only when a type needs more than a word.
///
/// The `mimalloc` crate sends every allocation through `mi_malloc_aligned`, whose fast path covers
/// only small sizes: the read buffers hyper allocates per request took the over-allocating aligned
/// slow path (about 4 % of a proxied request's instructions under callgrind). Every mimalloc block is
/// a multiple of the word size in a word-aligned page, so plain `mi_malloc` already satisfies any
/// alignment up to a word.
struct WordAligned;

const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: each function forwards to the mimalloc call with the same contract; alignments above a word
// go to mimalloc's aligned entry points, smaller ones are met by every mimalloc block.
unsafe impl std::alloc::GlobalAlloc for WordAligned {
    #[inline]
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_malloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_malloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_zalloc(layout.size()).cast()
        } else {
            libmimalloc_sys::mi_zalloc_aligned(layout.size(), layout.align()).cast()
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: std::alloc::Layout) {
        libmimalloc_sys::mi_free(ptr.cast());
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast()
        } else {
            libmimalloc_sys::mi_realloc_aligned(ptr.cast(), new_size, layout.align()).cast()
        }
    }
}

fn main() -> std::process::ExitCode {
    // mimalloc asks for transparent huge pages on its arenas, so each worker thread's first segment
    // becomes a resident 2 MiB page: most of an idle sidecar's RSS. A sidecar wants a small footprint
    // more than fewer TLB misses, so THP is turned off for this process before any thread starts.
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    scopegate::cli::main(scopegate::cli::Cli::parse())
}
