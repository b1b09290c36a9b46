//! Masking (§5.3) in bytes per second, next to `memcpy` of the same buffer
//! as the memory-speed yardstick. `unaligned` masks 3 more bytes, starting
//! one byte into its allocation and three bytes into the key. Times are
//! this thread's CPU time (see `common`).
//!
//! ```sh
//! cargo bench -p tether-proto --bench mask
//! ```

#![expect(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_proto::frame::apply_mask;

#[expect(
    dead_code,
    reason = "this benchmark needs no batched inputs and no connection"
)]
mod common;

const SIZES: [usize; 5] = [16, 125, 1024, 64 * 1024, 1024 * 1024];

/// The masking key of the RFC 6455 §5.7 examples.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

fn mask(c: &mut Criterion) {
    let mut group = c.benchmark_group("mask");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let mut buf = vec![0x5a; size];
        group.bench_function(format!("aligned {size}B"), |b| {
            b.iter_custom(|iters| {
                common::cpu_time(iters, || apply_mask(black_box(&mut buf), KEY, 0))
            });
        });
        let unaligned = size + 3;
        let mut shifted = vec![0x5a; unaligned + 1];
        group.throughput(Throughput::Bytes(unaligned as u64));
        group.bench_function(format!("unaligned {unaligned}B"), |b| {
            b.iter_custom(|iters| {
                common::cpu_time(iters, || apply_mask(black_box(&mut shifted[1..]), KEY, 3))
            });
        });
        group.throughput(Throughput::Bytes(size as u64));
        let source = vec![0x5a; size];
        let mut target = vec![0; size];
        group.bench_function(format!("memcpy {size}B"), |b| {
            b.iter_custom(|iters| {
                common::cpu_time(iters, || target.copy_from_slice(black_box(&source)))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, mask);
criterion_main!(benches);
