//! Finite defaults for everything a peer controls.

/// Size limits enforced on received data, checked from the frame header
/// before any byte of the payload is buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest payload of one frame (default 16 MiB). Exceeding it closes with 1009.
    pub max_frame_size: usize,
    /// Largest reassembled message (default 64 MiB). Exceeding it closes with 1009.
    pub max_message_size: usize,
    /// Most frames in one fragmented message (default 100,000). Exceeding it
    /// closes with 1009: a flood of tiny fragments costs far more bookkeeping
    /// than its wire size.
    pub max_fragments: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_size: 16 << 20,
            max_message_size: 64 << 20,
            max_fragments: 100_000,
        }
    }
}
