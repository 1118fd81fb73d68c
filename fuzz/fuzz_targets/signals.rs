//! Signalling: `decode_client` and `decode_server` on arbitrary text never panic, and an accepted
//! message re-encodes to canonical JSON that decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peer_assist::protocol::signal::{decode_client, decode_server, MAX_SIGNAL_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(msg) = decode_client(text) {
        let canonical = msg.encode();
        // Re-encoding may grow a message (`1E2` becomes `100.0` in a relay payload).
        if canonical.len() <= MAX_SIGNAL_LEN {
            assert_eq!(decode_client(&canonical).as_ref(), Ok(&msg), "{canonical}");
            assert_eq!(decode_client(&canonical).map(|m| m.encode()), Ok(canonical));
        }
    }
    if let Ok(msg) = decode_server(text) {
        let canonical = msg.encode();
        if canonical.len() <= MAX_SIGNAL_LEN {
            assert_eq!(decode_server(&canonical).as_ref(), Ok(&msg), "{canonical}");
            assert_eq!(decode_server(&canonical).map(|m| m.encode()), Ok(canonical));
        }
    }
});
