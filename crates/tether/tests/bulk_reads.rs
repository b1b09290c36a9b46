//! Large frames are read straight into buffers sized from the last frame
//! (small ones through the shared scratch buffer): whatever the sizes that
//! follow, pipelined messages arrive whole and in order at both ends.

mod common;

use bytes::Bytes;
use futures_util::StreamExt;
use tether::{Message, ServerConfig};

use common::*;

/// Sizes that make the guess from the last frame wrong both ways: smaller
/// and larger frames after large ones, small ones in between, and frames
/// around the 16 KiB line where reads switch to buffers of their own.
const SIZES: [usize; 14] = [
    70_000,
    20_000,
    (1 << 20) + 3,
    16,
    5,
    65_536,
    200_000,
    16_383,
    16_384,
    17_000,
    100_000,
    3,
    300_000,
    0,
];

fn payload(index: usize, size: usize) -> Bytes {
    (0..size).map(|i| (i * 31 + index * 7) as u8).collect()
}

fn messages() -> Vec<Message> {
    let mut messages = Vec::new();
    for round in 0..3 {
        for (i, &size) in SIZES.iter().enumerate() {
            let index = round * SIZES.len() + i;
            messages.push(if index % 5 == 4 {
                Message::text("é".repeat(size / 2))
            } else {
                Message::Binary(payload(index, size))
            });
        }
    }
    messages
}

#[tokio::test]
async fn pipelined_messages_of_changing_sizes_arrive_whole_both_ways() {
    let addr = spawn_echo_server(ServerConfig::default()).await;
    let (ws, _) = within("connect", tether::connect(&format!("ws://{addr}/")))
        .await
        .unwrap();
    let (mut reader, mut writer) = ws.split();
    let sender = tokio::spawn(async move {
        for message in messages() {
            writer.send(message).await.unwrap();
        }
        writer
    });
    for (i, expected) in messages().into_iter().enumerate() {
        let received = within("an echo", reader.next())
            .await
            .expect("a message, not the end of the stream")
            .expect("a message, not an error");
        assert!(received == expected, "message {i} differs");
    }
    within("the sender", sender).await.unwrap();
}
