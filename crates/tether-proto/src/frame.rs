//! Frames on the wire (RFC 6455 §5.2): header, opcode and masking.

mod header;
mod mask;
mod opcode;

pub use header::FrameHeader;
pub use mask::apply_mask;
pub use opcode::OpCode;
