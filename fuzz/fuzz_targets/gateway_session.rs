//! A whole gateway session fed arbitrary frames: an in-process node (memory
//! broker, default config), hyper with the gateway's limits, the WebSocket
//! upgrade, then the input split on 0xFF bytes into messages (text where
//! UTF-8, else binary) and a close. Checks, besides "never panics": the
//! session ends and cleans up (no hang), and no input makes the process
//! allocate more than 32 MiB beyond what it held before, whatever the
//! commands ask for (history, presence, publications, subscriptions).
#![no_main]

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        LazyLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use libfuzzer_sys::fuzz_target;
use tetherd::fuzzing::Gateway;

/// Counts live heap bytes and their high-water mark.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator, which
// upholds GlobalAlloc's contract; the counters only observe sizes. This
// target exercises it on every allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's layout is passed on as given.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// More than any one client may make the server hold: its 1 MiB outbound
/// budget, a message, the socket queue, history it publishes itself.
const MAX_GROWTH: usize = 32 << 20;

/// Messages per input beyond this are ignored.
const MAX_MESSAGES: usize = 64;

static GATEWAY: LazyLock<Gateway> = LazyLock::new(Gateway::new);

fuzz_target!(|data: &[u8]| {
    let gateway = &*GATEWAY;
    let frames: Vec<&[u8]> = data.split(|&b| b == 0xff).take(MAX_MESSAGES).collect();
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    gateway.session(&frames);
    let grown = PEAK.load(Ordering::Relaxed).saturating_sub(before);
    assert!(
        grown < MAX_GROWTH,
        "one session grew the heap by {grown} bytes"
    );
});
