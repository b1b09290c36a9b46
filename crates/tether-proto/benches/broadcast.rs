//! Broadcast of one 4 KiB JSON message to 10,000 subscribers: framed once
//! (and, with permessage-deflate, compressed once) and copied into every
//! subscriber's write buffer, against compressing it per subscriber.
//!
//! ```sh
//! cargo bench -p tether-proto --bench broadcast
//! ```
#![expect(
    missing_docs,
    reason = "criterion's macros generate the undocumented entry points"
)]

#[expect(dead_code, reason = "this benchmark uses criterion's own clock")]
mod common;

use std::{hint::black_box, time::Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use tether_proto::{
    Config, Connection, Message, Role,
    deflate::{DeflateConfig, PerMessageDeflate},
    handshake::extensions::ExtensionOffer,
};

const SUBSCRIBERS: usize = 10_000;

/// A 4 KiB publication as a gateway pushes it: JSON with repeated keys.
fn publication() -> Message {
    let mut json = String::from("{\"push\":{\"channel\":\"prices\",\"pub\":{\"data\":[");
    let mut i = 0u32;
    while json.len() < 4000 {
        json.push_str(&format!(
            "{{\"symbol\":\"SYM{:03}\",\"price\":{}.{:02},\"volume\":{}}},",
            i % 500,
            100 + i * 7 % 900,
            i * 13 % 100,
            i * 7919 % 100_000
        ));
        i += 1;
    }
    json.pop();
    json.push_str("]}}}");
    while json.len() < 4096 {
        json.push(' ');
    }
    Message::text(json)
}

fn negotiated() -> PerMessageDeflate {
    let offer = ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None);
    DeflateConfig::default()
        .accept(&[offer])
        .expect("a plain offer is accepted")
        .1
}

/// The benchmark's only clock reading: connections need a start time.
#[expect(
    clippy::disallowed_methods,
    reason = "the core never reads a clock; its benchmark gives it one"
)]
fn now() -> Instant {
    Instant::now()
}

fn subscribers(deflate: bool) -> Vec<(Connection, Vec<u8>)> {
    let now = now();
    (0..SUBSCRIBERS)
        .map(|_| {
            let mut conn = Connection::new(Role::Server, Config::default(), now);
            if deflate {
                conn.set_deflate(negotiated());
            }
            (conn, Vec::with_capacity(8192))
        })
        .collect()
}

/// Moves every queued byte into the subscriber's write buffer, as a socket
/// write would.
fn drain(conn: &mut Connection, buffer: &mut Vec<u8>) {
    buffer.clear();
    common::write_out(conn, |bytes| buffer.extend_from_slice(bytes));
}

fn encode_once(subs: &mut [(Connection, Vec<u8>)], message: &Message) {
    let encoding = subs[0].0.frame_encoding().expect("server connections");
    let frame = encoding.encode(message).expect("a data message");
    for (conn, buffer) in subs.iter_mut() {
        conn.send_encoded(&frame).expect("same encoding");
        drain(conn, buffer);
    }
}

fn broadcast(c: &mut Criterion) {
    let message = publication();
    let mut group = c.benchmark_group("broadcast_4KiB_json_to_10000");
    group.sample_size(20);
    for (name, deflate) in [("uncompressed", false), ("deflate_once", true)] {
        let mut subs = subscribers(deflate);
        group.bench_function(name, |b| {
            b.iter(|| encode_once(black_box(&mut subs), black_box(&message)))
        });
    }
    // For scale: what compressing per subscriber would cost.
    group.sample_size(10);
    let start = now();
    group.bench_function("deflate_per_subscriber", |b| {
        b.iter_batched_ref(
            || subscribers(true),
            |subs| {
                for (conn, buffer) in subs.iter_mut() {
                    conn.send(start, message.clone()).expect("open");
                    drain(conn, buffer);
                }
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, broadcast);
criterion_main!(benches);
