//! See `gateway::fuzzing::cmcd` for the properties checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gateway::fuzzing::cmcd(data));
