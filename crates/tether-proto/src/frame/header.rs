//! The 2–14 byte frame header.

use bytes::BufMut;

use super::OpCode;
use crate::ProtocolError;

/// A parsed frame header. Role and limit checks are the connection's job;
/// this type only knows the wire layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1..RSV3 as the three low bits (RSV1 = 0b100).
    pub rsv: u8,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if the MASK bit is set.
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub payload_len: u64,
}

impl FrameHeader {
    /// The longest header: 2 + 8 (64-bit length) + 4 (mask).
    pub const MAX_LEN: usize = 14;

    /// Parses a header at the start of `buf`. `Ok(None)` means more bytes are
    /// needed; `Ok(Some((header, n)))` says the header took `n` bytes.
    pub fn parse(buf: &[u8]) -> Result<Option<(Self, usize)>, ProtocolError> {
        let [b0, b1, rest @ ..] = buf else {
            return Ok(None);
        };
        let opcode = OpCode::from_bits(b0 & 0x0f)?;
        let masked = b1 & 0x80 != 0;
        let (payload_len, len_bytes) = match b1 & 0x7f {
            126 => match rest {
                [a, b, ..] => (u64::from(u16::from_be_bytes([*a, *b])), 2),
                _ => return Ok(None),
            },
            127 => match rest.first_chunk::<8>() {
                Some(bytes) => {
                    let len = u64::from_be_bytes(*bytes);
                    if len >> 63 != 0 {
                        return Err(ProtocolError::LengthMsbSet);
                    }
                    (len, 8)
                }
                None => return Ok(None),
            },
            short => (u64::from(short), 0),
        };
        let mut consumed = 2 + len_bytes;
        let mask = if masked {
            match buf[consumed..].first_chunk::<4>() {
                Some(key) => {
                    consumed += 4;
                    Some(*key)
                }
                None => return Ok(None),
            }
        } else {
            None
        };
        Ok(Some((
            Self {
                fin: b0 & 0x80 != 0,
                rsv: (b0 >> 4) & 0x07,
                opcode,
                mask,
                payload_len,
            },
            consumed,
        )))
    }

    /// Bytes [`FrameHeader::encode`] writes.
    pub fn encoded_len(&self) -> usize {
        let len_bytes = match self.payload_len {
            0..=125 => 0,
            126..=0xffff => 2,
            _ => 8,
        };
        2 + len_bytes + if self.mask.is_some() { 4 } else { 0 }
    }

    /// Writes the header with the shortest length encoding (§5.2), in one
    /// `put_slice` rather than a capacity check per field.
    pub fn encode(&self, out: &mut impl BufMut) {
        let mut bytes = [0; Self::MAX_LEN];
        bytes[0] = u8::from(self.fin) << 7 | (self.rsv & 0x07) << 4 | self.opcode.bits();
        let mask_bit = if self.mask.is_some() { 0x80 } else { 0 };
        let mut used = match self.payload_len {
            len @ 0..=125 => {
                bytes[1] = mask_bit | len as u8;
                2
            }
            len @ 126..=0xffff => {
                bytes[1] = mask_bit | 126;
                bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                4
            }
            len => {
                bytes[1] = mask_bit | 127;
                bytes[2..10].copy_from_slice(&len.to_be_bytes());
                10
            }
        };
        if let Some(key) = self.mask {
            bytes[used..used + 4].copy_from_slice(&key);
            used += 4;
        }
        out.put_slice(&bytes[..used]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length_form() {
        for len in [0, 125, 126, 0xffff, 0x1_0000, 1 << 40] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let header = FrameHeader {
                    fin: len % 2 == 0,
                    rsv: 0,
                    opcode: OpCode::Binary,
                    mask,
                    payload_len: len,
                };
                let mut wire = Vec::new();
                header.encode(&mut wire);
                assert_eq!(wire.len(), header.encoded_len());
                assert_eq!(FrameHeader::parse(&wire), Ok(Some((header, wire.len()))));
                for cut in 0..wire.len() {
                    assert_eq!(FrameHeader::parse(&wire[..cut]), Ok(None), "cut {cut}");
                }
            }
        }
    }

    #[test]
    fn refuses_64_bit_length_with_msb_set() {
        let wire = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(FrameHeader::parse(&wire), Err(ProtocolError::LengthMsbSet));
    }

    #[test]
    fn refuses_reserved_opcodes() {
        for op in [3, 4, 5, 6, 7, 0xb, 0xc, 0xd, 0xe, 0xf] {
            assert_eq!(
                FrameHeader::parse(&[0x80 | op, 0]),
                Err(ProtocolError::ReservedOpcode(op))
            );
        }
    }
}
