//! The XOR masking of §5.3.

/// Payloads shorter than this are masked by the portable loop even where
/// wider vectors exist: the feature check would cost more than it saves.
#[cfg(target_arch = "x86_64")]
const WIDE_MIN: usize = 128;

/// XORs `buf` with `key`, as if `buf` started `offset` bytes into the payload.
/// Masking and unmasking are the same operation.
///
/// Works a machine word at a time so the compiler can vectorise it; on x86-64
/// CPUs with AVX2 (checked at run time) the same loop is compiled for
/// 32-byte vectors.
#[cfg_attr(
    target_arch = "x86_64",
    expect(
        unsafe_code,
        reason = "calling the AVX2 build of the loop needs the CPU check the compiler cannot see"
    )
)]
pub fn apply_mask(buf: &mut [u8], key: [u8; 4], offset: usize) {
    // The key as it lines up with `buf`: its bytes rotated left by `offset`.
    let key = u32::from_be_bytes(key)
        .rotate_left(8 * (offset % 4) as u32)
        .to_be_bytes();
    #[cfg(target_arch = "x86_64")]
    if buf.len() >= WIDE_MIN && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `mask_avx2` only requires AVX2, which the CPU has (checked
        // just above). Tested against byte-by-byte masking at every length,
        // offset and alignment in `tests` below.
        unsafe { mask_avx2(buf, key) };
        return;
    }
    mask_words(buf, key);
}

/// [`mask_words`] compiled for AVX2.
///
/// # Safety
///
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[expect(
    unsafe_code,
    reason = "a function compiled for a CPU feature is unsafe to call without it"
)]
unsafe fn mask_avx2(buf: &mut [u8], key: [u8; 4]) {
    mask_words(buf, key);
}

/// XORs `buf` with `key` repeated, from the key's first byte. The loop has
/// no branches per byte.
#[inline(always)]
fn mask_words(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes(chunk.try_into().unwrap_or_default()) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let rest = chunks.into_remainder();
    let (words, bytes) = rest.split_at_mut(rest.len() & !3);
    if let Ok(word) = <&mut [u8; 4]>::try_from(words) {
        *word = (u32::from_ne_bytes(*word) ^ u32::from_ne_bytes(key)).to_ne_bytes();
    }
    for (byte, k) in bytes.iter_mut().zip(key) {
        *byte ^= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytewise(buf: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, byte) in buf.iter_mut().enumerate() {
            *byte ^= key[(i + offset) % 4];
        }
    }

    /// Masks `len` bytes starting `align` bytes into a buffer, with both
    /// `apply_mask` and the portable loop alone, and compares each with
    /// [`bytewise`]; the bytes around the slice must stay untouched.
    fn check(len: usize, offset: usize, align: usize) {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        let data: Vec<u8> = (0..align + len + 8).map(|i| (i * 7 + 3) as u8).collect();
        let mut expected = data.clone();
        bytewise(&mut expected[align..align + len], key, offset);
        let mut masked = data.clone();
        apply_mask(&mut masked[align..align + len], key, offset);
        assert_eq!(masked, expected, "len {len} offset {offset} align {align}");
        let mut rotated = key;
        rotated.rotate_left(offset % 4);
        let mut portable = data;
        mask_words(&mut portable[align..align + len], rotated);
        assert_eq!(portable, expected, "portable: len {len} offset {offset}");
    }

    #[test]
    fn matches_bytewise_masking_at_every_length_offset_and_alignment() {
        for len in 0..=300 {
            for offset in 0..8 {
                for align in 0..40 {
                    check(len, offset, align);
                }
            }
        }
        for len in [4095, 4096, 65_536, 65_539, 1 << 20] {
            for (offset, align) in [(0, 0), (1, 1), (2, 31), (3, 63)] {
                check(len, offset, align);
            }
        }
    }

    #[test]
    fn masking_twice_restores_the_payload() {
        let original: Vec<u8> = (0..=255).cycle().take(10_000).collect();
        let mut buf = original.clone();
        apply_mask(&mut buf, [1, 2, 3, 4], 2);
        assert_ne!(buf, original);
        apply_mask(&mut buf, [1, 2, 3, 4], 2);
        assert_eq!(buf, original);
    }
}
