//! The RESP port's hot path allocates nothing per request: a counting allocator, counting
//! only on the server runtime's threads, sees GETs and SETs of a pipelined load (after a
//! warm-up) allocate far less than once per request. What remains is per segment (a new
//! 64 KiB segment every few hundred overwrites) and per batch, not per command.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is passed to the system allocator unchanged; the counter only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: the caller's layout, as GlobalAlloc requires.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTED.try_with(Cell::get).unwrap_or(false) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: as for `alloc` and `dealloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sends `n` SETs then `n` GETs of keys `0..keys` in one pipeline and reads every reply.
fn round(sock: &mut std::net::TcpStream, n: usize, keys: usize) {
    let mut req = Vec::new();
    for i in 0..n {
        let k = format!("key:{:06}", i % keys);
        req.extend_from_slice(
            format!("*3\r\n$3\r\nSET\r\n$10\r\n{k}\r\n$8\r\nvvvvvvvv\r\n").as_bytes(),
        );
    }
    for i in 0..n {
        let k = format!("key:{:06}", i % keys);
        req.extend_from_slice(format!("*2\r\n$3\r\nGET\r\n$10\r\n{k}\r\n").as_bytes());
    }
    sock.write_all(&req).unwrap();
    let want = n * b"+OK\r\n".len() + n * b"$8\r\nvvvvvvvv\r\n".len();
    let mut replies = vec![0u8; want];
    sock.read_exact(&mut replies).unwrap();
    assert!(replies.starts_with(b"+OK\r\n") && replies.ends_with(b"$8\r\nvvvvvvvv\r\n"));
}

#[test]
fn gets_and_sets_do_not_allocate_per_request() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .enable_all()
        .build()
        .unwrap();
    let engine = objstore::engine::Engine::new(objstore::engine::EngineConfig {
        // A short history reaches its steady size during the warm-up.
        feed_history: 1000,
        ..Default::default()
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let metrics = jupiter_core::Metrics::new();
    rt.spawn(async move {
        objstore::resp::serve(
            engine,
            listener,
            objstore::resp::RespConfig::default(),
            &metrics,
            std::future::pending(),
        )
        .await
    });
    let mut sock = std::net::TcpStream::connect(addr).unwrap();
    sock.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    for _ in 0..5 {
        round(&mut sock, 2000, 1000);
    }
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    let requests = 2 * 5 * 4000;
    for _ in 0..5 {
        round(&mut sock, 4000, 1000);
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    eprintln!("{allocations} allocations for {requests} requests");
    assert!(
        allocations * 20 < requests,
        "{allocations} allocations for {requests} requests"
    );
}
