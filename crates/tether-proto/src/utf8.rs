//! Incremental UTF-8 validation across fragment boundaries.
//!
//! A text message may be split anywhere, even inside a code point, so the
//! validator carries up to three bytes of an unfinished sequence from one
//! chunk to the next. It reports an error as soon as a byte proves the text
//! invalid, without waiting for the message to end (§8.1: fail fast).

use simdutf8::compat::from_utf8;

/// The text is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUtf8;

/// Validates a text message chunk by chunk.
#[derive(Debug, Clone, Copy, Default)]
pub struct Validator {
    /// Bytes of a code point started by the previous chunk.
    pending: [u8; 4],
    pending_len: u8,
}

impl Validator {
    /// Validates the next chunk of the message.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), InvalidUtf8> {
        if self.pending_len > 0 {
            let have = usize::from(self.pending_len);
            let need = sequence_len(self.pending[0]) - have;
            let take = need.min(chunk.len());
            self.pending[have..have + take].copy_from_slice(&chunk[..take]);
            let filled = have + take;
            match from_utf8(&self.pending[..filled]) {
                Ok(_) => self.pending_len = 0,
                Err(err) if err.error_len().is_none() => {
                    self.pending_len = filled as u8;
                    return Ok(());
                }
                Err(_) => return Err(InvalidUtf8),
            }
            chunk = &chunk[take..];
        }
        match from_utf8(chunk) {
            Ok(_) => Ok(()),
            Err(err) if err.error_len().is_none() => {
                let tail = &chunk[err.valid_up_to()..];
                self.pending[..tail.len()].copy_from_slice(tail);
                self.pending_len = tail.len() as u8;
                Ok(())
            }
            Err(_) => Err(InvalidUtf8),
        }
    }

    /// Ends the message: an unfinished code point makes it invalid.
    pub fn finish(&self) -> Result<(), InvalidUtf8> {
        if self.pending_len == 0 {
            Ok(())
        } else {
            Err(InvalidUtf8)
        }
    }
}

/// Validates a complete text in one go.
pub fn validate(text: &[u8]) -> Result<(), InvalidUtf8> {
    simdutf8::basic::from_utf8(text)
        .map(drop)
        .map_err(|_| InvalidUtf8)
}

/// Length of the sequence a lead byte starts. Only called on bytes that
/// `from_utf8` reported as the start of an incomplete (not invalid) sequence,
/// so the lead byte is one of 0xC2..=0xF4.
fn sequence_len(lead: u8) -> usize {
    match lead {
        0xf0.. => 4,
        0xe0.. => 3,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed_split(text: &[u8], split_every: usize) -> Result<(), InvalidUtf8> {
        let mut validator = Validator::default();
        for chunk in text.chunks(split_every.max(1)) {
            validator.feed(chunk)?;
        }
        validator.finish()
    }

    #[test]
    fn agrees_with_std_for_every_split() {
        let samples: [&[u8]; 8] = [
            "κόσμε".as_bytes(),
            "Hello-µ@ßöäüàá-UTF-8!!".as_bytes(),
            "𝄞 music".as_bytes(),
            &[
                0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80,
            ],
            &[0xf4, 0x90, 0x80, 0x80],
            &[0xc0, 0xaf],
            &[0xe0, 0x80],
            &[0xf0, 0x9f, 0x98],
        ];
        for sample in samples {
            let expected = std::str::from_utf8(sample).is_ok();
            for split in 1..=sample.len() {
                assert_eq!(
                    feed_split(sample, split).is_ok(),
                    expected,
                    "{sample:x?} / {split}"
                );
            }
        }
    }

    #[test]
    fn fails_before_the_message_ends() {
        let mut validator = Validator::default();
        validator.feed(b"valid start ").unwrap();
        // 0xed 0xa0 is the start of a UTF-16 surrogate: invalid already.
        assert_eq!(validator.feed(&[0xed, 0xa0]), Err(InvalidUtf8));
    }
}
