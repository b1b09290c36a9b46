//! The frame decoder and encoder on the echo path: frames per second for
//! small frames and bytes per second for large ones. `receive` runs the
//! sans-IO `Connection::receive` on masked client frames (header checks,
//! unmasking, message assembly, events); `header` is the header parser
//! alone; `send` is `Connection::send` on a server, its
//! output taken as the `tether` pump takes it (`transmit_slices`, then
//! `advance_transmit`).
//! Times are this thread's CPU time (see `common`).
//!
//! ```sh
//! cargo bench -p tether-proto --bench frame
//! ```

#![expect(
    missing_docs,
    reason = "criterion_group! defines an undocumented public function"
)]

use std::{hint::black_box, time::Instant};

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tether_proto::{
    Config, Connection, Event, Keepalive, Message, Role,
    frame::{FrameHeader, OpCode},
};

mod common;

/// Payload size and frames per iteration: about 64 KiB of small frames (what
/// one socket read may hold), or one large frame.
const CASES: [(usize, usize); 4] = [(16, 4096), (1024, 64), (64 * 1024, 1), (1024 * 1024, 1)];

/// From this payload size on, throughput is reported in bytes, not frames.
const LARGE: usize = 64 * 1024;

/// The masking key of the RFC 6455 §5.7 examples.
const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

#[expect(
    clippy::disallowed_methods,
    reason = "the benchmark needs one real instant to hand in; the core never reads a clock"
)]
fn start() -> Instant {
    Instant::now()
}

/// No keepalive or idle timeout: nothing but the frames happens.
fn quiet() -> Config {
    let mut config = Config::default();
    config.keepalive = Keepalive::OFF;
    config.idle_timeout = None;
    config
}

fn throughput(size: usize, count: usize) -> Throughput {
    if size >= LARGE {
        Throughput::Bytes((size * count) as u64)
    } else {
        Throughput::Elements(count as u64)
    }
}

/// `count` masked binary frames of `size` bytes, encoded by a client.
fn client_frames(size: usize, count: usize, now: Instant) -> Bytes {
    let mut client = Connection::new(Role::Client, quiet(), now);
    let payload = Bytes::from(vec![0x5a; size]);
    let mut wire = BytesMut::new();
    for _ in 0..count {
        client
            .send(now, Message::binary(payload.clone()))
            .expect("a new connection is open");
        common::write_out(&mut client, |bytes| wire.extend_from_slice(bytes));
    }
    wire.freeze()
}

fn receive(c: &mut Criterion) {
    let now = start();
    let mut group = c.benchmark_group("receive");
    for (size, count) in CASES {
        let wire = client_frames(size, count, now);
        group.throughput(throughput(size, count));
        group.bench_function(format!("{size}B x{count}"), |b| {
            b.iter_custom(|iters| {
                common::cpu_time_batched(
                    iters,
                    || {
                        (
                            Connection::new(Role::Server, quiet(), now),
                            BytesMut::from(&wire[..]),
                        )
                    },
                    |(mut server, mut buf)| {
                        server.receive(now, &mut buf).expect("valid frames");
                        let mut messages = 0;
                        while let Some(event) = server.poll_event() {
                            if let Event::Message(message) = event {
                                black_box(message);
                                messages += 1;
                            }
                        }
                        assert_eq!(messages, count);
                        // Dropped outside the timed part.
                        (server, buf)
                    },
                )
            });
        });
    }
    group.finish();
}

fn header(c: &mut Criterion) {
    let mut group = c.benchmark_group("header");
    group.throughput(Throughput::Elements(1));
    for (name, payload_len) in [("7-bit", 16), ("16-bit", 1024), ("64-bit", 1 << 20)] {
        let mut encoded = Vec::new();
        FrameHeader {
            fin: true,
            rsv: 0,
            opcode: OpCode::Binary,
            mask: Some(KEY),
            payload_len,
        }
        .encode(&mut encoded);
        group.bench_function(format!("parse {name} masked"), |b| {
            b.iter_custom(|iters| {
                common::cpu_time(iters, || {
                    black_box(FrameHeader::parse(black_box(&encoded)).expect("valid header"));
                })
            });
        });
    }
    group.finish();
}

fn send(c: &mut Criterion) {
    let now = start();
    let mut group = c.benchmark_group("send");
    for (size, count) in CASES {
        let payload = Bytes::from(vec![0x5a; size]);
        let mut server = Connection::new(Role::Server, quiet(), now);
        // The payload is shared, not copied: count frames, not bytes.
        group.throughput(Throughput::Elements(count as u64));
        group.bench_function(format!("{size}B x{count}"), |b| {
            b.iter_custom(|iters| {
                common::cpu_time(iters, || {
                    for _ in 0..count {
                        server
                            .send(now, Message::binary(payload.clone()))
                            .expect("the connection is open");
                    }
                    common::write_out(&mut server, |bytes| {
                        black_box(bytes);
                    });
                })
            });
        });
    }
    group.finish();
}

criterion_group!(benches, receive, header, send);
criterion_main!(benches);
