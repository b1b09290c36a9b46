//! permessage-deflate for pushes that go to many subscribers: each push is
//! framed and compressed at most once per [`FrameEncoding`], by the first
//! subscriber's session that needs it, and every other subscriber with that
//! encoding queues the same bytes.
//!
//! ```text
//!  handle::Frame ─┬─ subscriber A (deflate, 15 bits) ─► Encodings::frame ─► compress, keep
//!   (shared    ├─ subscriber B (deflate, 15 bits) ─► Encodings::frame ─► the same bytes
//!   Encodings) └─ subscriber C (no deflate) ───────► plain text frame, as without compression
//! ```

use std::sync::{Mutex, PoisonError};

use tether::{
    Message, Utf8Bytes,
    broadcast::{EncodedFrame, FrameEncoding},
};

use crate::metrics::Metrics;

/// The encoded frames of one push so far, shared by its copies in every
/// subscriber's outbox. Allocated only while compression is enabled.
#[derive(Debug, Default)]
pub(crate) struct Encodings {
    /// One entry per encoding: a gateway has one compression level and
    /// threshold, so these differ only in the window a client asked for.
    frames: Mutex<Vec<(FrameEncoding, EncodedFrame)>>,
}

impl Encodings {
    /// `text` framed for `encoding`: compressed on the first call for that
    /// encoding (when at least the threshold), the same bytes after.
    /// Counts compressions and the compressed bytes queued in `metrics`.
    pub(crate) fn frame(
        &self,
        encoding: FrameEncoding,
        text: &Utf8Bytes,
        metrics: &Metrics,
    ) -> EncodedFrame {
        // Held while compressing: another subscriber's session that wants
        // the same encoding waits for these bytes instead of compressing too.
        let mut frames = self.frames.lock().unwrap_or_else(PoisonError::into_inner);
        let frame = match frames.iter().find(|(e, _)| *e == encoding) {
            Some((_, frame)) => frame.clone(),
            None => {
                let frame = encode(encoding, text);
                if frame.is_compressed() {
                    metrics.deflate_compressions.inc();
                }
                frames.push((encoding, frame.clone()));
                frame
            }
        };
        drop(frames);
        if frame.is_compressed() {
            let payload = frame.payload().len();
            metrics.deflate_bytes_out.inc_by(payload as u64);
            metrics
                .deflate_bytes_out_uncompressed
                .inc_by(text.len() as u64);
        }
        frame
    }
}

fn encode(encoding: FrameEncoding, text: &Utf8Bytes) -> EncodedFrame {
    // Invariant: encode fails only for control messages, and this is text.
    encoding
        .encode(&Message::Text(text.clone()))
        .expect("a text message encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deflate(max_window_bits: u8) -> FrameEncoding {
        FrameEncoding::Deflate {
            max_window_bits,
            level: 6,
            threshold: 64,
        }
    }

    #[test]
    fn compresses_once_per_encoding_and_shares_the_bytes() {
        let metrics = Metrics::default();
        let encodings = Encodings::default();
        let text =
            Utf8Bytes::from(r#"{"push":{"pub":{"data":"#.to_owned() + &"ab".repeat(2000) + "}}}");
        let first = encodings.frame(deflate(15), &text, &metrics);
        let again = encodings.frame(deflate(15), &text, &metrics);
        let narrow = encodings.frame(deflate(10), &text, &metrics);
        assert!(first.is_compressed() && narrow.is_compressed());
        assert_eq!(
            first.as_bytes().as_ptr(),
            again.as_bytes().as_ptr(),
            "shared, not copied"
        );
        assert_ne!(first, narrow);
        let load = |counter: &prometheus_client::metrics::counter::Counter| counter.get();
        assert_eq!(load(&metrics.deflate_compressions), 2);
        assert_eq!(
            load(&metrics.deflate_bytes_out_uncompressed),
            3 * text.len() as u64
        );
        let sent = 2 * first.payload().len() + narrow.payload().len();
        assert_eq!(load(&metrics.deflate_bytes_out), sent as u64);
        assert!(sent < text.len() / 10, "{sent}");
    }

    #[test]
    fn short_pushes_go_uncompressed_and_are_not_counted() {
        let metrics = Metrics::default();
        let encodings = Encodings::default();
        let text = Utf8Bytes::from(r#"{"push":{}}"#);
        let frame = encodings.frame(deflate(15), &text, &metrics);
        assert!(!frame.is_compressed());
        assert_eq!(&frame.as_bytes()[2..], text.as_bytes());
        assert_eq!(metrics.deflate_compressions.get(), 0);
        assert_eq!(metrics.deflate_bytes_out.get(), 0);
    }
}
