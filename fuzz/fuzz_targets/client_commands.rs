//! A frame of client commands (Centrifugo's JSON protocol, one object per
//! line) into the gateway's decoder, as a session reads it: never panics,
//! decodes at most one command per line, and decodes the same way twice.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = tetherd::fuzzing::decode_commands(data);
    assert!(decoded <= data.split(|&b| b == b'\n').count());
    assert_eq!(decoded, tetherd::fuzzing::decode_commands(data));
});
