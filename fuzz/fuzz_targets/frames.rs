//! See `peer_assist::fuzzing::frames` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| peer_assist::fuzzing::frames(data));
