//! UTF-8 validation of text messages in bytes per second: whole messages
//! (`validate`) and messages fed in 1460-byte pieces, as TCP segments cut
//! them, splitting code points (`Validator::feed`), for ASCII and for
//! multi-byte text, next to `std::str::from_utf8`. Times are this thread's
//! CPU time (see `common`).
//!
//! ```sh
//! cargo bench -p tether-proto --bench utf8
//! ```

#![expect(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_proto::utf8::{Validator, validate};

#[expect(
    dead_code,
    reason = "this benchmark needs no batched inputs and no connection"
)]
mod common;

const SIZES: [usize; 3] = [1024, 64 * 1024, 1024 * 1024];

/// A typical TCP segment payload: pieces of this size split code points.
const CHUNK: usize = 1460;

/// `sample` repeated to at most `len` bytes, cut at a character boundary.
fn text(sample: &str, len: usize) -> Vec<u8> {
    let mut text = sample.repeat(len / sample.len() + 1);
    let mut end = len;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text.into_bytes()
}

fn utf8(c: &mut Criterion) {
    let samples = [
        ("ascii", "The quick brown fox jumps over the lazy dog. "),
        ("multibyte", "Grüße, Привет, γειά σου, 你好世界, 🎉🚀 "),
    ];
    let mut group = c.benchmark_group("utf8");
    for (kind, sample) in samples {
        for size in SIZES {
            let text = text(sample, size);
            group.throughput(Throughput::Bytes(text.len() as u64));
            group.bench_function(format!("validate {kind} {size}B"), |b| {
                b.iter_custom(|iters| {
                    common::cpu_time(iters, || validate(black_box(&text)).expect("valid UTF-8"))
                });
            });
            group.bench_function(format!("chunked {kind} {size}B"), |b| {
                b.iter_custom(|iters| {
                    common::cpu_time(iters, || {
                        let mut validator = Validator::default();
                        for chunk in black_box(&text).chunks(CHUNK) {
                            validator.feed(chunk).expect("valid UTF-8");
                        }
                        validator.finish().expect("complete UTF-8");
                    })
                });
            });
            group.bench_function(format!("std {kind} {size}B"), |b| {
                b.iter_custom(|iters| {
                    common::cpu_time(iters, || {
                        black_box(std::str::from_utf8(black_box(&text)).expect("valid UTF-8"));
                    })
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, utf8);
criterion_main!(benches);
